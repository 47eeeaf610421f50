// Test harness for the mesh: a real server home, a real database, a real mTLS agent port, and
// agents built on the real link library, each in its own temp dir.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { PingResultSchema, TaskInfoSchema, TaskState } from "@dstack/proto/agent";
import { connectLink, enroll, type ConnectLinkOptions, type LinkClient } from "@dstack/proto/link";
import { openDatabase, type Orm } from "../../server/src/db/database.js";
import { Fleet, Instance, Job, Project, Run, User, build } from "../../server/src/db/entities.js";
import { createMeshServer, type MeshServer, type MeshServerOptions } from "../../server/src/mesh/index.js";
import { createTestEnv, type Dialect, type TestEnv } from "../../server/src/testing/db.js";

export const FAST_LINK = { heartbeatIntervalMs: 100, missedHeartbeats: 3, idleCloseHeartbeats: 10, defaultCallDeadlineMs: 5_000 };
export const FAST_BACKOFF = { initialMs: 20, maxMs: 200 };

export interface MeshFixture {
  env: TestEnv;
  orm: Orm;
  mesh: MeshServer;
  port: number;
  url: string;
  projectId: string;
  fleetId: string;
  /** Starts a new mesh server on the same home and (unless given) port. */
  restart(opts?: Partial<MeshServerOptions>): Promise<void>;
  /** A job row on `instanceId`, so a shim may report it as its task. */
  addJob(instanceId: string | null): Promise<string>;
  shimToken(opts?: { reusable?: boolean; ttlMs?: number }): Promise<string>;
  cleanup(): Promise<void>;
}

export async function startMesh(dialect: Dialect = "sqlite", opts: Partial<MeshServerOptions> = {}): Promise<MeshFixture> {
  const env = await createTestEnv(dialect);
  const orm = await openDatabase(env.settings.database);
  const em = orm.em.fork();
  const user = build(User, { name: "admin", tokenHash: "x".repeat(64) });
  const project = build(Project, { name: "main", owner: user as never, sshPublicKey: "k", sshPrivateKey: "k" });
  const fleet = build(Fleet, { name: "pull", project: project as never });
  await em.persistAndFlush([user, project, fleet]);
  let run: Run | null = null;
  const make = (o: Partial<MeshServerOptions>) => createMeshServer({ settings: env.settings, orm, link: FAST_LINK, ...opts, ...o });
  const f: MeshFixture = {
    env,
    orm,
    mesh: make({}),
    port: 0,
    url: "",
    projectId: project.id,
    fleetId: fleet.id,
    async restart(o = {}) {
      await f.mesh.close();
      f.mesh = make(o);
      await f.mesh.listen(f.port, "127.0.0.1");
    },
    async addJob(instanceId) {
      const em2 = orm.em.fork();
      if (!run) {
        run = build(Run, { runName: "r", project: em2.getReference(Project, project.id) as never, user: em2.getReference(User, user.id) as never });
        await em2.persistAndFlush(run);
      }
      const job = build(Job, { run: em2.getReference(Run, run.id) as never, instance: instanceId ? (em2.getReference(Instance, instanceId) as never) : null });
      await em2.persistAndFlush(job);
      return job.id;
    },
    async shimToken(o = {}) {
      return (await f.mesh.joinTokens.create({ projectId: project.id, fleetId: fleet.id, kind: "shim", ...o })).token;
    },
    async cleanup() {
      await f.mesh.close();
      await orm.close(true);
      await env.cleanup();
    },
  };
  f.port = (await f.mesh.listen(0, "127.0.0.1")).port;
  f.url = `https://127.0.0.1:${f.port}`;
  return f;
}

export const agentHome = (): string => mkdtempSync(join(tmpdir(), "dstack-agent-"));

/** Enrolls a shim with a fresh token; returns its home and instance id. */
export async function enrollShim(f: MeshFixture, url = f.url): Promise<{ home: string; instanceId: string }> {
  const home = agentHome();
  const id = await enroll({ serverUrl: url, token: await f.shimToken(), caSha256: f.mesh.caFingerprint, kind: "shim", home, identity: { hostname: "h1" } });
  return { home, instanceId: id.agentId };
}

/** A simulated shim: tasks in memory, ping and getTask handlers, full state on every connect. */
export function simShim(home: string, tasks: string[] = [], extra: Partial<ConnectLinkOptions<"shim">> = {}): { link: LinkClient; reports: number; tasks: string[] } {
  const state = { link: null as unknown as LinkClient, reports: 0, tasks };
  state.link = connectLink({
    kind: "shim",
    home,
    backoff: FAST_BACKOFF,
    stateReport: () => {
      state.reports++;
      return { agentVersion: "test", startedAt: timestampNow(), tasks: state.tasks.map((t) => create(TaskInfoSchema, { taskId: t, state: TaskState.RUNNING })) };
    },
    handlers: {
      ping: () => create(PingResultSchema, { agentTime: timestampNow() }),
    },
    ...extra,
  });
  return state;
}

export function once<T extends unknown[]>(emitter: { once(e: string, l: (...a: T) => void): unknown }, event: string, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no '${event}' within ${timeoutMs} ms`)), timeoutMs);
    emitter.once(event, (...a: T) => (clearTimeout(t), resolve(a)));
  });
}
