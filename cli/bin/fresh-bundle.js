// The freshness rule both `dstack` launchers share: a bundle in build/cli is used only while every
// source listed for it in build/cli/inputs.json (written by `npm run build:cli`) keeps the mtime it
// had when bundled; otherwise the launcher runs the TypeScript sources through tsx.
import { readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The bundle's path if it is fresh, else null. `inputsKey`: its list in inputs.json. */
export function freshBundle(inputsKey, bundleName) {
  if (process.env.DSTACK_CLI_NO_BUNDLE) return null;
  try {
    const inputs = JSON.parse(readFileSync(join(repo, "build", "cli", "inputs.json"), "utf8"))[inputsKey];
    if (!Array.isArray(inputs) || inputs.length === 0) return null;
    for (const i of inputs) if (statSync(join(repo, i.path)).mtimeMs !== i.mtimeMs) return null;
    const bundle = join(repo, "build", "cli", bundleName);
    statSync(bundle);
    return bundle;
  } catch {
    return null;
  }
}
