import { generateKeyPairSync, randomBytes } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase, type Orm } from "../db/database.js";
import { GlobalRole, ProjectRole } from "../domain/enums.js";
import { hashToken } from "../auth/tokens.js";
import { createTestEnv, DIALECTS, type TestEnv } from "../testing/db.js";
import { bootstrap, createServices, type Services } from "./index.js";
import { ADMIN_TOKEN_FILE, type Principal } from "./users.js";
import { errorCode } from "../testing/errors.js";

const code = errorCode;

// A key and fingerprint as ssh-keygen made and printed them.
const ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmhQLSUGP0e36EIslPKOi5ba+8ThCfkHerh04SXYY2c laptop";
const ED25519_FP = "SHA256:YCzjYcloCps1JYT8vSxxHFcgVtRqspuZetLEQdhg+aQ";

const wireString = (b: Buffer | string) => {
  const data = typeof b === "string" ? Buffer.from(b) : b;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  return Buffer.concat([len, data]);
};
const mpint = (b: Buffer) => wireString(b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
const sshLine = (type: string, ...parts: Buffer[]) => `${type} ${Buffer.concat([wireString(type), ...parts]).toString("base64")}`;
function rsaKey(bits: number): string {
  const jwk = generateKeyPairSync("rsa", { modulusLength: bits }).publicKey.export({ format: "jwk" });
  return sshLine("ssh-rsa", mpint(Buffer.from(jwk.e!, "base64url")), mpint(Buffer.from(jwk.n!, "base64url")));
}
function ecdsaKey(curve: "256" | "384" | "521"): string {
  const jwk = generateKeyPairSync("ec", { namedCurve: `P-${curve}` }).publicKey.export({ format: "jwk" });
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, "base64url"), Buffer.from(jwk.y!, "base64url")]);
  return sshLine(`ecdsa-sha2-nistp${curve}`, wireString(`nistp${curve}`), wireString(point));
}
const ed25519Key = () => sshLine("ssh-ed25519", wireString(randomBytes(32)));

