// Runs end to end against a REAL server process, on SQLite and on PostgreSQL: a GPU host is
// registered into a fleet directly in the server's database (as the mesh would when a shim
// enrolls), then the public RunService plans, submits, watches, stops and deletes runs over
// gRPC (h2c) with the generated client, and the same list/stop/delete calls go through the real
// curl binary in Connect-JSON. The scheduler inside the server places the job on the host.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { parseConfiguration, toProtoConfiguration } from "@dstack/proto";
import {
  Availability,
  InstanceService,
  InstanceStatus,
  JobStatus,
  JobTerminationReason,
  RunService,
  RunStatus,
  RunTerminationReason,
  type Run,
  type WatchRunsResponse,
} from "@dstack/proto/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InstanceView } from "../../server/src/services/fleets.js";
import { createServerEnv, DIALECTS, seedServer, startServer, type ServerEnv, type TestServer } from "../helpers/server.js";
import { dstack } from "../cli/run-cli.js";

const exec = promisify(execFile);

/** POSTs Connect-JSON with the real curl binary (one URL per call); returns the HTTP status and the parsed body. */
async function curl(url: string, rpc: string, body: unknown, token: string): Promise<{ status: number; body: Record<string, any> }> {
  const args = ["-s", "-w", "\n%{http_code}", "-H", "Content-Type: application/json", "-H", `Authorization: Bearer ${token}`, "-d", JSON.stringify(body), `${url}/dstack.api.v1.${rpc}`];
  const { stdout } = await exec("curl", args);
  const cut = stdout.lastIndexOf("\n");
  return { status: Number(stdout.slice(cut + 1)), body: JSON.parse(stdout.slice(0, cut) || "{}") };
}

