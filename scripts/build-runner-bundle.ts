// Builds the portable runner bundle, build/runner-bundle/ (layout: scripts/portable-bundle.ts):
// runner.js, bin/node, lib/, bundle.json, package.json.
//
// Mounted read-only into any image (no Node, no glibc needed) and started as
//   <dir>/lib/ld-linux-x86-64.so.2 --library-path <dir>/lib <dir>/bin/node <dir>/runner.js
// (bundle.json's argv, relative to the bundle dir; the shim prefixes its mount point).
//
// Skips all work when the inputs' hash matches the stamp of the last build (`--force` rebuilds).
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildPortableBundle, REPO, runAsScript, type PortableBundleSpec } from "./portable-bundle.js";

export { parseLdd } from "./portable-bundle.js";

export const RUNNER_BUNDLE_DIR = join(REPO, "build", "runner-bundle");

export const RUNNER_BUNDLE: PortableBundleSpec = {
  label: "runner",
  outDir: RUNNER_BUNDLE_DIR,
  entry: join(REPO, "agent-runner", "src", "entry.ts"),
  script: "runner.js",
  inputDirs: ["agent-runner/src", "proto/src", "proto/gen"],
  inputFiles: [join(REPO, "agent-runner", "package.json"), fileURLToPath(import.meta.url)],
  // node-pty's native addon is not bundled; the runner uses plain pipes.
  external: ["node-pty"],
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
