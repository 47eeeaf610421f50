// Users and their tokens. The admin is created at first start; tokens are issued once and
// stored only as sha256, so a leaked database does not leak credentials.
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { GlobalRole, enumName } from "../domain/enums.js";
import { withTransaction, type Em, type Orm } from "../db/database.js";
import { User, UserPublicKey, build } from "../db/entities.js";
import { err } from "../errors.js";
import { bearerToken, generateToken, hashToken } from "../auth/tokens.js";
import { isGlobalAdmin } from "../auth/permissions.js";
import type { Settings } from "../settings.js";
import { checkName, tombstoneName } from "./names.js";
import { decodeNameToken, pageLimit, trimPage, type Page, type PageQuery } from "./paging.js";
import { parsePublicKey } from "./ssh-keys.js";

export const ADMIN_USER_NAME = "admin";
/** Where the first admin token is saved (0600) so `dstack server` can show it on later starts. */
export const ADMIN_TOKEN_FILE = "admin.token";

export interface UserView {
  id: string;
  name: string;
  globalRole: GlobalRole;
  email: string | null;
  active: boolean;
  sshPublicKey: string | null;
  createdAt: Date;
}

export interface PublicKeyView {
  id: string;
  name: string;
  type: string;
  fingerprint: string;
  key: string;
  addedAt: Date;
}

