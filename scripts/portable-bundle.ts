// A portable Node program: one esbuild bundle plus this Node binary, the shared libraries it
// links and the dynamic loader, so it runs on any x86-64 (or arm64) Linux with no Node and no
// particular glibc installed. Used by build-runner-bundle.ts and build-shim-bundle.ts:
//
//   <script>      esbuild bundle of the entry (CommonJS, node20), no node_modules needed; or, with
//                 `codeCache`, a small loader that runs app.js (the bundle) through vm.Script with
//                 app.js.cache, a V8 code cache made at build time by this very Node binary, so a
//                 start skips parsing and compiling the bundle (~50 ms of CPU for the runner)
//   bin/node      a copy of this Node binary
//   lib/          the shared libraries `ldd bin/node` lists, and the dynamic loader
//   bundle.json   name, version, input hash, and the argv that starts the program
//   package.json  {"type": "commonjs"}, so the script loads as CJS wherever the bundle sits
//
// Started as <dir>/lib/ld-linux-x86-64.so.2 --library-path <dir>/lib <dir>/bin/node <dir>/<script>.
// The loader is named by the binary's own PT_INTERP, so an arm64 build gets ld-linux-aarch64.so.1.
//
// Skips all work when the inputs' hash matches the stamp of the last build (`force` rebuilds).
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build, version as esbuildVersion, type Plugin } from "esbuild";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");

export interface PortableBundleSpec {
  /** For log lines, e.g. "runner". */
  label: string;
  outDir: string;
  entry: string;
  /** The bundle's file name, e.g. "runner.js". */
  script: string;
  /** Directories (relative to the repo) whose .ts/.js/.json files (tests aside) feed the bundle. */
  inputDirs: string[];
  /** More files whose change changes the bundle (absolute). */
  inputFiles: string[];
  /** Modules left out of the bundle (native addons). */
  external: string[];
  plugins?: Plugin[];
  /** esbuild's log level; default "warning". */
  logLevel?: "warning" | "error";
  /** Manifest fields besides node, arch, inputs and argv. */
  manifest: () => Promise<Record<string, unknown>>;
  /**
   * Arguments that load the program's code and make it exit at once without side effects (the
   * runner: a home with no identity). Given: the bundle gets a V8 code cache made by such a run.
   */
  codeCache?: { argv: (scratchDir: string) => string[] };
  /** Writes extra files into the bundle dir being built; gets the loader's file name. */
  extraFiles?: (dir: string, loader: string) => void;
}

function inputFiles(spec: PortableBundleSpec): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        if (e.name !== "node_modules") walk(p);
      } else if (/\.(ts|js|json)$/.test(e.name) && !/\.test\.ts$/.test(e.name)) out.push(p);
    }
  };
  for (const d of spec.inputDirs) walk(join(REPO, d));
  out.push(join(REPO, "package-lock.json"), fileURLToPath(import.meta.url), ...spec.inputFiles);
  return out.sort();
}

function inputHash(spec: PortableBundleSpec): string {
  const h = createHash("sha256");
  for (const f of inputFiles(spec)) h.update(relative(REPO, f)).update("\0").update(readFileSync(f)).update("\0");
  const node = statSync(process.execPath);
  h.update(`node ${process.execPath} ${process.version} ${node.size} ${node.mtimeMs}\0esbuild ${esbuildVersion}\0${process.arch}`);
  return h.digest("hex");
}

