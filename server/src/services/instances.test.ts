// Fleet idle_duration, on SQLite and PostgreSQL, with the real scheduler and a fake clock: an
// instance whose backend can release machines (a fake backend here: no backend of this build
// can) is terminated by the timer armed when it became idle, counting from its last job's end;
// `off`, nodes.min, and backends that cannot terminate (local, joined/SSH hosts) keep instances.
import { parseConfiguration, type FleetConfig, type RunConfig } from "@dstack/proto";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { openDatabase, type Orm } from "../db/database.js";
import { Instance, Job } from "../db/entities.js";
import { InstanceStatus, InstanceTerminationReason, JobStatus } from "../domain/enums.js";
import { FakeClock } from "../scheduler/clock.js";
import { createScheduler, type Scheduler } from "../scheduler/index.js";
import { createTestEnv, DIALECTS, type TestEnv } from "../testing/db.js";
import { bootstrap, createServices, type Services } from "./index.js";
import { TERMINATE_RETRY_MS } from "./instances.js";
import type { HostInfo } from "./offers.js";
import type { Principal } from "./users.js";

const HOST: HostInfo = { cpus: 8, memoryGb: 32, diskGb: 200, gpus: [] };
const MIN = 60_000;
const HOUR = 60 * MIN;

describe.each(DIALECTS)("fleet idle_duration on %s", (dialect) => {
  let env: TestEnv;
  let orm: Orm;
  let svc: Services;
  let admin: Principal;
  let clock: FakeClock;
  let sched: Scheduler;
  let n = 0;
  /** The fake cloud: records what it released; fails while `failing` is set. */
  const released: string[] = [];
  let failing = false;

  const project = async () => {
    const name = `idle${++n}`;
    await svc.projects.create(admin, name);
    return name;
  };
  const fleet = async (p: string, yaml: string, hosts: number, backend = "fake") => {
    const f = await svc.fleets.apply(admin, p, parseConfiguration(`type: fleet\nname: f\n${yaml}`, "fleet.dstack.yml") as FleetConfig);
    const ids: string[] = [];
    for (let i = 0; i < hosts; i++) ids.push((await svc.fleets.registerInstance(f.id, HOST, { backend })).id);
    await sched.idle();
    return ids;
  };
  const instance = (id: string) => orm.em.fork().findOneOrFail(Instance, { id });
  const advance = async (ms: number) => {
    clock.advance(ms);
    await sched.idle();
  };

  beforeAll(async () => {
    env = await createTestEnv(dialect);
    orm = await openDatabase(env.settings.database);
    admin = await createServices(orm, env.settings).users.authenticate((await bootstrap(createServices(orm, env.settings))).adminToken);
  });
  // Rows take their creation time from the real clock: each test's fake clock starts now.
  beforeEach(async () => {
    clock = new FakeClock(new Date());
    svc = createServices(orm, env.settings, { clock });
    svc.instances.useBackend("fake", {
      canTerminate: true,
      terminate: async (i) => {
        if (failing) throw new Error("cloud API down");
        released.push(i.id);
      },
    });
    sched = createScheduler({ orm, services: svc, clock, sweepMs: 3_600_000 });
    await sched.start();
  });
  afterEach(async () => {
    await sched?.stop();
  });
  afterAll(async () => {
    await orm?.close(true);
    await env?.cleanup();
  });

  it("terminates an instance idle longer than idle_duration, by a timer (no polling)", async () => {
    const [id] = await fleet(await project(), "nodes: 0..2\nidle_duration: 1h\n", 1);
    await advance(59 * MIN);
    expect((await instance(id!)).status).toBe(InstanceStatus.IDLE);
    await advance(2 * MIN);
    const i = await instance(id!);
    expect([i.status, i.deleted, i.terminationReason]).toEqual([InstanceStatus.TERMINATED, true, InstanceTerminationReason.IDLE_TIMEOUT]);
    expect(i.terminationReasonMessage).toMatch(/^Instance idle for 36\d\ds$/);
    expect(released).toContain(id);
  });

  it("idle time counts from the last job's end; a busy instance is not terminated", async () => {
    const p = await project();
    const [id] = await fleet(p, "nodes: 0..2\nidle_duration: 30m\n", 1);
    const run = await svc.runs.apply(admin, p, { configuration: parseConfiguration("type: task\ncommands: [x]\n", ".dstack.yml") as RunConfig });
    await sched.idle();
    const job = await orm.em.fork().findOneOrFail(Job, { run: run.id });
    expect([(await instance(id!)).status, job.instance?.id]).toEqual([InstanceStatus.BUSY, id]);
    await advance(2 * HOUR); // busy all along: kept
    expect((await instance(id!)).status).toBe(InstanceStatus.BUSY);
    await svc.jobs.onJobState(job.id, JobStatus.RUNNING, null, null);
    await svc.jobs.onJobState(job.id, JobStatus.DONE, 0, null);
    await sched.idle();
    expect((await instance(id!)).status).toBe(InstanceStatus.IDLE);
    await advance(29 * MIN);
    expect((await instance(id!)).status).toBe(InstanceStatus.IDLE);
    await advance(2 * MIN);
    expect((await instance(id!)).status).toBe(InstanceStatus.TERMINATED);
  });

  it("idle_duration: off keeps instances; absent means dstack's 3 days", async () => {
    const [off] = await fleet(await project(), "nodes: 0..2\nidle_duration: off\n", 1);
    const [dflt] = await fleet(await project(), "nodes: 0..2\n", 1);
    await advance(71 * HOUR);
    expect([(await instance(off!)).status, (await instance(dflt!)).status]).toEqual([InstanceStatus.IDLE, InstanceStatus.IDLE]);
    await advance(2 * HOUR);
    expect([(await instance(off!)).status, (await instance(dflt!)).status]).toEqual([InstanceStatus.IDLE, InstanceStatus.TERMINATED]);
  });

  it("re-applying the fleet with a new idle_duration re-arms its idle instances' timers", async () => {
    const p = await project();
    const [id] = await fleet(p, "nodes: 0..2\nidle_duration: off\n", 1);
    await advance(2 * HOUR);
    expect((await instance(id!)).status).toBe(InstanceStatus.IDLE);
    await svc.fleets.apply(admin, p, parseConfiguration("type: fleet\nname: f\nnodes: 0..2\nidle_duration: 3h\n", "fleet.dstack.yml") as FleetConfig);
    await sched.idle();
    await advance(59 * MIN);
    expect((await instance(id!)).status).toBe(InstanceStatus.IDLE);
    await advance(2 * MIN); // idle since its creation: 3 h are up
    expect((await instance(id!)).status).toBe(InstanceStatus.TERMINATED);
  });

  it("a fleet at nodes.min keeps its instances", async () => {
    const ids = await fleet(await project(), "nodes: 1..3\nidle_duration: 10m\n", 2);
    await advance(11 * MIN);
    const statuses = await Promise.all(ids.map(async (id) => (await instance(id)).status));
    expect(statuses.sort()).toEqual([InstanceStatus.IDLE, InstanceStatus.TERMINATED].sort());
  });

  it("a failed release stays terminating and is tried again", async () => {
    const [id] = await fleet(await project(), "nodes: 0..1\nidle_duration: 5m\n", 1);
    failing = true;
    await advance(6 * MIN);
    expect((await instance(id!)).status).toBe(InstanceStatus.TERMINATING);
    failing = false;
    await advance(TERMINATE_RETRY_MS + 1000);
    expect([(await instance(id!)).status, released.includes(id!)]).toEqual([InstanceStatus.TERMINATED, true]);
  });

  it("local and joined (on-prem) hosts are never terminated for idleness, and arm no timer", async () => {
    const p = await project();
    await sched.idle();
    const before = clock.pendingTimers();
    const [local] = await fleet(p, "nodes: 0..2\nidle_duration: 1m\n", 1, "local");
    const [remote] = await svc.fleets.apply(admin, p, parseConfiguration("type: fleet\nname: g\nidle_duration: 1m\n", "fleet.dstack.yml") as FleetConfig).then(async (f) => [(await svc.fleets.registerInstance(f.id, HOST)).id]);
    await sched.idle();
    expect(clock.pendingTimers()).toBe(before);
    await advance(HOUR);
    expect([(await instance(local!)).status, (await instance(remote!)).status]).toEqual([InstanceStatus.IDLE, InstanceStatus.IDLE]);
  });
});
