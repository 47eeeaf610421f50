// How a runner learns where to dial and how to prove who it is, before it has an identity:
// `<home>/bootstrap.json` written by the shim, or environment variables where no shim exists
// (container-only clouds, Kubernetes).
import { createPrivateKey, X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { certificateFingerprint, normalizeFingerprint, parseIdentityUri, type IdentityStore, type StoredIdentity } from "@dstack/proto/link";
import type { RunnerBootstrapFile } from "@dstack/proto/link";

/** `<home>/bootstrap.json`, as the shim writes it. */
export type BootstrapFile = RunnerBootstrapFile;

/** A job identity the server issued ahead of time (bootstrap.json or the environment). */
export interface IssuedIdentity {
  certPem: string;
  keyPem: string;
  /** The CA (PEM) when the bootstrap carries it; from the environment only its SHA-256 is known. */
  caPem?: string;
  notAfter?: string;
  renewAfter?: string;
}

export interface Bootstrap {
  /** Empty when the bootstrap carries only an issued identity. */
  joinToken: string;
  agentUrl: string;
  caSha256: string;
  serverName?: string;
  source: string;
  identity?: IssuedIdentity;
}

export const BOOTSTRAP_ENV = {
  token: "DSTACK_RUNNER_JOIN_TOKEN",
  url: "DSTACK_RUNNER_AGENT_URL",
  caSha256: "DSTACK_RUNNER_CA_SHA256",
  serverName: "DSTACK_RUNNER_SERVER_NAME",
  certificatePem: "DSTACK_RUNNER_CERTIFICATE_PEM",
  privateKeyPem: "DSTACK_RUNNER_PRIVATE_KEY_PEM",
} as const;

export class BootstrapError extends Error {
  override name = "BootstrapError";
}

/** Reads the bootstrap from `<home>/bootstrap.json`, else from the environment; null when neither has one. */
export function readBootstrap(home: string, env: Record<string, string | undefined> = process.env): Bootstrap | null {
  const file = join(home, "bootstrap.json");
  if (existsSync(file)) {
    let b: Partial<BootstrapFile>;
    try {
      b = JSON.parse(readFileSync(file, "utf8")) as Partial<BootstrapFile>;
    } catch (e) {
      throw new BootstrapError(`${file} is not valid JSON: ${e instanceof Error ? e.message : String(e)}`);
    }
    const issued = typeof b.certificatePem === "string" && !!b.certificatePem && typeof b.privateKeyPem === "string" && !!b.privateKeyPem;
    for (const k of issued ? (["agentUrl", "caCertificatePem"] as const) : (["joinToken", "agentUrl", "caCertificatePem"] as const)) {
      if (typeof b[k] !== "string" || !b[k]) throw new BootstrapError(`${file} lacks "${k}"`);
    }
    let caSha256: string;
    try {
      caSha256 = certificateFingerprint(b.caCertificatePem!);
    } catch (e) {
      throw new BootstrapError(`${file}: caCertificatePem is not a certificate: ${e instanceof Error ? e.message : String(e)}`);
    }
    const out: Bootstrap = { joinToken: b.joinToken ?? "", agentUrl: b.agentUrl!, caSha256, serverName: b.serverName || undefined, source: file };
    if (issued) {
      out.identity = { certPem: b.certificatePem!, keyPem: b.privateKeyPem!, caPem: b.caCertificatePem! };
      if (b.notAfter) out.identity.notAfter = b.notAfter;
      if (b.renewAfter) out.identity.renewAfter = b.renewAfter;
    }
    return out;
  }
  const token = env[BOOTSTRAP_ENV.token];
  const url = env[BOOTSTRAP_ENV.url];
  const ca = env[BOOTSTRAP_ENV.caSha256];
  const certPem = env[BOOTSTRAP_ENV.certificatePem];
  const keyPem = env[BOOTSTRAP_ENV.privateKeyPem];
  const issued = !!certPem && !!keyPem;
  if (!token && !url && !ca && !issued) return null;
  const missing = Object.entries({ ...(issued ? {} : { [BOOTSTRAP_ENV.token]: token }), [BOOTSTRAP_ENV.url]: url, [BOOTSTRAP_ENV.caSha256]: ca })
    .filter(([, v]) => !v)
    .map(([k]) => k);
  if (missing.length) throw new BootstrapError(`incomplete bootstrap environment: ${missing.join(", ")} not set`);
  const out: Bootstrap = { joinToken: token ?? "", agentUrl: url!, caSha256: normalizeFingerprint(ca!), serverName: env[BOOTSTRAP_ENV.serverName] || undefined, source: "environment" };
  if (issued) out.identity = { certPem: certPem!, keyPem: keyPem! };
  return out;
}

/**
 * Checks a server-issued job identity and stores it as if enrollment had produced it: the
 * certificate must chain to the pinned CA, name a runner (URI SAN `spiffe://dstack/runner/<id>`),
 * be valid now and match the key. Returns the stored identity; throws BootstrapError otherwise.
 */
export function adoptIssuedIdentity(b: Bootstrap, caPem: string, store: IdentityStore, now = new Date()): StoredIdentity {
  const issued = b.identity;
  if (!issued) throw new BootstrapError(`${b.source} carries no issued identity`);
  if (certificateFingerprint(caPem) !== b.caSha256) throw new BootstrapError("the CA does not match the pinned fingerprint");
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(issued.certPem);
    ca = new X509Certificate(caPem);
  } catch (e) {
    throw new BootstrapError(`the issued certificate cannot be read: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) throw new BootstrapError("the issued certificate is not signed by the pinned CA");
  const from = new Date(cert.validFrom);
  const to = new Date(cert.validTo);
  if (now.getTime() < from.getTime() - 5 * 60_000 || now >= to) throw new BootstrapError(`the issued certificate is not valid now (${cert.validFrom} to ${cert.validTo})`);
  let keyMatches = false;
  try {
    keyMatches = cert.checkPrivateKey(createPrivateKey(issued.keyPem));
  } catch (e) {
    throw new BootstrapError(`the issued private key cannot be read: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!keyMatches) throw new BootstrapError("the issued private key does not match the certificate");
  const ids = (cert.subjectAltName ?? "")
    .split(/,\s*/)
    .filter((n) => n.startsWith("URI:"))
    .map((n) => parseIdentityUri(n.slice(4)))
    .filter((x) => x !== null);
  const runner = ids.find((x) => x.kind === "runner");
  if (!runner) throw new BootstrapError("the issued certificate does not name a runner identity");
  const lifetime = to.getTime() - from.getTime();
  const id: StoredIdentity = {
    kind: "runner",
    agentId: runner.id,
    serverUrl: b.agentUrl,
    ...(b.serverName ? { servername: b.serverName } : {}),
    caSha256: b.caSha256,
    notAfter: issued.notAfter ?? to.toISOString(),
    renewAfter: issued.renewAfter ?? new Date(to.getTime() - lifetime / 3).toISOString(),
    keyPem: issued.keyPem,
    certPem: issued.certPem,
    caPem,
  };
  store.save(id);
  return id;
}
