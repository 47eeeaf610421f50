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
  const inputs = Object.keys(result.metafile.inputs)
    .map((p) => resolve(REPO, p))
    .filter((p) => !p.includes("/node_modules/"))
    .map((p) => ({ path: relative(REPO, p), mtimeMs: statSync(p).mtimeMs }));
  renameSync(tmp, BUNDLE);
  // The cache is made by the loader the bin uses, after a run of `--version`: it then holds the
  // code of every module's top level (what each start evaluates).
  rmSync(`${BUNDLE}.cache`, { force: true });
  const loader = join(REPO, "cli", "bin", "load-bundle.cjs");
  const made = spawnSync(process.execPath, ["-e", `require(${JSON.stringify(loader)}).loadBundle(${JSON.stringify(BUNDLE)}, { writeCache: true }).main(["--version"])`], { stdio: ["ignore", "ignore", "inherit"] });
  if (made.status !== 0) throw new Error(`making the code cache failed (exit ${made.status})`);
  writeFileSync(join(OUT_DIR, "inputs.json"), JSON.stringify({ builtAt: new Date().toISOString(), inputs }) + "\n");
  rmSync(join(OUT_DIR, "dstack.mjs"), { force: true }); // the ESM bundle of earlier builds
  console.log(`build-cli: ${relative(REPO, BUNDLE)} (+ code cache) from ${inputs.length} sources`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
