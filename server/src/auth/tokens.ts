// Bearer tokens: 256 random bits, shown to the user once; the database keeps only sha256.
// A fast hash is enough here (unlike passwords): the input has full entropy.
import { createHash, randomBytes } from "node:crypto";

export function generateToken(): string {
  return randomBytes(32).toString("hex");
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** Accepts an `Authorization` header value or the bare token. */
export function bearerToken(header: string | undefined | null): string | null {
  if (header === undefined || header === null) return null;
  const t = header.replace(/^Bearer\s+/i, "").trim();
  return t === "" ? null : t;
}
