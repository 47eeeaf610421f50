// The code a run gets: a tar.gz of a directory (the repo root), minus what .gitignore and
// .dstackignore exclude (at any depth, git's rules per directory) and minus `.git`. The archive
// is deterministic — entries sorted, fixed mtimes, no owner or time fields beyond mtime — so
// the same tree always has the same SHA-256 and the server stores it once.
import { createHash } from "node:crypto";
import { copyFile, lstat, mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, isAbsolute, join, posix as posixPath, resolve, sep } from "node:path";
import { gzipSync } from "node:zlib";
import ignore, { type Ignore } from "ignore";
import { create as createTar } from "tar";
import { DstackError } from "./errors.js";

const IGNORE_FILES = [".gitignore", ".dstackignore"] as const;
/** Never archived: git's own data (the runner gets the tree, not the history). */
const ALWAYS_SKIPPED = new Set([".git"]);
/** Every entry's mtime, so a touch without a change keeps the hash. */
const FIXED_MTIME = new Date(0);

export interface CodeFile {
  /** Path relative to the root, with `/` separators. */
  path: string;
  size: number;
}

export interface CodeArchive {
  /** The tar.gz bytes. */
  blob: Uint8Array;
  /** SHA-256 of blob, lowercase hex. */
  hash: string;
  /** What went in, sorted by path. */
  files: CodeFile[];
}

interface Rules {
  /** Directory the rules' patterns are relative to (posix, relative to the root; "" = root). */
  base: string;
  ig: Ignore;
}

const posix = (p: string) => p.split(sep).join("/");

function ignored(rel: string, isDir: boolean, rules: readonly Rules[]): boolean {
  for (const r of rules) {
    const sub = r.base === "" ? rel : rel.slice(r.base.length + 1);
    if (r.ig.ignores(isDir ? `${sub}/` : sub)) return true;
  }
  return false;
}

async function rulesIn(root: string, relDir: string): Promise<Rules | undefined> {
  let text = "";
  for (const name of IGNORE_FILES) {
    try {
      text += `${await readFile(join(root, relDir, name), "utf8")}\n`;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
  }
  return text.trim() ? { base: relDir, ig: ignore().add(text) } : undefined;
}

/** The files of `root` that go into the archive, sorted by path (symlinks are kept as links). */
export async function listCodeFiles(root: string): Promise<CodeFile[]> {
  const out: CodeFile[] = [];
  async function walk(relDir: string, inherited: readonly Rules[]): Promise<void> {
    const own = await rulesIn(root, relDir);
    const rules = own ? [...inherited, own] : inherited;
    const entries = await readdir(join(root, relDir), { withFileTypes: true });
    for (const entry of entries) {
      if (ALWAYS_SKIPPED.has(entry.name)) continue;
      const rel = relDir === "" ? entry.name : `${relDir}/${entry.name}`;
      const isDir = entry.isDirectory();
      if (ignored(rel, isDir, rules)) continue;
      if (isDir) await walk(rel, rules);
      else if (entry.isFile() || entry.isSymbolicLink()) out.push({ path: rel, size: (await lstat(join(root, rel))).size });
      // Sockets, FIFOs and devices are not code.
    }
  }
  try {
    await walk("", []);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw new DstackError("usage", `${root}: no such directory`);
    throw e;
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Builds the deterministic tar.gz of `root`. */
export async function buildCodeArchive(root: string): Promise<CodeArchive> {
  const files = await listCodeFiles(root);
  const chunks: Buffer[] = [];
  if (files.length > 0) {
    const stream = createTar(
      { cwd: root, gzip: true, portable: true, mtime: FIXED_MTIME, noDirRecurse: true, follow: false },
      files.map((f) => f.path),
    );
    for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  } else {
    // An empty directory still gets a valid (empty) archive: two zero blocks, gzipped.
    chunks.push(gzipSync(Buffer.alloc(1024)));
  }
  const blob = new Uint8Array(Buffer.concat(chunks));
  return { blob, hash: createHash("sha256").update(blob).digest("hex"), files };
}

/** `1.5MB`, `300KB`, `12B`: sizes the way a person reads them. */
export function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1).replace(/\.0$/, "")}MB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1).replace(/\.0$/, "")}KB`;
  return `${n}B`;
}

/** The error for an archive above the server's limit: names the biggest files so the user knows what to ignore. */
export function codeTooLargeError(root: string, archive: CodeArchive, serverMessage: string): DstackError {
  const biggest = [...archive.files].sort((a, b) => b.size - a.size || (a.path < b.path ? -1 : 1)).slice(0, 5);
  const limit = /limit of (\d+) bytes/.exec(serverMessage)?.[1];
  const lines = [
    `The code in ${root} is ${formatBytes(archive.blob.byteLength)} compressed (${archive.files.length} files), above the server's upload limit${limit ? ` of ${formatBytes(Number(limit))}` : ""}.`,
    "Biggest files:",
    ...biggest.map((f) => `  ${formatBytes(f.size).padStart(8)}  ${f.path}`),
    "Exclude what the run does not need in .gitignore or .dstackignore, or ask the server admin to raise DSTACK_SERVER_CODE_UPLOAD_LIMIT.",
  ];
  return new DstackError("code_too_large", lines.join("\n"));
}

