// How a runner learns where to dial and how to prove who it is, before it has an identity:
// `<home>/bootstrap.json` written by the shim, or environment variables where no shim exists
// (container-only clouds, Kubernetes).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { certificateFingerprint, normalizeFingerprint } from "@dstack/proto/link";

/** `<home>/bootstrap.json`. */
export interface BootstrapFile {
  /** One-time runner join token, bound to the job submission. */
  joinToken: string;
  /** The server's agent port as the container reaches it, e.g. `https://172.17.0.1:3001`. */
  agentUrl: string;
  /** The server CA (PEM); its SHA-256 is the pin enrollment checks. */
  caCertificatePem: string;
  /** TLS name to expect when agentUrl names an address the server certificate does not list. */
  serverName?: string;
}

export interface Bootstrap {
  joinToken: string;
  agentUrl: string;
  caSha256: string;
  serverName?: string;
  source: string;
}

export const BOOTSTRAP_ENV = {
  token: "DSTACK_RUNNER_JOIN_TOKEN",
  url: "DSTACK_RUNNER_AGENT_URL",
  caSha256: "DSTACK_RUNNER_CA_SHA256",
  serverName: "DSTACK_RUNNER_SERVER_NAME",
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
    for (const k of ["joinToken", "agentUrl", "caCertificatePem"] as const) {
      if (typeof b[k] !== "string" || !b[k]) throw new BootstrapError(`${file} lacks "${k}"`);
    }
    let caSha256: string;
    try {
      caSha256 = certificateFingerprint(b.caCertificatePem!);
    } catch (e) {
      throw new BootstrapError(`${file}: caCertificatePem is not a certificate: ${e instanceof Error ? e.message : String(e)}`);
    }
    return { joinToken: b.joinToken!, agentUrl: b.agentUrl!, caSha256, serverName: b.serverName || undefined, source: file };
  }
  const token = env[BOOTSTRAP_ENV.token];
  const url = env[BOOTSTRAP_ENV.url];
  const ca = env[BOOTSTRAP_ENV.caSha256];
  if (!token && !url && !ca) return null;
  const missing = Object.entries({ [BOOTSTRAP_ENV.token]: token, [BOOTSTRAP_ENV.url]: url, [BOOTSTRAP_ENV.caSha256]: ca })
    .filter(([, v]) => !v)
    .map(([k]) => k);
  if (missing.length) throw new BootstrapError(`incomplete bootstrap environment: ${missing.join(", ")} not set`);
  return { joinToken: token!, agentUrl: url!, caSha256: normalizeFingerprint(ca!), serverName: env[BOOTSTRAP_ENV.serverName] || undefined, source: "environment" };
}