export function publicKeyView(k: UserPublicKey): PublicKeyView {
  return { id: k.id, name: k.name, type: k.type, fingerprint: k.fingerprint, key: k.publicKey, addedAt: k.createdAt };
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_KEY_NAME = 200;

/** The authenticated caller, as services see it. */
export type Principal = Pick<UserView, "id" | "name" | "globalRole">;

export function userView(u: User): UserView {
  return { id: u.id, name: u.name, globalRole: u.globalRole, email: u.email, active: u.active, sshPublicKey: u.sshPublicKey, createdAt: u.createdAt };
}

function requireAdmin(actor: Principal, action: string): void {
  if (!isGlobalAdmin(actor)) throw err("DSTACK_PERMISSION_DENIED", { action, required: "the global admin role" });
}

function checkRole(role: GlobalRole): GlobalRole {
  if (role !== GlobalRole.ADMIN && role !== GlobalRole.USER) {
    throw err("DSTACK_INVALID_ROLE", { kind: "global", role: String(role), allowed: "admin, user" });
  }
  return role;
}

export class UsersService {
  constructor(
    private readonly orm: Orm,
    private readonly settings: Settings,
  ) {}

  /**
   * Creates the admin on first start (with DSTACK_SERVER_ADMIN_TOKEN if set, else a fresh
   * token saved to <home>/admin.token). On later starts keeps the admin's token, unless a
   * preset token is given and differs: then the preset wins, so the variable always works.
   * Returns the token when it is known (just created, or preset).
   */
  async bootstrapAdmin(): Promise<{ admin: UserView; token: string | null; created: boolean }> {
    const preset = this.settings.adminToken;
    const result = await withTransaction(this.orm, async (em) => {
      const existing = await em.findOne(User, { name: ADMIN_USER_NAME, deleted: false });
      if (existing) {
        if (preset !== undefined && existing.tokenHash !== hashToken(preset)) existing.tokenHash = hashToken(preset);
        return { admin: userView(existing), token: preset ?? null, created: false };
      }
      const token = preset ?? generateToken();
      const admin = build(User, { name: ADMIN_USER_NAME, globalRole: GlobalRole.ADMIN, tokenHash: hashToken(token) });
      em.persist(admin);
      return { admin: userView(admin), token, created: true };
    });
    // Written only after the commit, so the file never names a token the DB lacks.
    if (result.created && preset === undefined && result.token !== null) {
      const file = join(this.settings.homeDir, ADMIN_TOKEN_FILE);
      writeFileSync(file, result.token + "\n", { mode: 0o600 });
      chmodSync(file, 0o600);
    }
    return result;
  }

  /** The user behind a bearer token, or Unauthenticated. */
  async authenticate(authorization: string | null | undefined): Promise<UserView> {
    const token = bearerToken(authorization);
    if (token === null) throw err("DSTACK_UNAUTHENTICATED");
    const user = await this.orm.em.fork().findOne(User, { tokenHash: hashToken(token), deleted: false });
    if (!user) throw err("DSTACK_UNAUTHENTICATED");
    if (!user.active) throw err("DSTACK_USER_INACTIVE", { user: user.name });
    return userView(user);
  }

  async create(
    actor: Principal,
    input: { name: string; globalRole?: GlobalRole; email?: string | null; active?: boolean },
  ): Promise<{ user: UserView; token: string }> {
    requireAdmin(actor, "creating users");
    checkName("user", input.name);
    const token = generateToken();
    return withTransaction(this.orm, async (em) => {
      if (await em.count(User, { name: input.name })) throw err("DSTACK_USER_EXISTS", { user: input.name });
      const user = build(User, {
        name: input.name,
        globalRole: checkRole(input.globalRole ?? GlobalRole.USER),
        email: input.email ?? null,
        active: input.active ?? true,
        tokenHash: hashToken(token),
      });
      em.persist(user);
      return { user: userView(user), token };
    });
  }

  async update(actor: Principal, name: string, patch: { globalRole?: GlobalRole; email?: string | null; active?: boolean }): Promise<UserView> {
    requireAdmin(actor, "updating users");
    return withTransaction(this.orm, async (em) => {
      const user = await this.load(em, name);
      const demotes = (patch.globalRole !== undefined && patch.globalRole !== GlobalRole.ADMIN) || patch.active === false;
      if (demotes && user.globalRole === GlobalRole.ADMIN) await this.keepAnAdmin(em, user, "demote or deactivate");
      if (patch.globalRole !== undefined) user.globalRole = checkRole(patch.globalRole);
      if (patch.email !== undefined) user.email = patch.email;
      if (patch.active !== undefined) user.active = patch.active;
      return userView(user);
    });
  }

  /** Deletes users (global admin only); their memberships go, their runs stay for history. */
  async delete(actor: Principal, names: string[]): Promise<void> {
    requireAdmin(actor, "deleting users");
    await withTransaction(this.orm, async (em) => {
      for (const name of names) {
        const user = await this.load(em, name);
        if (user.globalRole === GlobalRole.ADMIN) await this.keepAnAdmin(em, user, "delete", names);
        user.deleted = true;
        user.active = false;
        user.name = tombstoneName(user.name, user.id);
        // An unguessable hash no token maps to, so the old token stops working at once.
        user.tokenHash = hashToken(generateToken());
        await em.nativeDelete("Member", { user: user.id });
        await em.nativeDelete(UserPublicKey, { user: user.id });
      }
    });
  }

  /** A user sees themself; admins see anyone. */
  async get(actor: Principal, name: string): Promise<UserView> {
    if (!isGlobalAdmin(actor) && actor.name !== name) throw err("DSTACK_USER_NOT_FOUND", { user: name });
    return userView(await this.load(this.orm.em.fork(), name));
  }

  async list(actor: Principal): Promise<UserView[]> {
    const em = this.orm.em.fork();
    const where = isGlobalAdmin(actor) ? { deleted: false } : { id: actor.id, deleted: false };
    return (await em.find(User, where, { orderBy: { name: "asc" } })).map(userView);
  }

  /** One page of `list`, keyset-paginated by name. */
  async listPage(actor: Principal, q: PageQuery = {}): Promise<Page<UserView>> {
    const limit = pageLimit(q.limit);
    const after = decodeNameToken(q.pageToken);
    const em = this.orm.em.fork();
    const where = {
      deleted: false,
      ...(isGlobalAdmin(actor) ? {} : { id: actor.id }),
      ...(after === null ? {} : { name: { $gt: after } }),
    };
    const page = trimPage(await em.find(User, where, { orderBy: { name: "asc" }, limit: limit + 1 }), limit);
    return { items: page.rows.map(userView), nextPageToken: page.nextPageToken };
  }

  /** Adds an SSH public key for the caller. `name` empty = the key's comment (else its fingerprint). */
  async addPublicKey(actor: Principal, input: { key: string; name?: string }): Promise<PublicKeyView> {
    const parsed = parsePublicKey("key", input.key);
    const name = (input.name ?? "").trim() || parsed.comment || parsed.fingerprint;
    if (name.length > MAX_KEY_NAME) throw err("DSTACK_INVALID_PUBLIC_KEY", { field: "name", reason: `the name is longer than ${MAX_KEY_NAME} characters` });
    return withTransaction(this.orm, async (em) => {
      const user = await this.load(em, actor.name);
      if (await em.count(UserPublicKey, { user: user.id, fingerprint: parsed.fingerprint })) {
        throw err("DSTACK_PUBLIC_KEY_EXISTS", { fingerprint: parsed.fingerprint });
      }
      const key = build(UserPublicKey, { user: em.getReference(User, user.id, { wrapped: true }), name, type: parsed.type, publicKey: parsed.key, fingerprint: parsed.fingerprint });
      em.persist(key);
      return publicKeyView(key);
    });
  }

  /** The caller's SSH public keys, oldest first. */
  async listPublicKeys(actor: Principal): Promise<PublicKeyView[]> {
    const keys = await this.orm.em.fork().find(UserPublicKey, { user: actor.id }, { orderBy: { createdAt: "asc", id: "asc" } });
    return keys.map(publicKeyView);
  }

  /**
   * The OpenSSH public keys a user's jobs accept for `ssh <run>`: the user's registered keys and
   * the server-managed key, if any (the dispatcher sends them with each task). Unknown user: none.
   */
  async sshKeysOf(userId: string): Promise<string[]> {
    const em = this.orm.em.fork();
    const user = UUID_RE.test(userId) ? await em.findOne(User, { id: userId.toLowerCase(), deleted: false }) : null;
    if (!user) return [];
    const keys = await em.find(UserPublicKey, { user: user.id }, { orderBy: { createdAt: "asc", id: "asc" } });
    return [...keys.map((k) => k.publicKey), ...(user.sshPublicKey ? [user.sshPublicKey] : [])];
  }

  /** Deletes the caller's keys by id, all or none; an id that is not the caller's is NotFound. */
  async deletePublicKeys(actor: Principal, ids: string[]): Promise<void> {
    await withTransaction(this.orm, async (em) => {
      for (const id of ids) {
        const key = UUID_RE.test(id) ? await em.findOne(UserPublicKey, { id: id.toLowerCase(), user: actor.id }) : null;
        if (!key) throw err("DSTACK_PUBLIC_KEY_NOT_FOUND", { id });
        em.remove(key);
      }
    });
  }

  /** Issues a new token, invalidating the old one. Users may refresh their own; admins anyone's. */
  async refreshToken(actor: Principal, name: string): Promise<string> {
    if (!isGlobalAdmin(actor) && actor.name !== name) throw err("DSTACK_PERMISSION_DENIED", { action: `refreshing the token of '${name}'`, required: "the global admin role" });
    const token = generateToken();
    await withTransaction(this.orm, async (em) => {
      (await this.load(em, name)).tokenHash = hashToken(token);
    });
    return token;
  }

  async setSshPublicKey(actor: Principal, key: string | null): Promise<void> {
    await withTransaction(this.orm, async (em) => {
      (await this.load(em, actor.name)).sshPublicKey = key;
    });
  }

  private async load(em: Em, name: string): Promise<User> {
    const user = await em.findOne(User, { name, deleted: false });
    if (!user) throw err("DSTACK_USER_NOT_FOUND", { user: name });
    return user;
  }

  /** Refuses to leave the server without an active admin. */
  private async keepAnAdmin(em: Em, user: User, action: string, alsoGoing: string[] = []): Promise<void> {
    const others = await em.count(User, {
      globalRole: GlobalRole.ADMIN,
      active: true,
      deleted: false,
      id: { $ne: user.id },
      name: { $nin: alsoGoing },
    });
    if (others === 0) throw err("DSTACK_LAST_ADMIN", { action, user: user.name });
  }
}

export const globalRoleName = (r: GlobalRole): string => enumName(GlobalRole, r);
