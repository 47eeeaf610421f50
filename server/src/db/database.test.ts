import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobStatus, JobTerminationReason, RunStatus } from "../domain/enums.js";
import { createTestEnv, DIALECTS, type TestEnv } from "../testing/db.js";
import { MIGRATIONS_TABLE, migrationsFor, openDatabase, withTransaction, type Orm } from "./database.js";
import { Job, Project, Run, User, build } from "./entities.js";

const TABLES = ["users", "projects", "members", "secrets", "fleets", "instances", "runs", "jobs", "join_tokens", "code_blobs"];

describe.each(DIALECTS)("database on %s", (dialect) => {
  let env: TestEnv;
  let orm: Orm;

  beforeAll(async () => {
    env = await createTestEnv(dialect);
    orm = await openDatabase(env.settings.database);
  });
  afterAll(async () => {
    await orm?.close(true);
    await env?.cleanup();
  });

  it("migrates an empty database to the current schema", async () => {
    const conn = orm.em.getConnection();
    const sql =
      dialect === "sqlite"
        ? "select name from sqlite_master where type = 'table'"
        : "select table_name as name from information_schema.tables where table_schema = 'public'";
    const names = (await conn.execute<{ name: string }[]>(sql)).map((r) => r.name);
    for (const t of [...TABLES, MIGRATIONS_TABLE]) expect(names).toContain(t);
    const applied = await conn.execute<{ name: string }[]>(`select name from ${MIGRATIONS_TABLE}`);
    expect(applied.map((r) => r.name)).toEqual(migrationsFor(dialect).map((m) => m.name));
  });

  it("has no schema drift between the entities and the checked-in migrations", async () => {
    const diff = await orm.schema.getUpdateSchemaSQL({ wrap: false });
    expect(diff.trim()).toBe("");
  });

  it("reopening applies nothing and keeps data", async () => {
    await withTransaction(orm, async (em) => em.persist(build(User, { name: "keep", tokenHash: "x".repeat(64) })));
    const again = await openDatabase(env.settings.database);
    try {
      expect(await again.getMigrator().getPendingMigrations()).toEqual([]);
      expect(await again.em.fork().count(User, { name: "keep" })).toBe(1);
    } finally {
      await again.close(true);
    }
  });

  it("stores enums as lowercase names and queries by enum value", async () => {
    const runId = await withTransaction(orm, async (em) => {
      const owner = build(User, { name: "enum-owner", tokenHash: "y".repeat(64) });
      const project = build(Project, { name: "enum-proj", owner: em.getReference(User, owner.id, { wrapped: true }), sshPublicKey: "k", sshPrivateKey: "k" });
      const run = build(Run, {
        project: em.getReference(Project, project.id, { wrapped: true }),
        user: em.getReference(User, owner.id, { wrapped: true }),
        runName: "r1",
        status: RunStatus.RUNNING,
        runSpec: { configuration: { type: "task", commands: ["echo hi"] } },
      });
      const job = build(Job, {
        run: em.getReference(Run, run.id, { wrapped: true }),
        status: JobStatus.TERMINATING,
        terminationReason: JobTerminationReason.DONE_BY_RUNNER,
        jobSpec: { commands: ["echo hi"] },
      });
      em.persist([owner, project, run, job]);
      await em.flush();
      return run.id;
    });
    const raw = await orm.em.getConnection().execute<{ status: string }[]>(`select status from runs where id = '${runId}'`);
    expect(raw[0]?.status).toBe("running");
    const jobRaw = await orm.em.getConnection().execute<{ termination_reason: string }[]>(`select termination_reason from jobs`);
    expect(jobRaw.map((r) => r.termination_reason)).toContain("done_by_runner");

    const em = orm.em.fork();
    const run = await em.findOneOrFail(Run, { status: { $in: [RunStatus.RUNNING, RunStatus.PROVISIONING] } });
    expect(run.id).toBe(runId);
    expect(run.status).toBe(RunStatus.RUNNING);
    expect(run.runSpec).toEqual({ configuration: { type: "task", commands: ["echo hi"] } });
    const job = await em.findOneOrFail(Job, { run: runId, terminationReason: JobTerminationReason.DONE_BY_RUNNER });
    expect(job.status).toBe(JobStatus.TERMINATING);
    expect(job.createdAt).toBeInstanceOf(Date);
  });

  it("rolls back a failed transaction", async () => {
    await expect(
      withTransaction(orm, async (em) => {
        em.persist(build(User, { name: "ghost", tokenHash: "z".repeat(64) }));
        await em.flush();
        throw new Error("boom");
      }),
    ).rejects.toThrow("boom");
    expect(await orm.em.fork().count(User, { name: "ghost" })).toBe(0);
  });
});

describe("openDatabase errors", () => {
  it("names the database (password hidden) when PostgreSQL cannot be reached", async () => {
    const p = openDatabase({ dialect: "postgresql", url: "postgresql://dstack:secret@127.0.0.1:1/nowhere" });
    await expect(p).rejects.toMatchObject({ code: "DSTACK_DATABASE_UNAVAILABLE" });
    await expect(p).rejects.toThrow(/postgresql:\/\/dstack:\*\*\*@127\.0\.0\.1:1\/nowhere/);
  });
});
