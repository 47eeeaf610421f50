// The dispatcher: what connects the scheduler to the agents. It listens to the domain event bus
// (a job was placed, is stopping, has finished) and to the mesh's link events (a shim or runner
// connected, reported state, a task or job changed), and sends the agents the commands that
// move each job along: SubmitTask to the host's shim, SubmitJob and StopJob to the job's runner,
// TerminateTask and RemoveTask once the job is over. What the agents report goes back through
// JobsService.onJobState, so the state machines stay the only writers of job state.
//
// Everything about one job runs in order on its own lane (no two handlers of a job interleave);
// every handler re-reads the job, so a duplicate event or a reconnect never acts twice. On a
// (re)connect each agent's full state report is compared with what the database places on it.
import { create } from "@bufbuild/protobuf";
import {
  JobState,
  LinkErrorCode,
  RemoveTaskCommandSchema,
  RunnerState,
  StopJobCommandSchema,
  TaskState,
  TerminateTaskCommandSchema,
  type JobStateChanged,
  type RunnerStateReport,
  type ShimStateReport,
  type TaskInfo,
} from "@dstack/proto/agent";
import { linkErrorCodeOf, LinkCallError, type EventOf } from "@dstack/proto/link";
import { JobStatus, JobTerminationReason } from "../domain/enums.js";
import { isDstackError } from "../errors.js";
import type { AgentLink, JoinTokens, Links, RunnerIdentity } from "../mesh/index.js";
import type { DomainEvent } from "../scheduler/events.js";
import type { Services } from "../services/index.js";
import type { JobAgentView } from "../services/jobs.js";
import type { HostInfo } from "../services/offers.js";
import { isJobFinished, jobStatusForReason, mayStartNode } from "../services/state-machines.js";
import { interpolateSecrets, submitJobCommand, submitTaskCommand } from "./commands.js";
import { toHostInfo } from "./host-info.js";

export interface AgentLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const SILENT: AgentLogger = { debug() {}, info() {}, warn() {}, error() {} };

export interface DispatcherOptions {
  /** `users` (optional) gives the submitting user's SSH keys, which every task's container accepts. */
  services: Pick<Services, "jobs" | "fleets" | "secrets" | "bus"> & Partial<Pick<Services, "users" | "code">>;
  links: Links;
  joinTokens: Pick<JoinTokens, "create">;
  /** The agent CA, PEM: runners pin it. */
  caCertificatePem: string;
  /** The agent port as runners in job containers dial it (settings.agentUrl). */
  agentUrl: string;
  /**
   * Issues the job's runner identity (MeshServer.issueRunnerIdentity): it rides in the bootstrap
   * with the join token, so the runner links at once instead of enrolling. Without it runners enroll.
   */
  issueRunnerIdentity?: (jobSubmissionId: string) => RunnerIdentity;
  log?: AgentLogger;
  /**
   * After a job ends by itself, how long its container may keep running so the runner can ship
   * its last logs and exit; then the task is stopped anyway. Default 60 s.
   */
  runnerExitGraceMs?: number;
  /** Deadline of a control call (beyond any stop grace). Default 30 s. */
  callDeadlineMs?: number;
  /**
   * How long jobs keep their status while neither their shim nor their runner is linked, before
   * they fail as INSTANCE_UNREACHABLE (dstack's JOB_DISCONNECTED_RETRY_TIMEOUT). Default 120 s.
   */
  disconnectedJobTimeoutMs?: number;
  /** Called after a shim's host facts were recorded (the local fleet prints its banner). */
  onHostReport?: (instanceId: string, host: HostInfo) => void;
  /**
   * Whether another server replica holds this host's shim link (several replicas on one
   * PostgreSQL): then its jobs are not given up here, however long this replica has not heard it.
   */
  linkedElsewhere?: (instanceId: string) => boolean;
}

/** Codes after which sending the same command again may work (the agent was away or busy). */
const TRANSIENT = new Set([LinkErrorCode.DEADLINE_EXCEEDED, LinkErrorCode.UNAVAILABLE, LinkErrorCode.CANCELLED]);
const RUNNING_TASK = new Set([TaskState.PREPARING, TaskState.PULLING, TaskState.CREATING, TaskState.RUNNING]);
/** Jobs whose ids recently left a shim: late events about them are ignored. */
const REMOVED_MEMORY = 10_000;

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** Blobs up to this size ride inside SubmitJob (a `files:` mapping or code of a few files). */
const INLINE_BLOB_BYTES = 256 * 1024;

