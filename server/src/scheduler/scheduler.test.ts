import { parseConfiguration, type FleetConfig, type RunConfig } from "@dstack/proto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase, type Orm } from "../db/database.js";
import { Instance, Job } from "../db/entities.js";
import { InstanceStatus, JobStatus, JobTerminationReason, RunStatus, RunTerminationReason } from "../domain/enums.js";
import { bootstrap, createServices, type Services } from "../services/index.js";
import type { HostInfo } from "../services/offers.js";
import type { Principal } from "../services/users.js";
import { createTestEnv, DIALECTS, type TestEnv } from "../testing/db.js";
import { FakeClock } from "./clock.js";
import { createScheduler, type Scheduler } from "./index.js";
import { errorCode } from "../testing/errors.js";

const runConfig = (yaml: string) => parseConfiguration(yaml, ".dstack.yml") as RunConfig;
const fleetConfig = (yaml: string) => parseConfiguration(yaml, "fleet.dstack.yml") as FleetConfig;
const code = errorCode;
const cpuHost = (cpus = 8, memoryGb = 32): HostInfo => ({ cpus, memoryGb, diskGb: 200, gpus: [] });
const gpuHost = (name: string, memoryGb: number, count: number): HostInfo => ({
  cpus: 32,
  memoryGb: 256,
  diskGb: 1000,
  gpus: Array.from({ length: count }, () => ({ vendor: "nvidia" as const, name, memoryGb })),
});

