// The server drives real agent links, on SQLite and PostgreSQL: a REAL server process, and a
// simulated shim and runner built on the real link library (enrollment, mutual TLS, the control
// streams). A shim joins a fleet and reports its host, so the instance becomes usable; runs are
// applied through the public API; the shim gets SubmitTask with a runner bootstrap, the runner
// enrolls with it and gets SubmitJob; the states the agents report drive the runs to their end,
// and every finished job's container is terminated and removed on the shim.
import { createHash, createPrivateKey, X509Certificate } from "node:crypto";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { parseConfiguration, toProtoConfiguration } from "@dstack/proto";
import { JobState, RunnerRepoType, TaskNetworkMode, TaskState, type RunnerCommand, type ShimCommand } from "@dstack/proto/agent";
import { InstanceService, InstanceStatus, JobStatus, JobTerminationReason, RepoType, RunService, RunStatus, RunTerminationReason, type Run } from "@dstack/proto/api";
import { certificateFingerprint, identityUri } from "@dstack/proto/link";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServerEnv, DIALECTS, seedServer, startServer, type ServerEnv, type TestServer } from "../helpers/server.js";
import { simHost, SimRunner, SimShim, until, type RunnerCall, type ShimCall } from "../helpers/sim-agents.js";

type SubmitTask = Extract<ShimCommand["command"], { case: "submitTask" }>["value"];
type SubmitJob = Extract<RunnerCommand["command"], { case: "submitJob" }>["value"];
type StopJob = Extract<RunnerCommand["command"], { case: "stopJob" }>["value"];
type TerminateTask = Extract<ShimCommand["command"], { case: "terminateTask" }>["value"];

const CODE = Buffer.from("diff --git a/train.py b/train.py\n+print('hi')\n");
const CODE_HASH = createHash("sha256").update(CODE).digest("hex");

