// The shim's task executor: one Docker container per task, driven through dstack's lifecycle
// pending → preparing → pulling → creating → running → terminated (any state may go to
// terminated). Every change goes out through onChange. Containers carry labels from which a
// restarted shim rebuilds its tasks (recover), so the shim may die without taking jobs with it.
import { mkdirSync } from "node:fs";
import { clone, create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import Docker from "dockerode";
import {
  LinkErrorCode,
  PullProgressSchema,
  SubmitTaskCommandSchema,
  TaskInfoSchema,
  TaskPortSchema,
  TaskState,
  type SubmitTaskCommand,
  type TaskInfo,
  type TaskPort,
} from "@dstack/proto/agent";
import { JobTerminationReason } from "@dstack/proto/api";
import { LinkCallError } from "@dstack/proto/link";
import { silentLogger, type Logger } from "../log.js";
import { containerSpec, isBridge } from "./container-spec.js";
import { GpuLocks, type ExecutorGpu } from "./gpu-locks.js";
import { mustPull, pullImage, PullError, type PullProgressState } from "./image.js";
import { LABEL_INSTANCE, LABEL_TASK, parseRecord, taskLabels, type RecoveryRecord } from "./labels.js";
import { lastLogLines } from "./logs.js";
import { agentUrlForContainer, checkRunnerBundle, defaultRunnerBundleDir, numericUser, writeTaskDir, type RunnerBootstrapFile } from "./runner-bundle.js";
import { TaskFiles, type TerminationRequest } from "./task-files.js";

export interface TaskExecutorOptions {
  /** The shim's instance id: containers are labelled with it, and recovery only adopts those. */
  instanceId: string;
  /** The shim's home; task folders live in `<home>/tasks/<taskId>/`. */
  home: string;
  /** Default: the engine at DOCKER_HOST, else /var/run/docker.sock. */
  docker?: Docker;
  /** GPUs tasks may lock. Default: host discovery (collectHostReport). Tests pass fakes. */
  gpus?: ExecutorGpu[];
  /** Default: `$DSTACK_RUNNER_BUNDLE`, else `<repo>/build/runner-bundle`. */
  runnerBundleDir?: string;
  /** Longest an image pull may take; default 20 min (dstack's). */
  pullTimeoutMs?: number;
  /** Shortest time between two pull-progress reports; default 1000 ms. */
  progressIntervalMs?: number;
  /** Called with a copy of the task on every change. */
  onChange?: (task: TaskInfo) => void;
  log?: Logger;
}

export const DEFAULT_PULL_TIMEOUT_MS = 20 * 60_000;

export interface TerminateOptions {
  reason?: JobTerminationReason;
  message?: string;
  /** Grace between SIGTERM and SIGKILL; 0 or unset = kill at once. */
  timeoutMs?: number;
}

interface Task {
  id: string;
  info: TaskInfo;
  /** The submission, or null for a task rebuilt from labels. */
  cmd: SubmitTaskCommand | null;
  /** Aborted by terminate: cancels preparation and pulls. */
  stop: AbortController;
  requested: (TerminationRequest & { timeoutMs: number }) | null;
  container: Docker.Container | null;
  settled: Promise<void>;
  settle: () => void;
  lastProgressAt: number;
  /** What the container's labels hold, once it was created (or adopted). */
  record: RecoveryRecord | null;
}

/** Where an SSH login for a task lands, and who may log in. */
export interface TaskLoginTarget {
  taskId: string;
  containerId: string;
  containerName: string;
  containerUser: string;
  networkMode: "host" | "bridge";
  authorizedKeys: string[];
}

/** A lifecycle step failed: the task ends with this reason and message. */
class StepError extends Error {
  constructor(
    readonly reason: JobTerminationReason,
    message: string,
  ) {
    super(message);
  }
}

const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

function statusCode(e: unknown): number | undefined {
  return typeof e === "object" && e !== null && "statusCode" in e ? Number((e as { statusCode: unknown }).statusCode) : undefined;
}

function dockerMessage(e: unknown): string {
  const j = (e as { json?: { message?: string } } | null)?.json;
  if (j && typeof j === "object" && typeof j.message === "string") return j.message;
  return e instanceof Error ? e.message : String(e);
}

/** Maps GPUs from host discovery to what the executor locks (NVIDIA by UUID, AMD by render node). */
export async function discoverExecutorGpus(): Promise<ExecutorGpu[]> {
  const { collectHostReport } = await import("../host/index.js");
  const { GpuVendor } = await import("@dstack/proto/agent");
  const report = await collectHostReport();
  return report.gpus.flatMap((g): ExecutorGpu[] => {
    if (g.vendor === GpuVendor.NVIDIA && g.uuid) return [{ id: g.uuid, vendor: "nvidia" }];
    if (g.vendor === GpuVendor.AMD && g.renderNode) return [{ id: g.renderNode, vendor: "amd" }];
    return [];
  });
}

export class TaskExecutor {
  readonly docker: Docker;
  readonly locks: GpuLocks;
  readonly runnerBundleDir: string;
  private readonly tasks = new Map<string, Task>();
  private readonly files: TaskFiles;
  private readonly closing = new AbortController();
  private readonly log: Logger;

  /** Use `TaskExecutor.start`, which also discovers GPUs when none are given and recovers tasks. */
  constructor(
    private readonly o: TaskExecutorOptions & { gpus: ExecutorGpu[] },
  ) {
    this.docker = o.docker ?? (process.env.DOCKER_HOST ? new Docker() : new Docker({ socketPath: "/var/run/docker.sock" }));
    this.locks = new GpuLocks(o.gpus);
    this.runnerBundleDir = o.runnerBundleDir ?? defaultRunnerBundleDir();
    this.files = new TaskFiles(o.home);
    this.log = o.log ?? silentLogger;
  }

  /** Creates an executor and adopts the containers a previous shim with this instance id left. */
  static async start(o: TaskExecutorOptions): Promise<TaskExecutor> {
    const ex = new TaskExecutor({ ...o, gpus: o.gpus ?? (await discoverExecutorGpus()) });
    await ex.recover();
    return ex;
  }

  get(taskId: string): TaskInfo {
    return clone(TaskInfoSchema, this.require(taskId).info);
  }

  /** The running container a login for `taskId` reaches; null when the task has none (yet). */
  loginTarget(taskId: string): TaskLoginTarget | null {
    const t = this.tasks.get(taskId);
    if (!t || !t.record || !t.info.containerId || t.info.state !== TaskState.RUNNING) return null;
    return {
      taskId,
      containerId: t.info.containerId,
      containerName: t.record.containerName,
      containerUser: t.record.containerUser,
      networkMode: t.record.networkMode,
      authorizedKeys: t.record.sshKeys,
    };
  }

  list(): TaskInfo[] {
    return [...this.tasks.values()].map((t) => clone(TaskInfoSchema, t.info));
  }

  /**
   * Accepts a task and starts it in the background; returns its state right after acceptance.
   * A task id seen before returns that task as it is now (ALREADY_EXISTS if the image or name differ).
   */
  submit(init: SubmitTaskCommand | MessageInitShape<typeof SubmitTaskCommandSchema>): TaskInfo {
    const cmd = clone(SubmitTaskCommandSchema, create(SubmitTaskCommandSchema, init as MessageInitShape<typeof SubmitTaskCommandSchema>));
    if (!SAFE_ID.test(cmd.taskId)) throw new LinkCallError(`invalid task id ${JSON.stringify(cmd.taskId)}: letters, digits, '.', '_' and '-' only`, LinkErrorCode.INVALID_ARGUMENT);
    const seen = this.tasks.get(cmd.taskId);
    if (seen) {
      const name = cmd.containerName || `dstack-${cmd.taskId}`;
      if (seen.cmd && (seen.cmd.imageName !== cmd.imageName || seen.cmd.containerName !== name)) {
        throw new LinkCallError(`task ${cmd.taskId} already exists with another image or container name`, LinkErrorCode.ALREADY_EXISTS);
      }
      return clone(TaskInfoSchema, seen.info);
    }
    if (!cmd.imageName) throw new LinkCallError("image_name is required", LinkErrorCode.INVALID_ARGUMENT);
    cmd.containerName ||= `dstack-${cmd.taskId}`;
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/.test(cmd.containerName)) {
      throw new LinkCallError(`invalid container name ${JSON.stringify(cmd.containerName)}`, LinkErrorCode.INVALID_ARGUMENT);
    }
    const t = this.newTask(cmd.taskId, cmd, { containerName: cmd.containerName, state: TaskState.PENDING });
    this.tasks.set(t.id, t);
    this.emit(t);
    const accepted = clone(TaskInfoSchema, t.info);
    void this.run(t).catch((e: unknown) => this.finish(t, JobTerminationReason.EXECUTOR_ERROR, `shim bug: ${dockerMessage(e)}`));
    return accepted;
  }

  /**
   * Stops a task: cancels preparation or a pull, or stops its container (SIGTERM, then SIGKILL
   * after the grace period). Resolves with the terminated task. A terminated task is left as is.
   */
  async terminate(taskId: string, o: TerminateOptions = {}): Promise<TaskInfo> {
    const t = this.require(taskId);
    if (t.info.state === TaskState.TERMINATED) return clone(TaskInfoSchema, t.info);
    if (!t.requested) {
      t.requested = {
        reason: o.reason ?? JobTerminationReason.TERMINATED_BY_SERVER,
        message: o.message ?? "",
        timeoutMs: o.timeoutMs ?? 0,
      };
      if (t.container) this.files.saveRequest(t.id, t.requested);
    }
    t.stop.abort(new Error("terminated"));
    // Before RUNNING, run() sees the abort at its next step and stops what it created itself.
    if (t.info.state === TaskState.RUNNING) await this.stopContainer(t);
    await t.settled;
    return clone(TaskInfoSchema, t.info);
  }

  /** Deletes a terminated task's container and files and forgets it. */
  async remove(taskId: string): Promise<void> {
    const t = this.require(taskId);
    if (t.info.state !== TaskState.TERMINATED) {
      throw new LinkCallError(`task ${taskId} is ${TaskState[t.info.state]}; terminate it before removing`, LinkErrorCode.FAILED_PRECONDITION);
    }
    const ref = t.container ?? (t.info.containerId ? this.docker.getContainer(t.info.containerId) : null);
    if (ref) {
      try {
        await ref.remove({ force: true, v: true });
      } catch (e) {
        if (statusCode(e) !== 404) throw new LinkCallError(`cannot remove container ${t.info.containerName}: ${dockerMessage(e)}`, LinkErrorCode.UNAVAILABLE, true);
      }
    }
    this.files.remove(t.id);
    this.locks.release(t.id);
    this.tasks.delete(t.id);
  }

  /** Stops watching containers and reporting; containers keep running for the next shim to adopt. */
  async close(): Promise<void> {
    this.closing.abort(new Error("executor closed"));
  }

  // ---- lifecycle ----

  private async run(t: Task): Promise<void> {
    const cmd = t.cmd!;
    const signal = AbortSignal.any([t.stop.signal, this.closing.signal]);
    const stopped = () => signal.aborted;
    const bridge = isBridge(cmd);
    try {
      this.setState(t, TaskState.PREPARING);
      if (cmd.volumes.length > 0 || cmd.volumeMounts.length > 0) {
        throw new StepError(JobTerminationReason.VOLUME_ERROR, "network volumes are not supported by this shim yet; use instance volumes (host paths)");
      }
      try {
        t.info.gpuIds = this.locks.acquire(t.id, cmd.gpu);
      } catch (e) {
        throw new StepError(JobTerminationReason.EXECUTOR_ERROR, `cannot lock GPUs: ${dockerMessage(e)}`);
      }
      for (const m of cmd.instanceMounts) {
        try {
          mkdirSync(m.instancePath, { recursive: true });
        } catch (e) {
          throw new StepError(JobTerminationReason.EXECUTOR_ERROR, `cannot create instance mount ${m.instancePath}: ${dockerMessage(e)}`);
        }
      }
      let runner: { bundleDir: string; taskDir: string } | null = null;
      if (cmd.runner) {
        try {
          checkRunnerBundle(this.runnerBundleDir);
        } catch (e) {
          throw new StepError(JobTerminationReason.CREATING_CONTAINER_ERROR, dockerMessage(e));
        }
        const url = agentUrlForContainer(cmd.runner.agentUrl, bridge);
        let taskDir: string;
        try {
          const r = cmd.runner;
          const boot: RunnerBootstrapFile = { joinToken: r.joinToken, agentUrl: url.agentUrl, caCertificatePem: r.caCertificatePem, ...(url.serverName ? { serverName: url.serverName } : {}) };
          if (r.certificatePem && r.privateKeyPem) {
            boot.certificatePem = r.certificatePem;
            boot.privateKeyPem = r.privateKeyPem;
            if (r.notAfter) boot.notAfter = timestampDate(r.notAfter).toISOString();
            if (r.renewAfter) boot.renewAfter = timestampDate(r.renewAfter).toISOString();
          }
          taskDir = writeTaskDir(this.files.tasksDir, t.id, boot, numericUser(cmd.containerUser));
        } catch (e) {
          throw new StepError(JobTerminationReason.EXECUTOR_ERROR, `cannot prepare the task folder: ${dockerMessage(e)}`);
        }
        runner = { bundleDir: this.runnerBundleDir, taskDir };
      }
      if (stopped()) return this.finishStopped(t);

      await this.ensureImage(t, cmd, signal);
      if (stopped()) return this.finishStopped(t);

      this.setState(t, TaskState.CREATING);
      const rec: RecoveryRecord = {
        v: 1,
        containerName: cmd.containerName,
        imageName: cmd.imageName,
        gpuIds: t.info.gpuIds,
        networkMode: bridge ? "bridge" : "host",
        ports: cmd.ports,
        runner: runner !== null,
        sshKeys: [...cmd.containerSshKeys, ...cmd.hostSshKeys],
        containerUser: cmd.containerUser,
      };
      t.record = rec;
      const spec = { cmd, labels: taskLabels(this.o.instanceId, t.id, rec), gpu: { vendor: this.locks.vendorOf(t.info.gpuIds), ids: t.info.gpuIds }, runner };
      await this.createAndStart(t, spec);
      t.info.ports = await this.readPorts(t.container!, rec);
      if (t.requested) this.files.saveRequest(t.id, t.requested);
      this.setState(t, TaskState.RUNNING);
      if (this.closing.signal.aborted) return;
      if (t.stop.signal.aborted) void this.stopContainer(t);
    } catch (e) {
      if (e instanceof StepError) return this.finish(t, t.requested?.reason ?? e.reason, t.requested ? t.requested.message || e.message : e.message);
      throw e;
    }
    await this.watch(t);
  }

  private async ensureImage(t: Task, cmd: SubmitTaskCommand, signal: AbortSignal): Promise<void> {
    let present: boolean;
    try {
      await this.docker.getImage(cmd.imageName).inspect();
      present = true;
    } catch (e) {
      if (statusCode(e) !== 404) throw new StepError(JobTerminationReason.CREATING_CONTAINER_ERROR, `cannot reach the Docker engine: ${dockerMessage(e)}`);
      present = false;
    }
    if (!mustPull(cmd.imageName, present)) return;
    this.setState(t, TaskState.PULLING);
    t.info.pullProgress = create(PullProgressSchema);
    try {
      await pullImage(this.docker, cmd.imageName, {
        username: cmd.registryUsername,
        password: cmd.registryPassword,
        timeoutMs: this.o.pullTimeoutMs ?? DEFAULT_PULL_TIMEOUT_MS,
        signal,
        onProgress: (p) => this.progress(t, p),
      });
    } catch (e) {
      if (signal.aborted) return; // the caller finishes a stopped task
      if (present && e instanceof PullError) {
        // A `latest` image the registry cannot refresh (offline host): run the copy we have.
        this.log.warn("pull failed; using the local image", { task: t.id, image: cmd.imageName, error: e.message });
        return;
      }
      throw new StepError(JobTerminationReason.CREATING_CONTAINER_ERROR, e instanceof Error ? e.message : String(e));
    }
  }

  private progress(t: Task, p: PullProgressState): void {
    t.info.pullProgress = create(PullProgressSchema, p);
    const now = Date.now();
    if (now - t.lastProgressAt < (this.o.progressIntervalMs ?? 1000)) return;
    t.lastProgressAt = now;
    this.emit(t);
  }

  private async createAndStart(t: Task, spec: Parameters<typeof containerSpec>[0]): Promise<void> {
    const tryOnce = async (noDisplay: boolean): Promise<void> => {
      try {
        t.container = await this.docker.createContainer(containerSpec({ ...spec, noDisplayCapability: noDisplay }));
      } catch (e) {
        const why = statusCode(e) === 409 ? `a container named ${spec.cmd.containerName} already exists` : dockerMessage(e);
        throw new StepError(JobTerminationReason.CREATING_CONTAINER_ERROR, `cannot create container from ${spec.cmd.imageName}: ${why}`);
      }
      t.info.containerId = t.container.id;
      if (t.stop.signal.aborted || this.closing.signal.aborted) throw new StepError(JobTerminationReason.TERMINATED_BY_SERVER, "terminated before the container started");
      try {
        await t.container.start();
      } catch (e) {
        const msg = dockerMessage(e);
        // Some NVIDIA drivers refuse the display capability; dstack retries without it. (A host
        // with no NVIDIA runtime at all names every capability too: that is no reason to retry.)
        if (!noDisplay && spec.gpu.vendor === "nvidia" && spec.gpu.ids.length > 0 && /display/i.test(msg) && !/could not select device driver/i.test(msg)) {
          await t.container.remove({ force: true }).catch(() => {});
          t.container = null;
          t.info.containerId = "";
          return tryOnce(true);
        }
        throw new StepError(JobTerminationReason.CREATING_CONTAINER_ERROR, `cannot start container ${spec.cmd.containerName}: ${msg}`);
      }
    };
    await tryOnce(false);
  }

  private async readPorts(c: Docker.Container, rec: RecoveryRecord): Promise<TaskPort[]> {
    if (rec.networkMode === "host") return rec.ports.map((p) => create(TaskPortSchema, { containerPort: p, hostPort: p }));
    try {
      const info = await c.inspect();
      const bound = (info.NetworkSettings?.Ports ?? {}) as Record<string, { HostIp: string; HostPort: string }[] | null>;
      const out: TaskPort[] = [];
      for (const p of rec.ports) {
        const b = bound[`${p}/tcp`]?.find((x) => x.HostPort);
        if (b) out.push(create(TaskPortSchema, { containerPort: p, hostPort: Number(b.HostPort) }));
      }
      return out;
    } catch {
      return [];
    }
  }

  /** Waits for the container to exit (however long), then records the exit. */
  private async watch(t: Task): Promise<void> {
    const c = t.container!;
    for (let attempt = 0; ; attempt++) {
      try {
        await c.wait({ abortSignal: this.closing.signal });
        break;
      } catch (e) {
        if (this.closing.signal.aborted) return;
        if (statusCode(e) === 404) return this.finish(t, JobTerminationReason.EXECUTOR_ERROR, `container ${t.info.containerName} disappeared`);
        this.log.warn("lost the wait on a container; retrying", { task: t.id, error: dockerMessage(e) });
        // The engine restarting or a dropped socket; the container's state is still in the engine.
        await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** attempt)));
        if (this.closing.signal.aborted) return;
      }
    }
    await this.finishExited(t, c);
  }

  private async finishExited(t: Task, c: Docker.Container): Promise<void> {
    let code = -1;
    let oom = false;
    let finishedAt: Date | undefined;
    try {
      const s = (await c.inspect()).State;
      code = s.ExitCode;
      oom = s.OOMKilled;
      const d = new Date(s.FinishedAt);
      if (!Number.isNaN(d.getTime()) && d.getTime() > 0) finishedAt = d;
    } catch (e) {
      if (statusCode(e) === 404) return this.finish(t, JobTerminationReason.EXECUTOR_ERROR, `container ${t.info.containerName} disappeared`);
    }
    t.info.exitCode = code;
    const req = t.requested ?? this.files.loadRequest(t.id);
    if (req) return this.finish(t, req.reason, req.message, finishedAt);
    if (code === 0) return this.finish(t, JobTerminationReason.DONE_BY_RUNNER, "", finishedAt);
    const tail = await lastLogLines(c, 5);
    const head = oom ? `the container ran out of memory and was killed (exit code ${code})` : `the container exited with code ${code}`;
    this.finish(t, JobTerminationReason.CONTAINER_EXITED_WITH_ERROR, tail ? `${head}:\n${tail}` : head, finishedAt);
  }

  private async stopContainer(t: Task): Promise<void> {
    const c = t.container;
    if (!c) return;
    const ms = t.requested?.timeoutMs ?? 0;
    try {
      if (ms > 0) await c.stop({ t: Math.max(1, Math.ceil(ms / 1000)) });
      else await c.kill();
    } catch (e) {
      // 304: already stopped; 404: gone (watch reports it); 409: not running.
      if (![304, 404, 409].includes(statusCode(e) ?? 0)) this.log.warn("stopping the container failed", { task: t.id, error: dockerMessage(e) });
    }
  }

  /** A task stopped before its container ran: it ends with the reason it was stopped for. */
  private finishStopped(t: Task): void {
    if (this.closing.signal.aborted && !t.requested) return;
    this.finish(t, t.requested?.reason ?? JobTerminationReason.TERMINATED_BY_SERVER, t.requested?.message ?? "");
  }

  private finish(t: Task, reason: JobTerminationReason, message: string, at?: Date): void {
    if (t.info.state === TaskState.TERMINATED) return;
    this.locks.release(t.id);
    t.info.terminationReason = reason;
    t.info.terminationMessage = message;
    this.setState(t, TaskState.TERMINATED, at);
    this.log.info("task terminated", { task: t.id, reason: JobTerminationReason[reason], exitCode: t.info.exitCode, message: message || undefined });
    t.settle();
  }

  // ---- recovery ----

  /** Adopts this instance's labelled containers: running ones are watched again, exited ones reported. */
  async recover(): Promise<TaskInfo[]> {
    const found = await this.docker.listContainers({ all: true, filters: { label: [`${LABEL_INSTANCE}=${this.o.instanceId}`] } });
    const out: TaskInfo[] = [];
    for (const summary of found) {
      const taskId = summary.Labels?.[LABEL_TASK];
      const rec = parseRecord(summary.Labels);
      if (!taskId || !rec || this.tasks.has(taskId)) continue;
      const c = this.docker.getContainer(summary.Id);
      let state;
      try {
        state = (await c.inspect()).State;
      } catch (e) {
        this.log.warn("cannot inspect a labelled container", { container: summary.Id, error: dockerMessage(e) });
        continue;
      }
      const t = this.newTask(taskId, null, { containerName: rec.containerName, containerId: summary.Id, gpuIds: rec.gpuIds, state: TaskState.RUNNING });
      t.container = c;
      t.record = rec;
      const req = this.files.loadRequest(taskId);
      if (req) t.requested = { ...req, timeoutMs: 0 };
      this.tasks.set(taskId, t);
      if (state.Running || state.Restarting || state.Paused) {
        t.info.gpuIds = this.locks.restore(taskId, rec.gpuIds);
        t.info.ports = await this.readPorts(c, rec);
        this.log.info("recovered a running task", { task: taskId, container: rec.containerName });
        this.emit(t);
        void this.watch(t);
      } else if (state.Status === "created") {
        // The previous shim died between create and start.
        this.finish(t, req?.reason ?? JobTerminationReason.CREATING_CONTAINER_ERROR, req?.message ?? "the shim restarted before the container started");
      } else {
        this.log.info("recovered a task that exited while the shim was down", { task: taskId, exitCode: state.ExitCode });
        await this.finishExited(t, c);
      }
      out.push(clone(TaskInfoSchema, t.info));
    }
    return out;
  }

  // ---- state ----

  private newTask(id: string, cmd: SubmitTaskCommand | null, info: MessageInitShape<typeof TaskInfoSchema>): Task {
    let settle!: () => void;
    const settled = new Promise<void>((r) => (settle = r));
    return {
      id,
      cmd,
      info: create(TaskInfoSchema, { taskId: id, updatedAt: timestampNow(), ...info }),
      stop: new AbortController(),
      requested: null,
      container: null,
      settled,
      settle,
      lastProgressAt: 0,
      record: null,
    };
  }

  private require(taskId: string): Task {
    const t = this.tasks.get(taskId);
    if (!t) throw new LinkCallError(`no task ${taskId}`, LinkErrorCode.NOT_FOUND);
    return t;
  }

  private setState(t: Task, state: TaskState, at?: Date): void {
    if (t.info.state === TaskState.TERMINATED) return;
    t.info.state = state;
    t.info.updatedAt = at ? timestampFromDate(at) : timestampNow();
    if (state !== TaskState.PULLING && state !== TaskState.TERMINATED) t.info.pullProgress = undefined;
    this.log.debug("task state", { task: t.id, state: TaskState[state] });
    this.emit(t);
  }

  private emit(t: Task): void {
    if (this.closing.signal.aborted) return;
    try {
      this.o.onChange?.(clone(TaskInfoSchema, t.info));
    } catch (e) {
      this.log.error("onChange threw", { task: t.id, error: dockerMessage(e) });
    }
  }
}

/** When a TaskInfo last changed, as a Date (for logs and tests). */
export function taskUpdatedAt(t: TaskInfo): Date | null {
  return t.updatedAt ? timestampDate(t.updatedAt) : null;
}