export class Dispatcher {
  private readonly o: Required<Omit<DispatcherOptions, "onHostReport" | "issueRunnerIdentity" | "linkedElsewhere">> & Pick<DispatcherOptions, "onHostReport" | "issueRunnerIdentity" | "linkedElsewhere">;
  private readonly log: AgentLogger;
  private readonly lanes = new Map<string, Promise<void>>();
  /** Jobs with a sync queued but not started: bursts of events coalesce into one look. */
  private readonly syncQueued = new Set<string>();
  private readonly inFlight = new Set<Promise<void>>();
  /** Runner join token per job, so a resubmitted task has the same spec (and the shim's dedupe applies). */
  private readonly tokens = new Map<string, string>();
  /** Runner identity per job, kept for the same reason. */
  private readonly identities = new Map<string, RunnerIdentity>();
  /** Jobs whose SubmitTask was sent (or is being sent) in this process. */
  private readonly submitted = new Set<string>();
  private readonly submittingJob = new Set<string>();
  /** Jobs whose runner accepted SubmitJob in this process. */
  private readonly jobSubmitted = new Set<string>();
  private readonly stopping = new Set<string>();
  /** Jobs whose end the runner itself reported: their container may finish shipping logs. */
  private readonly endedByRunner = new Set<string>();
  /** Cleanup under way per job: waiting for the container to exit, or removing it. */
  private readonly cleanups = new Map<string, { waiting: boolean; fire?: () => void; timer?: NodeJS.Timeout }>();
  /** Tasks each shim has, by instance, as its reports and events say. */
  private readonly tasks = new Map<string, Map<string, TaskInfo>>();
  private readonly removed = new Set<string>();
  /** Instances whose shim is away, with the timer that gives up on their jobs. */
  private readonly lost = new Map<string, NodeJS.Timeout>();
  private readonly unsubscribe: (() => void)[] = [];
  private stopped = true;
  /** Aborted by stop(): calls still waiting on agents give up, so shutdown does not wait out their deadlines. */
  private halt = new AbortController();

  constructor(opts: DispatcherOptions) {
    this.o = { log: SILENT, runnerExitGraceMs: 60_000, callDeadlineMs: 30_000, disconnectedJobTimeoutMs: 120_000, ...opts };
    this.log = this.o.log;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.halt = new AbortController();
    const { links, services } = this.o;
    this.unsubscribe.push(services.bus.subscribe((e) => this.onDomainEvent(e)));
    const on = <E extends "event" | "unreachable" | "reachable" | "connected" | "disconnected">(name: E, fn: (...a: never[]) => void) => {
      links.on(name, fn as never);
      this.unsubscribe.push(() => links.off(name, fn as never));
    };
    on("event", (link: AgentLink, event: EventOf<"shim"> | EventOf<"runner">) => this.onLinkEvent(link, event));
    on("unreachable", (link: AgentLink) => {
      if (link.kind !== "shim") return;
      this.track(this.o.services.fleets.setReachable(link.id, false));
      this.armLost(link.id);
    });
    on("reachable", (link: AgentLink) => link.kind === "shim" && this.track(this.o.services.fleets.setReachable(link.id, true)));
    on("connected", (link: AgentLink) => link.kind === "shim" && this.disarmLost(link.id));
    on("disconnected", (link: AgentLink) => link.kind === "shim" && this.armLost(link.id));
    // Shims that held jobs before a restart get the same time to dial back in.
    this.track(
      services.jobs.instanceIdsWithActiveJobs().then((ids) => {
        for (const id of ids) if (!links.shim(id).connected) this.armLost(id);
      }),
    );
  }

