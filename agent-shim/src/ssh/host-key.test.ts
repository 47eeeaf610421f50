import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ssh2 from "ssh2";
import { afterAll, describe, expect, it } from "vitest";
import { HostKeyError, loadOrCreateHostKey } from "./host-key.js";

const dir = mkdtempSync(join(tmpdir(), "ssh-hostkey-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("loadOrCreateHostKey", () => {
  it("makes an OpenSSH-format ed25519 key, 0600 in a 0700 directory, that ssh-keygen reads", () => {
    const path = join(dir, "new", "nested", "host_key");
    const key = loadOrCreateHostKey(path);
    expect(readFileSync(path, "utf8")).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----/);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "new", "nested")).mode & 0o777).toBe(0o700);
    expect(execFileSync("ssh-keygen", ["-y", "-f", path], { encoding: "utf8" })).toContain(key.publicKey.openssh);
    expect(key.publicKey.type).toBe("ssh-ed25519");
  });

  it("reuses the key on later loads", () => {
    const path = join(dir, "reused");
    const first = loadOrCreateHostKey(path);
    expect(loadOrCreateHostKey(path).publicKey.fingerprint).toBe(first.publicKey.fingerprint);
  });

  it("only ever keeps a key it can read back (ssh2's generator is sometimes off)", () => {
    // At ~1 bad key in 200, 1,000 fresh keys would almost surely hit one without the check.
    for (let i = 0; i < 1000; i++) {
      const path = join(dir, "many", `k${i}`);
      const made = loadOrCreateHostKey(path);
      expect(loadOrCreateHostKey(path).publicKey.fingerprint).toBe(made.publicKey.fingerprint);
    }
  });

  it("tightens a key file others can read to 0600", () => {
    const path = join(dir, "loose");
    loadOrCreateHostKey(path);
    chmodSync(path, 0o644);
    loadOrCreateHostKey(path);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it("refuses, and keeps, a file that is not an ed25519 private key", () => {
    const rsaPath = join(dir, "rsa");
    writeFileSync(rsaPath, ssh2.utils.generateKeyPairSync("rsa", { bits: 2048 }).private, { mode: 0o600 });
    expect(() => loadOrCreateHostKey(rsaPath)).toThrow(HostKeyError);
    const junk = join(dir, "junk");
    writeFileSync(junk, "not a key", { mode: 0o600 });
    expect(() => loadOrCreateHostKey(junk)).toThrow(/cannot be read/);
    expect(readFileSync(junk, "utf8")).toBe("not a key");
  });
});