describe.each(DIALECTS)("runs and scheduler on %s", (dialect) => {
  let env: TestEnv;
  let orm: Orm;
  let svc: Services;
  let admin: Principal;
  let clock: FakeClock;
  let sched: Scheduler;
  let n = 0;
  // Each test gets its own project so fleets and runs do not interfere.
  const project = async () => {
    const name = `p${++n}`;
    await svc.projects.create(admin, name);
    return name;
  };
  const fleet = async (p: string, name: string, hosts: HostInfo[], extra = "") => {
    const f = await svc.fleets.apply(admin, p, fleetConfig(`type: fleet\nname: ${name}\nnodes: 0\n${extra}`));
    for (const h of hosts) await svc.fleets.registerInstance(f.id, h);
    return f;
  };
  const settle = () => sched.idle();
  const submit = async (p: string, yaml: string, runName?: string) => {
    const run = await svc.runs.apply(admin, p, { configuration: runConfig(yaml), ...(runName ? { runName } : {}) });
    await settle();
    return svc.runs.get(admin, p, { id: run.id });
  };
  const latestJob = async (runId: string) => {
    const jobs = await orm.em.fork().find(Job, { run: runId }, { orderBy: { submissionNum: "desc" } });
    return jobs[0]!;
  };
  const report = async (jobId: string, state: JobStatus, exit: number | null = null, reason: JobTerminationReason | null = null) => {
    await svc.jobs.onJobState(jobId, state, exit, reason);
    await settle();
  };

  beforeAll(async () => {
    env = await createTestEnv(dialect);
    orm = await openDatabase(env.settings.database);
    clock = new FakeClock();
    svc = createServices(orm, env.settings, { clock });
    admin = await svc.users.authenticate((await bootstrap(svc)).adminToken);
    sched = createScheduler({ orm, services: svc, clock, sweepMs: 3_600_000 });
    await sched.start();
  });
  afterAll(async () => {
    await sched?.stop();
    await orm?.close(true);
    await env?.cleanup();
  });

  it("places a submitted job at once and walks provisioning → pulling → running → done", async () => {
    const p = await project();
    await fleet(p, "f", [cpuHost()]);
    const run = await submit(p, "type: task\ncommands: [echo hi]\nresources: {cpu: 2.., memory: 8GB..}\n", "hello");
    expect(run.status).toBe(RunStatus.PROVISIONING);
    const job = await latestJob(run.id);
    expect(job.status).toBe(JobStatus.PROVISIONING);
    expect(job.blocks).toBe(1);
    const inst = await orm.em.fork().findOneOrFail(Instance, { id: job.instance!.id });
    expect(inst.status).toBe(InstanceStatus.BUSY);
    await report(job.id, JobStatus.PULLING);
    expect((await latestJob(run.id)).status).toBe(JobStatus.PULLING);
    await report(job.id, JobStatus.RUNNING);
    expect((await svc.runs.get(admin, p, { runName: "hello" })).status).toBe(RunStatus.RUNNING);
    await report(job.id, JobStatus.DONE, 0);
    const done = await svc.runs.get(admin, p, { runName: "hello" });
    expect(done.status).toBe(RunStatus.DONE);
    expect(done.terminationReason).toBe(RunTerminationReason.ALL_JOBS_DONE);
    const j = await latestJob(run.id);
    expect(j.status).toBe(JobStatus.DONE);
    expect(j.terminationReason).toBe(JobTerminationReason.DONE_BY_RUNNER);
    const after = await orm.em.fork().findOneOrFail(Instance, { id: inst.id });
    expect([after.status, after.busyBlocks]).toEqual([InstanceStatus.IDLE, 0]);
  });

  it("fails with no capacity when no fleet fits, and a container error fails the run", async () => {
    const p = await project();
    const none = await submit(p, "type: task\ncommands: [x]\n");
    expect(none.status).toBe(RunStatus.FAILED);
    const j = await latestJob(none.id);
    expect([j.status, j.terminationReason, j.terminationReasonMessage]).toEqual([JobStatus.FAILED, JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY, "No matching fleet found"]);
    expect(none.terminationReason).toBe(RunTerminationReason.JOB_FAILED);

    await fleet(p, "f", [cpuHost()]);
    const r = await submit(p, "type: task\ncommands: [x]\n");
    const job = await latestJob(r.id);
    await report(job.id, JobStatus.RUNNING);
    await report(job.id, JobStatus.FAILED, 1);
    const failed = await svc.runs.get(admin, p, { id: r.id });
    expect([failed.status, failed.terminationReason]).toEqual([RunStatus.FAILED, RunTerminationReason.JOB_FAILED]);
    expect((await latestJob(r.id)).exitStatus).toBe(1);
  });

  it("chooses instances by GPU name, memory and count, and honours the fleets filter", async () => {
    const p = await project();
    await fleet(p, "a100s", [gpuHost("A100", 80, 8)]);
    await fleet(p, "l4s", [gpuHost("L4", 24, 1)]);
    const where = async (yaml: string) => {
      const r = await submit(p, yaml);
      const j = await latestJob(r.id);
      return { status: j.status, fleet: (j.provisioningData as { fleetName?: string } | null)?.fleetName, blocks: j.blocks, run: r };
    };
    expect((await where("type: task\ncommands: [x]\nresources: {gpu: L4}\n")).fleet).toBe("l4s");
    const big = await where("type: task\ncommands: [x]\nresources: {gpu: 40GB..}\n");
    expect([big.fleet, big.blocks]).toEqual(["a100s", 1]);
    // The A100 host is taken whole (one block), so another A100 job waits.
    const waiting = await where("type: task\ncommands: [x]\nresources: {gpu: A100:8}\n");
    expect(waiting.status).toBe(JobStatus.SUBMITTED);
    // A whole 8-GPU block never matches one GPU; more GPUs or another model: no capacity.
    expect((await where("type: task\ncommands: [x]\nresources: {gpu: A100:1}\n")).status).toBe(JobStatus.FAILED);
    expect((await where("type: task\ncommands: [x]\nresources: {gpu: A100:16}\n")).status).toBe(JobStatus.FAILED);
    expect((await where("type: task\ncommands: [x]\nresources: {gpu: H100}\n")).status).toBe(JobStatus.FAILED);
    expect((await where("type: task\ncommands: [x]\nresources: {gpu: 100GB..}\n")).status).toBe(JobStatus.FAILED);
    // fleets: filter — only l4s is allowed and it is busy → waits; a missing fleet → no capacity.
    expect((await where("type: task\ncommands: [x]\nfleets: [l4s]\nresources: {gpu: 1}\n")).status).toBe(JobStatus.SUBMITTED);
    expect((await where("type: task\ncommands: [x]\nfleets: [nope]\n")).status).toBe(JobStatus.FAILED);
    // Stopping the big job frees the host and the waiting job gets it at once.
    await svc.runs.stop(admin, p, [big.run.runName], true);
    await settle();
    expect((await latestJob(waiting.run.id)).status).toBe(JobStatus.PROVISIONING);
  });

  it("splits a host into blocks: jobs take 1..N blocks and GPUs serve one job at a time", async () => {
    const p = await project();
    await fleet(p, "shared", [gpuHost("A10", 24, 4)], "blocks: 4\n");
    const jobs = [];
    for (const gpu of ["1", "2", "1"]) jobs.push(await latestJob((await submit(p, `type: task\ncommands: [x]\nresources: {gpu: ${gpu}, cpu: 1.., memory: 1GB.., disk: 10GB..}\n`)).id));
    expect(jobs.map((j) => [j.status, j.blocks])).toEqual([[JobStatus.PROVISIONING, 1], [JobStatus.PROVISIONING, 2], [JobStatus.PROVISIONING, 1]]);
    const inst = await orm.em.fork().findOneOrFail(Instance, { id: jobs[0]!.instance!.id });
    expect([inst.busyBlocks, inst.totalBlocks]).toEqual([4, 4]);
    const fifth = await latestJob((await submit(p, "type: task\ncommands: [x]\nresources: {gpu: 1, cpu: 1.., memory: 1GB.., disk: 10GB..}\n")).id);
    expect(fifth.status).toBe(JobStatus.SUBMITTED);
    await report(jobs[1]!.id, JobStatus.RUNNING);
    await report(jobs[1]!.id, JobStatus.DONE, 0);
    expect((await latestJob(fifth.run.id)).status).toBe(JobStatus.PROVISIONING);
    expect((await orm.em.fork().findOneOrFail(Instance, { id: inst.id })).busyBlocks).toBe(3);
  });

  it("retries per policy with backoff, then gives up past the duration", async () => {
    const p = await project();
    await fleet(p, "f", [cpuHost()]);
    const r = await submit(p, "type: task\ncommands: [x]\nretry:\n  on_events: [error]\n  duration: 10m\n");
    const j0 = await latestJob(r.id);
    await report(j0.id, JobStatus.RUNNING);
    await report(j0.id, JobStatus.FAILED, 2);
    expect((await svc.runs.get(admin, p, { id: r.id })).status).toBe(RunStatus.PENDING);
    clock.advance(14_000);
    await settle();
    expect((await svc.runs.get(admin, p, { id: r.id })).status).toBe(RunStatus.PENDING);
    clock.advance(1_500);
    await settle();
    const j1 = await latestJob(r.id);
    expect([j1.submissionNum, j1.status]).toEqual([1, JobStatus.PROVISIONING]);
    expect((await svc.runs.get(admin, p, { id: r.id })).status).toBe(RunStatus.PROVISIONING);
    await report(j1.id, JobStatus.RUNNING);
    await report(j1.id, JobStatus.DONE, 0);
    expect((await svc.runs.get(admin, p, { id: r.id })).status).toBe(RunStatus.DONE);

    // no capacity is retried with growing backoff, measured from the run's submission
    const nc = await submit(p, "type: task\ncommands: [x]\nfleets: [missing]\nretry:\n  on_events: [no-capacity]\n  duration: 1m\n");
    expect((await svc.runs.get(admin, p, { id: nc.id })).status).toBe(RunStatus.PENDING);
    for (const step of [15_000, 30_000, 60_000]) {
      clock.advance(step + 100);
      await settle();
    }
    const gaveUp = await svc.runs.get(admin, p, { id: nc.id }, );
    expect([gaveUp.status, gaveUp.terminationReason]).toEqual([RunStatus.FAILED, RunTerminationReason.RETRY_LIMIT_EXCEEDED]);
    expect((await latestJob(nc.id)).submissionNum).toBe(3);
  });

  it("ends a job at max_duration", async () => {
    const p = await project();
    await fleet(p, "f", [cpuHost()]);
    const r = await submit(p, "type: task\ncommands: [x]\nmax_duration: 2m\n");
    const j = await latestJob(r.id);
    await report(j.id, JobStatus.RUNNING);
    clock.advance(119_000);
    await settle();
    expect((await latestJob(r.id)).status).toBe(JobStatus.RUNNING);
    clock.advance(2_000);
    await settle();
    const after = await latestJob(r.id);
    expect([after.status, after.terminationReason]).toEqual([JobStatus.TERMINATED, JobTerminationReason.MAX_DURATION_EXCEEDED]);
    // as in dstack, a job ended by the server for any reason but done fails the run
    expect((await svc.runs.get(admin, p, { id: r.id })).status).toBe(RunStatus.FAILED);
  });

  it("stops gracefully within stop_duration, or aborts at once", async () => {
    const p = await project();
    await fleet(p, "f", [cpuHost(), cpuHost()]);
    const g = await submit(p, "type: task\ncommands: [x]\nstop_duration: 30s\n", "graceful");
    const gj = await latestJob(g.id);
    await report(gj.id, JobStatus.RUNNING);
    await svc.runs.stop(admin, p, ["graceful"]);
    await settle();
    expect((await latestJob(g.id)).status).toBe(JobStatus.TERMINATING);
    expect((await svc.runs.get(admin, p, { id: g.id })).status).toBe(RunStatus.TERMINATING);
    // the runner exits on the stop signal before the grace runs out
    await report(gj.id, JobStatus.TERMINATED);
    let run = await svc.runs.get(admin, p, { id: g.id });
    expect([run.status, run.terminationReason]).toEqual([RunStatus.TERMINATED, RunTerminationReason.STOPPED_BY_USER]);
    expect((await latestJob(g.id)).terminationReason).toBe(JobTerminationReason.TERMINATED_BY_USER);

    // no answer from the runner: force-stopped when stop_duration runs out
    const s = await submit(p, "type: task\ncommands: [x]\nstop_duration: 30s\n", "slow");
    await report((await latestJob(s.id)).id, JobStatus.RUNNING);
    await svc.runs.stop(admin, p, ["slow"]);
    await settle();
    clock.advance(29_000);
    await settle();
    expect((await latestJob(s.id)).status).toBe(JobStatus.TERMINATING);
    clock.advance(2_000);
    await settle();
    expect((await latestJob(s.id)).status).toBe(JobStatus.TERMINATED);

    const a = await submit(p, "type: task\ncommands: [x]\nstop_duration: 30s\n", "aborted");
    await report((await latestJob(a.id)).id, JobStatus.RUNNING);
    await svc.runs.stop(admin, p, ["aborted"], true);
    await settle();
    run = await svc.runs.get(admin, p, { id: a.id });
    expect([run.status, run.terminationReason]).toEqual([RunStatus.TERMINATED, RunTerminationReason.ABORTED_BY_USER]);
    const aj = await latestJob(a.id);
    expect([aj.status, aj.terminationReason]).toEqual([JobStatus.ABORTED, JobTerminationReason.ABORTED_BY_USER]);
  });

  it("re-apply: refused while active, replaces a finished run; delete only finished; generated names", async () => {
    const p = await project();
    await fleet(p, "f", [cpuHost()]);
    const r = await submit(p, "type: task\ncommands: [x]\n", "same");
    expect(await code(svc.runs.apply(admin, p, { configuration: runConfig("type: task\ncommands: [y]\n"), runName: "same" }))).toBe("DSTACK_RUN_ACTIVE");
    expect(await code(svc.runs.delete(admin, p, ["same"]))).toBe("DSTACK_RUN_NOT_FINISHED");
    await svc.runs.stop(admin, p, ["same"], true);
    await settle();
    const plan = await svc.runs.plan(admin, p, { configuration: runConfig("type: task\ncommands: [y]\n"), runName: "same" });
    expect(plan.action).toBe("recreate");
    expect(plan.jobPlans[0]!.offers[0]!.availability).toBe("idle");
    const again = await submit(p, "type: task\ncommands: [y]\n", "same");
    expect(again.id).not.toBe(r.id);
    expect((await svc.runs.list(admin, { projectName: p })).runs.filter((x) => x.runName === "same")).toHaveLength(1);
    const gen = await svc.runs.apply(admin, p, { configuration: runConfig("type: task\ncommands: [x]\n") });
    expect(gen.runName).toMatch(/^[a-z]+-[a-z]+-\d+$/);
    await settle();
    await svc.runs.stop(admin, p, ["same", gen.runName], true);
    await settle();
    await svc.runs.delete(admin, p, ["same"]);
    expect(await code(svc.runs.get(admin, p, { runName: "same" }))).toBe("DSTACK_RUN_NOT_FOUND");
  });

  it("lists newest first with keyset pagination and filters", async () => {
    const p = await project();
    for (let i = 0; i < 7; i++) {
      clock.advance(1000);
      await svc.runs.apply(admin, p, { configuration: runConfig("type: task\ncommands: [x]\n"), runName: `r${i}` });
    }
    await settle();
    const seen: string[] = [];
    let token = "";
    do {
      const page = await svc.runs.list(admin, { projectName: p, limit: 3, pageToken: token });
      seen.push(...page.runs.map((r) => r.runName));
      token = page.nextPageToken;
    } while (token);
    expect(seen).toEqual(["r6", "r5", "r4", "r3", "r2", "r1", "r0"]);
    const withJobs = (await svc.runs.list(admin, { projectName: p, limit: 1, includeJobs: true })).runs[0]!;
    expect([withJobs.projectName, withJobs.user, withJobs.runName]).toEqual([p, "admin", "r6"]);
    expect(withJobs.jobs.map((j) => [j.spec.jobName, j.submissions.length, j.submissions[0]!.terminationReason])).toEqual([["r6-0-0", 1, JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY]]);
    expect(withJobs.latestJobSubmission?.status).toBe(JobStatus.FAILED);
    expect(withJobs.runSpec.configuration.type).toBe("task");
    expect((await svc.runs.list(admin, { projectName: p, onlyActive: true })).runs).toHaveLength(0); // all failed: no fleet
    expect(await code(svc.runs.list(admin, { projectName: p, pageToken: "garbage" }))).toBe("DSTACK_BAD_PAGE_TOKEN");
  });

  it("watch sends the current state, a marker, then changes", async () => {
    const p = await project();
    await fleet(p, "f", [cpuHost()]);
    const ac = new AbortController();
    const it = svc.runs.watch(admin, { projectName: p }, ac.signal)[Symbol.asyncIterator]();
    expect((await it.next()).value.initialStateSent).toBe(true);
    const r = await svc.runs.apply(admin, p, { configuration: runConfig("type: task\ncommands: [x]\n"), runName: "w" });
    const statuses: RunStatus[] = [];
    while (!statuses.includes(RunStatus.PROVISIONING)) {
      const u = (await it.next()).value;
      if (u.run?.id === r.id) statuses.push(u.run.status);
    }
    ac.abort();
    await it.return?.(undefined);
    expect(statuses[statuses.length - 1]).toBe(RunStatus.PROVISIONING);
  });

  it("rejects oversize and mismatched code, stores a blob once", async () => {
    const p = await project();
    const { createHash } = await import("node:crypto");
    const blob = Buffer.from("diff --git a b");
    const hash = createHash("sha256").update(blob).digest("hex");
    expect(await svc.code.upload(admin, p, hash, blob)).toEqual({ alreadyExists: false });
    expect(await svc.code.upload(admin, p, hash, blob)).toEqual({ alreadyExists: true });
    expect(await code(svc.code.upload(admin, p, "0".repeat(64), blob))).toBe("DSTACK_CODE_HASH_MISMATCH");
    const big = Buffer.alloc(2 * 1024 * 1024 + 1);
    expect(await code(svc.code.upload(admin, p, createHash("sha256").update(big).digest("hex"), big))).toBe("DSTACK_CODE_TOO_LARGE");
  });

  it("fleets: list, get, refuse deleting a fleet in use, delete", async () => {
    const p = await project();
    await fleet(p, "f", [cpuHost()]);
    const r = await submit(p, "type: task\ncommands: [x]\n");
    expect((await svc.fleets.list(admin, p)).map((f) => [f.name, f.instances.length])).toEqual([["f", 1]]);
    expect(await code(svc.fleets.delete(admin, p, ["f"]))).toBe("DSTACK_FLEET_IN_USE");
    await svc.runs.stop(admin, p, [r.runName], true);
    await settle();
    await svc.fleets.delete(admin, p, ["f"]);
    expect(await code(svc.fleets.get(admin, p, { name: "f" }))).toBe("DSTACK_FLEET_NOT_FOUND");
    expect(await svc.instances.list(admin, p, { onlyActive: true })).toEqual([]);
  });
});

