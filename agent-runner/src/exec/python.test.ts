import { chmodSync, mkdirSync, mkdtempSync, readlinkSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { PythonError, pythonsOnPath, selectPython } from "./python.js";

/** A fake interpreter that says which one it is. */
function fake(dir: string, name: string): string {
  mkdirSync(dir, { recursive: true });
  const p = join(dir, name);
  writeFileSync(p, `#!/bin/sh\necho "${name} $*"\n`);
  chmodSync(p, 0o755);
  return p;
}

describe("python: version selection", () => {
  it("links the image's python3.N as python and python3 (and pip3.N as pip) first on PATH", () => {
    const root = mkdtempSync(join(tmpdir(), "py-"));
    const usr = join(root, "usr/bin");
    const local = join(root, "usr/local/bin");
    fake(usr, "python3.12");
    fake(usr, "python3");
    const py311 = fake(local, "python3.11");
    const pip311 = fake(local, "pip3.11");
    const shims = join(root, "shims");
    const r = selectPython("3.11", `${usr}:${local}`, shims);
    expect(r).toEqual({ path: `${shims}:${usr}:${local}`, interpreter: py311 });
    expect(readlinkSync(join(shims, "python"))).toBe(py311);
    expect(readlinkSync(join(shims, "pip3"))).toBe(pip311);
    expect(execFileSync("sh", ["-c", "python3 -V; python -c 1; pip install x"], { env: { PATH: `${r.path}:/usr/bin:/bin` }, encoding: "utf8" })).toBe("python3.11 -V\npython3.11 -c 1\npip3.11 install x\n");
    // Picking again replaces the links (a restarted job with another version).
    selectPython("3.12", r.path, shims);
    expect(readlinkSync(join(shims, "python3"))).toBe(join(usr, "python3.12"));
  });

  it("fails naming the version and listing what the image has", () => {
    const root = mkdtempSync(join(tmpdir(), "py-"));
    fake(join(root, "a"), "python3.12");
    fake(join(root, "b"), "python3.9");
    expect(pythonsOnPath(`${root}/a:${root}/b`)).toEqual(["3.9", "3.12"]);
    expect(() => selectPython("3.10", `${root}/a:${root}/b`, join(root, "s"))).toThrow(
      new PythonError(`python 3.10 was requested (python: "3.10"), but the image has no python3.10 on PATH (it has python3.9, python3.12); pick one of those, or an image with Python 3.10`),
    );
    expect(() => selectPython("3.10", join(root, "none"), join(root, "s"))).toThrow(/it has no python3\.x at all/);
    expect(() => selectPython("3", `${root}/a`, join(root, "s"))).toThrow('python: "3" is not a Python version like "3.12"');
  });
});
