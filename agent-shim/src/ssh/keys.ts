// OpenSSH public keys: parsing authorized_keys lines, fingerprints, and the comparison the shim
// uses to decide whether a login's key is one the server sent for a task.
import { createHash, timingSafeEqual } from "node:crypto";

/** A client's (or the host's) public key, in the forms callers need. */
export interface SshPublicKey {
  /** Key type from the wire blob: "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", … */
  type: string;
  /** The SSH wire-format public key blob (what authorized_keys holds in base64). */
  blob: Buffer;
  /** "SHA256:…" as `ssh-keygen -l` prints it. */
  fingerprint: string;
  /** "<type> <base64>" (no comment): one authorized_keys line. */
  openssh: string;
}

/** Key types an authorized_keys line may name. Security keys (sk-*) parse but ssh2 cannot verify them. */
const KEY_TYPE = /^(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+)$/;

/** Reads the SSH string at `off`: uint32 length then bytes; undefined when it runs past the end. */
function readString(buf: Buffer, off: number): { value: Buffer; next: number } | undefined {
  if (off + 4 > buf.length) return undefined;
  const len = buf.readUInt32BE(off);
  const end = off + 4 + len;
  if (end > buf.length) return undefined;
  return { value: buf.subarray(off + 4, end), next: end };
}

/** The key type written at the start of a wire blob, or undefined when the blob is malformed. */
export function blobKeyType(blob: Buffer): string | undefined {
  const s = readString(blob, 0);
  return s ? s.value.toString("latin1") : undefined;
}

/** "SHA256:<base64 without padding>" of a wire blob, as OpenSSH prints it. */
export function fingerprintOf(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/** Builds an SshPublicKey from a wire blob; throws when the blob is not a key blob. */
export function publicKeyFromBlob(blob: Buffer): SshPublicKey {
  const type = blobKeyType(blob);
  if (!type || !KEY_TYPE.test(type)) throw new Error("not an SSH public key blob");
  return { type, blob, fingerprint: fingerprintOf(blob), openssh: `${type} ${blob.toString("base64")}` };
}

/** Splits on whitespace outside double quotes (authorized_keys options may quote spaces). */
function tokens(line: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (ch === "\\" && quoted && i + 1 < line.length) {
      cur += ch + line[++i];
    } else if (ch === '"') {
      quoted = !quoted;
      cur += ch;
    } else if (!quoted && (ch === " " || ch === "\t")) {
      if (cur) out.push(cur);
      cur = "";
    } else {
      cur += ch;
    }
  }
  if (cur) out.push(cur);
  return out;
}

/**
 * Parses one authorized_keys / `.pub` line: `[options] <type> <base64> [comment]`. Returns null for
 * blank lines, comments and anything that is not a well-formed key (the base64 must decode to a
 * blob of the named type).
 */
export function parsePublicKey(line: string): SshPublicKey | null {
  const t = tokens(line.trim());
  if (t.length === 0 || t[0]!.startsWith("#")) return null;
  // The key type is the first token, or the second when the line starts with options.
  for (const i of [0, 1]) {
    const type = t[i];
    const b64 = t[i + 1];
    if (!type || !b64 || !KEY_TYPE.test(type) || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) continue;
    const blob = Buffer.from(b64, "base64");
    if (blobKeyType(blob) !== type) continue;
    return publicKeyFromBlob(blob);
  }
  return null;
}

function toBlob(key: SshPublicKey | Buffer | string): Buffer | undefined {
  if (Buffer.isBuffer(key)) return key;
  if (typeof key === "string") return parsePublicKey(key)?.blob;
  return key.blob;
}

/**
 * True when `key` is one of the keys in `authorizedKeysLines` (OpenSSH authorized_keys lines; an
 * entry may itself hold several lines). Keys compare by their wire blob, so comments and the line's
 * options do not matter. Options (`from=`, `command=`, `restrict`…) are not enforced by the shim: a
 * listed key is authorised for the task, whatever options precede it.
 */
export function authorizedKeyMatches(authorizedKeysLines: readonly string[], key: SshPublicKey | Buffer | string): boolean {
  const want = toBlob(key);
  if (!want || want.length === 0) return false;
  let found = false;
  for (const entry of authorizedKeysLines) {
    for (const line of entry.split(/\r?\n/)) {
      const blob = parsePublicKey(line)?.blob;
      // No early return: the time taken does not tell which entry matched.
      if (blob && blob.length === want.length && timingSafeEqual(blob, want)) found = true;
    }
  }
  return found;
}

/** The modulus size in bits of an ssh-rsa blob (string type, mpint e, mpint n); 0 when malformed. */
export function rsaModulusBits(blob: Buffer): number {
  const type = readString(blob, 0);
  const e = type && readString(blob, type.next);
  const n = e && readString(blob, e.next);
  if (!n) return 0;
  let bytes = n.value;
  let i = 0;
  while (i < bytes.length && bytes[i] === 0) i++;
  bytes = bytes.subarray(i);
  if (bytes.length === 0) return 0;
  return (bytes.length - 1) * 8 + (32 - Math.clz32(bytes[0]!));
}
