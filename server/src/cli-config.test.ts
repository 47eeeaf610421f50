import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { cliConfigPath, readCliProjects, upsertCliProject } from "./cli-config.js";

describe("CLI config (~/.dstack/config.yml)", () => {
  let home: string;
  let path: string;
  beforeEach(() => {
    home = mkdtempSync(join(tmpdir(), "dstack-cli-config-"));
    path = cliConfigPath(home);
  });
  afterEach(() => rmSync(home, { recursive: true, force: true }));

  it("lives in <home>/.dstack/config.yml", () => expect(path).toBe(join(home, ".dstack", "config.yml")));

  it("creates the file with the project as default, readable only by the owner", () => {
    expect(upsertCliProject(path, { name: "main", url: "http://127.0.0.1:3000/", token: "t1" })).toBe("added");
    expect(readCliProjects(path)).toEqual([{ name: "main", url: "http://127.0.0.1:3000/", token: "t1", default: true }]);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it("keeps other projects, unknown keys and comments, and moves the default", () => {
    mkdirSync(join(home, ".dstack"), { recursive: true });
    writeFileSync(path, "# my servers\nprojects:\n- name: prod\n  url: https://dstack.example.com/\n  token: p\n  default: true\nrepos: []\n");
    upsertCliProject(path, { name: "main", url: "http://127.0.0.1:3000/", token: "t1" });
    const text = readFileSync(path, "utf8");
    expect(text).toContain("# my servers");
    expect(text).toContain("repos: []");
    expect(readCliProjects(path)).toEqual([
      { name: "prod", url: "https://dstack.example.com/", token: "p" },
      { name: "main", url: "http://127.0.0.1:3000/", token: "t1", default: true },
    ]);
  });

  it("updates the entry of the same name in place and reports what it did", () => {
    upsertCliProject(path, { name: "main", url: "http://127.0.0.1:3000/", token: "t1" });
    expect(upsertCliProject(path, { name: "main", url: "http://127.0.0.1:3000/", token: "t1" })).toBe("unchanged");
    expect(upsertCliProject(path, { name: "main", url: "http://127.0.0.1:3001/", token: "t2" })).toBe("updated");
    expect(readCliProjects(path)).toEqual([{ name: "main", url: "http://127.0.0.1:3001/", token: "t2", default: true }]);
  });

  it("can add a project without taking the default", () => {
    upsertCliProject(path, { name: "prod", url: "https://x/", token: "p" });
    upsertCliProject(path, { name: "main", url: "http://127.0.0.1:3000/", token: "t" }, { makeDefault: false });
    expect(readCliProjects(path).find((p) => p.name === "prod")?.default).toBe(true);
    expect(readCliProjects(path).find((p) => p.name === "main")?.default).toBeUndefined();
  });

  it("refuses a malformed file instead of overwriting it, naming the file", () => {
    mkdirSync(join(home, ".dstack"), { recursive: true });
    writeFileSync(path, "projects: [\n");
    expect(() => upsertCliProject(path, { name: "main", url: "u", token: "t" })).toThrow(path);
    expect(readFileSync(path, "utf8")).toBe("projects: [\n");
  });
});
