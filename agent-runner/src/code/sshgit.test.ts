// The built-in git over SSH against a real OpenSSH server (loopback, temp config) running
// Debian's git-upload-pack on a real bare repository.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer, type AddressInfo, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGitSshd, type GitSshd } from "../../../test/runner/git-ssh.js";
import { makeTestRepo, type TestRepo } from "../../../test/runner/git-http.js";
import type { GitRepoSpec } from "./git.js";
import { cloneWithoutGit } from "./jsgit.js";
import { parseSshUrl, shellQuote, SshGitTransport } from "./sshgit.js";

describe("parseSshUrl", () => {
  it("reads ssh:// URLs and scp-like addresses as git does", () => {
    expect(parseSshUrl("git@github.com:dstackai/dstack.git")).toEqual({ user: "git", host: "github.com", port: 22, path: "dstackai/dstack.git" });
    expect(parseSshUrl("ssh://alice@example.com:2222/srv/repo.git")).toEqual({ user: "alice", host: "example.com", port: 2222, path: "/srv/repo.git" });
    expect(parseSshUrl("git+ssh://example.com/~bob/repo.git")).toEqual({ user: "git", host: "example.com", port: 22, path: "~bob/repo.git" });
    expect(parseSshUrl("ssh://git@[::1]:22/a%20b.git")).toEqual({ user: "git", host: "::1", port: 22, path: "/a b.git" });
    expect(() => parseSshUrl("ssh://example.com/")).toThrow('the repo URL "ssh://example.com/" names no host or no repository path');
  });

  it("quotes the path for the remote shell", () => {
    expect(shellQuote("it's!.git")).toBe("'it'\\''s'\\!'.git'");
  });
});

describe("cloneWithoutGit over SSH (real sshd and git-upload-pack)", () => {
  let sshd: GitSshd;
  let repo: TestRepo;
  let diffFile: string;
  beforeAll(async () => {
    sshd = await startGitSshd();
    repo = makeTestRepo();
    diffFile = join(mkdtempSync(join(tmpdir(), "ssh-diff-")), "diff");
    writeFileSync(diffFile, repo.diff);
  });
  afterAll(() => sshd?.close());

  const spec = (o: Partial<GitRepoSpec>): GitRepoSpec => ({
    cloneUrl: "",
    branch: "",
    hash: "",
    configName: "",
    configEmail: "",
    skipIfExists: false,
    singleBranch: false,
    privateKey: "",
    oauthToken: "",
    ...o,
  });
  const url = () => `ssh://${sshd.user}@127.0.0.1:${sshd.port}${join(repo.root, repo.name)}`;

  it("clones at the commit with the job's key and applies the diff (new, modified, deleted files)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ssh-clone-"));
    const log: string[] = [];
    await cloneWithoutGit(spec({ cloneUrl: url(), branch: "main", hash: repo.first, singleBranch: true, privateKey: sshd.key, configName: "Ada" }), dir, {
      diffFile,
      log: (t) => log.push(t),
    });
    expect(readFileSync(join(dir, "train.py"), "utf8")).toBe("print('v1 with local changes')\nprint('epoch')\n");
    expect(readFileSync(join(dir, "new_module.py"), "utf8")).toBe("VALUE = 42\n");
    expect(existsSync(join(dir, "obsolete.txt"))).toBe(false);
    // Real git reads the result: detached at the commit, the diff as the only changes, the remote as given.
    const git = (...a: string[]) => execFileSync("git", ["-C", dir, ...a], { encoding: "utf8" }).trim();
    expect(git("rev-parse", "HEAD")).toBe(repo.first);
    expect(execFileSync("git", ["-C", dir, "status", "--porcelain"], { encoding: "utf8" })).toBe(" D obsolete.txt\n M train.py\n?? new_module.py\n");
    expect(git("config", "remote.origin.url")).toBe(url());
    expect(git("config", "user.name")).toBe("Ada");
    git("fsck", "--no-progress");
    expect(log.join("")).toMatch(/SSH host key of 127\.0\.0\.1:\d+: SHA256:\S+ \(not checked\)/);
    expect(log.join("")).toContain("applied the uploaded diff: 2 file(s) written, 1 removed");
  });

  it("clones every branch without a commit (the branch head is checked out)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ssh-clone-"));
    await cloneWithoutGit(spec({ cloneUrl: url(), privateKey: sshd.key }), dir, { log: () => {} });
    expect(readFileSync(join(dir, "train.py"), "utf8")).toBe("print('v2 on main')\n");
  });

  it("a key the server does not accept fails naming the repo URL and the login", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ssh-clone-"));
    await expect(cloneWithoutGit(spec({ cloneUrl: url(), hash: repo.first, privateKey: sshd.wrongKey }), dir, { log: () => {} })).rejects.toThrow(
      `cannot clone ${url()}: the SSH server refused the key for ${sshd.user}@127.0.0.1:${sshd.port}: check the repo's SSH key (the server must accept its public key)`,
    );
  });

  it("a key that is not a key, a missing repository and an unreachable host fail clearly", async () => {
    const dir = () => mkdtempSync(join(tmpdir(), "ssh-clone-"));
    await expect(cloneWithoutGit(spec({ cloneUrl: url(), privateKey: "not a key" }), dir(), { log: () => {} })).rejects.toThrow(
      new RegExp(`^cannot clone ${url()}: the repo's SSH private key cannot be used: `),
    );
    const missing = `ssh://${sshd.user}@127.0.0.1:${sshd.port}/nowhere/none.git`;
    await expect(cloneWithoutGit(spec({ cloneUrl: missing, privateKey: sshd.key }), dir(), { log: () => {} })).rejects.toThrow(
      `cannot clone ${missing}: git-upload-pack on ${sshd.user}@127.0.0.1:${sshd.port} ended before its ref advertisement (exit status 128): fatal: '/nowhere/none.git' does not appear to be a git repository`,
    );
    // Port 1 on loopback: nothing listens.
    const closed = "ssh://git@127.0.0.1:1/org/repo.git";
    await expect(cloneWithoutGit(spec({ cloneUrl: closed, privateKey: sshd.key }), dir(), { log: () => {} })).rejects.toThrow(
      `cannot clone ${closed}: cannot reach 127.0.0.1:1 over SSH: connect ECONNREFUSED 127.0.0.1:1`,
    );
  });

  it("a host that accepts TCP but never speaks SSH fails after the handshake timeout", async () => {
    const held: Socket[] = [];
    const silent = createServer((sock) => void held.push(sock));
    await new Promise<void>((ok) => silent.listen(0, "127.0.0.1", ok));
    const { port } = silent.address() as AddressInfo;
    const t = new SshGitTransport({ user: "git", host: "127.0.0.1", port, path: "r.git" }, sshd.key, () => {}, 1000);
    try {
      await expect(t.http.request({ method: "GET", url: "http://x/r/info/refs?service=git-upload-pack" })).rejects.toThrow(`no SSH handshake with 127.0.0.1:${port} within 1 s`);
    } finally {
      t.close();
      for (const sock of held) sock.destroy();
      silent.close();
    }
  });
});
