import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase, type Orm } from "../db/database.js";
import { GlobalRole, ProjectRole } from "../domain/enums.js";
import { PROJECT_OPERATIONS, type ProjectOperation } from "../auth/permissions.js";
import { createTestEnv, DIALECTS, type TestEnv } from "../testing/db.js";
import { bootstrap, createServices, type Services } from "./index.js";
import type { Principal } from "./users.js";
import { errorCode } from "../testing/errors.js";

const code = errorCode;

describe.each(DIALECTS)("projects and permissions on %s", (dialect) => {
  let env: TestEnv;
  let orm: Orm;
  let svc: Services;
  let root: Principal;
  const who: Record<string, Principal> = {};

  const user = async (name: string, globalRole = GlobalRole.USER) => {
    const { token } = await svc.users.create(root, { name, globalRole });
    return svc.users.authenticate(token);
  };

  beforeAll(async () => {
    env = await createTestEnv(dialect, { DSTACK_USER_PROJECT_DEFAULT_QUOTA: "2" });
    orm = await openDatabase(env.settings.database);
    svc = createServices(orm, env.settings);
    root = await svc.users.authenticate((await bootstrap(svc)).adminToken);
    for (const n of ["padmin", "pmanager", "puser", "outsider"]) who[n] = await user(n);
    who["gadmin"] = await user("gadmin", GlobalRole.ADMIN);
    await svc.projects.create(who.padmin!, "team");
    await svc.projects.addMembers(who.padmin!, "team", [
      { userName: "pmanager", projectRole: ProjectRole.MANAGER },
      { userName: "puser", projectRole: ProjectRole.USER },
    ]);
  });
  afterAll(async () => {
    await orm?.close(true);
    await env?.cleanup();
  });

  // role × operation, through the service's own authorize() against real rows.
  const EXPECT: Record<string, (op: ProjectOperation) => boolean> = {
    gadmin: () => true,
    padmin: () => true,
    pmanager: (op) => PROJECT_OPERATIONS[op] !== "admin",
    puser: (op) => ["member", "member-or-public"].includes(PROJECT_OPERATIONS[op]),
    outsider: () => false,
  };
  const ops = Object.keys(PROJECT_OPERATIONS) as ProjectOperation[];
  it.each(Object.keys(EXPECT).flatMap((w) => ops.map((op) => [w, op] as const)))("%s → %s", async (w, op) => {
    const result = await code(svc.projects.authorize(orm.em.fork(), who[w]!, "team", op));
    expect(result).toBe(EXPECT[w]!(op) ? "ok" : "DSTACK_PERMISSION_DENIED");
  });

  it("a missing project looks the same as a forbidden one to non-admins", async () => {
    expect(await code(svc.projects.get(who.outsider!, "no-such-project"))).toBe("DSTACK_PERMISSION_DENIED");
    expect(await code(svc.projects.get(who.outsider!, "team"))).toBe("DSTACK_PERMISSION_DENIED");
    expect(await code(svc.projects.get(who.gadmin!, "no-such-project"))).toBe("DSTACK_PROJECT_NOT_FOUND");
  });

  it("listing shows only member and public projects", async () => {
    await svc.projects.create(who.outsider!, "solo");
    expect((await svc.projects.list(who.puser!)).map((p) => p.name)).toEqual(["team"]);
    expect((await svc.projects.list(who.outsider!)).map((p) => p.name)).toEqual(["solo"]);
    expect((await svc.projects.list(root)).map((p) => p.name)).toEqual(["main", "solo", "team"]);
    await svc.projects.update(who.padmin!, "team", { isPublic: true });
    expect((await svc.projects.list(who.outsider!)).map((p) => p.name)).toEqual(["solo", "team"]);
    expect((await svc.projects.get(who.outsider!, "team")).name).toBe("team");
    await svc.projects.update(who.padmin!, "team", { isPublic: false });
  });

  it("keeps projects isolated: secrets of one are invisible from another", async () => {
    await svc.secrets.createOrUpdate(who.padmin!, "team", "TEAM_KEY", "t");
    await svc.secrets.createOrUpdate(who.outsider!, "solo", "SOLO_KEY", "s");
    expect((await svc.secrets.list(who.outsider!, "solo")).map((s) => s.name)).toEqual(["SOLO_KEY"]);
    expect(await code(svc.secrets.list(who.outsider!, "team"))).toBe("DSTACK_PERMISSION_DENIED");
    expect(await code(svc.secrets.get(who.padmin!, "solo", "SOLO_KEY"))).toBe("DSTACK_PERMISSION_DENIED");
    expect(await code(svc.secrets.get(who.padmin!, "team", "SOLO_KEY"))).toBe("DSTACK_SECRET_NOT_FOUND");
  });

  it("members: managers add users but not admins; users may leave; public projects allow self-join", async () => {
    const extra = await user("extra");
    expect(await code(svc.projects.addMembers(who.pmanager!, "team", [{ userName: "extra", projectRole: ProjectRole.ADMIN }]))).toBe("DSTACK_PERMISSION_DENIED");
    expect(await code(svc.projects.removeMembers(who.pmanager!, "team", ["padmin"]))).toBe("DSTACK_PERMISSION_DENIED");
    await svc.projects.addMembers(who.pmanager!, "team", [{ userName: "extra", projectRole: ProjectRole.USER }]);
    expect(await code(svc.projects.removeMembers(extra, "team", ["puser"]))).toBe("DSTACK_PERMISSION_DENIED");
    await svc.projects.removeMembers(extra, "team", ["extra"]);
    expect(await code(svc.projects.get(extra, "team"))).toBe("DSTACK_PERMISSION_DENIED");

    expect(await code(svc.projects.addMembers(extra, "team", [{ userName: "extra", projectRole: ProjectRole.USER }]))).toBe("DSTACK_PERMISSION_DENIED");
    await svc.projects.update(root, "team", { isPublic: true });
    expect(await code(svc.projects.addMembers(extra, "team", [{ userName: "extra", projectRole: ProjectRole.MANAGER }]))).toBe("DSTACK_PERMISSION_DENIED");
    const joined = await svc.projects.addMembers(extra, "team", [{ userName: "extra", projectRole: ProjectRole.USER }]);
    expect(joined.members).toContainEqual({ userName: "extra", projectRole: ProjectRole.USER });
    await svc.projects.update(root, "team", { isPublic: false });
  });

  it("setMembers replaces the list; a manager cannot drop the admin", async () => {
    const before = await svc.projects.get(root, "team");
    const withoutAdmin = before.members.filter((m) => m.userName !== "padmin");
    expect(await code(svc.projects.setMembers(who.pmanager!, "team", withoutAdmin))).toBe("DSTACK_PERMISSION_DENIED");
    const after = await svc.projects.setMembers(who.padmin!, "team", [
      { userName: "padmin", projectRole: ProjectRole.ADMIN },
      { userName: "pmanager", projectRole: ProjectRole.MANAGER },
    ]);
    expect(after.members.map((m) => m.userName).sort()).toEqual(["padmin", "pmanager"]);
    expect(await code(svc.projects.get(who.puser!, "team"))).toBe("DSTACK_PERMISSION_DENIED");
    await svc.projects.addMembers(who.padmin!, "team", [{ userName: "puser", projectRole: ProjectRole.USER }]);
  });

  it("creation: names are checked, duplicates refused, and the per-user quota applies", async () => {
    expect(await code(svc.projects.create(who.puser!, "bad/name"))).toBe("DSTACK_INVALID_NAME");
    expect(await code(svc.projects.create(who.puser!, "team"))).toBe("DSTACK_PROJECT_EXISTS");
    await svc.projects.create(who.puser!, "p1");
    await svc.projects.create(who.puser!, "p2");
    expect(await code(svc.projects.create(who.puser!, "p3"))).toBe("DSTACK_PROJECT_QUOTA");
    const p = await svc.projects.get(who.puser!, "p1");
    expect(p.ownerName).toBe("puser");
    expect(p.sshPublicKey).toMatch(/^ssh-ed25519 /);
  });

  it("deletion: project admins only; the name becomes free again", async () => {
    await svc.projects.create(who.outsider!, "temp");
    expect(await code(svc.projects.delete(who.puser!, ["temp"]))).toBe("DSTACK_PERMISSION_DENIED");
    await svc.projects.delete(who.outsider!, ["temp"]);
    expect(await code(svc.projects.get(who.outsider!, "temp"))).toBe("DSTACK_PERMISSION_DENIED");
    expect((await svc.projects.list(root)).map((p) => p.name)).not.toContain("temp");
    await svc.projects.create(root, "temp");
  });

  it("keeps the project SSH private key encrypted at rest", async () => {
    const p = await svc.projects.get(root, "main");
    const rows = await orm.em.getConnection().execute<{ ssh_private_key: string }[]>(`select ssh_private_key from projects where id = '${p.id}'`);
    expect(rows[0]!.ssh_private_key).toMatch(/^v1\./);
    expect(await svc.projects.projectPrivateKey(p.id)).toContain("OPENSSH PRIVATE KEY");
  });
});
