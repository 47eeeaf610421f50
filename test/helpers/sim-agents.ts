// Simulated agents for integration tests: a shim and a runner built on the REAL link library
// (`enroll` + `connectLink` from @dstack/proto/link, real mTLS against a real server), with
// Docker and the job process replaced by an in-memory task table the test drives. Every command
// the server sends lands in an inbox the test reads in order.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import {
  HostInfoSchema,
  JobState,
  JobStateChangedSchema,
  LinkErrorCode,
  RunnerState,
  TaskInfoSchema,
  TaskState,
  type JobStateChanged,
  type RunnerBootstrap,
  type RunnerCommand,
  type ShimCommand,
  type TaskInfo,
} from "@dstack/proto/agent";
import type { JobTerminationReason } from "@dstack/proto/api";
import { certificateFingerprint, connectLink, enroll, LinkCallError, type LinkClient } from "@dstack/proto/link";

export const FAST_BACKOFF = { initialMs: 20, maxMs: 500 };
const GIB = 2n ** 30n;

/** Rejects with a message naming `what` if `p` does not settle within `ms` (a bound, not a measurement). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, fail) => (timer = setTimeout(() => fail(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms))),
  ]);
}

/** Polls `probe` until it returns a value (not undefined); bounded by `ms`. */
export async function until<T>(probe: () => Promise<T | undefined>, what: string, ms = 20_000): Promise<T> {
  return within(
    (async () => {
      for (;;) {
        const v = await probe();
        if (v !== undefined) return v;
        await new Promise((r) => setTimeout(r, 50));
      }
    })(),
    ms,
    what,
  );
}

/** Items in arrival order; `next(pred)` takes the first unconsumed match, waiting for it if needed. */
export class Inbox<T> {
  readonly all: T[] = [];
  private readonly pending: T[] = [];
  private readonly waiters: { pred: (x: T) => boolean; resolve: (x: T) => void }[] = [];

  push(x: T): void {
    this.all.push(x);
    const i = this.waiters.findIndex((w) => w.pred(x));
    if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(x);
    else this.pending.push(x);
  }

  next(pred: (x: T) => boolean, what: string, ms = 20_000): Promise<T> {
    const i = this.pending.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.pending.splice(i, 1)[0]!);
    return within(new Promise<T>((resolve) => this.waiters.push({ pred, resolve })), ms, what);
  }
}

export type ShimCall = NonNullable<ShimCommand["command"]> & { case: string };
export type RunnerCall = NonNullable<RunnerCommand["command"]> & { case: string };

const agentHome = () => mkdtempSync(join(tmpdir(), "dstack-sim-agent-"));

export interface AgentServer {
  agentUrl: string;
  caFingerprint: string;
}

/** A host with 4 CPUs, 16 GiB memory, a 100 GiB disk and no GPUs, named `hostname`, at `ip`. */
export const simHost = (hostname: string, ip: string): MessageInitShape<typeof HostInfoSchema> => ({
  hostname,
  osName: "Ubuntu",
  osVersion: "24.04",
  arch: "amd64",
  cpus: 4,
  memoryBytes: 16n * GIB,
  diskTotalBytes: 100n * GIB,
  diskFreeBytes: 80n * GIB,
  addresses: [{ ip, prefixLength: 24, interface: "eth0", private: true }],
  dockerVersion: "28.0.0",
});

export const SIM_HOST = simHost("sim-host", "10.0.0.5");

/** A host agent: enrolls with a shim join token, reports `host`, keeps tasks in memory. */
export class SimShim {
  readonly inbox = new Inbox<ShimCall>();
  readonly tasks = new Map<string, TaskInfo>();
  instanceId = "";
  link!: LinkClient;
  private home = "";

  static async join(server: AgentServer, token: string, host = SIM_HOST): Promise<SimShim> {
    const s = new SimShim();
    s.home = agentHome();
    const id = await enroll({ serverUrl: server.agentUrl, token, caSha256: server.caFingerprint, kind: "shim", home: s.home, identity: { hostname: String(host.hostname ?? "") } });
    s.instanceId = id.agentId;
    s.start(host);
    await s.link.waitConnected(20_000);
    return s;
  }

