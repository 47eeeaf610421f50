import { execFile } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
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

describe("the CLI bundle (npm run build:cli)", () => {
  it(
    "builds with a code cache that V8 accepts, and the bundle answers as the sources do",
    async () => {
      const out = await mkdtemp(join(tmpdir(), "dstack-cli-bundle-"));
      await run(process.execPath, [join(root, "node_modules/.bin/tsx"), "scripts/build-cli.ts", "--out", out], { cwd: root });
      // Loaded the way cli/bin/dstack.js loads it: the cache is taken, and --help matches the sources' output.
      const probe = `const b = require(${JSON.stringify(join(root, "cli/bin/load-bundle.cjs"))}).loadBundle(${JSON.stringify(join(out, "dstack.cjs"))});
        b.main(["--help"]).then((code) => console.error(JSON.stringify({ code, cacheRejected: b.cacheRejected })));`;
      const bundled = await run(process.execPath, ["-e", probe], { cwd: root });
      expect(JSON.parse(bundled.stderr.trim().split("\n").at(-1)!)).toEqual({ code: 0, cacheRejected: false });
      const sources = await run(dstackBin, ["--help"], { cwd: root, env: { ...process.env, DSTACK_CLI_NO_BUNDLE: "1" } });
      expect(bundled.stdout).toBe(sources.stdout);
      // vm.Script has no loader for an import() of a module outside the bundle: none may remain.
      expect(await readFile(join(out, "dstack.cjs"), "utf8")).not.toMatch(/\bimport\("/);
      // `dstack ui`'s dashboard is an ES module bundle of its own (Ink loads with a top-level await): it loads.
      const ui = await run(process.execPath, ["--input-type=module", "-e", `const m = await import(${JSON.stringify(pathToFileURL(join(out, "dstack-ui.mjs")).href)}); console.log(typeof m.uiMain);`], { cwd: root });
      expect(ui.stdout.trim()).toBe("function");
    },
    120_000,
  );
});
