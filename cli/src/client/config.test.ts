import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { configPath, readProjects, resolveConfig, setDefaultProject, upsertProject } from "./config.js";

const homes: string[] = [];
async function home(configYaml?: string): Promise<string> {
  const h = await mkdtemp(join(tmpdir(), "dstack-cfg-"));
  homes.push(h);
  if (configYaml !== undefined) {
    await mkdir(join(h, ".dstack"));
    await writeFile(join(h, ".dstack", "config.yml"), configYaml);
  }
  return h;
}
afterEach(async () => {
  for (const h of homes.splice(0)) await rm(h, { recursive: true, force: true });
});

const TWO = `# my servers
projects:
  - name: main
    url: http://127.0.0.1:3000/
    token: t-main
    default: true
  - name: gpu
    url: https://dstack.example.com
    token: t-gpu
`;

describe("resolving the project, server and token", () => {
  it("uses the default project of ~/.dstack/config.yml, under HOME", async () => {
    const h = await home(TWO);
    expect(resolveConfig({ env: { HOME: h } })).toEqual({ project: "main", serverUrl: "http://127.0.0.1:3000", token: "t-main", configPath: join(h, ".dstack", "config.yml") });
  });

  it("selects another configured project by DSTACK_PROJECT, and an explicit project over that", async () => {
    const h = await home(TWO);
    expect(resolveConfig({ env: { HOME: h, DSTACK_PROJECT: "gpu" } })).toMatchObject({ project: "gpu", serverUrl: "https://dstack.example.com", token: "t-gpu" });
    expect(resolveConfig({ project: "main", env: { HOME: h, DSTACK_PROJECT: "gpu" } })).toMatchObject({ project: "main", token: "t-main" });
  });

  it("lets DSTACK_TOKEN and DSTACK_SERVER_URL override the file, and explicit options override those", async () => {
    const h = await home(TWO);
    expect(resolveConfig({ env: { HOME: h, DSTACK_TOKEN: "env-token" } })).toMatchObject({ project: "main", token: "env-token", serverUrl: "http://127.0.0.1:3000" });
    expect(resolveConfig({ token: "opt", serverUrl: "http://h:1/", env: { HOME: h, DSTACK_TOKEN: "env-token", DSTACK_SERVER_URL: "http://e:2" } })).toMatchObject({ token: "opt", serverUrl: "http://h:1" });
  });

  it("works from the variables alone, with no config file", async () => {
    const h = await home();
    expect(resolveConfig({ env: { HOME: h, DSTACK_SERVER_URL: "http://s:3000", DSTACK_TOKEN: "t", DSTACK_PROJECT: "p" } })).toMatchObject({ project: "p", serverUrl: "http://s:3000", token: "t" });
  });

  it("explains what to do when nothing is configured, or the named project is unknown", async () => {
    const h = await home();
    expect(() => resolveConfig({ env: { HOME: h } })).toThrow(/No dstack server is configured.*dstack server.*dstack project add/s);
    const h2 = await home(TWO);
    expect(() => resolveConfig({ env: { HOME: h2, DSTACK_PROJECT: "nope" } })).toThrow(/Project 'nope' is not configured .*\(configured: main, gpu\)/);
  });

  it("reports a broken file instead of ignoring it", async () => {
    const h = await home("projects: [\n");
    expect(() => resolveConfig({ env: { HOME: h } })).toThrow(/Cannot read .*config\.yml/);
  });
});

describe("writing the config", () => {
  it("adds a project, moves the default, and keeps comments and the other entries; the file stays 0600", async () => {
    const h = await home(TWO);
    const path = configPath({ HOME: h });
    upsertProject(path, { name: "new", url: "http://n:3000", token: "t-new" }, true);
    expect(readProjects(path)).toEqual([
      { name: "main", url: "http://127.0.0.1:3000/", token: "t-main" },
      { name: "gpu", url: "https://dstack.example.com", token: "t-gpu" },
      { name: "new", url: "http://n:3000", token: "t-new", default: true },
    ]);
    expect(await readFile(path, "utf8")).toContain("# my servers");
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(setDefaultProject(path, "gpu")).toBe(true);
    expect(readProjects(path).filter((p) => p.default).map((p) => p.name)).toEqual(["gpu"]);
    expect(setDefaultProject(path, "missing")).toBe(false);
  });

  it("creates the file when there is none", async () => {
    const h = await home();
    const path = configPath({ HOME: h });
    upsertProject(path, { name: "main", url: "http://x:3000", token: "t" }, true);
    expect(resolveConfig({ env: { HOME: h } })).toMatchObject({ project: "main", serverUrl: "http://x:3000", token: "t" });
  });
});