/** `soname → path` for every library the binary needs, plus the loader (its key starts with "/"). */
export function parseLdd(text: string): { libs: Map<string, string>; loader: string | null } {
  const libs = new Map<string, string>();
  let loader: string | null = null;
  for (const line of text.split("\n")) {
    const withPath = /^\s*(\S+)\s+=>\s+(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (withPath) {
      libs.set(withPath[1]!, withPath[2]!);
      continue;
    }
    const interp = /^\s*(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (interp) loader = interp[1]!;
    else if (/=>\s+not found/.test(line)) throw new Error(`ldd: ${line.trim()}`);
  }
  return { libs, loader };
}

function listLibraries(binary: string): { libs: Map<string, string>; loader: string } {
  let text: string;
  try {
    text = execFileSync("ldd", [binary], { encoding: "utf8" });
  } catch {
    // No ldd: glibc's loader lists the same with --list.
    const guess = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"].find(existsSync);
    if (!guess) throw new Error("neither ldd nor a known dynamic loader is available to list Node's libraries");
    text = execFileSync(guess, ["--list", binary], { encoding: "utf8" });
  }
  const { libs, loader } = parseLdd(text);
  if (!loader) throw new Error(`${binary} names no dynamic loader (a static build needs no bundle libs)`);
  return { libs, loader };
}

/** Builds the bundle unless it is up to date; returns where it is and whether it was rebuilt. */
export async function buildPortableBundle(
  spec: PortableBundleSpec,
  o: { force?: boolean; log?: (line: string) => void } = {},
): Promise<{ dir: string; built: boolean }> {
  const OUT = spec.outDir;
  const STAMP = join(OUT, ".stamp");
  const log = o.log ?? ((l: string) => console.log(l));
  const started = Date.now();
  const hash = inputHash(spec);
  if (!o.force && existsSync(STAMP) && readFileSync(STAMP, "utf8").trim() === hash && existsSync(join(OUT, spec.codeCache ? APP : spec.script)) && existsSync(join(OUT, "bin", "node"))) {
    log(`${spec.label} bundle up to date: ${relative(process.cwd(), OUT) || OUT} (${Date.now() - started} ms)`);
    return { dir: OUT, built: false };
  }
  const tmp = `${OUT}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(join(tmp, "bin"), { recursive: true });
  mkdirSync(join(tmp, "lib"), { recursive: true });
  try {
    const result = await build({
      entryPoints: [spec.entry],
      outfile: join(tmp, spec.codeCache ? APP : spec.script),
      bundle: true,
      platform: "node",
      target: "node20",
      // CommonJS: the bundle dir has no package.json, and CJS deps' dynamic require() keeps working.
      format: "cjs",
      external: spec.external,
      plugins: spec.plugins ?? [],
      legalComments: "none",
      logLevel: spec.logLevel ?? "warning",
      metafile: true,
    });
    if (result.errors.length) throw new Error("esbuild failed");

    copyFileSync(process.execPath, join(tmp, "bin", "node"));
    chmodSync(join(tmp, "bin", "node"), 0o755);
    const { libs, loader } = listLibraries(join(tmp, "bin", "node"));
    // copyFileSync follows symlinks: lib/ holds real files under the names the binary asks for.
    for (const [soname, path] of libs) copyFileSync(path, join(tmp, "lib", soname));
    copyFileSync(loader, join(tmp, "lib", basename(loader)));
    chmodSync(join(tmp, "lib", basename(loader)), 0o755);

    const manifest = {
      ...(await spec.manifest()),
      node: process.version,
      arch: process.arch,
      inputs: hash,
      // Relative to the bundle dir.
      argv: [`lib/${basename(loader)}`, "--library-path", "lib", "bin/node", spec.script],
    };
    writeFileSync(join(tmp, "bundle.json"), JSON.stringify(manifest, null, 2) + "\n");
    // The script is CommonJS wherever the bundle sits (even under this repo's "type": "module").
    writeFileSync(join(tmp, "package.json"), JSON.stringify({ type: "commonjs" }) + "\n");
    spec.extraFiles?.(tmp, basename(loader));
    if (spec.codeCache) makeCodeCache(tmp, spec.script, spec.codeCache.argv);
    writeFileSync(join(tmp, ".stamp"), hash + "\n");
    rmSync(OUT, { recursive: true, force: true });
    try {
      renameSync(tmp, OUT);
    } catch (e) {
      // A concurrent build (two test files) got there first with the same inputs: keep its result.
      if (!(existsSync(STAMP) && readFileSync(STAMP, "utf8").trim() === hash)) throw e;
      rmSync(tmp, { recursive: true, force: true });
    }
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const size = (p: string): number => {
    const s = statSync(p);
    return s.isDirectory() ? readdirSync(p).reduce((n, e) => n + size(join(p, e)), 0) : s.size;
  };
  const mb = (n: number) => `${(n / 1048576).toFixed(1)} MB`;
  log(
    `${spec.label} bundle built in ${Date.now() - started} ms: ${relative(process.cwd(), OUT) || OUT} ` +
      `(${spec.codeCache ? APP : spec.script} ${mb(size(join(OUT, spec.codeCache ? APP : spec.script)))}${spec.codeCache ? ` + code cache ${mb(size(join(OUT, `${APP}.cache`)))}` : ""}, bin ${mb(size(join(OUT, "bin")))}, lib ${mb(size(join(OUT, "lib")))})`,
  );
  return { dir: OUT, built: true };
}

const APP = "app.js";

// The loader <script> becomes when the bundle has a code cache. `DSTACK_BUNDLE_MAKE_CACHE=1` makes
// it write the cache when the process exits (after the program's code ran), at build time only.
const CACHED_LOADER = `"use strict";
// Runs app.js (the esbuild bundle) as Node would run it, through vm.Script with V8's code cache
// app.js.cache when it is there and fits this Node; otherwise V8 compiles app.js as usual.
const { readFileSync, writeFileSync } = require("node:fs");
const { createRequire, wrap } = require("node:module");
const { join } = require("node:path");
const { Script } = require("node:vm");
const app = join(__dirname, "${APP}");
const cacheFile = app + ".cache";
const making = process.env.DSTACK_BUNDLE_MAKE_CACHE === "1";
let cachedData;
if (!making) {
  try {
    cachedData = readFileSync(cacheFile);
  } catch {
    cachedData = undefined;
  }
}
// No import() of a module outside app.js may remain in it: vm.Script has no loader for one.
const script = new Script(wrap(readFileSync(app, "utf8")), { filename: app, cachedData });
if (making) process.on("exit", () => writeFileSync(cacheFile, script.createCachedData()));
const appModule = { exports: {}, filename: app, id: app };
script.runInThisContext()(appModule.exports, createRequire(app), appModule, app, __dirname);
`;

/** Writes the loader as `script` and makes app.js.cache by running it once with this Node. */
function makeCodeCache(dir: string, script: string, argv: (scratchDir: string) => string[]): void {
  writeFileSync(join(dir, script), CACHED_LOADER);
  const scratch = join(dir, ".cache-run");
  mkdirSync(scratch, { recursive: true });
  try {
    // Exits non-zero by design (nothing to serve); what matters is the cache it leaves.
    spawnSync(process.execPath, [join(dir, script), ...argv(scratch)], { env: { ...process.env, DSTACK_BUNDLE_MAKE_CACHE: "1" }, stdio: "ignore", timeout: 30_000 });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  if (!existsSync(join(dir, `${APP}.cache`))) throw new Error(`making ${APP}.cache failed`);
}

/** Runs `build` when the importing script is the one node was started with. */
export function runAsScript(metaUrl: string, name: string, build: (force: boolean) => Promise<unknown>): void {
  if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(metaUrl)) {
    build(process.argv.includes("--force")).catch((e: unknown) => {
      console.error(`${name}: ${e instanceof Error ? e.message : String(e)}`);
      process.exit(1);
    });
  }
}