describe.each(DIALECTS)("the server drives agents on %s", (dialect) => {
  let where: ServerEnv;
  let server: TestServer;
  let runs: Client<typeof RunService>;
  let instances: Client<typeof InstanceService>;
  let admin: { headers: { authorization: string } };
  let shim: SimShim;
  let shim2: SimShim | undefined;
  let shimToken2 = "";
  const runners: SimRunner[] = [];

  const apply = async (name: string, yaml: string, extra: { env?: Record<string, string>; code?: boolean } = {}) => {
    const { run } = await runs.applyRun(
      {
        projectName: "main",
        runSpec: {
          runName: name,
          configuration: toProtoConfiguration(parseConfiguration(`type: task\n${yaml}`, ".dstack.yml")),
          ...(extra.code ? { repo: { repoId: "repo-1", repoType: RepoType.REMOTE, repoUrl: "https://git.example.com/team/repo.git", branch: "main", hash: "0123abcd" }, repoCodeHash: CODE_HASH } : {}),
          env: extra.env ?? {},
        },
      },
      admin,
    );
    return run!;
  };
  const getRun = async (name: string) => (await runs.getRun({ projectName: "main", run: { case: "runName", value: name } }, admin)).run!;
  const runUntil = (name: string, pred: (r: Run) => boolean, what: string) => until(async () => ((r) => (pred(r) ? r : undefined))(await getRun(name)), `${name}: ${what}`);
  const jobIdOf = async (name: string) => (await until(async () => (await getRun(name)).latestJobSubmission?.id || undefined, `${name}: a job`)) as string;
  const shimCall = (c: ShimCall["case"], taskId: string): Promise<unknown> =>
    shim.inbox.next((x) => x.case === c && (x.value as { taskId?: string }).taskId === taskId, `${c} of ${taskId}`).then((x) => x.value);
  const runnerCall = (r: SimRunner, c: RunnerCall["case"]): Promise<unknown> => r.inbox.next((x) => x.case === c, `${c} for ${r.jobId}`).then((x) => x.value);

  /** Applies a run and plays its shim up to a running container and an enrolled runner with the job submitted. */
  async function startJob(name: string, yaml: string, extra: Parameters<typeof apply>[2] = {}): Promise<{ jobId: string; task: SubmitTask; runner: SimRunner; job: SubmitJob }> {
    await apply(name, yaml, extra);
    const jobId = await jobIdOf(name);
    const task = (await shimCall("submitTask", jobId)) as SubmitTask;
    shim.setTask(jobId, { state: TaskState.PULLING });
    await runUntil(name, (r) => r.latestJobSubmission?.status === JobStatus.PULLING, "job pulling");
    shim.setTask(jobId, { state: TaskState.RUNNING });
    const runner = await SimRunner.start(task.runner!, jobId);
    runners.push(runner);
    const job = (await runnerCall(runner, "submitJob")) as SubmitJob;
    return { jobId, task, runner, job };
  }

  /** The container exits after the runner's end; the server then terminates and removes the task. */
  async function containerExits(jobId: string, exitCode: number): Promise<void> {
    shim.setTask(jobId, { state: TaskState.TERMINATED, exitCode, terminationReason: exitCode === 0 ? JobTerminationReason.DONE_BY_RUNNER : JobTerminationReason.CONTAINER_EXITED_WITH_ERROR });
    await shimCall("terminateTask", jobId);
    await shimCall("removeTask", jobId);
  }

  beforeAll(async () => {
    where = await createServerEnv(dialect);
    // First start migrates and bootstraps; then a fleet, a secret, the code blob and a shim join
    // token are written through the services on the same database (as an admin would via the API).
    const { seeded: shimToken } = await seedServer(where, async (s) => {
      const fleet = await s.applyFleet("type: fleet\nname: sim\nnodes: 0\n");
      await s.svc.secrets.createOrUpdate(s.admin, "main", "HF_TOKEN", "s3cr3t-value");
      await s.svc.code.upload(s.admin, "main", CODE_HASH, CODE);
      const token = await s.shimToken(fleet.id);
      shimToken2 = await s.shimToken(fleet.id);
      return token;
    });
    // Jobs of a host that stays away fail after 3 s here (120 s by default).
    server = await startServer(where, { env: { DSTACK_SERVER_JOB_DISCONNECTED_TIMEOUT: "3" } });
    const transport = createGrpcTransport({ baseUrl: server.url });
    runs = createClient(RunService, transport);
    instances = createClient(InstanceService, transport);
    admin = { headers: { authorization: `Bearer ${server.adminToken}` } };
    shim = await SimShim.join(server, shimToken);
  });

  afterAll(async () => {
    for (const r of runners) await r.close();
    await shim2?.close();
    await shim?.close();
    if (server) expect(await server.stop()).toBe(0);
    await where?.cleanup();
  });

  it("a shim that joins and reports its host becomes an idle instance of its fleet", async () => {
    const inst = await until(async () => {
      const { instances: list } = await instances.listInstances({ projectNames: ["main"] }, admin);
      const i = list.find((x) => x.id === shim.instanceId);
      return i?.status === InstanceStatus.IDLE ? i : undefined;
    }, "the instance to become idle");
    expect([inst.name, inst.fleetName, inst.hostname, inst.internalIp, inst.unreachable, inst.totalBlocks, inst.busyBlocks]).toEqual(["sim-0", "sim", "sim-host", "10.0.0.5", false, 1, 0]);
    // The reported facts are what offers match on: 4 CPUs and 16 GB fit a 2-CPU, 8 GB task.
    const { plan } = await runs.getRunPlan({ projectName: "main", runSpec: { configuration: toProtoConfiguration(parseConfiguration("type: task\ncommands: [echo]\n", ".dstack.yml")) } }, admin);
    const offer = plan!.jobPlans[0]!.offers[0]!;
    expect([offer.instanceName, offer.instance?.resources?.cpus, offer.instance?.resources?.memoryMib, offer.instance?.resources?.diskMib]).toEqual(["sim-0", 4, 16n * 1024n, 100n * 1024n]);
  });

  it("runs a task to done: SubmitTask with a runner bootstrap, SubmitJob with env, secret and code, RUNNING then DONE(0)", async () => {
    const { jobId, task, runner, job } = await startJob(
      "t-done",
      "image: ubuntu:24.04\ncommands: [echo hi, python train.py]\nenv:\n  - A=1\n  - HF_TOKEN=${{ secrets.HF_TOKEN }}\nports: [8000]\nworking_dir: /workflow\nresources: {shm_size: 1GB}\n",
      { env: { B: "2" }, code: true },
    );
    // The shim's task: the job's container, with the runner's way home.
    expect(task.taskId).toBe(jobId);
    expect([task.containerName, task.imageName, task.networkMode, task.ports, task.shmSizeBytes]).toEqual([`t-done-0-0-0-${jobId.replace(/-/g, "").slice(0, 8)}`, "ubuntu:24.04", TaskNetworkMode.HOST, [8000], 2n ** 30n]);
    expect(task.runner?.agentUrl).toBe(server.agentUrl);
    expect(certificateFingerprint(task.runner!.caCertificatePem)).toBe(server.caFingerprint);
    expect(task.runner?.joinToken.startsWith(`dsj.${jobId}.`)).toBe(true);
    // …and the job's identity issued ahead of time (the runner links without enrolling): a client
    // certificate for this job submission that the agent CA signed, with its own key.
    const cert = new X509Certificate(task.runner!.certificatePem);
    expect(cert.verify(new X509Certificate(task.runner!.caCertificatePem).publicKey)).toBe(true);
    expect(cert.subjectAltName).toBe(`URI:${identityUri("runner", jobId)}`);
    expect(cert.subject).toContain(`CN=${jobId}`);
    expect(cert.checkPrivateKey(createPrivateKey(task.runner!.privateKeyPem))).toBe(true);
    expect(Math.floor(timestampDate(task.runner!.notAfter!).getTime() / 1000) * 1000).toBe(new Date(cert.validTo).getTime());
    expect(timestampDate(task.runner!.renewAfter!).getTime()).toBeLessThan(timestampDate(task.runner!.notAfter!).getTime());
    // The plaintext secret never reaches the shim.
    expect(JSON.stringify(task, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))).not.toContain("s3cr3t-value");

    // The runner's job: commands, env (configuration + -e, secret resolved), code, cluster facts.
    const run = await getRun("t-done");
    expect([job.jobSubmissionId, job.runId, job.runName, job.repoId, job.workingDir]).toEqual([jobId, run.id, "t-done", "repo-1", "/workflow"]);
    expect(job.commands).toEqual(["echo hi", "python train.py"]);
    expect(job.env).toEqual({ A: "1", B: "2", HF_TOKEN: "s3cr3t-value" });
    expect(job.secrets).toEqual({ HF_TOKEN: "s3cr3t-value" });
    expect(job.code).toMatchObject({ sha256: CODE_HASH, sizeBytes: BigInt(CODE.length) });
    expect(job.repo).toMatchObject({ type: RunnerRepoType.REMOTE, cloneUrl: "https://git.example.com/team/repo.git", branch: "main", hash: "0123abcd", repoDir: "", skipIfExists: false, singleBranch: true });
    expect(job.clusterInfo).toMatchObject({ jobIps: ["10.0.0.5"], masterJobIp: "10.0.0.5", nodeRank: 0, nodesNum: 1 });

    runner.report(JobState.RUNNING);
    await runUntil("t-done", (r) => r.status === RunStatus.RUNNING, "run running");
    runner.report(JobState.DONE, { exitStatus: 0 });
    const done = await runUntil("t-done", (r) => r.status === RunStatus.DONE, "run done");
    expect(done.terminationReason).toBe(RunTerminationReason.ALL_JOBS_DONE);
    expect([done.latestJobSubmission?.status, done.latestJobSubmission?.exitStatus, done.latestJobSubmission?.terminationReason]).toEqual([JobStatus.DONE, 0, JobTerminationReason.DONE_BY_RUNNER]);
    await containerExits(jobId, 0);
  });

  it("a job that exits 3 fails the run with exit status 3", async () => {
    const { jobId, runner } = await startJob("t-fail", "commands: [exit 3]\n");
    runner.report(JobState.RUNNING);
    runner.report(JobState.FAILED, { exitStatus: 3 });
    const failed = await runUntil("t-fail", (r) => r.status === RunStatus.FAILED, "run failed");
    expect(failed.terminationReason).toBe(RunTerminationReason.JOB_FAILED);
    expect([failed.latestJobSubmission?.status, failed.latestJobSubmission?.exitStatus, failed.latestJobSubmission?.terminationReason]).toEqual([
      JobStatus.FAILED,
      3,
      JobTerminationReason.CONTAINER_EXITED_WITH_ERROR,
    ]);
    await containerExits(jobId, 3);
  });

  it("a stop sends the runner StopJob with stop_duration as grace; its TERMINATED ends the run", async () => {
    const { jobId, runner } = await startJob("t-stop", "commands: [sleep infinity]\nstop_duration: 45s\n");
    runner.report(JobState.RUNNING);
    await runUntil("t-stop", (r) => r.status === RunStatus.RUNNING, "run running");
    await runs.stopRuns({ projectName: "main", runNames: ["t-stop"], abort: false }, admin);
    const stop = (await runnerCall(runner, "stopJob")) as StopJob;
    expect(stop.grace?.seconds).toBe(45n);
    expect(stop.reason).toBe(JobTerminationReason.TERMINATED_BY_USER);
    runner.report(JobState.TERMINATED, { exitStatus: 143 });
    const ended = await runUntil("t-stop", (r) => r.status === RunStatus.TERMINATED, "run terminated");
    expect(ended.terminationReason).toBe(RunTerminationReason.STOPPED_BY_USER);
    expect([ended.latestJobSubmission?.status, ended.latestJobSubmission?.terminationReason]).toEqual([JobStatus.TERMINATED, JobTerminationReason.TERMINATED_BY_USER]);
    await containerExits(jobId, 143);
  });

  it("an abort gives the runner no grace and removes the container at once", async () => {
    const { jobId, runner } = await startJob("t-abort", "commands: [sleep infinity]\nstop_duration: 45s\n");
    runner.report(JobState.RUNNING);
    await runUntil("t-abort", (r) => r.status === RunStatus.RUNNING, "run running");
    await runs.stopRuns({ projectName: "main", runNames: ["t-abort"], abort: true }, admin);
    const stop = (await runnerCall(runner, "stopJob")) as StopJob;
    expect(stop.grace?.seconds ?? 0n).toBe(0n);
    expect(stop.reason).toBe(JobTerminationReason.ABORTED_BY_USER);
    const ended = await runUntil("t-abort", (r) => r.status === RunStatus.TERMINATED, "run terminated");
    expect(ended.terminationReason).toBe(RunTerminationReason.ABORTED_BY_USER);
    expect(ended.latestJobSubmission?.status).toBe(JobStatus.ABORTED);
    // No waiting for the runner: the task goes without the container exiting first.
    await shimCall("terminateTask", jobId);
    await shimCall("removeTask", jobId);
  });

  it("a stop while the runner is gone stops the container through the shim with the same grace", async () => {
    const { jobId, runner } = await startJob("t-stop-shim", "commands: [sleep infinity]\nstop_duration: 45s\n");
    runner.report(JobState.RUNNING);
    await runUntil("t-stop-shim", (r) => r.status === RunStatus.RUNNING, "run running");
    await runner.close();
    runners.splice(runners.indexOf(runner), 1);
    await runs.stopRuns({ projectName: "main", runNames: ["t-stop-shim"], abort: false }, admin);
    const term = (await shimCall("terminateTask", jobId)) as TerminateTask;
    expect([term.timeout?.seconds, term.terminationReason]).toEqual([45n, JobTerminationReason.TERMINATED_BY_USER]);
    const ended = await runUntil("t-stop-shim", (r) => r.status === RunStatus.TERMINATED, "run terminated");
    expect([ended.latestJobSubmission?.status, ended.latestJobSubmission?.terminationReason]).toEqual([JobStatus.TERMINATED, JobTerminationReason.TERMINATED_BY_USER]);
    await shimCall("terminateTask", jobId);
    await shimCall("removeTask", jobId);
  });

  it("a two-node task: each node's runner gets the replica's addresses once both nodes are placed", async () => {
    await apply("t-multi", "commands: [hostname]\nnodes: 2\n");
    const run = await until(async () => ((r) => (r.jobs.some((j) => j.jobSubmissions[0]?.status === JobStatus.PROVISIONING) ? r : undefined))(await getRun("t-multi")), "one node placed");
    const ids = run.jobs.map((j) => j.jobSubmissions[0]!.id);
    const rank = (id: string) => run.jobs.find((j) => j.jobSubmissions[0]!.id === id)!.jobSpec!.jobNum;
    // Node A takes the only host; its runner starts and waits: node B has no address yet.
    const taskA = (await shim.inbox.next((x) => x.case === "submitTask" && ids.includes((x.value as SubmitTask).taskId), "a node's submitTask")).value as SubmitTask;
    shim.setTask(taskA.taskId, { state: TaskState.RUNNING });
    const runnerA = await SimRunner.start(taskA.runner!, taskA.taskId);
    runners.push(runnerA);
    // A second host joins; node B is placed there, and both runners get their jobs.
    shim2 = await SimShim.join(server, shimToken2, simHost("sim-host-2", "10.0.0.6"));
    const idB = ids.find((id) => id !== taskA.taskId)!;
    const taskB = (await shim2.inbox.next((x) => x.case === "submitTask" && (x.value as SubmitTask).taskId === idB, "the other node's submitTask")).value as SubmitTask;
    shim2.setTask(idB, { state: TaskState.RUNNING });
    const runnerB = await SimRunner.start(taskB.runner!, idB);
    runners.push(runnerB);
    const jobA = (await runnerCall(runnerA, "submitJob")) as SubmitJob;
    const jobB = (await runnerCall(runnerB, "submitJob")) as SubmitJob;
    const ips = rank(taskA.taskId) === 0 ? ["10.0.0.5", "10.0.0.6"] : ["10.0.0.6", "10.0.0.5"];
    for (const [job, id] of [[jobA, taskA.taskId], [jobB, idB]] as const) {
      expect(job.clusterInfo).toMatchObject({ jobIps: ips, masterJobIp: ips[0], nodeRank: rank(id), nodesNum: 2 });
    }
    for (const r of [runnerA, runnerB]) r.report(JobState.RUNNING);
    await runUntil("t-multi", (r) => r.status === RunStatus.RUNNING, "run running");
    for (const r of [runnerA, runnerB]) r.report(JobState.DONE, { exitStatus: 0 });
    await runUntil("t-multi", (r) => r.status === RunStatus.DONE, "run done");
    await containerExits(taskA.taskId, 0);
    shim2.setTask(idB, { state: TaskState.TERMINATED, exitCode: 0, terminationReason: JobTerminationReason.DONE_BY_RUNNER });
    await shim2.inbox.next((x) => x.case === "removeTask" && (x.value as { taskId: string }).taskId === idB, "removeTask on the second host");
  });

  it("a task the shim cannot start fails the job with the shim's reason and message", async () => {
    await apply("t-image", "image: no-such/image:1\ncommands: [echo]\n");
    const jobId = await jobIdOf("t-image");
    await shimCall("submitTask", jobId);
    shim.setTask(jobId, { state: TaskState.TERMINATED, terminationReason: JobTerminationReason.CREATING_CONTAINER_ERROR, terminationMessage: "image not found: no-such/image:1" });
    const failed = await runUntil("t-image", (r) => r.status === RunStatus.FAILED, "run failed");
    expect([failed.latestJobSubmission?.status, failed.latestJobSubmission?.terminationReason, failed.latestJobSubmission?.terminationReasonMessage]).toEqual([
      JobStatus.FAILED,
      JobTerminationReason.CREATING_CONTAINER_ERROR,
      "image not found: no-such/image:1",
    ]);
    await shimCall("terminateTask", jobId);
    await shimCall("removeTask", jobId);
  });

  it("a missing secret fails the job with a message naming it, before any container is made", async () => {
    await apply("t-secret", "commands: [env]\nenv:\n  - TOKEN=${{ secrets.NOT_SET }}\n");
    const failed = await runUntil("t-secret", (r) => r.status === RunStatus.FAILED, "run failed");
    const sub = failed.latestJobSubmission!;
    expect([sub.status, sub.terminationReason]).toEqual([JobStatus.FAILED, JobTerminationReason.EXECUTOR_ERROR]);
    expect(sub.terminationReasonMessage).toContain("Secret 'NOT_SET' does not exist in project 'main'");
    expect(shim.inbox.all.filter((c) => (c.value as { taskId?: string }).taskId === sub.id)).toEqual([]);
  });

  it("a shim that reconnects without a running job's container fails the job as unreachable", async () => {
    const { jobId, runner } = await startJob("t-lost", "commands: [sleep infinity]\n");
    runner.report(JobState.RUNNING);
    await runUntil("t-lost", (r) => r.status === RunStatus.RUNNING, "run running");
    // The host lost the container (and its runner) while the shim was away.
    await runner.close();
    runners.splice(runners.indexOf(runner), 1);
    shim.tasks.delete(jobId);
    await shim.reconnect();
    const failed = await runUntil("t-lost", (r) => r.status === RunStatus.FAILED, "run failed");
    expect(failed.latestJobSubmission?.terminationReason).toBe(JobTerminationReason.INSTANCE_UNREACHABLE);
  });

  it("jobs of a host whose shim and runner stay away fail as unreachable; the shim's return cleans up", async () => {
    const { jobId, runner } = await startJob("t-away", "commands: [sleep infinity]\n");
    runner.report(JobState.RUNNING);
    await runUntil("t-away", (r) => r.status === RunStatus.RUNNING, "run running");
    await runner.close();
    runners.splice(runners.indexOf(runner), 1);
    await shim.disconnect();
    const failed = await runUntil("t-away", (r) => r.status === RunStatus.FAILED, "run failed");
    expect([failed.latestJobSubmission?.terminationReason, failed.latestJobSubmission?.terminationReasonMessage]).toEqual([
      JobTerminationReason.INSTANCE_UNREACHABLE,
      "The host agent of this job's instance has not been heard from for 3 s.",
    ]);
    // Back again with the container still listed: the server removes it.
    await shim.connect();
    await shimCall("terminateTask", jobId);
    await shimCall("removeTask", jobId);
  });
});
