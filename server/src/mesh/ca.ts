// The agent CA: created at first start under <home>/mesh, then reused. It signs the agent port's
// server certificate and every agent's short-lived client certificate. Agents pin it by the
// SHA-256 of its DER (`--ca-sha256`), so nobody in between can pose as the server.
import { createPublicKey } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { hostname, networkInterfaces } from "node:os";
import { join } from "node:path";
import type { KeyObject } from "node:crypto";
import { certificateFingerprint, generateKey, issueCertificate } from "@dstack/proto/link";

export interface CertificateAuthority {
  certPem: string;
  keyPem: string;
  /** SHA-256 of the CA certificate's DER, lowercase hex. */
  fingerprint: string;
  /** Signs a certificate for `subjectKey`. */
  issue(o: { commonName: string; organizationalUnit?: string; subjectKey: KeyObject; lifetimeMs: number; usage: ("server" | "client")[]; dns?: string[]; ips?: string[]; uris?: string[] }): { certPem: string; notAfter: Date };
}

/** CA lifetime: 10 years. Rotation is a later concern; the fingerprint changes with it. */
const CA_LIFETIME_MS = 10 * 365 * 24 * 3600_000;
/** Leaves start a minute in the past to tolerate agents whose clock is slightly behind. */
const CLOCK_SKEW_MS = 60_000;

function writeOnce(path: string, data: string, mode: number): void {
  try {
    writeFileSync(path, data, { mode, flag: "wx" });
    chmodSync(path, mode);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  }
}

/** Loads `<home>/mesh/ca.{key,crt}`, creating them (key 0600) on first use. */
export function loadOrCreateCa(homeDir: string): CertificateAuthority {
  const dir = join(homeDir, "mesh");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keyFile = join(dir, "ca.key");
  const certFile = join(dir, "ca.crt");
  if (!existsSync(keyFile) || !existsSync(certFile)) {
    const key = generateKey();
    const now = new Date();
    const certPem = issueCertificate({
      subject: { commonName: `dstack agent CA (${hostname()})`, organization: "dstack" },
      subjectKey: key.publicKey,
      issuer: "self",
      selfKeyPem: key.privateKeyPem,
      notBefore: new Date(+now - CLOCK_SKEW_MS),
      notAfter: new Date(+now + CA_LIFETIME_MS),
      ca: true,
    });
    // The key first: a crash between the two writes leaves a key without a cert, never the reverse.
    writeOnce(keyFile, key.privateKeyPem, 0o600);
    writeOnce(certFile, certPem, 0o644);
  }
  const keyPem = readFileSync(keyFile, "utf8");
  const certPem = readFileSync(certFile, "utf8");
  return {
    certPem,
    keyPem,
    fingerprint: certificateFingerprint(certPem),
    issue(o) {
      const now = Date.now();
      const notAfter = new Date(now + o.lifetimeMs);
      const pem = issueCertificate({
        subject: { commonName: o.commonName, organizationalUnit: o.organizationalUnit, organization: "dstack" },
        subjectKey: o.subjectKey,
        issuer: { certPem, privateKeyPem: keyPem },
        notBefore: new Date(now - CLOCK_SKEW_MS),
        notAfter,
        usage: o.usage,
        dns: o.dns,
        ips: o.ips,
        uris: o.uris,
      });
      return { certPem: pem, notAfter };
    },
  };
}

/** Names the agent port's certificate covers: localhost, loopback, every local address, plus `extraNames`. */
export function serverNames(extraNames: string[] = []): { dns: string[]; ips: string[] } {
  const dns = new Set(["localhost", hostname()]);
  const ips = new Set(["127.0.0.1", "::1"]);
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (!a.address.includes("%")) ips.add(a.address);
  for (const n of extraNames) (/^[\d.]+$|:/.test(n) ? ips : dns).add(n);
  return { dns: [...dns], ips: [...ips] };
}

/** A fresh server certificate for the agent port (issued at every start; its key never leaves memory). */
export function issueServerCertificate(ca: CertificateAuthority, extraNames: string[] = [], lifetimeMs = 365 * 24 * 3600_000): { certPem: string; keyPem: string } {
  const key = generateKey();
  const { dns, ips } = serverNames(extraNames);
  const { certPem } = ca.issue({ commonName: "dstack-server", subjectKey: createPublicKey(key.privateKeyPem), lifetimeMs, usage: ["server"], dns, ips });
  return { certPem, keyPem: key.privateKeyPem };
}
