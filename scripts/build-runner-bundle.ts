// Builds the portable runner bundle, build/runner-bundle/ (layout: scripts/portable-bundle.ts):
// runner.js (the loader) with app.js and its V8 code cache, bin/node, lib/, bundle.json,
// package.json, and node_modules/node-pty (the PTY addon
// for attachable jobs: its JS and build/Release/pty.node, found by `require("node-pty")` from
// runner.js; it dlopens through the bundled loader's --library-path like Node itself).
//
// Mounted read-only into any image (no Node, no glibc needed) and started as
//   <dir>/lib/ld-linux-x86-64.so.2 --library-path <dir>/lib <dir>/bin/node <dir>/runner.js
// (bundle.json's argv, relative to the bundle dir; the shim prefixes its mount point).
// ssh2 is inlined without its native parts (see `external`).
//
// Skips all work when the inputs' hash matches the stamp of the last build (`--force` rebuilds).
import { cpSync, existsSync, mkdirSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Plugin } from "esbuild";
import { buildPortableBundle, REPO, runAsScript, type PortableBundleSpec } from "./portable-bundle.js";

export { parseLdd } from "./portable-bundle.js";

export const RUNNER_BUNDLE_DIR = join(REPO, "build", "runner-bundle");

/** node-pty's package dir, as agent-runner resolves it. */
const NODE_PTY_DIR = dirname(createRequire(join(REPO, "agent-runner", "package.json")).resolve("node-pty/package.json"));
const NODE_PTY_ADDON = join(NODE_PTY_DIR, "build", "Release", "pty.node");

/** Copies what `require("node-pty")` needs on Linux: package.json, lib/*.js (tests aside), the addon. */
function copyNodePty(bundleDir: string): void {
  if (!existsSync(NODE_PTY_ADDON)) throw new Error(`node-pty's addon ${NODE_PTY_ADDON} is missing (npm install builds it)`);
  const dest = join(bundleDir, "node_modules", "node-pty");
  mkdirSync(join(dest, "build", "Release"), { recursive: true });
  cpSync(join(NODE_PTY_DIR, "package.json"), join(dest, "package.json"));
  cpSync(join(NODE_PTY_DIR, "lib"), join(dest, "lib"), { recursive: true, filter: (src) => !/\.(test\.js|map)$/.test(src) && !/windows|conpty/i.test(src) });
  cpSync(NODE_PTY_ADDON, join(dest, "build", "Release", "pty.node"));
  if (!readdirSync(join(dest, "lib")).includes("index.js")) throw new Error("node-pty's lib/index.js was not copied");
}

/**
 * Leaves `name` out of the bundle but turns `import(name)` into a `require(name)` at run time:
 * runner.js runs the bundle through vm.Script (for its code cache), which has no loader for an
 * import() of a file outside it, while require() is Node's own.
 */
function requireAtRunTime(name: string): Plugin {
  return {
    name: `require-at-run-time:${name}`,
    setup(b) {
      const filter = new RegExp(`^${name.replace(/[-/\\^$*+?.()|[\]{}]/g, "\\$&")}$`);
      b.onResolve({ filter }, (args) => (args.namespace === "run-time-require" ? { path: name, external: true } : { path: name, namespace: "run-time-require" }));
      b.onLoad({ filter: /.*/, namespace: "run-time-require" }, () => ({ contents: `module.exports = require(${JSON.stringify(name)});`, loader: "js" }));
    },
  };
}

export const RUNNER_BUNDLE: PortableBundleSpec = {
  label: "runner",
  outDir: RUNNER_BUNDLE_DIR,
  entry: join(REPO, "agent-runner", "src", "entry.ts"),
  script: "runner.js",
  inputDirs: ["agent-runner/src", "proto/src", "proto/gen"],
  inputFiles: [join(REPO, "agent-runner", "package.json"), fileURLToPath(import.meta.url), NODE_PTY_ADDON],
  // A native addon cannot be inlined: it ships beside runner.js in node_modules/node-pty.
  // ssh2 (git over SSH) requires its optional addons (cpu-features, sshcrypto.node) in try/catch
  // and falls back to pure JavaScript: left out, they are simply not found at run time.
  external: ["cpu-features", "*.node"],
  plugins: [requireAtRunTime("node-pty")],
  extraFiles: (dir) => copyNodePty(dir),
  // A home with no identity and no bootstrap: main() loads everything, says so and exits.
  codeCache: { argv: (scratch) => ["--home", scratch] },
  manifest: async () => {
    const { RUNNER_VERSION } = await import("../agent-runner/src/version.js");
    return { name: "dstack-runner", version: RUNNER_VERSION };
  },
};

/** Builds the bundle unless it is up to date; returns where it is and whether it was rebuilt. */
export function buildRunnerBundle(o: { force?: boolean; log?: (line: string) => void } = {}): Promise<{ dir: string; built: boolean }> {
  return buildPortableBundle(RUNNER_BUNDLE, o);
}

runAsScript(import.meta.url, "build-runner-bundle", (force) => buildRunnerBundle({ force }));
