// Bundles the `dstack` CLI into one CommonJS file (build/cli/dstack.cjs) plus a V8 code cache
// (dstack.cjs.cache) so a command starts in ~0.15 s instead of transpiling TypeScript on every
// run; the cache spares V8 parsing and compiling the bundle again at each start (~20 % of it).
// cli/bin/dstack.js uses the bundle only while it is fresh: build/cli/inputs.json lists the repo
// sources it was made from with their mtimes, and any newer or missing source sends the bin back
// to tsx. A cache that V8 rejects (another Node version) is ignored. Run: npm run build:cli
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { build, type Plugin } from "esbuild";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");
// --out: somewhere else than build/cli (the tests build there); the bin only looks in build/cli.
const OUT_DIR = resolve(parseArgs({ options: { out: { type: "string" } } }).values.out ?? join(REPO, "build", "cli"));
const BUNDLE = join(OUT_DIR, "dstack.cjs");

// Sources find files next to themselves (package.json, the server's bin) through
// import.meta.url; in one bundle every file would share the bundle's URL, so each keeps its own.
const keepImportMetaUrl: Plugin = {
  name: "keep-import-meta-url",
  setup(b) {
    b.onLoad({ filter: /\.[cm]?tsx?$/ }, (args) => {
      if (args.path.includes(`${"/"}node_modules${"/"}`)) return undefined;
      const text = readFileSync(args.path, "utf8");
      if (!text.includes("import.meta.url")) return undefined;
      return { contents: text.replaceAll("import.meta.url", JSON.stringify(pathToFileURL(args.path).href)), loader: args.path.endsWith("x") ? "tsx" : "ts" };
    });
  },
};

async function main(): Promise<void> {
  mkdirSync(OUT_DIR, { recursive: true });
  const tmp = `${BUNDLE}.tmp`;
  const result = await build({
    entryPoints: [join(REPO, "cli", "src", "main.ts")],
    outfile: tmp,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    metafile: true,
    logLevel: "warning",
    // Optional at run time and never used by the CLI.
    external: ["react-devtools-core"],
    plugins: [keepImportMetaUrl],
  });
  const sources = (meta: { inputs: Record<string, unknown> }) =>
    Object.keys(meta.inputs)
      .filter((p) => !p.includes(":")) // esbuild's virtual modules (namespace:path)
      .map((p) => resolve(REPO, p))
      .filter((p) => !p.includes("/node_modules/"))
      .map((p) => ({ path: relative(REPO, p), mtimeMs: statSync(p).mtimeMs }));
  const inputs = sources(result.metafile);
  renameSync(tmp, BUNDLE);
  const uiInputs = await buildUi();
  // The cache is made by the loader the bin uses, after a run of `--version`: it then holds the
  // code of every module's top level (what each start evaluates).
  rmSync(`${BUNDLE}.cache`, { force: true });
  const loader = join(REPO, "cli", "bin", "load-bundle.cjs");
  const made = spawnSync(process.execPath, ["-e", `require(${JSON.stringify(loader)}).loadBundle(${JSON.stringify(BUNDLE)}, { writeCache: true }).main(["--version"])`], { stdio: ["ignore", "ignore", "inherit"] });
  if (made.status !== 0) throw new Error(`making the code cache failed (exit ${made.status})`);
  writeFileSync(join(OUT_DIR, "inputs.json"), JSON.stringify({ builtAt: new Date().toISOString(), inputs, uiInputs: sources({ inputs: uiInputs }) }) + "\n");
  rmSync(join(OUT_DIR, "dstack.mjs"), { force: true }); // the ESM bundle of earlier builds
  console.log(`build-cli: ${relative(REPO, BUNDLE)} (+ code cache) from ${inputs.length} sources, ${relative(REPO, UI_BUNDLE)}`);
}

// `dstack ui` (cli/bin/dstack-ui.js) runs the Ink dashboard in a process of its own: Ink's layout
// engine loads with a top-level await, which only an ES module can hold. Bundled, it starts in
// ~0.3 s instead of ~2 s through tsx; the bin uses it while its sources (uiInputs) are unchanged.
const UI_BUNDLE = join(OUT_DIR, "dstack-ui.mjs");

// Ink's devtools module imports react-devtools-core, which is not installed and only loaded in
// development mode (DEV=true): it gets an empty stand-in.
const noDevtools: Plugin = {
  name: "no-react-devtools",
  setup(b) {
    b.onResolve({ filter: /^react-devtools-core$/ }, () => ({ path: "react-devtools-core", namespace: "stub" }));
    b.onLoad({ filter: /.*/, namespace: "stub" }, () => ({ contents: "export default { initialize() {}, connectToDevTools() {} };", loader: "js" }));
  },
};

async function buildUi(): Promise<Record<string, unknown>> {
  const tmp = `${UI_BUNDLE}.tmp`;
  const result = await build({
    entryPoints: [join(REPO, "cli", "src", "ui", "main.tsx")],
    outfile: tmp,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "esm",
    jsx: "automatic",
    metafile: true,
    logLevel: "warning",
    // Bundled CommonJS packages (react) may require Node's own modules.
    banner: { js: 'import { createRequire as __dstackCreateRequire } from "node:module"; const require = __dstackCreateRequire(import.meta.url);' },
    plugins: [keepImportMetaUrl, noDevtools],
  });
  renameSync(tmp, UI_BUNDLE);
  return result.metafile.inputs;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