async function connectError(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

/** Rejects with `what` if `p` does not settle within `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, fail) => (timer = setTimeout(() => fail(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms))),
  ]);
}

const task = (name: string, gpu: string) => ({
  runName: name,
  configuration: toProtoConfiguration(parseConfiguration(`type: task\ncommands: [nvidia-smi]\nresources: {gpu: "${gpu}"}\n`, ".dstack.yml")),
});

const HOST = {
  cpus: 8,
  memoryGb: 32,
  diskGb: 200,
  gpus: [
    { vendor: "nvidia" as const, name: "A100", memoryGb: 80 },
    { vendor: "nvidia" as const, name: "A100", memoryGb: 80 },
  ],
};

describe.each(DIALECTS)("runs through the public API on %s", (dialect) => {
  let where: ServerEnv;
  let server: TestServer;
  let instance: InstanceView;
  let runs: Client<typeof RunService>;
  let instances: Client<typeof InstanceService>;
  let admin: { headers: { authorization: string } };
  const watchAbort = new AbortController();
  let watch: AsyncIterator<WatchRunsResponse>;
  /** The latest state of every run the watch stream has reported. */
  const seen = new Map<string, Run>();
  let a100RunId = "";

  /** Reads the WatchRuns stream until run `id` satisfies `pred`; bounded. */
  async function until(id: string, pred: (r: Run) => boolean, what: string, ms = 10_000): Promise<Run> {
    const have = seen.get(id);
    if (have && pred(have)) return have;
    return within(
      (async () => {
        for (;;) {
          const next = await watch.next();
          if (next.done) throw new Error(`WatchRuns ended while waiting for ${what}`);
          const r = next.value.run;
          if (!r) continue;
          seen.set(r.id, r);
          if (r.id === id && pred(r)) return r;
        }
      })(),
      ms,
      `${what} (last seen status ${RunStatus[seen.get(id)?.status ?? 0]})`,
    );
  }

  beforeAll(async () => {
    where = await createServerEnv(dialect);
    // 1. First start (the server migrates the database and bootstraps the admin and `main`), then
    // 2. a GPU host joins a fleet, written through the services on the same database. `blocks: auto`
    //    splits it into one block per GPU, so a task asking for `A100:1` fits half of it.
    const { adminToken } = await seedServer(where, async (s) => {
      const fleet = await s.applyFleet("type: fleet\nname: a100-fleet\nnodes: 0\nblocks: auto\n");
      instance = await s.svc.fleets.registerInstance(fleet.id, HOST);
    });
    expect(instance).toMatchObject({ name: "a100-fleet-0", fleetName: "a100-fleet", totalBlocks: 2, busyBlocks: 0 });

    // 3. Second start on the same env: the host is there, the admin token is the one saved at first start.
    server = await startServer(where);
    expect(server.adminToken).toBe(adminToken);
    const transport = createGrpcTransport({ baseUrl: server.url });
    runs = createClient(RunService, transport);
    instances = createClient(InstanceService, transport);
    admin = { headers: { authorization: `Bearer ${server.adminToken}` } };

    watch = runs.watchRuns({ projectName: "main", includeJobs: true }, { ...admin, signal: watchAbort.signal })[Symbol.asyncIterator]();
    for (;;) {
      const first = await within(watch.next(), 10_000, "WatchRuns' initial-state marker");
      if (first.done) throw new Error("WatchRuns ended before its initial state");
      if (first.value.initialStateSent) break;
    }
  });

  afterAll(async () => {
    watchAbort.abort();
    if (server) expect(await server.stop()).toBe(0);
    await where?.cleanup();
  });

  it("lists the registered host as an idle instance", async () => {
    const { instances: list } = await instances.listInstances({ projectNames: ["main"] }, admin);
    expect(list.map((i) => [i.name, i.fleetName, i.status, i.totalBlocks, i.busyBlocks])).toEqual([["a100-fleet-0", "a100-fleet", InstanceStatus.IDLE, 2, 0]]);
  });

  it("plans an A100 task onto the registered host and finds no offer for an H100", async () => {
    const { plan } = await runs.getRunPlan({ projectName: "main", runSpec: task("a100-task", "A100:1") }, admin);
    const offers = plan!.jobPlans[0]!.offers;
    expect(offers).toHaveLength(1);
    const o = offers[0]!;
    expect([o.instanceName, o.fleetName, o.availability, o.price, o.blocks, o.totalBlocks]).toEqual(["a100-fleet-0", "a100-fleet", Availability.IDLE, 0, 1, 2]);
    expect(o.instance?.resources?.cpus).toBe(4);
    expect(o.instance?.resources?.memoryMib).toBe(16n * 1024n);
    expect(o.instance?.resources?.diskMib).toBe(200n * 1024n);
    expect(o.instance?.resources?.gpus.map((g) => [g.name, g.memoryMib])).toEqual([["A100", 80n * 1024n]]);
    expect(plan!.jobPlans[0]!.jobSpec?.jobName).toBe("a100-task-0-0");

    const none = await runs.getRunPlan({ projectName: "main", runSpec: task("h100-task", "H100:1") }, admin);
    expect(none.plan!.jobPlans[0]!.offers).toEqual([]);
  });

  it("submits the A100 task and WatchRuns sees the scheduler place it on the host", async () => {
    const t0 = performance.now();
    const { run } = await runs.applyRun({ projectName: "main", runSpec: task("a100-task", "A100:1") }, admin);
    expect(run?.runSpec?.runName).toBe("a100-task");
    expect(run?.status).toBe(RunStatus.SUBMITTED);
    a100RunId = run!.id;
    const placed = await until(run!.id, (r) => r.status !== RunStatus.SUBMITTED, "a100-task to leave submitted");
    const ms = performance.now() - t0;
    const sub = placed.latestJobSubmission!;
    const serverMs = sub.lastProcessedAt && sub.submittedAt ? Number(sub.lastProcessedAt.seconds - sub.submittedAt.seconds) * 1000 + (sub.lastProcessedAt.nanos - sub.submittedAt.nanos) / 1e6 : NaN;
    console.log(`[${dialect}] submit → placed: ${ms.toFixed(1)} ms (ApplyRun call → WatchRuns update); job submitted → placed by the server clock: ${serverMs.toFixed(1)} ms`);

    expect(placed.status).toBe(RunStatus.PROVISIONING);
    expect(sub.status).toBe(JobStatus.PROVISIONING);
    expect(sub.jobProvisioningData).toMatchObject({ instanceId: instance.id, instanceName: "a100-fleet-0", fleetName: "a100-fleet" });
    expect(sub.jobRuntimeData?.blocks).toBe(1);
    expect(placed.fleetName).toBe("a100-fleet");
    // The job's share of the host: one of two blocks (half the CPUs and memory, one GPU, the disk).
    const share = sub.jobProvisioningData?.instanceType?.resources;
    expect([share?.cpus, share?.memoryMib, share?.diskMib, share?.gpus.map((g) => [g.name, g.memoryMib])]).toEqual([4, 16n * 1024n, 200n * 1024n, [["A100", 80n * 1024n]]]);
    expect([placed.statusMessage, sub.statusMessage]).toEqual(["provisioning", "provisioning"]);

    const { runs: listed } = await runs.listRuns({ projectName: "main" }, admin);
    expect(listed.map((r) => [r.runSpec?.runName, r.status, r.latestJobSubmission?.jobProvisioningData?.instanceName])).toEqual([["a100-task", RunStatus.PROVISIONING, "a100-fleet-0"]]);
    expect([listed[0]!.statusMessage, listed[0]!.latestJobSubmission?.jobProvisioningData?.instanceType?.resources?.cpus]).toEqual(["provisioning", 4]);
    // What `dstack ps` makes of it: the share as RESOURCES, the server's words as STATUS.
    const ps = await dstack(["ps"], { home: where.home });
    expect(ps.stdout).toMatch(/^ a100-task\s+ssh\s+cpu=4 mem=16GB disk=200GB gpu=A100:80GB:1\s+\$0\s+provisioning\s/m);
    const { instances: list } = await instances.listInstances({ projectNames: ["main"] }, admin);
    expect(list.map((i) => [i.name, i.status, i.busyBlocks])).toEqual([["a100-fleet-0", InstanceStatus.BUSY, 1]]);
  });

  it("fails an H100 task with no capacity", async () => {
    const { run } = await runs.applyRun({ projectName: "main", runSpec: task("h100-task", "H100:1") }, admin);
    const failed = await until(run!.id, (r) => r.status === RunStatus.FAILED, "h100-task to fail");
    expect(failed.terminationReason).toBe(RunTerminationReason.JOB_FAILED);
    const sub = failed.latestJobSubmission!;
    expect([sub.status, sub.terminationReason, sub.terminationReasonMessage]).toEqual([JobStatus.FAILED, JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY, "No matching fleet found"]);
    expect(sub.jobProvisioningData).toBeUndefined();
    expect([failed.statusMessage, sub.statusMessage]).toEqual(["no fleets", "no fleets"]);
  });

  it("refuses to delete an active run", async () => {
    const e = await connectError(runs.deleteRuns({ projectName: "main", runNames: ["a100-task"] }, admin));
    expect(e.code).toBe(Code.FailedPrecondition);
    expect(e.rawMessage).toMatch(/^Run 'a100-task' is provisioning; only finished runs can be deleted\. Stop it first with `dstack stop a100-task`\.$/i);
    // Nothing was deleted: neither the active run nor the finished one named with it in the same call.
    const both = await connectError(runs.deleteRuns({ projectName: "main", runNames: ["h100-task", "a100-task"] }, admin));
    expect(both.code).toBe(Code.FailedPrecondition);
    const { runs: listed } = await runs.listRuns({ projectName: "main" }, admin);
    expect(listed.map((r) => r.runSpec?.runName).sort()).toEqual(["a100-task", "h100-task"]);
  });

  it("aborts the placed run: it ends terminated (aborted by user) and frees the host", async () => {
    await runs.stopRuns({ projectName: "main", runNames: ["a100-task"], abort: true }, admin);
    const done = await until(a100RunId, (r) => r.status === RunStatus.TERMINATED, "a100-task to be terminated");
    expect(done.terminationReason).toBe(RunTerminationReason.ABORTED_BY_USER);
    const sub = done.latestJobSubmission!;
    expect([sub.status, sub.terminationReason]).toEqual([JobStatus.ABORTED, JobTerminationReason.ABORTED_BY_USER]);
    expect(sub.finishedAt).toBeDefined();
    expect([done.statusMessage, sub.statusMessage]).toEqual(["aborted", "aborted"]);
    // A finished job keeps showing the share it had.
    expect(sub.jobProvisioningData?.instanceType?.resources?.cpus).toBe(4);
    const { instances: list } = await instances.listInstances({ projectNames: ["main"] }, admin);
    expect(list.map((i) => [i.name, i.status, i.busyBlocks])).toEqual([["a100-fleet-0", InstanceStatus.IDLE, 0]]);
  });

  it("deletes the finished runs; ListRuns no longer shows them", async () => {
    await runs.deleteRuns({ projectName: "main", runNames: ["a100-task", "h100-task"] }, admin);
    expect((await runs.listRuns({ projectName: "main" }, admin)).runs).toEqual([]);
    const gone = await connectError(runs.deleteRuns({ projectName: "main", runNames: ["a100-task"] }, admin));
    expect(gone.code).toBe(Code.NotFound);
  });

  it("lists, refuses to delete, aborts and deletes with curl (Connect-JSON)", async () => {
    const t = server.adminToken;
    const t0 = performance.now();
    const { run } = await runs.applyRun({ projectName: "main", runSpec: task("curl-task", "A100:1") }, admin);
    await until(run!.id, (r) => r.status === RunStatus.PROVISIONING, "curl-task to be placed");
    console.log(`[${dialect}] submit → placed (second run, warm server): ${(performance.now() - t0).toFixed(1)} ms`);

    const listed = await curl(server.url, "RunService/ListRuns", { projectName: "main" }, t);
    expect(listed.status).toBe(200);
    expect(listed.body.runs).toHaveLength(1);
    expect(listed.body.runs[0]).toMatchObject({
      id: run!.id,
      projectName: "main",
      user: "admin",
      status: "RUN_STATUS_PROVISIONING",
      fleetName: "a100-fleet",
      runSpec: { runName: "curl-task" },
      latestJobSubmission: { status: "JOB_STATUS_PROVISIONING", jobProvisioningData: { instanceId: instance.id, instanceName: "a100-fleet-0", fleetName: "a100-fleet" } },
    });

    const refused = await curl(server.url, "RunService/DeleteRuns", { projectName: "main", runNames: ["curl-task"] }, t);
    expect(refused).toMatchObject({ status: 400, body: { code: "failed_precondition" } });
    expect(refused.body.message).toMatch(/^Run 'curl-task' is provisioning; only finished runs can be deleted/i);

    const stopped = await curl(server.url, "RunService/StopRuns", { projectName: "main", runNames: ["curl-task"], abort: true }, t);
    expect(stopped).toEqual({ status: 200, body: {} });
    await until(run!.id, (r) => r.status === RunStatus.TERMINATED, "curl-task to be terminated");
    const after = await curl(server.url, "RunService/ListRuns", { projectName: "main" }, t);
    expect(after.body.runs.map((r: any) => [r.runSpec.runName, r.status, r.terminationReason, r.latestJobSubmission.status, r.latestJobSubmission.terminationReason])).toEqual([
      ["curl-task", "RUN_STATUS_TERMINATED", "RUN_TERMINATION_REASON_ABORTED_BY_USER", "JOB_STATUS_ABORTED", "JOB_TERMINATION_REASON_ABORTED_BY_USER"],
    ]);

    expect(await curl(server.url, "RunService/DeleteRuns", { projectName: "main", runNames: ["curl-task"] }, t)).toEqual({ status: 200, body: {} });
    const empty = await curl(server.url, "RunService/ListRuns", { projectName: "main" }, t);
    expect(empty.status).toBe(200);
    expect(empty.body.runs ?? []).toEqual([]);
    const missing = await curl(server.url, "RunService/StopRuns", { projectName: "main", runNames: ["curl-task"] }, t);
    expect(missing).toMatchObject({ status: 404, body: { code: "not_found" } });
  });

  it("says 'retrying' while a run that found no capacity waits for its retry, and 'stopped' once stopped", async () => {
    const configuration = toProtoConfiguration(
      parseConfiguration(`type: task\ncommands: [nvidia-smi]\nresources: {gpu: "H100:1"}\nretry: {on_events: [no-capacity], duration: 1h}\n`, ".dstack.yml"),
    );
    const { run } = await runs.applyRun({ projectName: "main", runSpec: { runName: "retry-task", configuration } }, admin);
    const waiting = await until(run!.id, (r) => r.status === RunStatus.PENDING, "retry-task to wait for its retry");
    expect(waiting.statusMessage).toBe("retrying");
    expect(waiting.latestJobSubmission?.statusMessage).toBe("no fleets");
    const listed = (await runs.listRuns({ projectName: "main" }, admin)).runs.find((r) => r.id === run!.id);
    expect(listed?.statusMessage).toBe("retrying");

    await runs.stopRuns({ projectName: "main", runNames: ["retry-task"] }, admin);
    const stopped = await until(run!.id, (r) => r.status === RunStatus.TERMINATED, "retry-task to be stopped");
    expect(stopped.statusMessage).toBe("stopped");
    await runs.deleteRuns({ projectName: "main", runNames: ["retry-task"] }, admin);
  });
});