describe.each(DIALECTS)("users and tokens on %s", (dialect) => {
  let env: TestEnv;
  let orm: Orm;
  let svc: Services;
  let admin: Principal;
  let adminToken: string;

  beforeAll(async () => {
    env = await createTestEnv(dialect);
    orm = await openDatabase(env.settings.database);
    svc = createServices(orm, env.settings);
    const boot = await bootstrap(svc);
    expect(boot.adminCreated).toBe(true);
    adminToken = boot.adminToken!;
    admin = await svc.users.authenticate(`Bearer ${adminToken}`);
  });
  afterAll(async () => {
    await orm?.close(true);
    await env?.cleanup();
  });

  it("creates the admin and the default project on first start", async () => {
    expect(admin.name).toBe("admin");
    expect(admin.globalRole).toBe(GlobalRole.ADMIN);
    const main = await svc.projects.get(admin, "main");
    expect(main.members).toEqual([{ userName: "admin", projectRole: ProjectRole.ADMIN }]);
    const file = join(env.settings.homeDir, ADMIN_TOKEN_FILE);
    expect(readFileSync(file, "utf8").trim()).toBe(adminToken);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it("a second start keeps the admin token and creates nothing new", async () => {
    const again = await bootstrap(createServices(orm, env.settings));
    expect(again.adminCreated).toBe(false);
    expect((await svc.users.authenticate(adminToken)).name).toBe("admin");
    expect((await svc.users.list(admin)).filter((u) => u.name === "admin")).toHaveLength(1);
    expect((await svc.projects.list(admin)).filter((p) => p.name === "main")).toHaveLength(1);
  });

  it("never stores a token, only its sha256", async () => {
    const { token } = await svc.users.create(admin, { name: "alice" });
    expect(token).toMatch(/^[0-9a-f]{64}$/);
    const rows = await orm.em.getConnection().execute<{ name: string; token_hash: string }[]>("select * from users");
    const dump = JSON.stringify(rows);
    expect(dump).not.toContain(token);
    expect(dump).not.toContain(adminToken);
    expect(rows.find((r) => r.name === "alice")?.token_hash).toBe(hashToken(token));
  });

  it("authenticates good tokens and rejects bad, missing and stale ones", async () => {
    const { token } = await svc.users.create(admin, { name: "bob" });
    expect((await svc.users.authenticate(`Bearer ${token}`)).name).toBe("bob");
    expect(await code(svc.users.authenticate(`Bearer ${token}x`))).toBe("DSTACK_UNAUTHENTICATED");
    expect(await code(svc.users.authenticate(undefined))).toBe("DSTACK_UNAUTHENTICATED");
    expect(await code(svc.users.authenticate("Bearer "))).toBe("DSTACK_UNAUTHENTICATED");
    const bob = await svc.users.authenticate(token);
    const fresh = await svc.users.refreshToken(bob, "bob");
    expect(await code(svc.users.authenticate(token))).toBe("DSTACK_UNAUTHENTICATED");
    expect((await svc.users.authenticate(fresh)).name).toBe("bob");
  });

  it("deactivated and deleted users cannot authenticate; the name is reusable after delete", async () => {
    const { token } = await svc.users.create(admin, { name: "carol" });
    await svc.users.update(admin, "carol", { active: false });
    expect(await code(svc.users.authenticate(token))).toBe("DSTACK_USER_INACTIVE");
    await svc.users.update(admin, "carol", { active: true });
    await svc.users.delete(admin, ["carol"]);
    expect(await code(svc.users.authenticate(token))).toBe("DSTACK_UNAUTHENTICATED");
    expect(await code(svc.users.get(admin, "carol"))).toBe("DSTACK_USER_NOT_FOUND");
    expect((await svc.users.create(admin, { name: "carol" })).user.name).toBe("carol");
  });

  it("only global admins manage users; users see only themselves", async () => {
    const { token } = await svc.users.create(admin, { name: "dave" });
    const dave = await svc.users.authenticate(token);
    expect(await code(svc.users.create(dave, { name: "eve" }))).toBe("DSTACK_PERMISSION_DENIED");
    expect(await code(svc.users.update(dave, "dave", { globalRole: GlobalRole.ADMIN }))).toBe("DSTACK_PERMISSION_DENIED");
    expect(await code(svc.users.delete(dave, ["alice"]))).toBe("DSTACK_PERMISSION_DENIED");
    expect(await code(svc.users.refreshToken(dave, "alice"))).toBe("DSTACK_PERMISSION_DENIED");
    expect((await svc.users.list(dave)).map((u) => u.name)).toEqual(["dave"]);
    expect(await code(svc.users.get(dave, "alice"))).toBe("DSTACK_USER_NOT_FOUND");
  });

  it("rejects duplicate and invalid names, and keeps the last admin", async () => {
    expect(await code(svc.users.create(admin, { name: "alice" }))).toBe("DSTACK_USER_EXISTS");
    expect(await code(svc.users.create(admin, { name: "bad name!" }))).toBe("DSTACK_INVALID_NAME");
    expect(await code(svc.users.update(admin, "admin", { globalRole: GlobalRole.USER }))).toBe("DSTACK_LAST_ADMIN");
    expect(await code(svc.users.delete(admin, ["admin"]))).toBe("DSTACK_LAST_ADMIN");
    await svc.users.create(admin, { name: "admin2", globalRole: GlobalRole.ADMIN });
    expect(await code(svc.users.delete(admin, ["admin", "admin2"]))).toBe("DSTACK_LAST_ADMIN");
  });
});

describe.each(DIALECTS)("SSH public keys and list paging on %s", (dialect) => {
  let env: TestEnv;
  let orm: Orm;
  let svc: Services;
  let admin: Principal;
  let ann: Principal;
  let ben: Principal;

  beforeAll(async () => {
    env = await createTestEnv(dialect);
    orm = await openDatabase(env.settings.database);
    svc = createServices(orm, env.settings);
    admin = await svc.users.authenticate(`Bearer ${(await bootstrap(svc)).adminToken!}`);
    ann = await svc.users.authenticate((await svc.users.create(admin, { name: "ann" })).token);
    ben = await svc.users.authenticate((await svc.users.create(admin, { name: "ben" })).token);
  });
  afterAll(async () => {
    await orm?.close(true);
    await env?.cleanup();
  });

  it("adds keys of every supported type with OpenSSH fingerprints; each user sees only their own", async () => {
    const first = await svc.users.addPublicKey(ann, { key: `  ${ED25519}\n` });
    expect(first).toMatchObject({ name: "laptop", type: "ssh-ed25519", fingerprint: ED25519_FP, key: ED25519 });
    const others = [rsaKey(2048), ecdsaKey("256"), ecdsaKey("384"), ecdsaKey("521")];
    for (const [i, key] of others.entries()) {
      const added = await svc.users.addPublicKey(ann, { key, name: `k${i}` });
      expect(added.type).toBe(key.split(" ")[0]);
      expect(added.fingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    }
    const unnamed = await svc.users.addPublicKey(ben, { key: ed25519Key() });
    expect(unnamed.name).toBe(unnamed.fingerprint);
    expect((await svc.users.listPublicKeys(ann)).map((k) => k.name)).toEqual(["laptop", "k0", "k1", "k2", "k3"]);
    expect((await svc.users.listPublicKeys(ben)).map((k) => k.id)).toEqual([unnamed.id]);
    expect(await svc.users.listPublicKeys(admin)).toEqual([]);
    // The same key may belong to two users, but only once to each.
    expect((await svc.users.addPublicKey(ben, { key: ED25519, name: "shared" })).fingerprint).toBe(ED25519_FP);
    expect(await code(svc.users.addPublicKey(ann, { key: ED25519.replace("laptop", "other comment"), name: "again" }))).toBe("DSTACK_PUBLIC_KEY_EXISTS");
  });

  it("rejects malformed, unsupported and weak keys naming the field", async () => {
    const bad = [
      "",
      "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
      "ssh-ed25519 not*base64",
      `ssh-ed25519 ${Buffer.concat([wireString("ssh-ed25519"), wireString(randomBytes(31))]).toString("base64")}`,
      `ssh-rsa ${ed25519Key().split(" ")[1]}`,
      rsaKey(1024),
      `${ed25519Key()}\n${ed25519Key()}`,
      ecdsaKey("256").replace("nistp256 ", "nistp384 "),
    ];
    for (const key of bad) {
      const e = await svc.users.addPublicKey(ann, { key }).then(() => null, (x: unknown) => x as Error & { code?: string });
      expect(e?.code, key).toBe("DSTACK_INVALID_PUBLIC_KEY");
      expect(e?.message).toMatch(/^Invalid key: /);
    }
    expect(await code(svc.users.addPublicKey(ann, { key: ed25519Key(), name: "x".repeat(201) }))).toBe("DSTACK_INVALID_PUBLIC_KEY");
  });

  it("deletes only the caller's own keys, all or none", async () => {
    const annKeys = await svc.users.listPublicKeys(ann);
    const benKeys = await svc.users.listPublicKeys(ben);
    expect(await code(svc.users.deletePublicKeys(ann, [annKeys[0]!.id, benKeys[0]!.id]))).toBe("DSTACK_PUBLIC_KEY_NOT_FOUND");
    expect(await code(svc.users.deletePublicKeys(ann, ["not-a-uuid"]))).toBe("DSTACK_PUBLIC_KEY_NOT_FOUND");
    expect(await svc.users.listPublicKeys(ann)).toHaveLength(annKeys.length);
    await svc.users.deletePublicKeys(ann, [annKeys[0]!.id, annKeys[1]!.id]);
    expect((await svc.users.listPublicKeys(ann)).map((k) => k.id)).toEqual(annKeys.slice(2).map((k) => k.id));
    expect(await svc.users.listPublicKeys(ben)).toHaveLength(benKeys.length);
    // Deleting a user removes their keys.
    await svc.users.delete(admin, ["ben"]);
    expect(await svc.users.listPublicKeys(ben)).toEqual([]);
  });

  it("pages users and projects by name with an opaque token", async () => {
    for (const n of ["u3", "u1", "u2"]) await svc.users.create(admin, { name: n });
    for (const n of ["p3", "p1", "p2"]) await svc.projects.create(admin, n, {});
    const walk = async <T extends { name: string }>(fetch: (token: string) => Promise<{ items: T[]; nextPageToken: string }>) => {
      const pages: string[][] = [];
      let token = "";
      do {
        const page = await fetch(token);
        pages.push(page.items.map((x) => x.name));
        token = page.nextPageToken;
      } while (token && pages.length < 20);
      return pages;
    };
    expect(await walk((t) => svc.users.listPage(admin, { limit: 2, pageToken: t }))).toEqual([["admin", "ann"], ["u1", "u2"], ["u3"]]);
    expect(await walk((t) => svc.users.listPage(admin, { limit: 5, pageToken: t }))).toEqual([["admin", "ann", "u1", "u2", "u3"]]);
    expect((await svc.users.listPage(admin)).items).toHaveLength(5);
    expect(await walk((t) => svc.users.listPage(ann, { limit: 1, pageToken: t }))).toEqual([["ann"]]);
    expect(await walk((t) => svc.projects.listPage(admin, { limit: 2, pageToken: t }))).toEqual([["main", "p1"], ["p2", "p3"]]);
    expect(await walk((t) => svc.projects.listPage(ann, { limit: 2, pageToken: t }))).toEqual([[]]);
    expect(await code(svc.users.listPage(admin, { pageToken: "garbage!" }))).toBe("DSTACK_BAD_PAGE_TOKEN");
    expect(await code(svc.projects.listPage(admin, { pageToken: Buffer.from("[1]").toString("base64url") }))).toBe("DSTACK_BAD_PAGE_TOKEN");
  });
});

describe.each(DIALECTS)("preset admin token on %s", (dialect) => {
  it("honours DSTACK_SERVER_ADMIN_TOKEN at first start and when it changes later", async () => {
    const env = await createTestEnv(dialect, { DSTACK_SERVER_ADMIN_TOKEN: "preset-token-1" });
    const orm = await openDatabase(env.settings.database);
    try {
      const svc = createServices(orm, env.settings);
      const boot = await bootstrap(svc);
      expect(boot).toEqual({ adminToken: "preset-token-1", adminCreated: true });
      expect((await svc.users.authenticate("preset-token-1")).name).toBe("admin");
      expect(existsSync(join(env.settings.homeDir, ADMIN_TOKEN_FILE))).toBe(false);

      const changed = createServices(orm, { ...env.settings, adminToken: "preset-token-2" });
      await bootstrap(changed);
      expect((await svc.users.authenticate("preset-token-2")).name).toBe("admin");
      expect(await code(svc.users.authenticate("preset-token-1"))).toBe("DSTACK_UNAUTHENTICATED");
    } finally {
      await orm.close(true);
      await env.cleanup();
    }
  });
});
