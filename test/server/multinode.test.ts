// Multi-node tasks against a REAL server process with simulated agents (real link library, two
// hosts of a fleet): startup_order decides which node's runner gets its job first, and
// stop_criteria master-done ends the run (stopping the workers) when the master is done; every
// node gets the replica's addresses, its rank and the node count.
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { parseConfiguration, toProtoConfiguration } from "@dstack/proto";
import { JobState, TaskState, type RunnerCommand, type ShimCommand } from "@dstack/proto/agent";
import { JobStatus, JobTerminationReason, RunService, RunStatus, type Run } from "@dstack/proto/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServerEnv, DIALECTS, seedServer, startServer, type ServerEnv, type TestServer } from "../helpers/server.js";
import { simHost, SimRunner, SimShim, until } from "../helpers/sim-agents.js";

type SubmitTask = Extract<ShimCommand["command"], { case: "submitTask" }>["value"];
type SubmitJob = Extract<RunnerCommand["command"], { case: "submitJob" }>["value"];

describe.each(DIALECTS)("multi-node tasks on %s", (dialect) => {
  let where: ServerEnv;
  let server: TestServer;
  let runs: Client<typeof RunService>;
  let admin: { headers: { authorization: string } };
  const shims: SimShim[] = [];
  const runners: SimRunner[] = [];
  const IPS = ["10.0.0.5", "10.0.0.6"];

  const getRun = async (name: string) => (await runs.getRun({ projectName: "main", run: { case: "runName", value: name } }, admin)).run!;
  const runUntil = (name: string, pred: (r: Run) => boolean, what: string) => until(async () => ((r) => (pred(r) ? r : undefined))(await getRun(name)), `${name}: ${what}`);

  beforeAll(async () => {
    where = await createServerEnv(dialect);
    const { seeded: tokens } = await seedServer(where, async (s) => {
      const fleet = await s.applyFleet("type: fleet\nname: sim\nnodes: 0\n");
      return [await s.shimToken(fleet.id), await s.shimToken(fleet.id)];
    });
    server = await startServer(where);
    runs = createClient(RunService, createGrpcTransport({ baseUrl: server.url }));
    admin = { headers: { authorization: `Bearer ${server.adminToken}` } };
    for (let i = 0; i < 2; i++) shims.push(await SimShim.join(server, tokens[i]!, simHost(`sim-host-${i}`, IPS[i]!)));
  }, 60_000);

  afterAll(async () => {
    for (const r of runners) await r.close();
    for (const s of shims) await s.close();
    if (server) expect(await server.stop()).toBe(0);
    await where?.cleanup();
  });

  /**
   * Applies a two-node task and plays both hosts up to running containers with linked runners.
   * Returns each node's runner by rank (job_num).
   */
  async function twoNodes(name: string, yaml: string): Promise<{ master: SimRunner; worker: SimRunner; ids: string[] }> {
    await runs.applyRun({ projectName: "main", runSpec: { runName: name, configuration: toProtoConfiguration(parseConfiguration(`type: task\nnodes: 2\n${yaml}`, ".dstack.yml")) } }, admin);
    const run = await runUntil(name, (r) => r.jobs.length === 2 && r.jobs.every((j) => j.jobSubmissions[0]?.status === JobStatus.PROVISIONING), "both nodes placed");
    const ids = [...run.jobs].sort((a, b) => a.jobSpec!.jobNum - b.jobSpec!.jobNum).map((j) => j.jobSubmissions[0]!.id);
    const byRank: SimRunner[] = [];
    for (const shim of shims) {
      const task = (await shim.inbox.next((x) => x.case === "submitTask" && ids.includes((x.value as SubmitTask).taskId), `${name}: a node's submitTask`)).value as SubmitTask;
      shim.setTask(task.taskId, { state: TaskState.RUNNING });
      const runner = await SimRunner.start(task.runner!, task.taskId);
      runners.push(runner);
      byRank[ids.indexOf(task.taskId)] = runner;
    }
    return { master: byRank[0]!, worker: byRank[1]!, ids };
  }

  const submitJob = async (r: SimRunner, what: string) => (await r.inbox.next((x) => x.case === "submitJob", what)).value as SubmitJob;
  const hasJob = (r: SimRunner) => r.inbox.all.some((x) => x.case === "submitJob");
  const settle = () => new Promise((ok) => setTimeout(ok, 1500));

  it("master-first: workers get their job once the master runs; master-done ends the run and stops the workers", async () => {
    const { master, worker, ids } = await twoNodes("mn-master", "startup_order: master-first\nstop_criteria: master-done\ncommands: [train]\n");
    const mJob = await submitJob(master, "the master's job");
    await settle();
    expect(hasJob(worker)).toBe(false); // the master is not running yet
    master.report(JobState.RUNNING);
    const wJob = await submitJob(worker, "the worker's job after the master runs");
    const ipOf = (id: string) => IPS[shims.findIndex((s) => s.inbox.all.some((c) => c.case === "submitTask" && (c.value as SubmitTask).taskId === id))]!;
    const ips = ids.map(ipOf);
    expect(mJob.clusterInfo).toMatchObject({ jobIps: ips, masterJobIp: ips[0], nodeRank: 0, nodesNum: 2 });
    expect(wJob.clusterInfo).toMatchObject({ jobIps: ips, masterJobIp: ips[0], nodeRank: 1, nodesNum: 2 });
    worker.report(JobState.RUNNING);
    await runUntil("mn-master", (r) => r.status === RunStatus.RUNNING, "running");
    // The master finishes while the worker still runs: the run is done, the worker is stopped.
    master.report(JobState.DONE, { exitStatus: 0 });
    await worker.inbox.next((x) => x.case === "stopJob", "the worker's stopJob");
    const done = await runUntil("mn-master", (r) => r.status === RunStatus.DONE, "done");
    const w = done.jobs.find((j) => j.jobSpec!.jobNum === 1)!.jobSubmissions.at(-1)!;
    expect([w.status, w.terminationReason]).toEqual([JobStatus.DONE, JobTerminationReason.DONE_BY_RUNNER]);
  });

  it("workers-first: the master gets its job once every worker runs; all-done waits for every node", async () => {
    const { master, worker } = await twoNodes("mn-workers", "startup_order: workers-first\ncommands: [train]\n");
    await submitJob(worker, "the worker's job");
    await settle();
    expect(hasJob(master)).toBe(false); // the worker is not running yet
    worker.report(JobState.RUNNING);
    await submitJob(master, "the master's job after the worker runs");
    master.report(JobState.RUNNING);
    await runUntil("mn-workers", (r) => r.status === RunStatus.RUNNING, "running");
    // all-done (the default): the master's end alone does not end the run.
    master.report(JobState.DONE, { exitStatus: 0 });
    await runUntil("mn-workers", (r) => r.jobs.some((j) => j.jobSpec!.jobNum === 0 && j.jobSubmissions.at(-1)!.status === JobStatus.DONE), "master done");
    await settle();
    expect((await getRun("mn-workers")).status).toBe(RunStatus.RUNNING);
    worker.report(JobState.DONE, { exitStatus: 0 });
    await runUntil("mn-workers", (r) => r.status === RunStatus.DONE, "done");
  });
});