  /** Stops listening and waits for handlers under way; pending cleanups resume at the next start via state reports. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.halt.abort(new Error("the server is stopping"));
    for (const u of this.unsubscribe.splice(0)) u();
    for (const c of this.cleanups.values()) if (c.timer) clearTimeout(c.timer);
    this.cleanups.clear();
    for (const t of this.lost.values()) clearTimeout(t);
    this.lost.clear();
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
  }

  /** Resolves once no handler is running or queued (tests). */
  async idle(): Promise<void> {
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
  }

  // ---- plumbing ----

  private track(p: Promise<unknown>): void {
    const q = p.then(
      () => {},
      (e: unknown) => this.log.error({ err: e }, "agent dispatcher: handler failed"),
    );
    this.inFlight.add(q);
    void q.finally(() => this.inFlight.delete(q));
  }

  /** Runs `fn` after everything queued on `key`. */
  private lane(key: string, fn: () => Promise<void>): void {
    if (this.stopped) return;
    const prev = this.lanes.get(key) ?? Promise.resolve();
    const next = prev.then(fn).catch((e: unknown) => this.log.error({ err: e, key }, "agent dispatcher: handler failed"));
    this.lanes.set(key, next);
    this.track(next.finally(() => this.lanes.get(key) === next && this.lanes.delete(key)));
  }

  private sync(jobId: string, siblings = true): void {
    if (this.syncQueued.has(jobId)) return;
    this.syncQueued.add(jobId);
    this.lane(jobId, async () => {
      this.syncQueued.delete(jobId);
      await this.syncJob(jobId, siblings);
    });
  }

  private onDomainEvent(e: DomainEvent): void {
    if (e.kind === "job") this.sync(e.id);
  }

  private onLinkEvent(link: AgentLink, event: EventOf<"shim"> | EventOf<"runner">): void {
    if (link.kind === "shim") {
      const ev = event as EventOf<"shim">;
      if (ev.case === "stateReport") this.lane(`shim:${link.id}`, () => this.reconcileShim(link.id, ev.value));
      else if (ev.case === "hostInfo") this.lane(`shim:${link.id}`, () => this.recordHost(link.id, ev.value));
      else if (ev.case === "taskStateChanged" && ev.value.task) {
        const task = ev.value.task;
        if (this.removed.has(task.taskId)) return;
        this.shimTasks(link.id).set(task.taskId, task);
        if (task.state === TaskState.TERMINATED) this.cleanups.get(task.taskId)?.fire?.();
        this.lane(task.taskId, () => this.onTask(link.id, task));
      }
    } else {
      const ev = event as EventOf<"runner">;
      if (ev.case === "stateReport") this.lane(link.id, () => this.reconcileRunner(link.id, ev.value));
      else if (ev.case === "jobStateChanged") this.lane(link.id, () => this.onRunnerJobState(link.id, ev.value));
    }
  }

  private armLost(instanceId: string): void {
    if (this.stopped || this.lost.has(instanceId)) return;
    const t = setTimeout(() => {
      this.lost.delete(instanceId);
      this.lane(`shim:${instanceId}`, () => this.giveUpOn(instanceId));
    }, this.o.disconnectedJobTimeoutMs);
    t.unref();
    this.lost.set(instanceId, t);
  }

  private disarmLost(instanceId: string): void {
    clearTimeout(this.lost.get(instanceId));
    this.lost.delete(instanceId);
  }

  /** The shim stayed away: its jobs whose runner is not linked either are lost with the host. */
  private async giveUpOn(instanceId: string): Promise<void> {
    const shim = this.o.links.shim(instanceId);
    if (shim.connected && shim.reachable) return;
    if (!shim.connected && this.o.linkedElsewhere?.(instanceId)) return this.armLost(instanceId); // another replica talks to it
    let waiting = false;
    for (const jobId of await this.o.services.jobs.activeJobIdsOnInstance(instanceId)) {
      if (this.o.links.runner(jobId).connected) {
        waiting = true; // the container still runs and talks to us: look again later
        continue;
      }
      this.lane(jobId, async () => {
        const v = await this.o.services.jobs.agentView(jobId);
        if (!v || isJobFinished(v.status) || this.o.links.shim(instanceId).connected) return;
        if (v.status === JobStatus.TERMINATING) return this.report(jobId, JobStatus.TERMINATED);
        const secs = Math.round(this.o.disconnectedJobTimeoutMs / 1000);
        await this.fail(jobId, JobTerminationReason.INSTANCE_UNREACHABLE, `The host agent of this job's instance has not been heard from for ${secs} s.`);
      });
    }
    if (waiting) this.armLost(instanceId);
  }

