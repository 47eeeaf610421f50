// The agent's credentials on disk: its private key (0600), its certificate, the pinned CA and a
// small JSON record. Files are replaced atomically, so a crash mid-renewal keeps the old set.
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AgentKindName } from "./protocol.js";

export interface StoredIdentity {
  kind: AgentKindName;
  /** Instance id (shim) or job submission id (runner). */
  agentId: string;
  serverUrl: string;
  /** TLS server name to check, when the URL names an address the certificate does not. */
  servername?: string;
  caSha256: string;
  notAfter: string;
  renewAfter: string;
  keyPem: string;
  certPem: string;
  caPem: string;
}

const FILES = { key: "agent.key", cert: "agent.crt", ca: "ca.crt", meta: "identity.json" } as const;

function atomicWrite(path: string, data: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

export class IdentityStore {
  constructor(readonly dir: string) {}

  exists(): boolean {
    return existsSync(join(this.dir, FILES.meta));
  }

  load(): StoredIdentity {
    if (!this.exists()) throw new Error(`no agent identity in ${this.dir}; enroll first with a join token`);
    const meta = JSON.parse(readFileSync(join(this.dir, FILES.meta), "utf8")) as Omit<StoredIdentity, "keyPem" | "certPem" | "caPem">;
    return {
      ...meta,
      keyPem: readFileSync(join(this.dir, FILES.key), "utf8"),
      certPem: readFileSync(join(this.dir, FILES.cert), "utf8"),
      caPem: readFileSync(join(this.dir, FILES.ca), "utf8"),
    };
  }

  save(id: StoredIdentity): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const { keyPem, certPem, caPem, ...meta } = id;
    atomicWrite(join(this.dir, FILES.key), keyPem, 0o600);
    atomicWrite(join(this.dir, FILES.ca), caPem, 0o644);
    atomicWrite(join(this.dir, FILES.cert), certPem, 0o644);
    atomicWrite(join(this.dir, FILES.meta), JSON.stringify(meta, null, 1) + "\n", 0o600);
  }
}
