// Applies a `git diff --binary` to a working tree without git: text hunks (with offsets, no fuzz,
// as `git apply`), new and deleted files, renames and copies, mode changes, symlinks and git's
// binary patches (literal and delta). Everything is computed from the pre-image first and written
// after, so a diff that does not apply leaves the tree untouched.
//
// Files and the diff are handled as latin1 strings: one char per byte, so any encoding survives.
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join, normalize, sep } from "node:path";
import { inflateSync } from "node:zlib";

export class PatchError extends Error {
  override name = "PatchError";
}

interface HunkLine {
  op: " " | "-" | "+";
  /** The line with its "\n", unless "\ No newline at end of file" followed it. */
  text: string;
}

interface Hunk {
  oldStart: number;
  oldLines: number;
  lines: HunkLine[];
}

interface BinaryPatch {
  kind: "literal" | "delta";
  size: number;
  data: Buffer;
}

export interface FilePatch {
  /** null = the file is new (/dev/null). */
  oldPath: string | null;
  /** null = the file is deleted. */
  newPath: string | null;
  oldMode?: number;
  newMode?: number;
  /** The old path stays (copy), or goes (rename). */
  copy: boolean;
  hunks: Hunk[];
  binary?: BinaryPatch | "no-data";
}

/** Undoes git's C-style quoting of a path ("a/sp\303\244ce\n"), or returns it as is. */
function unquote(s: string): string {
  if (!s.startsWith('"')) return s;
  let out = "";
  for (let i = 1; i < s.length; i++) {
    const c = s[i]!;
    if (c === '"') return out;
    if (c !== "\\") {
      out += c;
      continue;
    }
    const n = s[++i]!;
    if (/[0-7]/.test(n)) {
      out += String.fromCharCode(parseInt(s.slice(i, i + 3), 8));
      i += 2;
    } else out += ({ n: "\n", t: "\t", r: "\r", a: "\x07", b: "\b", f: "\f", v: "\v" } as Record<string, string>)[n] ?? n;
  }
  throw new PatchError(`unterminated quoted path ${s}`);
}

/** `a/x` → `x`; "/dev/null" → null. A name with spaces may end in a tab git adds. */
function stripPrefix(raw: string): string | null {
  const p = unquote(raw.startsWith('"') ? raw : raw.replace(/\t.*$/, ""));
  if (p === "/dev/null") return null;
  const slash = p.indexOf("/");
  return fsName(slash >= 0 ? p.slice(slash + 1) : p);
}

/** Paths in the diff are bytes (latin1 here); the file system gets them as UTF-8 names. */
const fsName = (p: string): string => Buffer.from(p, "latin1").toString("utf8");

/** The two names of `diff --git a/x b/y` when no ---/+++ or rename lines say them (mode changes, binaries). */
function namesFromHeader(rest: string): [string, string] {
  if (rest.startsWith('"')) {
    const end = rest.indexOf('" ', 1);
    const a = rest.slice(0, end + 1);
    return [stripPrefix(a)!, stripPrefix(rest.slice(end + 2))!];
  }
  // Same name on both sides (the only case git leaves unmarked): "a/N b/N".
  const half = (rest.length - 1) / 2;
  const a = rest.slice(0, half);
  const b = rest.slice(half + 1);
  if (Number.isInteger(half) && a.slice(a.indexOf("/") + 1) === b.slice(b.indexOf("/") + 1)) return [stripPrefix(a)!, stripPrefix(b)!];
  const m = /^(\S+) (\S+)$/.exec(rest);
  if (m) return [stripPrefix(m[1]!)!, stripPrefix(m[2]!)!];
  throw new PatchError(`cannot read the file names of 'diff --git ${rest}'`);
}

const B85 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";
const B85_VALUE = new Map([...B85].map((c, i) => [c, i]));

/** Decodes one line of a GIT binary patch (length char, then base85). */
function decodeBase85Line(line: string): Buffer {
  const l = line.charCodeAt(0);
  const len = l >= 65 && l <= 90 ? l - 64 : l >= 97 && l <= 122 ? l - 96 + 26 : -1;
  if (len < 0) throw new PatchError(`bad line in a binary patch: ${line.slice(0, 20)}`);
  const out = Buffer.alloc(Math.ceil(len / 4) * 4);
  for (let i = 1, o = 0; o < out.length; i += 5, o += 4) {
    let acc = 0;
    for (let k = 0; k < 5; k++) {
      const v = B85_VALUE.get(line[i + k] ?? "");
      if (v === undefined) throw new PatchError("bad character in a binary patch");
      acc = acc * 85 + v;
    }
    out.writeUInt32BE(acc >>> 0, o);
  }
  return out.subarray(0, len);
}