  private start(host: MessageInitShape<typeof HostInfoSchema>): void {
    this.link = connectLink({
      kind: "shim",
      home: this.home,
      backoff: FAST_BACKOFF,
      stateReport: () => ({ agentVersion: "sim", startedAt: timestampNow(), hostInfo: host, tasks: [...this.tasks.values()] }),
      handlers: {
        submitTask: (c) => {
          this.inbox.push({ case: "submitTask", value: c });
          const had = this.tasks.get(c.taskId);
          if (had) return { task: had };
          const task = create(TaskInfoSchema, { taskId: c.taskId, state: TaskState.PENDING, containerName: c.containerName, updatedAt: timestampNow() });
          this.tasks.set(c.taskId, task);
          return { task };
        },
        terminateTask: (c) => {
          this.inbox.push({ case: "terminateTask", value: c });
          const t = this.tasks.get(c.taskId);
          if (!t) throw new LinkCallError(`no task ${c.taskId}`, LinkErrorCode.NOT_FOUND);
          if (t.state !== TaskState.TERMINATED) this.setTask(c.taskId, { state: TaskState.TERMINATED, terminationReason: c.terminationReason, terminationMessage: c.terminationMessage });
          return { task: this.tasks.get(c.taskId)! };
        },
        removeTask: (c) => {
          this.inbox.push({ case: "removeTask", value: c });
          this.tasks.delete(c.taskId);
          return {};
        },
      },
    });
  }

  /** Changes a task and tells the server (TaskStateChanged). */
  setTask(taskId: string, patch: { state: TaskState; terminationReason?: JobTerminationReason; terminationMessage?: string; exitCode?: number }): void {
    const cur = this.tasks.get(taskId) ?? create(TaskInfoSchema, { taskId });
    const next = create(TaskInfoSchema, { ...cur, ...patch, updatedAt: timestampNow() });
    this.tasks.set(taskId, next);
    this.link.sendEvent({ event: { case: "taskStateChanged", value: { task: next } } });
  }

  /** Drops the link (the shim process is gone, as far as the server can tell). */
  async disconnect(): Promise<void> {
    await this.link.close();
  }

  /** Dials again: a new stream and a new full state report. */
  async connect(host = SIM_HOST): Promise<void> {
    this.start(host);
    await this.link.waitConnected(20_000);
  }

  async reconnect(): Promise<void> {
    await this.disconnect();
    await this.connect();
  }

  async close(): Promise<void> {
    await this.link.close();
    rmSync(this.home, { recursive: true, force: true });
  }
}

/** An in-container runner: enrolls with the bootstrap the shim got, waits for SubmitJob, reports job states. */
export class SimRunner {
  readonly inbox = new Inbox<RunnerCall>();
  readonly states: JobStateChanged[] = [];
  runnerState = RunnerState.WAIT_SUBMIT;
  link!: LinkClient;
  private home = "";

  constructor(readonly jobId: string) {}

  static async start(bootstrap: RunnerBootstrap, jobId: string): Promise<SimRunner> {
    const r = new SimRunner(jobId);
    r.home = agentHome();
    await enroll({ serverUrl: bootstrap.agentUrl, token: bootstrap.joinToken, caSha256: certificateFingerprint(bootstrap.caCertificatePem), kind: "runner", home: r.home, identity: { jobSubmissionId: jobId } });
    r.link = connectLink({
      kind: "runner",
      home: r.home,
      backoff: FAST_BACKOFF,
      stateReport: () => ({ agentVersion: "sim", runnerState: r.runnerState, jobSubmissionId: jobId, jobStates: r.states }),
      handlers: {
        submitJob: (c) => {
          r.inbox.push({ case: "submitJob", value: c });
          r.runnerState = RunnerState.WAIT_RUN;
          return { workingDir: c.workingDir || "/", username: c.user?.username || "root" };
        },
        stopJob: (c) => {
          r.inbox.push({ case: "stopJob", value: c });
          return {};
        },
      },
    });
    await r.link.waitConnected(20_000);
    return r;
  }

  /** Records a job state and sends it (JobStateChanged). */
  report(state: JobState, o: { exitStatus?: number; reason?: JobTerminationReason; message?: string } = {}): void {
    const ev = create(JobStateChangedSchema, {
      jobSubmissionId: this.jobId,
      state,
      timestamp: timestampNow(),
      ...(o.exitStatus !== undefined ? { exitStatus: o.exitStatus } : {}),
      ...(o.reason !== undefined ? { terminationReason: o.reason } : {}),
      terminationMessage: o.message ?? "",
    });
    this.states.push(ev);
    if (state === JobState.RUNNING) this.runnerState = RunnerState.SERVE_LOGS;
    if (state === JobState.DONE || state === JobState.FAILED || state === JobState.TERMINATED) this.runnerState = RunnerState.WAIT_LOGS_FINISHED;
    this.link.sendEvent({ event: { case: "jobStateChanged", value: ev } });
  }

  async close(): Promise<void> {
    await this.link.close();
    rmSync(this.home, { recursive: true, force: true });
  }
}
