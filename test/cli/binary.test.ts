import { execFile } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = join(import.meta.dirname, "../..");
// The same file `npx dstack` runs: npm links the cli package's bin into the root's node_modules/.bin.
const dstackBin = join(root, "node_modules/.bin/dstack");

describe("the installed dstack binary", () => {
  it("answers --help through the workspace's bin link", async () => {
    const { stdout } = await run(dstackBin, ["--help"], { cwd: root });
    expect(stdout).toMatch(/Usage: dstack/);
    expect(stdout).toMatch(/apply/);
  });

  it("validates an example and fails with exit code 2 and a located error on a bad one", async () => {
    const ok = await run(dstackBin, ["apply", "-f", "examples/hello.dstack.yml", "--dry-run"], { cwd: root });
    expect(ok.stdout).toContain("Configuration is valid");
    const dir = await mkdtemp(join(tmpdir(), "dstack-bin-"));
    await writeFile(join(dir, "bad.dstack.yml"), "type: task\ncommands: [echo]\nimage: [1, 2]\n");
    const bad = await run(dstackBin, ["apply", "-f", "bad.dstack.yml", "--dry-run"], { cwd: dir }).catch((e: unknown) => e);
    expect(bad).toMatchObject({ code: 2 });
    expect((bad as { stderr: string }).stderr).toMatch(/^bad\.dstack\.yml:3:8:/);
    expect((bad as { stderr: string }).stderr).not.toMatch(/\bat .*\.ts:\d+/); // no stack trace
  });
});