/** Applies a git delta (varint sizes, then copy/insert ops) to `base`. */
export function applyGitDelta(base: Buffer, delta: Buffer): Buffer {
  let i = 0;
  const varint = () => {
    let v = 0;
    let shift = 0;
    let b: number;
    do {
      b = delta[i++]!;
      v |= (b & 0x7f) << shift;
      shift += 7;
    } while (b & 0x80);
    return v;
  };
  if (varint() !== base.length) throw new PatchError("the binary delta was made for another version of the file");
  const out = Buffer.alloc(varint());
  let o = 0;
  while (i < delta.length) {
    const op = delta[i++]!;
    if (op & 0x80) {
      let off = 0;
      let size = 0;
      for (let k = 0; k < 4; k++) if (op & (1 << k)) off |= delta[i++]! << (8 * k);
      for (let k = 0; k < 3; k++) if (op & (1 << (4 + k))) size |= delta[i++]! << (8 * k);
      if (size === 0) size = 0x10000;
      base.copy(out, o, off >>> 0, (off >>> 0) + size);
      o += size;
    } else if (op > 0) {
      delta.copy(out, o, i, i + op);
      o += op;
      i += op;
    } else throw new PatchError("bad opcode in a binary delta");
  }
  if (o !== out.length) throw new PatchError("the binary delta has the wrong length");
  return out;
}

/** Parses a git-style unified diff (latin1 text). */
export function parsePatch(text: string): FilePatch[] {
  const lines = text.split("\n");
  const out: FilePatch[] = [];
  let cur: FilePatch | null = null;
  let header: [string, string] | null = null;
  let i = 0;
  const finishHeaderNames = () => {
    if (!cur || !header) return;
    // Names only from the `diff --git` line: a mode change or binary with no ---/+++.
    if (cur.oldPath === undefined) cur.oldPath = header[0];
    if (cur.newPath === undefined) cur.newPath = header[1];
  };
  while (i < lines.length) {
    const line = lines[i]!;
    if (line.startsWith("diff --git ")) {
      finishHeaderNames();
      header = namesFromHeader(line.slice("diff --git ".length));
      cur = { oldPath: undefined as unknown as string, newPath: undefined as unknown as string, copy: false, hunks: [] };
      out.push(cur);
      i++;
      continue;
    }
    if (!cur) {
      i++; // text before the first diff (a commit message) is ignored, as git apply does
      continue;
    }
    let m: RegExpExecArray | null;
    if ((m = /^(old|new|deleted file|new file) mode (\d+)$/.exec(line))) {
      const mode = parseInt(m[2]!, 8);
      if (m[1] === "old" || m[1] === "deleted file") cur.oldMode = mode;
      else cur.newMode = mode;
      if (m[1] === "deleted file") cur.newPath = null;
      if (m[1] === "new file") cur.oldPath = null;
    } else if ((m = /^(rename|copy) (from|to) (.*)$/.exec(line))) {
      const p = fsName(unquote(m[3]!));
      if (m[2] === "from") cur.oldPath = p;
      else cur.newPath = p;
      if (m[1] === "copy") cur.copy = true;
    } else if (line.startsWith("--- ")) {
      const p = stripPrefix(line.slice(4));
      if (cur.oldPath === undefined || p === null) cur.oldPath = p;
    } else if (line.startsWith("+++ ")) {
      const p = stripPrefix(line.slice(4));
      if (cur.newPath === undefined || p === null) cur.newPath = p;
    } else if ((m = /^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@/.exec(line))) {
      const hunk: Hunk = { oldStart: Number(m[1]), oldLines: m[2] === undefined ? 1 : Number(m[2]), lines: [] };
      let oldLeft = hunk.oldLines;
      let newLeft = m[4] === undefined ? 1 : Number(m[4]);
      i++;
      while (oldLeft > 0 || newLeft > 0 || lines[i]?.startsWith("\\")) {
        const l = lines[i];
        if (l === undefined) throw new PatchError(`the diff ends inside a hunk of ${cur.newPath ?? cur.oldPath}`);
        if (l.startsWith("\\")) {
          // "\ No newline at end of file": the line before has no "\n".
          const prev = hunk.lines.at(-1);
          if (prev) prev.text = prev.text.slice(0, -1);
          i++;
          continue;
        }
        const op = (l === "" ? " " : l[0]) as HunkLine["op"];
        if (op !== " " && op !== "-" && op !== "+") throw new PatchError(`bad line in a hunk of ${cur.newPath ?? cur.oldPath}: ${l.slice(0, 40)}`);
        hunk.lines.push({ op, text: l.slice(1) + "\n" });
        if (op !== "+") oldLeft--;
        if (op !== "-") newLeft--;
        i++;
      }
      cur.hunks.push(hunk);
      continue;
    } else if (line === "GIT binary patch") {
      const mm = /^(literal|delta) (\d+)$/.exec(lines[i + 1] ?? "");
      if (!mm) throw new PatchError(`bad binary patch of ${cur.newPath ?? cur.oldPath}`);
      const parts: Buffer[] = [];
      i += 2;
      while (i < lines.length && lines[i] !== "") parts.push(decodeBase85Line(lines[i++]!));
      cur.binary = { kind: mm[1] as BinaryPatch["kind"], size: Number(mm[2]), data: inflateSync(Buffer.concat(parts)) };
      // Skip the reverse patch that follows.
      i++;
      if (/^(literal|delta) \d+$/.test(lines[i] ?? "")) {
        while (i < lines.length && lines[i] !== "") i++;
      }
      continue;
    } else if (/^Binary files .* differ$/.test(line)) {
      cur.binary = "no-data";
    }
    i++;
  }
  finishHeaderNames();
  return out;
}