describe("concurrent placement on postgresql", () => {
  it("two schedulers placing 40 jobs onto 3 hosts never double-book a block", async () => {
    const env = await createTestEnv("postgresql");
    const orm1 = await openDatabase(env.settings.database);
    const orm2 = await openDatabase(env.settings.database);
    const s1 = createServices(orm1, env.settings);
    const s2 = createServices(orm2, env.settings);
    const admin = await s1.users.authenticate((await bootstrap(s1)).adminToken);
    const f = await s1.fleets.apply(admin, "main", parseConfiguration("type: fleet\nname: f\nnodes: 0\nblocks: 2\n", "f.yml") as FleetConfig);
    for (let i = 0; i < 3; i++) await s1.fleets.registerInstance(f.id, { cpus: 4, memoryGb: 16, diskGb: 200, gpus: [] });
    const runs = [];
    for (let i = 0; i < 40; i++) runs.push(await s1.runs.apply(admin, "main", { configuration: runConfig("type: task\ncommands: [x]\nresources: {cpu: 2, memory: 8GB, disk: 100GB..}\n") }));
    const jobIds = (await orm1.em.fork().find(Job, {})).map((j) => j.id);
    // Both replicas race on every job at the same time.
    await Promise.all(jobIds.flatMap((id) => [s1.jobs.processJob(id), s2.jobs.processJob(id)]));
    const em = orm1.em.fork();
    const placed = await em.find(Job, { status: JobStatus.PROVISIONING });
    expect(placed).toHaveLength(6);
    const perInstance = new Map<string, number>();
    for (const j of placed) perInstance.set(j.instance!.id, (perInstance.get(j.instance!.id) ?? 0) + j.blocks);
    const instances = await em.find(Instance, {});
    for (const i of instances) {
      expect(i.busyBlocks).toBe(2);
      expect(perInstance.get(i.id)).toBe(2);
    }
    await orm1.close(true);
    await orm2.close(true);
    await env.cleanup();
  });
});
