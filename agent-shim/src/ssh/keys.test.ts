import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ssh2 from "ssh2";
import { afterAll, describe, expect, it } from "vitest";
import { authorizedKeyMatches, blobKeyType, fingerprintOf, parsePublicKey, publicKeyFromBlob, rsaModulusBits } from "./keys.js";

const dir = mkdtempSync(join(tmpdir(), "ssh-keys-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function keygen(name: string, type: string, bits?: number): { pub: string; path: string } {
  const path = join(dir, name);
  execFileSync("ssh-keygen", ["-q", "-t", type, ...(bits ? ["-b", String(bits)] : []), "-N", "", "-C", `${name} comment`, "-f", path]);
  return { pub: readFileSync(`${path}.pub`, "utf8").trim(), path };
}

const ed = keygen("ed", "ed25519");
const other = keygen("other", "ed25519");
const ecdsa = keygen("ecdsa", "ecdsa", 384);

describe("parsePublicKey", () => {
  it("reads a .pub line and fingerprints it as ssh-keygen does", () => {
    const key = parsePublicKey(ed.pub)!;
    expect(key.type).toBe("ssh-ed25519");
    expect(key.openssh).toBe(ed.pub.split(" ").slice(0, 2).join(" "));
    expect(execFileSync("ssh-keygen", ["-lf", `${ed.path}.pub`], { encoding: "utf8" })).toContain(key.fingerprint);
    expect(parsePublicKey(ecdsa.pub)?.type).toBe("ecdsa-sha2-nistp384");
  });

  it("skips authorized_keys options, including quoted ones with spaces", () => {
    const line = `restrict,command="echo hello world",from="10.0.0.0/8" ${ed.pub}`;
    expect(parsePublicKey(line)?.openssh).toBe(parsePublicKey(ed.pub)?.openssh);
  });

  it("returns null for blank lines, comments and malformed or mislabelled keys", () => {
    const [, b64] = ed.pub.split(" ");
    for (const bad of ["", "   ", "# ssh-ed25519 AAAA", `ssh-rsa ${b64}`, "ssh-ed25519 not*base64", "ssh-ed25519 AAAA", "hello world"]) {
      expect(parsePublicKey(bad)).toBeNull();
    }
  });
});

describe("authorizedKeyMatches", () => {
  const key = parsePublicKey(ed.pub)!;

  it("matches by key material, whatever the comment or options", () => {
    expect(authorizedKeyMatches([other.pub, `${ed.pub.split(" ").slice(0, 2).join(" ")} someone-else`], key)).toBe(true);
    expect(authorizedKeyMatches([`no-pty ${ed.pub}`], key)).toBe(true);
  });

  it("accepts entries that hold several lines, and keys as a blob or a line", () => {
    const entry = `# project key\n${other.pub}\r\n\n${ed.pub}\n`;
    expect(authorizedKeyMatches([entry], key)).toBe(true);
    expect(authorizedKeyMatches([entry], key.blob)).toBe(true);
    expect(authorizedKeyMatches([entry], ed.pub)).toBe(true);
  });

  it("refuses keys that are not listed, and nonsense", () => {
    expect(authorizedKeyMatches([other.pub, ecdsa.pub], key)).toBe(false);
    expect(authorizedKeyMatches([], key)).toBe(false);
    expect(authorizedKeyMatches([ed.pub], "not a key")).toBe(false);
    expect(authorizedKeyMatches([ed.pub], Buffer.alloc(0))).toBe(false);
  });
});

describe("blob helpers", () => {
  it("reads the type and RSA modulus size from wire blobs", () => {
    const { public: pub } = ssh2.utils.generateKeyPairSync("rsa", { bits: 2048 });
    const rsa = parsePublicKey(pub)!;
    expect(blobKeyType(rsa.blob)).toBe("ssh-rsa");
    expect(rsaModulusBits(rsa.blob)).toBe(2048);
    expect(rsaModulusBits(parsePublicKey(ed.pub)!.blob)).toBe(0);
    expect(rsaModulusBits(Buffer.from([0, 0, 0, 7]))).toBe(0);
  });

  it("fingerprints a blob as SHA256:<base64 without padding>", () => {
    const key = parsePublicKey(ed.pub)!;
    expect(fingerprintOf(key.blob)).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    expect(publicKeyFromBlob(key.blob)).toEqual(key);
    expect(() => publicKeyFromBlob(Buffer.from("junk"))).toThrow();
  });
});