const isSymlinkMode = (mode: number | undefined) => mode !== undefined && (mode & 0o170000) === 0o120000;

/** A path from the diff inside `root`, or an error naming it. */
function inside(root: string, p: string): string {
  const n = normalize(p);
  if (n.startsWith("/") || n === ".." || n.startsWith(`..${sep}`) || n.split(sep).includes(".git")) throw new PatchError(`the diff names a path outside the repo: ${p}`);
  return join(root, n);
}

function splitLines(content: string): string[] {
  return content.match(/[^\n]*\n|[^\n]+$/g) ?? [];
}

function applyHunks(path: string, content: string, hunks: Hunk[]): string {
  const file = splitLines(content);
  let floor = 0; // hunks apply in order, never before the previous one's end
  let shift = 0; // lines added minus removed so far
  hunks.forEach((h, n) => {
    const before = h.lines.filter((l) => l.op !== "+").map((l) => l.text);
    const after = h.lines.filter((l) => l.op !== "-").map((l) => l.text);
    const expected = (h.oldLines === 0 ? h.oldStart : h.oldStart - 1) + shift;
    const fits = (p: number) => p >= floor && p + before.length <= file.length && before.every((t, k) => file[p + k] === t);
    let at = -1;
    for (let d = 0; d <= file.length; d++) {
      if (fits(expected - d)) {
        at = expected - d;
        break;
      }
      if (fits(expected + d)) {
        at = expected + d;
        break;
      }
    }
    if (at < 0) throw new PatchError(`the uploaded diff does not apply to ${path}: hunk ${n + 1} (at line ${h.oldStart}) does not match the file at the cloned commit`);
    file.splice(at, before.length, ...after);
    floor = at + after.length;
    shift += after.length - before.length;
  });
  return file.join("");
}

/** What one file becomes: its content, mode and whether it is a symlink; null = removed. */
interface Result {
  path: string;
  content: string;
  mode?: number;
  symlink: boolean;
}

function readOld(root: string, p: string): { content: string; symlink: boolean; mode: number } {
  const abs = inside(root, p);
  let st;
  try {
    st = lstatSync(abs);
  } catch {
    throw new PatchError(`the uploaded diff changes ${p}, which is not in the cloned commit`);
  }
  if (st.isSymbolicLink()) return { content: readlinkSync(abs, { encoding: "latin1" }), symlink: true, mode: 0o120000 };
  return { content: readFileSync(abs).toString("latin1"), symlink: false, mode: st.mode };
}

/**
 * Applies `diff` (the bytes of a `git diff --binary`) to the tree at `root`. Returns the paths
 * written and removed. Throws a PatchError naming the file when a part does not apply.
 */
export function applyPatch(root: string, diff: Buffer): { written: string[]; removed: string[] } {
  const patches = parsePatch(diff.toString("latin1"));
  const results: Result[] = [];
  const removed: string[] = [];
  for (const fp of patches) {
    const name = fp.newPath ?? fp.oldPath ?? "?";
    const old = fp.oldPath !== null ? readOld(root, fp.oldPath) : { content: "", symlink: false, mode: fp.newMode ?? 0o100644 };
    if (fp.newPath === null) {
      removed.push(fp.oldPath!);
      continue;
    }
    if (fp.oldPath !== null && fp.oldPath !== fp.newPath && !fp.copy) removed.push(fp.oldPath);
    let content = old.content;
    if (fp.binary === "no-data") throw new PatchError(`the uploaded diff has no data for the binary file ${name} (make it with --binary)`);
    if (fp.binary) {
      // The size git writes is that of the inflated literal or delta.
      if (fp.binary.data.length !== fp.binary.size) throw new PatchError(`the binary patch of ${name} has the wrong size`);
      const data = fp.binary.kind === "literal" ? fp.binary.data : applyGitDelta(Buffer.from(old.content, "latin1"), fp.binary.data);
      content = data.toString("latin1");
    } else if (fp.hunks.length) content = applyHunks(name, content, fp.hunks);
    const mode = fp.newMode ?? old.mode;
    results.push({ path: fp.newPath, content, mode, symlink: isSymlinkMode(mode) });
  }
  // Nothing was written so far: now remove, then write.
  for (const p of removed) if (!results.some((r) => r.path === p)) rmSync(inside(root, p), { force: true });
  for (const r of results) {
    const abs = inside(root, r.path);
    mkdirSync(dirname(abs), { recursive: true });
    if (existsSync(abs) || isBrokenLink(abs)) rmSync(abs, { force: true });
    if (r.symlink) symlinkSync(Buffer.from(r.content, "latin1").toString(), abs);
    else {
      writeFileSync(abs, Buffer.from(r.content, "latin1"));
      if (r.mode !== undefined) chmodSync(abs, r.mode & 0o111 ? 0o755 : 0o644);
    }
  }
  return { written: results.map((r) => r.path), removed: removed.filter((p) => !results.some((r) => r.path === p)) };
}

function isBrokenLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
