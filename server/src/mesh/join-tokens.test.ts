import { afterEach, describe, expect, it } from "vitest";
import { openDatabase, type Orm } from "../db/database.js";
import { Fleet, JoinToken, Project, User, build } from "../db/entities.js";
import { createTestEnv, DIALECTS, type TestEnv } from "../testing/db.js";
import { JoinTokens, revokeFleetTokens } from "./join-tokens.js";

describe.each(DIALECTS)("join tokens (%s)", (dialect) => {
  let env: TestEnv;
  let orm: Orm;
  afterEach(async () => {
    await orm?.close(true);
    await env?.cleanup();
  });

  async function setup(): Promise<{ tokens: JoinTokens; projectId: string; fleetId: string }> {
    env = await createTestEnv(dialect);
    orm = await openDatabase(env.settings.database);
    const em = orm.em.fork();
    const user = build(User, { name: "u", tokenHash: "y".repeat(64) });
    const project = build(Project, { name: "p", owner: user as never, sshPublicKey: "k", sshPrivateKey: "k" });
    const fleet = build(Fleet, { name: "f", project: project as never });
    await em.persistAndFlush([user, project, fleet]);
    return { tokens: new JoinTokens(orm), projectId: project.id, fleetId: fleet.id };
  }

  it("stores only the hash, and of two racing agents exactly one wins a one-time token", async () => {
    const { tokens, projectId, fleetId } = await setup();
    const t = await tokens.create({ projectId, fleetId, kind: "shim" });
    const row = await orm.em.fork().findOneOrFail(JoinToken, { id: t.id });
    expect(row.tokenHash).not.toContain(t.token.split(".")[2]);
    expect(row.tokenHash).toMatch(/^[0-9a-f]{64}$/);
    const results = await Promise.allSettled([tokens.consume(t.token, "shim"), tokens.consume(t.token, "shim"), tokens.consume(t.token, "shim")]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect(results.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason))).toEqual([expect.stringMatching(/already used/), expect.stringMatching(/already used/)]);
  });

  it("a reusable token with max uses enrolls exactly that many agents, even racing", async () => {
    const { tokens, projectId, fleetId } = await setup();
    const t = await tokens.create({ projectId, fleetId, kind: "shim", reusable: true, maxUses: 2 });
    const results = await Promise.allSettled([0, 1, 2, 3].map(() => tokens.consume(t.token, "shim")));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(2);
    for (const r of results.filter((x) => x.status === "rejected")) expect(String((r as PromiseRejectedResult).reason)).toMatch(/used up: it allowed 2 enrollment/);
    expect((await orm.em.fork().findOneOrFail(JoinToken, { id: t.id })).useCount).toBe(2);
    const unlimited = await tokens.create({ projectId, fleetId, kind: "shim", reusable: true });
    for (let i = 0; i < 3; i++) await expect(tokens.consume(unlimited.token, "shim")).resolves.toMatchObject({ reusable: true, fleetId });
    expect((await orm.em.fork().findOneOrFail(JoinToken, { id: unlimited.id })).useCount).toBe(3);
  });

  it("refuses tokens of a deleted fleet, and revoking a fleet's tokens revokes only those", async () => {
    const { tokens, projectId, fleetId } = await setup();
    const em = orm.em.fork();
    const other = build(Fleet, { name: "g", project: em.getReference(Project, projectId) as never });
    await em.persistAndFlush(other);
    const mine = await tokens.create({ projectId, fleetId, kind: "shim", reusable: true });
    const theirs = await tokens.create({ projectId, fleetId: other.id, kind: "shim", reusable: true });
    expect(await revokeFleetTokens(orm.em.fork(), fleetId)).toBe(1);
    await expect(tokens.consume(mine.token, "shim")).rejects.toThrow(/was revoked/);
    await expect(tokens.consume(theirs.token, "shim")).resolves.toMatchObject({ fleetId: other.id });
    await orm.em.fork().nativeUpdate(Fleet, { id: other.id }, { deleted: true });
    await expect(tokens.consume(theirs.token, "shim")).rejects.toThrow(/was revoked/);
  });

  it("binds the id carried in the token text; altering it invalidates the token", async () => {
    const { tokens, projectId } = await setup();
    const boundId = "0b7c3f4e-3e1a-4f57-9d5c-2f7b2a9a1c11";
    const t = await tokens.create({ projectId, kind: "runner", boundId });
    const forged = t.token.replace(boundId, "11111111-3e1a-4f57-9d5c-2f7b2a9a1c11");
    await expect(tokens.consume(forged, "runner")).rejects.toThrow(/not recognised/);
    await expect(tokens.consume(t.token, "runner")).resolves.toMatchObject({ boundId, kind: "runner", reusable: false, projectId });
  });
});
