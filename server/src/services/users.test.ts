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