/** A stable repo id for a local directory: the same directory gets the same id. */
export function localRepoId(root: string): string {
  return createHash("sha256").update(posix(root)).digest("hex").slice(0, 16);
}

/** A `files:` mapping packed for upload: the archive and where the runner extracts it. */
export interface FilesArchive extends CodeArchive {
  /** The local path, as written in the configuration. */
  localPath: string;
  /** Directory in the container the archive is extracted into (relative = under the working dir). */
  extractTo: string;
}

/**
 * Packs one `files:` mapping. A directory's tree (minus .gitignore/.dstackignore matches and
 * `.git`, as for code) is extracted into the container path; a file is archived under the
 * container path's base name and extracted into its directory, so it lands at exactly that path.
 * `local` is relative to `baseDir` (the configuration's directory) unless absolute; `~` is home.
 */
export async function buildFilesArchive(mapping: { localPath: string; path: string }, baseDir: string, home?: string): Promise<FilesArchive> {
  const expanded = mapping.localPath === "~" || mapping.localPath.startsWith("~/") ? join(home ?? "~", mapping.localPath.slice(1)) : mapping.localPath;
  const local = isAbsolute(expanded) ? expanded : resolve(baseDir, expanded);
  let st;
  try {
    st = await stat(local);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DstackError("usage", `files: ${mapping.localPath}: ${code === "ENOENT" ? `no such file or directory (looked for ${local})` : `cannot read (${code ?? String(e)})`}`);
  }
  if (st.isDirectory()) return { ...(await buildCodeArchive(local)), localPath: mapping.localPath, extractTo: mapping.path };
  if (!st.isFile()) throw new DstackError("usage", `files: ${mapping.localPath}: not a regular file or directory`);
  const name = posixPath.basename(mapping.path);
  if (!name || name === "." || name === ".." || mapping.path.endsWith("/")) {
    throw new DstackError("usage", `files: ${mapping.localPath}:${mapping.path}: the container path of a file must end with a file name`);
  }
  // The entry must carry the container name: pack a copy of the file under that name.
  const stage = await mkdtemp(join(tmpdir(), "dstack-files-"));
  try {
    await copyFile(local, join(stage, name));
    const archive = await buildCodeArchive(stage);
    const parent = posixPath.dirname(mapping.path);
    return { ...archive, files: [{ path: basename(local), size: st.size }], localPath: mapping.localPath, extractTo: parent };
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

/** The error for a `files:` archive above the server's limit, naming the mapping and its biggest files. */
export function filesTooLargeError(archive: FilesArchive, serverMessage: string): DstackError {
  const biggest = [...archive.files].sort((a, b) => b.size - a.size || (a.path < b.path ? -1 : 1)).slice(0, 5);
  const limit = /limit of (\d+) bytes/.exec(serverMessage)?.[1];
  const lines = [
    `files: ${archive.localPath} is ${formatBytes(archive.blob.byteLength)} compressed (${archive.files.length} files), above the server's upload limit${limit ? ` of ${formatBytes(Number(limit))}` : ""}.`,
    "Biggest files:",
    ...biggest.map((f) => `  ${formatBytes(f.size).padStart(8)}  ${f.path}`),
    "Map less (a directory honours .gitignore and .dstackignore), or ask the server admin to raise DSTACK_SERVER_CODE_UPLOAD_LIMIT.",
  ];
  return new DstackError("code_too_large", lines.join("\n"));
}
