// Parses and checks OpenSSH public keys ("<type> <base64 blob> [comment]") without any
// SSH library: the blob is the SSH wire encoding (RFC 4253 §6.6, RFC 5656 §3.1, RFC 8709).
import { createHash } from "node:crypto";
import { err } from "../errors.js";

export const MIN_RSA_BITS = 2048;

const ECDSA_CURVES: Record<string, { curve: string; pointLength: number }> = {
  "ecdsa-sha2-nistp256": { curve: "nistp256", pointLength: 65 },
  "ecdsa-sha2-nistp384": { curve: "nistp384", pointLength: 97 },
  "ecdsa-sha2-nistp521": { curve: "nistp521", pointLength: 133 },
};
const TYPES = ["ssh-ed25519", "ssh-rsa", ...Object.keys(ECDSA_CURVES)];

export interface ParsedPublicKey {
  type: string;
  /** The trimmed line, comment included. */
  key: string;
  comment: string;
  /** "SHA256:<unpadded base64>", as `ssh-keygen -l` prints it. */
  fingerprint: string;
}

/** Reads SSH wire strings from a blob; throws on truncation. */
class Reader {
  private at = 0;
  constructor(private readonly buf: Buffer) {}
  string(): Buffer {
    if (this.at + 4 > this.buf.length) throw new Error("truncated");
    const n = this.buf.readUInt32BE(this.at);
    if (this.at + 4 + n > this.buf.length) throw new Error("truncated");
    const out = this.buf.subarray(this.at + 4, this.at + 4 + n);
    this.at += 4 + n;
    return out;
  }
  get done(): boolean {
    return this.at === this.buf.length;
  }
}

function bitLength(mpint: Buffer): number {
  let i = 0;
  while (i < mpint.length && mpint[i] === 0) i++;
  if (i === mpint.length) return 0;
  return (mpint.length - i - 1) * 8 + (32 - Math.clz32(mpint[i]!));
}

/** Parses one authorized_keys-style line; `field` names the request field in errors. */
export function parsePublicKey(field: string, text: string): ParsedPublicKey {
  const bad = (reason: string) => err("DSTACK_INVALID_PUBLIC_KEY", { field, reason });
  const line = text.trim();
  if (line === "") throw bad("the key is empty");
  if (/[\r\n]/.test(line)) throw bad("expected a single line");
  const [type = "", b64 = "", ...rest] = line.split(/[ \t]+/);
  if (!TYPES.includes(type)) throw bad(`unsupported key type '${type.slice(0, 40)}'`);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0) throw bad("the key data is not valid base64");
  const blob = Buffer.from(b64, "base64");
  try {
    const r = new Reader(blob);
    const inner = r.string().toString("latin1");
    if (inner !== type) throw bad(`the key data is a '${inner.slice(0, 40)}' key, not '${type}'`);
    if (type === "ssh-ed25519") {
      if (r.string().length !== 32) throw bad("an ssh-ed25519 key must be 32 bytes");
    } else if (type === "ssh-rsa") {
      const e = r.string();
      const n = r.string();
      if (bitLength(e) === 0) throw bad("the RSA exponent is zero");
      const bits = bitLength(n);
      if (bits < MIN_RSA_BITS) throw bad(`the RSA key has ${bits} bits; at least ${MIN_RSA_BITS} are required`);
    } else {
      const spec = ECDSA_CURVES[type]!;
      if (r.string().toString("latin1") !== spec.curve) throw bad(`the curve does not match '${type}'`);
      const q = r.string();
      if (q.length !== spec.pointLength || q[0] !== 0x04) throw bad(`the ${spec.curve} point is malformed`);
    }
    if (!r.done) throw bad("the key data has trailing bytes");
  } catch (e) {
    if (e instanceof Error && e.message === "truncated") throw bad("the key data is truncated");
    throw e;
  }
  const fingerprint = "SHA256:" + createHash("sha256").update(blob).digest("base64").replace(/=+$/, "");
  return { type, key: line, comment: rest.join(" "), fingerprint };
}
