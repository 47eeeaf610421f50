// Builds the portable host agent, build/shim-bundle/ (layout: scripts/portable-bundle.ts):
//
//   shim.js          esbuild bundle of agent-shim/src/main.ts (dockerode, ssh2 and the link inside)
//   bin/node, lib/   this Node binary, its shared libraries and the dynamic loader
//   bin/dstack-shim  sh start script: runs shim.js through the bundled loader, passing its arguments
//
// What an SSH fleet copies to a host (with the runner bundle): the host needs no Node and no
// particular glibc. ssh2's optional native parts (its crypto addon, cpu-features) are left out:
// ssh2 falls back to pure JavaScript without them.
//
// Skips all work when the inputs' hash matches the stamp of the last build (`--force` rebuilds).
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Plugin } from "esbuild";
import { buildPortableBundle, REPO, runAsScript, type PortableBundleSpec } from "./portable-bundle.js";

export const SHIM_BUNDLE_DIR = join(REPO, "build", "shim-bundle");

const shimVersion = (): string => (JSON.parse(readFileSync(join(REPO, "agent-shim", "package.json"), "utf8")) as { version: string }).version;

// version.ts reads agent-shim/package.json next to its source; the bundle has the version baked in.
const bakedVersion: Plugin = {
  name: "shim-version",
  setup(b) {
    b.onLoad({ filter: /agent-shim[\\/]src[\\/]shim[\\/]version\.ts$/ }, () => ({
      contents: `export const SHIM_VERSION = ${JSON.stringify(shimVersion())};\n`,
      loader: "ts",
    }));
  },
};

/** The start script: finds its bundle from its own path, so the bundle can sit anywhere. */
export function startScript(loader: string): string {
  return [
    "#!/bin/sh",
    "# dstack-shim from the portable bundle: Node, its libraries and loader are in this directory.",
    'here=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd) || exit 1',
    `exec "$here/lib/${loader}" --library-path "$here/lib" "$here/bin/node" "$here/shim.js" "$@"`,
    "",
  ].join("\n");
}

export const SHIM_BUNDLE: PortableBundleSpec = {
  label: "shim",
  outDir: SHIM_BUNDLE_DIR,
  entry: join(REPO, "scripts", "shim-bundle-entry.ts"),
  script: "shim.js",
  inputDirs: ["agent-shim/src", "proto/src", "proto/gen"],
  inputFiles: [join(REPO, "agent-shim", "package.json"), join(REPO, "scripts", "shim-bundle-entry.ts"), fileURLToPath(import.meta.url)],
  // ssh2 requires both in try/catch and works without them; node-pty is not used by the shim.
  external: ["cpu-features", "*.node", "node-pty"],
  plugins: [bakedVersion],
  // import.meta is empty in CJS: the few uses (default runner bundle path, systemd-unit's bin)
  // get explicit values from the start script and the installer instead.
  logLevel: "error",
  manifest: async () => ({ name: "dstack-shim", version: shimVersion() }),
  extraFiles: (dir, loader) => {
    writeFileSync(join(dir, "bin", "dstack-shim"), startScript(loader));
    chmodSync(join(dir, "bin", "dstack-shim"), 0o755);
  },
};

export function buildShimBundle(o: { force?: boolean; log?: (line: string) => void } = {}): Promise<{ dir: string; built: boolean }> {
  return buildPortableBundle(SHIM_BUNDLE, o);
}

runAsScript(import.meta.url, "build-shim-bundle", (force) => buildShimBundle({ force }));
