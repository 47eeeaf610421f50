import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase, type Orm } from "../db/database.js";
import { ProjectRole } from "../domain/enums.js";
import { isDstackError } from "../errors.js";
import { createTestEnv, DIALECTS, type TestEnv } from "../testing/db.js";
import { DecryptionError, Encryptor } from "./encryption.js";
import { bootstrap, createServices, type Services } from "./index.js";
import type { Principal } from "./users.js";
import { errorCode } from "../testing/errors.js";

const code = errorCode;

describe("Encryptor", () => {
  const key = randomBytes(32);
  it("round-trips, with a fresh nonce each time", () => {
    const e = new Encryptor(key);
    const a = e.encrypt("hunter2", "ctx");
    const b = e.encrypt("hunter2", "ctx");
    expect(a).not.toBe(b);
    expect(e.decrypt(a, "ctx")).toBe("hunter2");
  });
  it("refuses another key, another context, and tampering", () => {
    const e = new Encryptor(key);
    const sealed = e.encrypt("v", "ctx");
    expect(() => new Encryptor(randomBytes(32)).decrypt(sealed, "ctx")).toThrow(DecryptionError);
    expect(() => e.decrypt(sealed, "other")).toThrow(DecryptionError);
    const body = Buffer.from(sealed.split(".")[2]!, "base64");
    body[14]! ^= 1;
    expect(() => e.decrypt(`v1.${e.keyId}.${body.toString("base64")}`, "ctx")).toThrow(DecryptionError);
  });
});

describe.each(DIALECTS)("secrets on %s", (dialect) => {
  let env: TestEnv;
  let orm: Orm;
  let svc: Services;
  let admin: Principal;
  let projectId: string;

  beforeAll(async () => {
    env = await createTestEnv(dialect);
    orm = await openDatabase(env.settings.database);
    svc = createServices(orm, env.settings);
    admin = await svc.users.authenticate((await bootstrap(svc)).adminToken);
    projectId = (await svc.projects.get(admin, "main")).id;
  });
  afterAll(async () => {
    await orm?.close(true);
    await env?.cleanup();
  });

  it("stores values encrypted at rest and resolves plaintext only for jobs", async () => {
    const plaintext = "s3cr3t-value-" + randomBytes(8).toString("hex");
    await svc.secrets.createOrUpdate(admin, "main", "HF_TOKEN", plaintext);
    const rows = await orm.em.getConnection().execute<{ name: string; value: string }[]>("select name, value from secrets");
    const row = rows.find((r) => r.name === "HF_TOKEN")!;
    expect(row.value).not.toContain(plaintext);
    expect(row.value).toMatch(/^v1\.[0-9a-f]{8}\./);
    expect(JSON.stringify(await svc.secrets.list(admin, "main"))).not.toContain(plaintext);
    expect(JSON.stringify(await svc.secrets.get(admin, "main", "HF_TOKEN"))).not.toContain(plaintext);
    expect(await svc.secrets.resolveForJob(projectId, ["HF_TOKEN"])).toEqual({ HF_TOKEN: plaintext });
  });

  it("updates in place and deletes", async () => {
    await svc.secrets.createOrUpdate(admin, "main", "A", "1");
    await svc.secrets.createOrUpdate(admin, "main", "A", "2");
    expect((await svc.secrets.list(admin, "main")).filter((s) => s.name === "A")).toHaveLength(1);
    expect(await svc.secrets.resolveForJob(projectId, ["A"])).toEqual({ A: "2" });
    await svc.secrets.delete(admin, "main", ["A"]);
    expect(await code(svc.secrets.resolveForJob(projectId, ["A"]))).toBe("DSTACK_SECRET_NOT_FOUND");
    expect(await code(svc.secrets.delete(admin, "main", ["A"]))).toBe("DSTACK_SECRET_NOT_FOUND");
  });

  it("fails to decrypt under a different server key, with an error naming the fix", async () => {
    await svc.secrets.createOrUpdate(admin, "main", "DB_PASSWORD", "pw");
    const other = createServices(orm, { ...env.settings, encryptionKey: randomBytes(32) });
    try {
      await other.secrets.resolveForJob(projectId, ["DB_PASSWORD"]);
      expect.unreachable();
    } catch (e) {
      expect(isDstackError(e, "DSTACK_SECRET_DECRYPT_FAILED")).toBe(true);
      expect((e as Error).message).toContain("DB_PASSWORD");
      expect((e as Error).message).toContain("DSTACK_SERVER_ENCRYPTION_KEY");
    }
  });

  it("a value copied onto another secret's row does not decrypt", async () => {
    await svc.secrets.createOrUpdate(admin, "main", "ONE", "first");
    await svc.secrets.createOrUpdate(admin, "main", "TWO", "second");
    const conn = orm.em.getConnection();
    const [one] = await conn.execute<{ value: string }[]>("select value from secrets where name = 'ONE'");
    await conn.execute("update secrets set value = ? where name = 'TWO'", [one!.value]);
    expect(await code(svc.secrets.resolveForJob(projectId, ["TWO"]))).toBe("DSTACK_SECRET_DECRYPT_FAILED");
  });

  it("only project managers and admins manage secrets; names are validated", async () => {
    const { token: ut } = await svc.users.create(admin, { name: "plain" });
    const { token: mt } = await svc.users.create(admin, { name: "mgr" });
    await svc.projects.addMembers(admin, "main", [
      { userName: "plain", projectRole: ProjectRole.USER },
      { userName: "mgr", projectRole: ProjectRole.MANAGER },
    ]);
    const plain = await svc.users.authenticate(ut);
    const mgr = await svc.users.authenticate(mt);
    expect(await code(svc.secrets.list(plain, "main"))).toBe("DSTACK_PERMISSION_DENIED");
    expect(await code(svc.secrets.createOrUpdate(plain, "main", "X", "1"))).toBe("DSTACK_PERMISSION_DENIED");
    expect(await code(svc.secrets.createOrUpdate(mgr, "main", "X", "1"))).toBe("ok");
    expect(await code(svc.secrets.createOrUpdate(mgr, "main", "1BAD", "1"))).toBe("DSTACK_INVALID_NAME");
  });
});
