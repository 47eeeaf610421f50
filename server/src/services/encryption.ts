// Values encrypted at rest with AES-256-GCM: a random 96-bit nonce per value, and the
// owning row's identity as associated data, so a ciphertext copied onto another secret
// fails to decrypt instead of leaking. Envelope: `v1.<key id>.<base64(nonce|ct|tag)>`.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";

const VERSION = "v1";

export class DecryptionError extends Error {
  override readonly name = "DecryptionError";
}

export class Encryptor {
  /** First 8 hex chars of sha256(key): tells which key a value was sealed with, reveals nothing. */
  readonly keyId: string;

  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new RangeError("AES-256 key must be 32 bytes");
    this.keyId = createHash("sha256").update(key).digest("hex").slice(0, 8);
  }

  encrypt(plaintext: string, aad: string): string {
    const nonce = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.key, nonce);
    cipher.setAAD(Buffer.from(aad, "utf8"));
    const ct = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    return `${VERSION}.${this.keyId}.${Buffer.concat([nonce, ct, cipher.getAuthTag()]).toString("base64")}`;
  }

  decrypt(envelope: string, aad: string): string {
    const [version, keyId, body] = envelope.split(".");
    if (version !== VERSION || keyId === undefined || body === undefined) throw new DecryptionError("not an encrypted value");
    if (keyId !== this.keyId) throw new DecryptionError(`sealed with key ${keyId}, the server has key ${this.keyId}`);
    const raw = Buffer.from(body, "base64");
    if (raw.length < 28) throw new DecryptionError("truncated value");
    try {
      const decipher = createDecipheriv("aes-256-gcm", this.key, raw.subarray(0, 12));
      decipher.setAAD(Buffer.from(aad, "utf8"));
      decipher.setAuthTag(raw.subarray(raw.length - 16));
      return Buffer.concat([decipher.update(raw.subarray(12, raw.length - 16)), decipher.final()]).toString("utf8");
    } catch {
      throw new DecryptionError("authentication failed (wrong key or tampered value)");
    }
  }
}
