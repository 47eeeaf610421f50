// Revoked agent identities, kept in <home>/mesh/revoked.json (the schema belongs to others, and
// the list is small). Revocation is final for an identity: a host that should come back enrolls
// again with a fresh token and gets a fresh instance id.
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AgentKindName } from "@dstack/proto/link";

export class Revocations {
  private readonly file: string;
  private entries: Record<string, string>;

  constructor(homeDir: string) {
    this.file = join(homeDir, "mesh", "revoked.json");
    this.entries = existsSync(this.file) ? (JSON.parse(readFileSync(this.file, "utf8")) as Record<string, string>) : {};
  }

  isRevoked(kind: AgentKindName, id: string): boolean {
    return `${kind}/${id}` in this.entries;
  }

  revoke(kind: AgentKindName, id: string, at = new Date()): void {
    this.entries[`${kind}/${id}`] = at.toISOString();
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.entries, null, 1), { mode: 0o600 });
    renameSync(tmp, this.file); // atomic: a crash never leaves half a list
  }
}
