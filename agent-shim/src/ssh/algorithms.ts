// The algorithms the embedded SSH server offers. ssh2's defaults still carry NIST-curve kex,
// dh-group14, ssh-rsa (SHA-1) and hmac-sha1, so the list is given explicitly; it follows the
// ssh-audit / Mozilla "modern" baseline in shared/reference/anchors.md §4.2. ssh2 1.17 has no
// sntrup761x25519 or mlkem768x25519, so curve25519 leads. OpenSSH ≥ 6.5 negotiates all of this.
import type { Algorithms } from "ssh2";

export const SSH_SERVER_ALGORITHMS = {
  // DH groups 16/18 (4096/8192-bit) stay as a fallback for clients without curve25519.
  kex: ["curve25519-sha256", "curve25519-sha256@libssh.org", "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512"],
  // AEAD only: integrity comes from the cipher, no MAC is used.
  cipher: ["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com"],
  // Still offered because the MAC list is negotiated even when the cipher is AEAD; etm only.
  hmac: ["hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com"],
  serverHostKey: ["ssh-ed25519"],
  // No compression: it costs the shim CPU and buys little on the links it serves.
  compress: ["none"],
} satisfies Algorithms;

/**
 * Client key signature algorithms accepted for publickey auth. `ssh-rsa` (RSA with SHA-1) and
 * `ssh-dss` are refused; RSA keys must have at least MIN_RSA_BITS.
 */
export const CLIENT_SIGNATURE_ALGORITHMS: ReadonlySet<string> = new Set([
  "ssh-ed25519",
  "rsa-sha2-512",
  "rsa-sha2-256",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
]);

/** 2048 rather than ssh-audit's 3072: dstack's own generated user keys are 2048-bit RSA. */
export const MIN_RSA_BITS = 2048;
