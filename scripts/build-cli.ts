// Bundles the `dstack` CLI into one ESM file (build/cli/dstack.mjs) so a command starts in
// ~0.15 s instead of transpiling TypeScript on every run. cli/bin/dstack.js uses the bundle only
// while it is fresh: build/cli/inputs.json lists the repo sources it was made from with their
// mtimes, and any newer or missing source sends the bin back to tsx. Run: npm run build:cli
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build, type Plugin } from "esbuild";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const OUT_DIR = join(REPO, "build", "cli");

// Sources find files next to themselves (package.json, the server's bin) through
// import.meta.url; in one bundle every file would share the bundle's URL, so each keeps its own.
const keepImportMetaUrl: Plugin = {
  name: "keep-import-meta-url",
  setup(b) {
    b.onLoad({ filter: /\.[cm]?ts$/ }, (args) => {
      if (args.path.includes(`${"/"}node_modules${"/"}`)) return undefined;
      const text = readFileSync(args.path, "utf8");
      if (!text.includes("import.meta.url")) return undefined;
      return { contents: text.replaceAll("import.meta.url", JSON.stringify(pathToFileURL(args.path).href)), loader: "ts" };
    });
  },
};

async function main(): Promise<void> {
  mkdirSync(OUT_DIR, { recursive: true });
  const tmp = join(OUT_DIR, "dstack.mjs.tmp");
  const result = await build({
    entryPoints: [join(REPO, "cli", "src", "main.ts")],
    outfile: tmp,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "esm",
    metafile: true,
    logLevel: "warning",
    // Optional at run time and never used by the CLI.
    external: ["react-devtools-core"],
    // CommonJS dependencies inside an ESM bundle still call require().
    banner: { js: 'import { createRequire as __dstackCreateRequire } from "node:module"; const require = __dstackCreateRequire(import.meta.url);' },
    plugins: [keepImportMetaUrl],
  });
  const inputs = Object.keys(result.metafile.inputs)
    .map((p) => resolve(REPO, p))
    .filter((p) => !p.includes("/node_modules/"))
    .map((p) => ({ path: relative(REPO, p), mtimeMs: statSync(p).mtimeMs }));
  renameSync(tmp, join(OUT_DIR, "dstack.mjs"));
  writeFileSync(join(OUT_DIR, "inputs.json"), JSON.stringify({ builtAt: new Date().toISOString(), inputs }) + "\n");
  console.log(`build-cli: build/cli/dstack.mjs from ${inputs.length} sources`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
