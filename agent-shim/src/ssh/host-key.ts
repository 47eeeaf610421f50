// The shim's SSH host key: ed25519 in OpenSSH format, made on first use and kept, so clients that
// pinned it (known_hosts, the CLI's own pin) keep trusting the host across shim restarts.
import { randomBytes } from "node:crypto";
import { chmodSync, linkSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import ssh2 from "ssh2";
import type { ParsedKey } from "ssh2";
import { publicKeyFromBlob, type SshPublicKey } from "./keys.js";

const { utils } = ssh2;

export interface HostKey {
  /** The parsed private key, ready for ssh2's `hostKeys`. */
  parsed: ParsedKey;
  /** The public half: type, blob, "SHA256:…" fingerprint, "ssh-ed25519 AAAA…" line. */
  publicKey: SshPublicKey;
}

export class HostKeyError extends Error {
  override name = "HostKeyError";
}

/**
 * Reads the host key at `path`, or creates it (0600, directory 0700) when the file does not exist.
 * Synchronous on purpose: it runs once when the shim starts. Creation is atomic (write a temporary
 * file, then hard-link it into place), so two shims racing on one path end up with the same key.
 * An existing file that is readable by others is tightened to 0600; one that is not an ed25519
 * private key is an error, never overwritten.
 */
export function loadOrCreateHostKey(path: string): HostKey {
  let pem: string;
  try {
    pem = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    pem = createHostKeyFile(path);
  }
  if ((statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o600);
  return parseHostKey(pem, path);
}

/**
 * ssh2's generator writes a key its own parser refuses about once in 200 tries (seen here: 9 of
 * 2,000); such a key would stop the shim at every later start, so only a key that parses is kept.
 */
function generateParsableKey(): string {
  for (let i = 0; i < 20; i++) {
    const { private: pem } = utils.generateKeyPairSync("ed25519", { comment: "dstack-shim host key" });
    const parsed = utils.parseKey(pem);
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    if (key && !(key instanceof Error)) return pem;
  }
  throw new HostKeyError("could not generate an ed25519 host key that parses");
}

function createHostKeyFile(path: string): string {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const pem = generateParsableKey();
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  writeFileSync(tmp, pem, { mode: 0o600, flag: "wx" });
  try {
    linkSync(tmp, path);
    return pem;
  } catch (err) {
    // Another process made it first: use theirs.
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return readFileSync(path, "utf8");
    throw err;
  } finally {
    unlinkSync(tmp);
  }
}

function parseHostKey(pem: string, path: string): HostKey {
  const parsed = utils.parseKey(pem);
  const key = Array.isArray(parsed) ? (parsed[0] as ParsedKey | undefined) : parsed;
  if (!key || key instanceof Error) {
    throw new HostKeyError(`SSH host key ${path} cannot be read (${key instanceof Error ? key.message : "empty"}); move it away to have a new one made`);
  }
  if (!key.isPrivateKey() || key.type !== "ssh-ed25519") {
    throw new HostKeyError(`SSH host key ${path} is not an ed25519 private key (found ${key.type}); move it away to have a new one made`);
  }
  return { parsed: key, publicKey: publicKeyFromBlob(key.getPublicSSH()) };
}
