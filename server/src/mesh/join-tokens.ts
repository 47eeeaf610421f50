// Join tokens: the one secret an agent needs to enroll. Created per fleet (shims) or per job
// submission (runners), with an expiry; one-time unless created reusable (then optionally capped
// at `maxUses` enrollments); stored only as sha256. Deleting a fleet revokes its tokens.
// The token text carries the id it is bound to (`dsj.<bound id>.<secret>`); the hash covers the
// whole text, so the binding cannot be altered without invalidating the token.
import { randomBytes } from "node:crypto";
import { raw } from "@mikro-orm/core";
import { JoinToken, build } from "../db/entities.js";
import { withTransaction, type Em, type Orm } from "../db/database.js";
import { hashToken } from "../auth/tokens.js";
import { meshErr } from "./errors.js";

export type JoinTokenKind = "shim" | "runner";

/** Defaults: 30 minutes for shims (Teleport's ephemeral default), 1 hour for runners (image pulls). */
export const DEFAULT_TOKEN_TTL_MS: Record<JoinTokenKind, number> = { shim: 30 * 60_000, runner: 60 * 60_000 };

/** `purpose` column values. */
const PURPOSE = { shim: "shim", shimReusable: "shim-reusable", runner: "runner" } as const;

export interface CreateJoinTokenOptions {
  projectId: string;
  fleetId?: string | null;
  kind: JoinTokenKind;
  /** Shims only: the token may enroll many hosts until it expires or is revoked. */
  reusable?: boolean;
  /** Reusable tokens: at most this many enrollments (unset = no limit but the expiry). */
  maxUses?: number;
  /** The instance (shim) or job submission (runner) the enrolling agent becomes. */
  boundId?: string;
  ttlMs?: number;
}

export interface CreatedJoinToken {
  id: string;
  /** The secret, shown once. */
  token: string;
  expiresAt: Date;
}

export interface ConsumedJoinToken {
  id: string;
  projectId: string;
  fleetId: string | null;
  kind: JoinTokenKind;
  reusable: boolean;
  boundId: string | null;
}

/** Revokes every live token of a fleet (it is being deleted), in the caller's transaction. */
export function revokeFleetTokens(em: Em, fleetId: string): Promise<number> {
  return em.nativeUpdate(JoinToken, { fleet: fleetId, revoked: false }, { revoked: true });
}

function parse(token: string): { boundId: string | null } | null {
  const m = /^dsj\.([A-Za-z0-9-]+)\.[A-Za-z0-9_-]{20,}$/.exec(token.trim());
  if (!m) return null;
  return { boundId: m[1] === "-" ? null : m[1]! };
}

export class JoinTokens {
  constructor(private readonly orm: Orm) {}

  async create(o: CreateJoinTokenOptions): Promise<CreatedJoinToken> {
    if (o.reusable && o.kind !== "shim") throw new Error("only shim join tokens can be reusable");
    if (o.maxUses !== undefined && (!o.reusable || !Number.isInteger(o.maxUses) || o.maxUses < 1)) throw new Error("maxUses is a positive integer, for reusable tokens");
    if (o.boundId !== undefined && !/^[A-Za-z0-9-]+$/.test(o.boundId)) throw new Error(`bad bound id '${o.boundId}'`);
    const token = `dsj.${o.boundId ?? "-"}.${randomBytes(32).toString("base64url")}`;
    const expiresAt = new Date(Date.now() + (o.ttlMs ?? DEFAULT_TOKEN_TTL_MS[o.kind]));
    const purpose = o.kind === "runner" ? PURPOSE.runner : o.reusable ? PURPOSE.shimReusable : PURPOSE.shim;
    const row = build(JoinToken, { purpose, tokenHash: hashToken(token), expiresAt, maxUses: o.maxUses ?? null });
    return withTransaction(this.orm, async (em) => {
      row.project = em.getReference("Project", o.projectId) as never;
      row.fleet = o.fleetId ? (em.getReference("Fleet", o.fleetId) as never) : null;
      em.persist(row);
      return { id: row.id, token, expiresAt };
    });
  }

  /** Revokes by id; later enrollments with it fail. Already-enrolled agents keep their certificates. */
  async revoke(id: string): Promise<boolean> {
    const n = await this.orm.em.fork().nativeUpdate(JoinToken, { id }, { revoked: true });
    return n > 0;
  }

  /**
   * Checks the token for an agent of `kind` and counts the use (one-time tokens and capped
   * reusable ones are used up). Throws a MeshError that says why a token is refused: unknown,
   * revoked (or its fleet deleted), expired, already used / used up, or of another kind.
   */
  async consume(token: string, kind: JoinTokenKind, now = new Date()): Promise<ConsumedJoinToken> {
    const parsed = parse(token);
    if (!parsed) throw meshErr("MESH_TOKEN_UNKNOWN");
    const em = this.orm.em.fork();
    const row = await em.findOne(JoinToken, { tokenHash: hashToken(token.trim()) }, { populate: ["fleet"] });
    if (!row) throw meshErr("MESH_TOKEN_UNKNOWN");
    if (row.revoked || row.fleet?.getEntity().deleted) throw meshErr("MESH_TOKEN_REVOKED");
    if (row.expiresAt.getTime() <= now.getTime()) throw meshErr("MESH_TOKEN_EXPIRED", { expiresAt: row.expiresAt.toISOString() });
    const rowKind: JoinTokenKind = row.purpose === PURPOSE.runner ? "runner" : "shim";
    if (rowKind !== kind) throw meshErr("MESH_TOKEN_KIND", { expected: rowKind, actual: kind });
    const reusable = row.purpose === PURPOSE.shimReusable;
    // Conditional updates: of agents racing for the last use, exactly as many win as uses are left.
    if (!reusable) {
      if (row.usedAt) throw meshErr("MESH_TOKEN_USED", { usedAt: row.usedAt.toISOString() });
      const n = await em.nativeUpdate(JoinToken, { id: row.id, usedAt: null }, { usedAt: now, useCount: 1 });
      if (n !== 1) throw meshErr("MESH_TOKEN_USED", { usedAt: now.toISOString() });
    } else if (row.maxUses !== null) {
      const usedUp = () => meshErr("MESH_TOKEN_USED_UP", { maxUses: row.maxUses!, usedAt: (row.usedAt ?? now).toISOString() });
      if (row.useCount >= row.maxUses) throw usedUp();
      const n = await em.nativeUpdate(JoinToken, { id: row.id, useCount: { $lt: row.maxUses } }, { useCount: raw("use_count + 1"), usedAt: now });
      if (n !== 1) throw usedUp();
    } else {
      await em.nativeUpdate(JoinToken, { id: row.id }, { useCount: raw("use_count + 1"), usedAt: now });
    }
    return {
      id: row.id,
      projectId: row.project.id,
      fleetId: row.fleet?.id ?? null,
      kind: rowKind,
      reusable,
      boundId: parsed.boundId,
    };
  }
}