  private shimTasks(instanceId: string): Map<string, TaskInfo> {
    let m = this.tasks.get(instanceId);
    if (!m) this.tasks.set(instanceId, (m = new Map()));
    return m;
  }

  /** Reports a state to the job's state machine; a row changed under us is read again (twice at most). */
  private async report(jobId: string, state: JobStatus, exit: number | null = null, reason: JobTerminationReason | null = null, msg?: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.o.services.jobs.onJobState(jobId, state, exit, reason, msg);
        return;
      } catch (e) {
        if (isDstackError(e, "DSTACK_INVALID_TRANSITION") && attempt < 2) continue;
        if (isDstackError(e, "DSTACK_INVALID_TRANSITION")) {
          this.log.debug({ job: jobId, state: JobStatus[state], err: message(e) }, "agent report no longer applies");
          return;
        }
        throw e;
      }
    }
  }

  private fail(jobId: string, reason: JobTerminationReason, msg: string): Promise<void> {
    this.log.warn({ job: jobId, reason: JobTerminationReason[reason], message: msg }, "job failed");
    return this.report(jobId, JobStatus.FAILED, null, reason, msg);
  }

  /** Plaintext of the secrets the job references; null (and the job failed) if one is missing. */
  private async secrets(v: JobAgentView): Promise<Record<string, string> | null> {
    if (!v.spec.secretNames.length) return {};
    try {
      return await this.o.services.secrets.resolveForJob(v.projectId, v.spec.secretNames);
    } catch (e) {
      if (isDstackError(e, "DSTACK_SECRET_NOT_FOUND") || isDstackError(e, "DSTACK_SECRET_DECRYPT_FAILED")) {
        await this.fail(v.id, JobTerminationReason.EXECUTOR_ERROR, e.message);
        return null;
      }
      throw e;
    }
  }

  // ---- jobs (domain events) ----

  private async syncJob(jobId: string, siblings = true): Promise<void> {
    const v = await this.o.services.jobs.agentView(jobId);
    if (!v || !v.instanceId) return;
    // A node's placement may complete its replica's address list, which the others wait for.
    // A node that starts running may be what the others wait for (startup_order).
    if (siblings && (v.status === JobStatus.PROVISIONING || v.status === JobStatus.RUNNING)) for (const id of v.siblingIds) this.sync(id, false);
    if (isJobFinished(v.status)) return this.cleanup(v);
    if (v.status === JobStatus.PROVISIONING) await this.submitTask(v);
    if (v.status === JobStatus.TERMINATING && v.removeAt && v.removeAt.getTime() > Date.now()) return this.stopGracefully(v);
    // A runner that waits for its job (e.g. for the other nodes' addresses) gets it once it can.
    const runner = this.o.links.runner(v.id);
    const live = v.status === JobStatus.PROVISIONING || v.status === JobStatus.PULLING || v.status === JobStatus.RUNNING;
    if (live && !this.jobSubmitted.has(v.id) && runner.connected && (runner.stateReport as RunnerStateReport | null)?.runnerState === RunnerState.WAIT_SUBMIT) await this.submitJob(v);
  }

  /** A call that gives up as soon as the agent's link drops (instead of waiting out the deadline for it to return). */
  private async callLinked<K extends "shim" | "runner", R>(link: AgentLink<K>, call: (signal: AbortSignal) => Promise<R>): Promise<R> {
    const ac = new AbortController();
    const onDrop = (l: AgentLink) => l === link && ac.abort(new Error(`${link.kind} ${link.id} disconnected`));
    this.o.links.on("disconnected", onDrop);
    try {
      return await call(AbortSignal.any([ac.signal, this.halt.signal]));
    } finally {
      this.o.links.off("disconnected", onDrop);
    }
  }

  /** The submitting user's SSH public keys (`ssh <run>` may use them as well as the run's own key). */
  private async userSshKeys(v: JobAgentView): Promise<string[]> {
    try {
      return (await this.o.services.users?.sshKeysOf(v.userId)) ?? [];
    } catch (e) {
      this.log.warn({ job: v.id, err: message(e) }, "could not read the user's SSH keys; the run's own key only");
      return [];
    }
  }

  /** SubmitTask to the host's shim (once it is linked); the runner bootstrap rides along. */
  private async submitTask(v: JobAgentView): Promise<void> {
    const instanceId = v.instanceId!;
    const shim = this.o.links.shim(instanceId);
    if (this.submitted.has(v.id) || !shim.connected || this.tasks.get(instanceId)?.has(v.id)) return;
    const secrets = await this.secrets(v);
    if (!secrets) return;
    this.submitted.add(v.id);
    let token = this.tokens.get(v.id);
    if (!token) {
      token = (await this.o.joinTokens.create({ projectId: v.projectId, fleetId: v.fleetId, kind: "runner", boundId: v.id })).token;
      this.tokens.set(v.id, token);
    }
    let identity = this.identities.get(v.id);
    if (!identity && this.o.issueRunnerIdentity) {
      try {
        identity = this.o.issueRunnerIdentity(v.id);
        this.identities.set(v.id, identity);
      } catch (e) {
        this.log.warn({ job: v.id, err: message(e) }, "could not issue the runner's identity; it will enroll with its join token");
      }
    }
    const auth = v.spec.registryAuth;
    const cmd = submitTaskCommand(v, {
      runner: {
        joinToken: token,
        agentUrl: this.o.agentUrl,
        caCertificatePem: this.o.caCertificatePem,
        ...(identity ? { certificatePem: identity.certPem, privateKeyPem: identity.keyPem, notAfter: identity.notAfter, renewAfter: identity.renewAfter } : {}),
      },
      userSshKeys: await this.userSshKeys(v),
      ...(auth ? { registryAuth: { username: interpolateSecrets(auth.username, secrets), password: interpolateSecrets(auth.password, secrets) } } : {}),
    });
    this.log.debug({ job: v.id, instance: instanceId, container: cmd.containerName, image: cmd.imageName }, "submitting task");
    try {
      const r = await shim.call({ case: "submitTask", value: cmd }, { deadlineMs: this.o.callDeadlineMs, signal: this.halt.signal });
      if (r.task && !this.removed.has(v.id)) {
        this.shimTasks(instanceId).set(v.id, r.task);
        if (RUNNING_TASK.has(r.task.state)) await this.report(v.id, JobStatus.PULLING);
      }
    } catch (e) {
      if (this.stopped) return; // cancelled by shutdown: the shim's next report resumes it
      const code = linkErrorCodeOf(e);
      if (code === LinkErrorCode.ALREADY_EXISTS) return; // the shim has it from an earlier submit
      if (TRANSIENT.has(code) || (e instanceof LinkCallError && e.retryable)) {
        this.submitted.delete(v.id); // the shim's next state report (or the next event) tries again
        this.log.warn({ job: v.id, err: message(e) }, "submitting the task failed; will retry");
        return;
      }
      await this.fail(v.id, JobTerminationReason.CREATING_CONTAINER_ERROR, message(e));
    }
  }

  /** A running job is stopping with a grace period: ask the runner, else the shim, to stop it gently. */
  private async stopGracefully(v: JobAgentView): Promise<void> {
    if (this.stopping.has(v.id)) return;
    this.stopping.add(v.id);
    const graceS = Math.max(0, Math.ceil(((v.removeAt?.getTime() ?? 0) - Date.now()) / 1000));
    const reason = v.terminationReason ?? JobTerminationReason.TERMINATED_BY_USER;
    const runner = this.o.links.runner(v.id);
    if (runner.connected) {
      try {
        await this.callLinked(runner, (signal) => runner.call({ case: "stopJob", value: create(StopJobCommandSchema, { grace: { seconds: BigInt(graceS) }, reason }) }, { deadlineMs: this.o.callDeadlineMs, signal }));
        return; // the runner reports the end (→ onJobState), or the grace runs out (→ finalized)
      } catch (e) {
        if (this.stopped) return;
        this.log.warn({ job: v.id, err: message(e) }, "the runner did not take the stop; stopping the container instead");
      }
    }
    const shim = this.o.links.shim(v.instanceId!);
    if (!shim.connected) {
      this.stopping.delete(v.id); // an agent's reconnect tries again
      return;
    }
    try {
      await shim.call(
        { case: "terminateTask", value: create(TerminateTaskCommandSchema, { taskId: v.id, terminationReason: reason, terminationMessage: v.terminationReasonMessage ?? "", timeout: { seconds: BigInt(graceS) } }) },
        { deadlineMs: graceS * 1000 + this.o.callDeadlineMs, signal: this.halt.signal },
      );
    } catch (e) {
      this.stopping.delete(v.id);
      if (linkErrorCodeOf(e) === LinkErrorCode.NOT_FOUND) await this.report(v.id, JobStatus.TERMINATED);
      else this.log.warn({ job: v.id, err: message(e) }, "stopping the task failed");
    }
  }

  /**
   * A finished job's container goes, and its blocks are already free. A job that ended by itself
   * first gets time to ship its last logs (until its container exits, within runnerExitGraceMs).
   */
  private async cleanup(v: JobAgentView): Promise<void> {
    const instanceId = v.instanceId!;
    if (this.cleanups.has(v.id)) return;
    const task = this.tasks.get(instanceId)?.get(v.id);
    if (!task && !this.submitted.has(v.id)) return this.forget(v.id); // the shim never had it (as far as we know)
    const runner = this.o.links.runner(v.id);
    if (runner.connected && task?.state !== TaskState.TERMINATED) {
      if (this.endedByRunner.has(v.id) && v.terminationReason !== JobTerminationReason.ABORTED_BY_USER) {
        const c: { waiting: boolean; fire?: () => void; timer?: NodeJS.Timeout } = { waiting: true };
        c.fire = () => {
          if (!c.waiting) return;
          c.waiting = false;
          clearTimeout(c.timer);
          this.lane(v.id, () => this.removeTask(v, instanceId));
        };
        c.timer = setTimeout(c.fire, this.o.runnerExitGraceMs);
        c.timer.unref();
        this.cleanups.set(v.id, c);
        return;
      }
      // Aborted or ended by the server: the runner gets no grace.
      const reason = v.terminationReason ?? JobTerminationReason.TERMINATED_BY_SERVER;
      await runner.call({ case: "stopJob", value: create(StopJobCommandSchema, { grace: { seconds: 0n }, reason }) }, { deadlineMs: 5_000, signal: this.halt.signal }).catch((e: unknown) => {
        this.log.debug({ job: v.id, err: message(e) }, "stopJob before removal failed");
      });
    }
    this.cleanups.set(v.id, { waiting: false });
    await this.removeTask(v, instanceId);
  }

  private async removeTask(v: JobAgentView, instanceId: string): Promise<void> {
    const shim = this.o.links.shim(instanceId);
    if (!shim.connected) {
      this.cleanups.delete(v.id); // its next state report lists the task and cleanup resumes
      return;
    }
    const ignoreMissing = (e: unknown) => {
      if (linkErrorCodeOf(e) !== LinkErrorCode.NOT_FOUND) throw e;
    };
    try {
      await shim
        .call(
          { case: "terminateTask", value: create(TerminateTaskCommandSchema, { taskId: v.id, terminationReason: v.terminationReason ?? JobTerminationReason.TERMINATED_BY_SERVER, terminationMessage: v.terminationReasonMessage ?? "" }) },
          { deadlineMs: this.o.callDeadlineMs, signal: this.halt.signal },
        )
        .catch(ignoreMissing);
      await shim.call({ case: "removeTask", value: create(RemoveTaskCommandSchema, { taskId: v.id }) }, { deadlineMs: this.o.callDeadlineMs, signal: this.halt.signal }).catch(ignoreMissing);
    } catch (e) {
      this.cleanups.delete(v.id);
      this.log.warn({ job: v.id, instance: instanceId, err: message(e) }, "removing the task failed; will retry when the shim reports again");
      return;
    }
    this.log.debug({ job: v.id, instance: instanceId }, "task removed");
    this.tasks.get(instanceId)?.delete(v.id);
    this.removed.add(v.id);
    if (this.removed.size > REMOVED_MEMORY) this.removed.delete(this.removed.values().next().value!);
    this.cleanups.delete(v.id);
    this.forget(v.id);
    this.o.links.forget("runner", v.id);
  }

  private forget(jobId: string): void {
    this.tokens.delete(jobId);
    this.identities.delete(jobId);
    this.submitted.delete(jobId);
    this.stopping.delete(jobId);
    this.endedByRunner.delete(jobId);
    this.jobSubmitted.delete(jobId);
  }

  // ---- shims ----

  private async recordHost(instanceId: string, facts: ShimStateReport["hostInfo"]): Promise<void> {
    const host = toHostInfo(facts);
    if (!host) return;
    if ((await this.o.services.fleets.reportHost(instanceId, host)) && this.o.onHostReport) this.o.onHostReport(instanceId, host);
  }

  /** Full state from a (re)connected shim: its host facts, then its tasks against the jobs placed on it. */
  private async reconcileShim(instanceId: string, report: ShimStateReport): Promise<void> {
    await this.recordHost(instanceId, report.hostInfo);
    const known = new Map(report.tasks.filter((t) => !this.removed.has(t.taskId)).map((t) => [t.taskId, t] as const));
    this.tasks.set(instanceId, known);
    for (const t of known.values()) this.lane(t.taskId, () => this.onTask(instanceId, t));
    for (const jobId of await this.o.services.jobs.activeJobIdsOnInstance(instanceId)) {
      if (!known.has(jobId)) this.lane(jobId, () => this.taskMissing(instanceId, jobId));
    }
  }

  /** The database places the job here, the shim does not have it. */
  private async taskMissing(instanceId: string, jobId: string): Promise<void> {
    if (this.tasks.get(instanceId)?.has(jobId)) return; // it appeared meanwhile
    const v = await this.o.services.jobs.agentView(jobId);
    if (!v || v.instanceId !== instanceId || isJobFinished(v.status)) return;
    if (v.status === JobStatus.PROVISIONING) {
      this.submitted.delete(jobId);
      return this.submitTask(v);
    }
    if (v.status === JobStatus.TERMINATING) return this.report(jobId, JobStatus.TERMINATED);
    await this.fail(jobId, JobTerminationReason.INSTANCE_UNREACHABLE, "The host agent no longer has this job's container (was the host restarted, or the container removed?)");
  }

  /** A task's state, from an event or a state report. */
  private async onTask(instanceId: string, t: TaskInfo): Promise<void> {
    const v = await this.o.services.jobs.agentView(t.taskId);
    if (!v || v.instanceId !== instanceId) return;
    if (isJobFinished(v.status)) return this.cleanup(v);
    if (t.state !== TaskState.TERMINATED) {
      if (v.status === JobStatus.PROVISIONING && RUNNING_TASK.has(t.state)) await this.report(v.id, JobStatus.PULLING);
      return;
    }
    // The container ended (or never started) while the job was still going.
    if (v.status === JobStatus.TERMINATING) return this.report(v.id, JobStatus.TERMINATED, t.exitCode ?? null);
    const reason = t.terminationReason || (t.exitCode === 0 ? JobTerminationReason.DONE_BY_RUNNER : JobTerminationReason.CONTAINER_EXITED_WITH_ERROR);
    let status: JobStatus;
    try {
      status = jobStatusForReason(reason);
    } catch {
      status = JobStatus.FAILED;
    }
    await this.report(v.id, status, t.exitCode ?? null, reason, t.terminationMessage || undefined);
  }

  // ---- runners ----

  /** Full state from a (re)connected runner: catch up on what it did, then give it what it waits for. */
  private async reconcileRunner(jobId: string, report: RunnerStateReport): Promise<void> {
    await this.o.services.jobs.onRunnerLinked(jobId); // it dialed in: the waiting_runner_limit is off
    const states = report.jobStates.filter((s) => s.jobSubmissionId === jobId || s.jobSubmissionId === "");
    const last = states[states.length - 1];
    if (states.some((s) => s.state === JobState.RUNNING) && last?.state !== JobState.RUNNING) await this.report(jobId, JobStatus.RUNNING);
    if (last) await this.onRunnerJobState(jobId, last);
    const v = await this.o.services.jobs.agentView(jobId);
    if (!v || !v.instanceId) return;
    if (isJobFinished(v.status)) return this.cleanup(v);
    if (v.status === JobStatus.TERMINATING) {
      if (v.removeAt && v.removeAt.getTime() > Date.now()) await this.stopGracefully(v);
      return;
    }
    if (report.runnerState === RunnerState.WAIT_SUBMIT) await this.submitJob(v);
  }

  private async submitJob(v: JobAgentView): Promise<void> {
    if (this.submittingJob.has(v.id)) return;
    // Every node gets the whole replica's addresses, so the job waits until all are placed.
    if (v.nodeIps.some((ip) => ip === "")) return;
    // startup_order: master-first workers wait for the master to run, workers-first the reverse.
    if (!mayStartNode(v.spec.startupOrder, v.jobNum, v.nodeStatuses ?? [])) return;
    this.submittingJob.add(v.id);
    try {
      const secrets = await this.secrets(v);
      if (!secrets) return;
      const env = Object.fromEntries(Object.entries(v.spec.env).map(([k, val]) => [k, interpolateSecrets(val, secrets)]));
      const runner = this.o.links.runner(v.id);
      this.log.debug({ job: v.id }, "submitting job to the runner");
      const command = submitJobCommand(v, { env, secrets, userSshKeys: await this.userSshKeys(v), inlineBlobs: await this.smallBlobs(v) });
      await runner.call({ case: "submitJob", value: command }, { deadlineMs: this.o.callDeadlineMs, signal: this.halt.signal });
      this.jobSubmitted.add(v.id);
      if (v.status === JobStatus.PROVISIONING) await this.report(v.id, JobStatus.PULLING); // its container runs
    } catch (e) {
      if (this.stopped) return;
      const code = linkErrorCodeOf(e);
      if (TRANSIENT.has(code) || (e instanceof LinkCallError && e.retryable)) this.log.warn({ job: v.id, err: message(e) }, "submitting the job failed; will retry when the runner reconnects");
      else if (code !== LinkErrorCode.ALREADY_EXISTS && code !== LinkErrorCode.FAILED_PRECONDITION) await this.fail(v.id, JobTerminationReason.EXECUTOR_ERROR, message(e));
    } finally {
      this.submittingJob.delete(v.id);
    }
  }

  /**
   * The job's code and `files:` archives up to INLINE_BLOB_BYTES, to send inside SubmitJob: the
   * runner then skips a download (its own TLS connection and stream) before the commands start.
   */
  private async smallBlobs(v: JobAgentView): Promise<Record<string, Uint8Array>> {
    const out: Record<string, Uint8Array> = {};
    const code = this.o.services.code;
    if (!code) return out;
    for (const [hash, size] of Object.entries(v.blobSizes)) {
      if (size > INLINE_BLOB_BYTES) continue;
      try {
        const bytes = await code.get(v.projectId, hash);
        if (bytes) out[hash] = bytes;
      } catch (e) {
        this.log.debug({ job: v.id, err: message(e) }, "reading a small blob failed; the runner downloads it");
      }
    }
    return out;
  }

  private async onRunnerJobState(jobId: string, ev: JobStateChanged): Promise<void> {
    const exit = ev.exitStatus ?? null;
    const reason = ev.terminationReason || null;
    const msg = ev.terminationMessage || undefined;
    switch (ev.state) {
      case JobState.PREPARING:
        return this.report(jobId, JobStatus.PULLING);
      case JobState.RUNNING:
        return this.report(jobId, JobStatus.RUNNING);
      case JobState.DONE:
        this.endedByRunner.add(jobId);
        return this.report(jobId, JobStatus.DONE, exit, reason, msg);
      case JobState.FAILED:
        this.endedByRunner.add(jobId);
        return this.report(jobId, JobStatus.FAILED, exit, reason, msg);
      case JobState.TERMINATED:
        this.endedByRunner.add(jobId);
        return this.report(jobId, JobStatus.TERMINATED, exit, reason, msg);
      default:
        return;
    }
  }
}

export function createDispatcher(opts: DispatcherOptions): Dispatcher {
  return new Dispatcher(opts);
}
