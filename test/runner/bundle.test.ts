// The portable runner bundle as the shim mounts it: runner.js is a small loader that runs app.js
// through vm.Script with a V8 code cache made at build time by the bundle's own Node.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { buildRunnerBundle } from "../../scripts/build-runner-bundle.js";

let dir: string;
const bundleNode = (args: string[]) =>
  execFileSync(join(dir, "lib", "ld-linux-x86-64.so.2"), ["--library-path", join(dir, "lib"), join(dir, "bin", "node"), ...args], { encoding: "utf8" });

beforeAll(async () => {
  dir = (await buildRunnerBundle({ log: () => {} })).dir;
}, 120_000);

describe("the runner bundle's code cache", () => {
  it("is accepted by the bundle's Node for app.js", () => {
    const probe = `const vm = require("node:vm"), fs = require("node:fs"), m = require("node:module");
      const app = ${JSON.stringify(join(dir, "app.js"))};
      const s = new vm.Script(m.wrap(fs.readFileSync(app, "utf8")), { filename: app, cachedData: fs.readFileSync(app + ".cache") });
      process.stdout.write(String(s.cachedDataRejected));`;
    expect(bundleNode(["-e", probe])).toBe("false");
  });

  it("leaves no import() of a module outside app.js (vm.Script could not load it), and runner.js still answers --version", () => {
    // esbuild prints every string in double quotes (comments keep theirs).
    expect(readFileSync(join(dir, "app.js"), "utf8")).not.toMatch(/\bimport\("/);
    expect(bundleNode([join(dir, "runner.js"), "--version"])).toMatch(/^dstack-runner \d+\.\d+\.\d+\n$/);
  });
});
