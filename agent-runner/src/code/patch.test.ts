import { execFileSync } from "node:child_process";
import { chmodSync, cpSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { applyPatch, PatchError } from "./patch.js";

/** A repo with a committed tree; `change` edits its work tree; returns the pre-image copy and the diff git makes. */
function scenario(files: Record<string, string | Buffer>, change: (dir: string) => void, setup?: (dir: string) => void) {
  const repo = mkdtempSync(join(tmpdir(), "patch-repo-"));
  const git = (...a: string[]) => execFileSync("git", ["-C", repo, "-c", "core.quotepath=true", ...a]);
  git("init", "-q");
  for (const [p, c] of Object.entries(files)) {
    execFileSync("mkdir", ["-p", join(repo, p, "..")]);
    writeFileSync(join(repo, p), c);
  }
  setup?.(repo);
  git("add", "-A");
  git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "base");
  const pre = mkdtempSync(join(tmpdir(), "patch-pre-"));
  cpSync(repo, pre, { recursive: true, verbatimSymlinks: true, filter: (s) => !s.includes("/.git") });
  change(repo);
  git("add", "-A");
  const diff = git("diff", "--cached", "--binary", "-M", "HEAD");
  return { repo, pre, diff };
}

/** path → what it is: content (base64), "x" when executable, or the link target. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.name === ".git") continue;
      const p = join(d, e.name);
      const rel = relative(dir, p);
      const st = lstatSync(p);
      if (st.isSymbolicLink()) out[rel] = `-> ${readlinkSync(p)}`;
      else if (st.isDirectory()) walk(p);
      else out[rel] = `${st.mode & 0o100 ? "x " : ""}${readFileSync(p).toString("base64")}`;
    }
  };
  walk(dir);
  return out;
}

const lines = (n: number, tag = "") => Array.from({ length: n }, (_, i) => `line ${i + 1}${tag}`).join("\n") + "\n";
const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed * 7 + (i >> 3)) & 0xff));

describe("applyPatch (git diff --binary made by real git)", () => {
  it("reproduces git's result: edits, adds, deletes, renames with edits, mode changes, symlinks, binaries, no final newline, odd names", () => {
    const big = bytes(20000, 1);
    const { repo, pre, diff } = scenario(
      {
        "keep.txt": "unchanged\n",
        "mod.txt": lines(60),
        "del.txt": "to be deleted\n",
        "src/old-name.py": lines(30, " py"),
        "run.sh": "echo hi\n",
        "noeol.txt": "a\nb\nc",
        "sp ace/ü name.txt": "odd\n",
        "data.bin": big,
        "small.bin": bytes(40, 2),
        "crlf.txt": "one\r\ntwo\r\n",
      },
      (d) => {
        writeFileSync(join(d, "mod.txt"), lines(60).replace("line 3\n", "line 3 changed\n").replace("line 50\n", "").replace("line 59\n", "line 59\nnew after 59\n"));
        rmSync(join(d, "del.txt"));
        writeFileSync(join(d, "new dir/new file.txt"), "brand new\n", { flag: "w" });
        renameSync(join(d, "src/old-name.py"), join(d, "src/new-name.py"));
        writeFileSync(join(d, "src/new-name.py"), lines(30, " py").replace("line 15 py", "line 15 py edited"));
        chmodSync(join(d, "run.sh"), 0o755);
        writeFileSync(join(d, "noeol.txt"), "a\nB\nc");
        writeFileSync(join(d, "sp ace/ü name.txt"), "odd, edited\n");
        const b = Buffer.from(big);
        b[100] = b[100]! ^ 0xff;
        b[15000] = b[15000]! ^ 0xff;
        writeFileSync(join(d, "data.bin"), b);
        writeFileSync(join(d, "small.bin"), bytes(50, 3));
        writeFileSync(join(d, "new.bin"), bytes(300, 4));
        writeFileSync(join(d, "crlf.txt"), "one\r\nTWO\r\n");
        symlinkSync("keep.txt", join(d, "link"));
      },
      (d) => execFileSync("mkdir", ["-p", join(d, "new dir")]),
    );
    const text = diff.toString();
    // The diff really exercises what the test names.
    for (const s of ["rename from src/old-name.py", "deleted file mode", "new file mode 120000", "old mode 100644", "GIT binary patch", "delta ", "literal ", "\\ No newline at end of file", '/sp ace/\\303\\274 name.txt"'])
      expect(text).toContain(s);
    const r = applyPatch(pre, diff);
    expect(snapshot(pre)).toEqual(snapshot(repo));
    expect(r.removed.sort()).toEqual(["del.txt", "src/old-name.py"]);
    expect(r.written).toContain("new dir/new file.txt");
  });

  it("applies hunks at an offset when lines were added above them", () => {
    const { pre, diff } = scenario({ "f.txt": lines(40) }, (d) => writeFileSync(join(d, "f.txt"), lines(40).replace("line 30\n", "line 30!\n")));
    writeFileSync(join(pre, "f.txt"), "extra 1\nextra 2\n" + lines(40));
    applyPatch(pre, diff);
    expect(readFileSync(join(pre, "f.txt"), "utf8")).toBe("extra 1\nextra 2\n" + lines(40).replace("line 30\n", "line 30!\n"));
  });

  it("fails naming the file when a hunk does not match, and leaves the tree untouched", () => {
    const { pre, diff } = scenario({ "a.txt": "one\n", "b.txt": lines(10) }, (d) => {
      writeFileSync(join(d, "a.txt"), "two\n");
      writeFileSync(join(d, "b.txt"), lines(10).replace("line 5", "five"));
    });
    writeFileSync(join(pre, "b.txt"), lines(10).replace("line 5", "something else"));
    const before = snapshot(pre);
    expect(() => applyPatch(pre, diff)).toThrow(PatchError);
    expect(() => applyPatch(pre, diff)).toThrow(/the uploaded diff does not apply to b\.txt: hunk 1 \(at line 2\)/);
    expect(snapshot(pre)).toEqual(before);
  });

  it("refuses paths that leave the repo", () => {
    const dir = mkdtempSync(join(tmpdir(), "patch-escape-"));
    const evil = "diff --git a/../evil b/../evil\nnew file mode 100644\n--- /dev/null\n+++ b/../evil\n@@ -0,0 +1 @@\n+x\n";
    expect(() => applyPatch(dir, Buffer.from(evil))).toThrow("the diff names a path outside the repo: ../evil");
  });
});
