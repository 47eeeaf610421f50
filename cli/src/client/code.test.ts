import { mkdir, mkdtemp, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import { buildCodeArchive, codeTooLargeError, listCodeFiles } from "./code.js";

const dirs: string[] = [];
async function tree(files: Record<string, string>): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "dstack-code-"));
  dirs.push(root);
  for (const [path, text] of Object.entries(files)) {
    await mkdir(join(root, path, ".."), { recursive: true });
    await writeFile(join(root, path), text);
  }
  return root;
}
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** Entry names of an uncompressed tar, read from its 512-byte headers. */
function tarNames(gz: Uint8Array): string[] {
  const tar = gunzipSync(gz);
  const names: string[] = [];
  for (let off = 0; off + 512 <= tar.length; ) {
    const header = tar.subarray(off, off + 512);
    if (header.every((b) => b === 0)) break;
    const name = header.subarray(0, 100).toString("utf8").replace(/\0.*$/s, "");
    const prefix = header.subarray(345, 500).toString("utf8").replace(/\0.*$/s, "");
    const size = parseInt(header.subarray(124, 136).toString("utf8").replace(/\0.*$/s, "").trim() || "0", 8);
    const type = String.fromCharCode(header[156]!);
    if (type !== "x" && type !== "g") names.push(prefix ? `${prefix}/${name}` : name);
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return names;
}

describe("the code archive", () => {
  it("honours .gitignore and .dstackignore at any depth and always skips .git", async () => {
    const root = await tree({
      ".gitignore": "*.log\nbuild/\n",
      ".dstackignore": "data/\n!keep.log\n",
      "train.py": "print(1)\n",
      "debug.log": "noise",
      "keep.log": "kept: re-included by .dstackignore",
      "build/out.bin": "x",
      "data/big.csv": "1,2,3",
      "src/model.py": "pass\n",
      "src/.gitignore": "secret.txt\n",
      "src/secret.txt": "hidden",
      "other/secret.txt": "not ignored here",
      ".git/HEAD": "ref: refs/heads/main\n",
    });
    const paths = (await listCodeFiles(root)).map((f) => f.path);
    expect(paths).toEqual([".dstackignore", ".gitignore", "keep.log", "other/secret.txt", "src/.gitignore", "src/model.py", "train.py"]);
    expect(tarNames((await buildCodeArchive(root)).blob)).toEqual(paths);
  });

  it("gives the same tree the same hash, whatever the mtimes or the directory, and a changed file a new one", async () => {
    const files = { "a.py": "print('a')\n", "pkg/b.py": "print('b')\n", "z.txt": "z" };
    const one = await tree(files);
    const two = await tree(files);
    await utimes(join(two, "a.py"), new Date(2001, 1, 1), new Date(2001, 1, 1));
    const h1 = (await buildCodeArchive(one)).hash;
    expect((await buildCodeArchive(two)).hash).toBe(h1);
    expect((await buildCodeArchive(one)).hash).toBe(h1);
    await writeFile(join(two, "pkg/b.py"), "print('B')\n");
    expect((await buildCodeArchive(two)).hash).not.toBe(h1);
  });

  it("keeps symlinks as links instead of following them", async () => {
    const root = await tree({ "real.txt": "content" });
    await symlink("real.txt", join(root, "link.txt"));
    const files = await listCodeFiles(root);
    expect(files.map((f) => f.path)).toEqual(["link.txt", "real.txt"]);
    expect(tarNames((await buildCodeArchive(root)).blob)).toEqual(["link.txt", "real.txt"]);
  });

  it("archives an empty directory as a valid empty archive", async () => {
    const root = await tree({});
    const a = await buildCodeArchive(root);
    expect(a.files).toEqual([]);
    expect(tarNames(a.blob)).toEqual([]);
  });

  it("names the biggest files when the archive is over the server's limit", async () => {
    const root = await tree({ "model.bin": "x".repeat(300_000), "notes.md": "hi", "data.csv": "y".repeat(20_000) });
    const a = await buildCodeArchive(root);
    const e = codeTooLargeError(root, a, "The code blob is 5000 bytes, above the server's limit of 2097152 bytes. Exclude…");
    expect(e.kind).toBe("code_too_large");
    expect(e.message).toContain("above the server's upload limit of 2MB");
    const lines = e.message.split("\n");
    expect(lines.findIndex((l) => l.includes("model.bin"))).toBeLessThan(lines.findIndex((l) => l.includes("data.csv")));
    expect(e.message).toMatch(/293KB\s+model\.bin/);
    expect(e.message).toContain(".dstackignore");
  });
});
