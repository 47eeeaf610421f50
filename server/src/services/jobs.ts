// The reconcilers' logic: one function per object kind that looks at a job or run, makes
// the next state change in one transaction, publishes the events after commit, and says
// when it wants to be looked at again (a timer, e.g. retry backoff or max_duration).
// The scheduler (scheduler/index.ts) decides *when* these run; this decides *what* happens.
import { existsSync, statSync } from "node:fs";
import { raw } from "@mikro-orm/core";
import { InstanceStatus, JobStatus, JobTerminationReason, RunStatus, RunTerminationReason } from "../domain/enums.js";
import { withTransaction, type Em, type Orm } from "../db/database.js";
import { CodeBlob, Instance, Job, Run, build } from "../db/entities.js";
import { err } from "../errors.js";
import type { Clock } from "../scheduler/clock.js";
import type { DomainEvent, EventBus } from "../scheduler/events.js";
import { blockResources, blocksNeeded, type HostInfo } from "./offers.js";
import type { InstanceCandidate, OffersService } from "./offers.js";
import { DEFAULT_IMAGE, buildJobSpecs, type RunSpecInput, type StoredJobSpec } from "./runs.js";
import { NO_FLEET_MESSAGE } from "./status-messages.js";
import { Batcher } from "./batch.js";
import {
  assertJobTransition,
  assertRunTransition,
  deriveRunStatus,
  isJobFinished,
  isPendingRunDue,
  isRunFinished,
  jobReasonForRunReason,
  jobStatusForReason,
  retryBackoffMs,
  runStatusForReason,
  type JobView,
} from "./state-machines.js";

export interface ProcessResult {
  /** Look at the object again at this time (null = only when an event says so). */
  nextAt: Date | null;
}

const NONE: ProcessResult = { nextAt: null };
const ACTIVE_JOB = [JobStatus.SUBMITTED, JobStatus.PROVISIONING, JobStatus.PULLING, JobStatus.RUNNING, JobStatus.TERMINATING];
/** Statuses of a job that holds a place on an instance. */
const PLACED_JOB = [JobStatus.PROVISIONING, JobStatus.PULLING, JobStatus.RUNNING, JobStatus.TERMINATING];
const SPEC_DEFAULTS: Omit<StoredJobSpec, "jobName" | "replicaNum" | "jobNum" | "jobsPerReplica" | "resources" | "commands" | "image" | "maxDuration" | "stopDuration" | "retry" | "fleets"> = {
  privileged: false,
  shell: "/bin/sh",
  env: {},
  secretNames: [],
  workingDir: "",
  ports: [],
  instanceMounts: [],
  volumeMounts: [],
  repo: { type: "virtual", ifExists: "error" },
  fileArchives: [],
  singleBranch: true,
  runType: "task",
};
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ACTIVE_RUN = [RunStatus.PENDING, RunStatus.SUBMITTED, RunStatus.PROVISIONING, RunStatus.RUNNING, RunStatus.TERMINATING];

const spec = (j: Job) => j.jobSpec as unknown as StoredJobSpec;
const key = (j: { replicaNum: number; jobNum: number }) => `${j.replicaNum}/${j.jobNum}`;

/** The latest submission of each (replica, job) of a run. */
function latestSubmissions(jobs: readonly Job[]): Job[] {
  const latest = new Map<string, Job>();
  for (const j of jobs) {
    const cur = latest.get(key(j));
    if (!cur || j.submissionNum > cur.submissionNum) latest.set(key(j), j);
  }
  return [...latest.values()];
}

/** One job submission as its agents see it (JobsService.agentView). */
export interface JobAgentView {
  id: string;
  status: JobStatus;
  terminationReason: JobTerminationReason | null;
  terminationReasonMessage: string | null;
  /** Terminating jobs: when the stop's grace ends. */
  removeAt: Date | null;
  submissionNum: number;
  jobNum: number;
  replicaNum: number;
  spec: StoredJobSpec;
  runId: string;
  runName: string;
  projectId: string;
  /** The user who submitted the run (whose SSH keys the job's container accepts). */
  userId: string;
  instanceId: string | null;
  fleetId: string | null;
  /** Blocks of the instance the job holds (0 once finished), of `totalBlocks`. */
  blocks: number;
  totalBlocks: number;
  host: HostInfo | null;
  /** Internal IP of each node of the replica by job_num; "" where not placed yet. */
  nodeIps: string[];
  /** Latest submission status of every node of the replica, by job_num (startup_order). */
  nodeStatuses?: { jobNum: number; status: JobStatus }[];
  /** The other nodes' latest submissions of a multi-node replica. */
  siblingIds: string[];
  /** Sizes in bytes of the uploaded blobs the job names (code, file archives), by sha256. */
  blobSizes: Record<string, number>;
}

/** dstack's waiting_runner_limit (its provisioning timeout for SSH fleets and most backends): 10 min. */
export const DEFAULT_RUNNER_DIAL_TIMEOUT_S = 600;

/** DSTACK_SERVER_RUNNER_DIAL_TIMEOUT (seconds), else dstack's default. */
export function envRunnerDialTimeoutS(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.DSTACK_SERVER_RUNNER_DIAL_TIMEOUT;
  if (raw === undefined || raw.trim() === "") return DEFAULT_RUNNER_DIAL_TIMEOUT_S;
  if (!/^\d+(\.\d+)?$/.test(raw.trim()) || !(Number(raw) > 0)) {
    throw err("DSTACK_BAD_SETTING", { variable: "DSTACK_SERVER_RUNNER_DIAL_TIMEOUT", reason: `'${raw}' is not a positive number of seconds` });
  }
  return Number(raw);
}

export class JobsService {
  constructor(
    private readonly orm: Orm,
    private readonly offers: OffersService,
    private readonly bus: EventBus,
    private readonly clock: Clock,
    /** How long a placed job may go without its runner linking home before it fails. */
    readonly runnerDialTimeoutS: number = DEFAULT_RUNNER_DIAL_TIMEOUT_S,
  ) {}

  /** When a placed job's runner must have linked home by: placement (else submission) + the limit. */
  private runnerDeadline(job: Job): Date {
    const placed = (job.provisioningData as { placedAt?: unknown } | null)?.placedAt;
    const from = typeof placed === "string" && !Number.isNaN(Date.parse(placed)) ? new Date(placed) : job.submittedAt;
    return new Date(from.getTime() + this.runnerDialTimeoutS * 1000);
  }

  /** The job's runner linked home (the dispatcher calls this on its first report): the dial-in limit no longer applies. */
  async onRunnerLinked(jobId: string): Promise<void> {
    await this.orm.em.fork().nativeUpdate(Job, { id: jobId, runnerLinkedAt: null }, { runnerLinkedAt: this.clock.now() });
  }

  /** Ids of unfinished jobs and runs: what the scheduler re-arms at start and sweeps. */
  async activeIds(notUpdatedSince?: Date): Promise<{ jobs: string[]; runs: string[] }> {
    const em = this.orm.em.fork();
    const stale = notUpdatedSince ? { updatedAt: { $lt: notUpdatedSince } } : {};
    const jobs = await em.find(Job, { status: { $in: ACTIVE_JOB }, ...stale }, { fields: ["id"], orderBy: { submittedAt: "asc" } });
    const runs = await em.find(Run, { status: { $in: ACTIVE_RUN }, ...stale }, { fields: ["id"] });
    return { jobs: jobs.map((j) => j.id), runs: runs.map((r) => r.id) };
  }

  /** Submitted jobs of a project waiting for capacity, by run priority then age. */
  async waitingJobIds(projectId: string): Promise<string[]> {
    const jobs = await this.orm.em.fork().find(
      Job,
      { status: JobStatus.SUBMITTED, run: { project: projectId, status: { $nin: [RunStatus.TERMINATING] } } },
      { fields: ["id"], orderBy: [{ run: { priority: "desc" } }, { submittedAt: "asc" }], limit: 1000 },
    );
    return jobs.map((j) => j.id);
  }

  async processJob(jobId: string): Promise<ProcessResult> {
    const events: DomainEvent[] = [];
    const result = await withTransaction(this.orm, async (em) => {
      const job = await em.findOne(Job, { id: jobId }, { populate: ["run"] });
      if (!job || isJobFinished(job.status)) return NONE;
      const run = job.run.getEntity();
      const now = this.clock.now();
      // Lock only once there is something to do: a no-op look (sweeps, duplicate wakes) writes nothing.
      const lock = () => this.lockJob(em, job, now);
      switch (job.status) {
        case JobStatus.SUBMITTED:
          if (run.status === RunStatus.TERMINATING || isRunFinished(run.status)) return NONE; // the run stops it
          if (!(await lock())) return NONE;
          return this.place(em, job, run, now, events);
        case JobStatus.PROVISIONING:
        case JobStatus.PULLING: {
          // The container may run while its runner never dials in (no usable shell, a broken
          // image, no route to the server): after the limit the job fails and its task goes.
          if (job.runnerLinkedAt) return NONE;
          const deadline = this.runnerDeadline(job);
          if (deadline > now) return { nextAt: deadline };
          if (!(await lock())) return NONE;
          this.terminate(job, JobTerminationReason.WAITING_RUNNER_LIMIT_EXCEEDED, now, now, events, run, `Runner did not become available within ${this.runnerDialTimeoutS}s.`);
          await this.finalize(em, job, run, now, events);
          return NONE;
        }
        case JobStatus.RUNNING: {
          const max = spec(job).maxDuration;
          if (max === null || job.runningAt === null) return NONE;
          const deadline = new Date(job.runningAt.getTime() + max * 1000);
          if (deadline > now) return { nextAt: deadline };
          if (!(await lock())) return NONE;
          this.terminate(job, JobTerminationReason.MAX_DURATION_EXCEEDED, now, now, events, run, "max_duration exceeded");
          await this.finalize(em, job, run, now, events);
          return NONE;
        }
        case JobStatus.TERMINATING:
          if (job.removeAt && job.removeAt > now) return { nextAt: job.removeAt };
          if (!(await lock())) return NONE;
          await this.finalize(em, job, run, now, events);
          return NONE;
        default:
          return NONE;
      }
    });
    this.bus.publish(events.map((e) => (e.kind === "job" && e.id === jobId ? { ...e, by: `job:${jobId}` } : e)));
    return result;
  }

  /**
   * Takes the job's row for this transaction, if it is still in the state we read: a
   * conditional UPDATE holds the row lock until commit on PostgreSQL (a concurrent reconciler
   * waits, then sees the new state and matches nothing), so two schedulers never act on one
   * job twice. SQLite serializes writers anyway.
   */
  private async lockJob(em: Em, job: Job, now: Date): Promise<boolean> {
    return (await em.nativeUpdate(Job, { id: job.id, status: job.status }, { updatedAt: now })) === 1;
  }

  /**
   * Claims free blocks of a fitting instance with one conditional UPDATE (busy_blocks only
   * grows while it stays within total_blocks), so concurrent schedulers never double-book.
   */
  private async place(em: Em, job: Job, run: Run, now: Date, events: DomainEvent[]): Promise<ProcessResult> {
    const s = spec(job);
    const projectId = run.project.id;
    const filter = (cs: InstanceCandidate[]) => cs.filter((c) => !s.fleets.length || s.fleets.includes(c.fleetName)).filter((c) => s.maxPrice === undefined || (c.instance.price ?? 0) <= s.maxPrice);
    const usable = filter(await this.offers.candidatesRaw(em, projectId, true));
    // Pack: prefer cheaper, then already-busy hosts so whole hosts stay free for big jobs.
    usable.sort((a, b) => (a.instance.price ?? 0) - (b.instance.price ?? 0) || b.instance.busyBlocks - a.instance.busyBlocks || a.instance.createdAt.getTime() - b.instance.createdAt.getTime());
    let couldEverFit = false;
    const wholeHost = s.jobsPerReplica > 1;
    for (const { instance, fleetName } of usable) {
      const host = instance.hostInfo as HostInfo | null;
      if (!host) continue;
      if (blocksNeeded(host, instance.totalBlocks, instance.totalBlocks, s.resources, wholeHost) !== null) couldEverFit = true;
      const k = blocksNeeded(host, instance.totalBlocks, instance.totalBlocks - instance.busyBlocks, s.resources, wholeHost);
      if (k === null) continue;
      const claimed = await em.nativeUpdate(
        Instance,
        { id: instance.id, deleted: false, status: { $in: [InstanceStatus.IDLE, InstanceStatus.BUSY] }, busyBlocks: { $lte: instance.totalBlocks - k } },
        { busyBlocks: raw(`busy_blocks + ${k}`), status: InstanceStatus.BUSY, updatedAt: now },
      );
      if (claimed !== 1) continue; // someone else took it first; try the next host
      assertJobTransition(job.status, JobStatus.PROVISIONING);
      job.status = JobStatus.PROVISIONING;
      job.instance = em.getReference(Instance, instance.id, { wrapped: true });
      job.blocks = k;
      job.lastProcessedAt = now;
      job.provisioningData = {
        instanceId: instance.id,
        instanceName: instance.name,
        fleetName,
        backend: instance.backend ?? "remote",
        region: instance.region ?? "",
        price: ((instance.price ?? 0) * k) / instance.totalBlocks,
        hostname: host.hostname ?? "",
        internalIp: host.internalIp ?? "",
        blocks: k,
        totalBlocks: instance.totalBlocks,
        // The job's share of the host, as placed (what `dstack ps` shows as RESOURCES).
        resources: blockResources(host, instance.totalBlocks, k),
        // The runner dial-in limit counts from here, not from a wait in the queue.
        placedAt: now.toISOString(),
      };
      // No instance event here: a claim adds no capacity, and waking every waiting job on each
      // claim would make placing N jobs cost O(N²).
      events.push({ kind: "job", id: job.id, projectId, runId: run.id }, { kind: "run", id: run.id, projectId });
      return NONE;
    }
    // Nothing free fits; wait if some host (now full) could take it once freed.
    if (!couldEverFit) {
      for (const { instance } of filter(await this.offers.candidatesRaw(em, projectId, false))) {
        const host = instance.hostInfo as HostInfo | null;
        if (host && blocksNeeded(host, instance.totalBlocks, instance.totalBlocks, s.resources, wholeHost) !== null) couldEverFit = true;
      }
    }
    if (couldEverFit) return NONE; // a release or a new host wakes us
    this.terminate(job, JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY, now, now, events, run, NO_FLEET_MESSAGE);
    await this.finalize(em, job, run, now, events);
    return NONE;
  }

  private terminate(job: Job, reason: JobTerminationReason, now: Date, removeAt: Date, events: DomainEvent[], run: Run, message?: string): void {
    assertJobTransition(job.status, JobStatus.TERMINATING);
    job.status = JobStatus.TERMINATING;
    job.terminationReason = reason;
    if (message !== undefined) job.terminationReasonMessage = message;
    job.removeAt = removeAt;
    job.lastProcessedAt = now;
    events.push({ kind: "job", id: job.id, projectId: run.project.id, runId: run.id });
  }

  /** Ends a terminating job: final status from its reason, blocks back to the instance. */
  private async finalize(em: Em, job: Job, run: Run, now: Date, events: DomainEvent[]): Promise<void> {
    const final = jobStatusForReason(job.terminationReason ?? JobTerminationReason.TERMINATED_BY_SERVER);
    assertJobTransition(job.status, final);
    job.status = final;
    job.finishedAt = now;
    job.lastProcessedAt = now;
    job.removeAt = null;
    const projectId = run.project.id;
    if (job.instance && job.blocks > 0) {
      const id = job.instance.id;
      await em.nativeUpdate(Instance, { id }, { busyBlocks: raw(`busy_blocks - ${job.blocks}`), updatedAt: now });
      await em.nativeUpdate(Instance, { id, busyBlocks: 0, status: InstanceStatus.BUSY }, { status: InstanceStatus.IDLE });
      job.blocks = 0;
      events.push({ kind: "instance", id, projectId });
    }
    events.push({ kind: "job", id: job.id, projectId, runId: run.id }, { kind: "run", id: run.id, projectId });
  }

  /** A state report from the agents (the mesh), or from tests standing in for them. */
  async onJobState(jobId: string, state: JobStatus, exitStatus: number | null = null, reason: JobTerminationReason | null = null, message?: string): Promise<void> {
    const events: DomainEvent[] = [];
    await withTransaction(this.orm, async (em) => {
      const job = await em.findOne(Job, { id: jobId }, { populate: ["run"] });
      if (!job) throw err("DSTACK_JOB_NOT_FOUND", { job: jobId });
      const run = job.run.getEntity();
      const now = this.clock.now();
      if (isJobFinished(job.status)) return; // late report; nothing to change
      if (!(await this.lockJob(em, job, now))) throw err("DSTACK_INVALID_TRANSITION", { kind: "Job", from: "a stale state", to: "a reported one" });
      if (exitStatus !== null) job.exitStatus = exitStatus;
      if (state === JobStatus.PULLING || state === JobStatus.RUNNING) {
        // Reports from two agents arrive on two links: a late "pulling" after "running" changes nothing.
        if (job.status === state || job.status === JobStatus.TERMINATING || (state === JobStatus.PULLING && job.status === JobStatus.RUNNING)) return;
        if (job.status === JobStatus.PROVISIONING && state === JobStatus.RUNNING) job.status = JobStatus.PULLING; // pulling is implied
        assertJobTransition(job.status, state);
        job.status = state;
        job.lastProcessedAt = now;
        if (state === JobStatus.RUNNING) job.runningAt = now;
        events.push({ kind: "job", id: job.id, projectId: run.project.id, runId: run.id }, { kind: "run", id: run.id, projectId: run.project.id });
        return;
      }
      // The process ended (done, failed or terminated).
      if (job.status === JobStatus.TERMINATING) {
        // A graceful stop we asked for completed: finish now, keeping the stop's reason.
        job.removeAt = now;
        events.push({ kind: "job", id: job.id, projectId: run.project.id, runId: run.id });
        return;
      }
      const r =
        reason ??
        (state === JobStatus.DONE
          ? JobTerminationReason.DONE_BY_RUNNER
          : state === JobStatus.FAILED
            ? JobTerminationReason.CONTAINER_EXITED_WITH_ERROR
            : state === JobStatus.ABORTED
              ? JobTerminationReason.ABORTED_BY_USER
              : JobTerminationReason.TERMINATED_BY_SERVER);
      this.terminate(job, r, now, now, events, run, message);
      events.push({ kind: "run", id: run.id, projectId: run.project.id });
    });
    this.bus.publish(events);
  }

  /** What the agent dispatcher needs to drive one job submission on its host (system use). */
  async agentView(jobId: string): Promise<JobAgentView | null> {
    if (!UUID.test(jobId)) return null;
    const em = this.orm.em.fork();
    const job = await em.findOne(Job, { id: jobId }, { populate: ["run", "instance"] });
    if (!job) return null;
    const run = job.run.getEntity();
    const instance = job.instance ? (job.instance.getEntity() as Instance) : null;
    const s = spec(job);
    // Node addresses of the replica, by job_num, from the latest submissions' placements.
    const siblings = s.jobsPerReplica > 1 ? latestSubmissions(await em.find(Job, { run: run.id, replicaNum: job.replicaNum })) : [job];
    const nodeIps = Array.from({ length: s.jobsPerReplica }, (_, n) => {
      const j = siblings.find((x) => x.jobNum === n);
      return String((j?.provisioningData as { internalIp?: unknown } | null)?.internalIp ?? "");
    });
    const hashes = [...new Set([s.repoCodeHash, ...(s.fileArchives ?? []).map((f) => f.hash)].filter((h): h is string => !!h))];
    const blobSizes: Record<string, number> = {};
    if (hashes.length) {
      const rows = (await em
        .createQueryBuilder(CodeBlob, "b")
        .select(["b.blob_hash", "b.path", raw("length(b.blob) as size")])
        .where({ project: run.project.id, blobHash: { $in: hashes } })
        .execute("all", false)) as unknown as { blob_hash: string; path: string | null; size: number | string | null }[];
      for (const r of rows) {
        const size = r.size !== null && r.size !== undefined ? Number(r.size) : r.path && existsSync(r.path) ? statSync(r.path).size : null;
        if (size !== null) blobSizes[r.blob_hash] = size;
      }
    }
    return {
      id: job.id,
      status: job.status,
      terminationReason: job.terminationReason,
      terminationReasonMessage: job.terminationReasonMessage,
      removeAt: job.removeAt,
      submissionNum: job.submissionNum,
      jobNum: job.jobNum,
      replicaNum: job.replicaNum,
      // Rows written before a field existed get its default.
      spec: { ...SPEC_DEFAULTS, ...s, image: s.image ?? DEFAULT_IMAGE },
      runId: run.id,
      runName: run.runName,
      projectId: run.project.id,
      userId: run.user.id,
      instanceId: instance?.id ?? null,
      fleetId: instance?.fleet?.id ?? null,
      blocks: job.blocks,
      totalBlocks: instance?.totalBlocks ?? 1,
      host: (instance?.hostInfo as HostInfo | null) ?? null,
      nodeIps,
      nodeStatuses: siblings.map((x) => ({ jobNum: x.jobNum, status: x.status })),
      siblingIds: siblings.filter((x) => x.id !== job.id).map((x) => x.id),
      blobSizes,
    };
  }

  /** Unfinished submissions placed on an instance: what its host agent should be running. */
  async activeJobIdsOnInstance(instanceId: string): Promise<string[]> {
    return [...(await this.activeOnInstances.get(instanceId))];
  }

  /** Every shim link that opens asks activeJobIdsOnInstance: those asking together share one query. */
  private readonly activeOnInstances = new Batcher<string, string[]>(async (instanceIds) => {
    const rows = await this.orm.em.fork().find(Job, { instance: { $in: instanceIds }, status: { $in: PLACED_JOB } }, { fields: ["id", "instance"] });
    const byInstance = new Map<string, string[]>(instanceIds.map((id) => [id, []]));
    for (const j of rows) byInstance.get(j.instance!.id)?.push(j.id);
    return byInstance;
  }, []);

  /** Instances that hold unfinished submissions (their agents are expected to come back). */
  async instanceIdsWithActiveJobs(): Promise<string[]> {
    const rows = await this.orm.em.fork().find(Job, { instance: { $ne: null }, status: { $in: PLACED_JOB } }, { fields: ["instance"] });
    return [...new Set(rows.map((j) => j.instance!.id))];
  }

  async processRun(runId: string): Promise<ProcessResult> {
    const events: DomainEvent[] = [];
    const result = await withTransaction(this.orm, async (em) => {
      const run = await em.findOne(Run, { id: runId });
      if (!run || isRunFinished(run.status)) return NONE;
      const now = this.clock.now();
      // Same guard as lockJob, taken only before the first change: one reconciler per run
      // across replicas, and no write at all when nothing changes.
      let locked = false;
      const lock = async () => {
        if (!locked) locked = (await em.nativeUpdate(Run, { id: run.id, status: run.status }, { updatedAt: now })) === 1;
        return locked;
      };
      const jobs = await em.find(Job, { run: run.id });
      const latest = latestSubmissions(jobs);
      const projectId = run.project.id;
      const runEvent = () => events.push({ kind: "run", id: run.id, projectId });

      if (run.status === RunStatus.PENDING) {
        const due = isPendingRunDue({ attempt: run.resubmissionAttempt, pendingSince: run.lastProcessedAt, nextTriggeredAt: run.nextTriggeredAt, now });
        if (!due) return { nextAt: new Date(run.lastProcessedAt.getTime() + retryBackoffMs(run.resubmissionAttempt)) };
        if (!(await lock())) return NONE;
        const toRetry = latest.filter((j) => isJobFinished(j.status) && j.status !== JobStatus.DONE);
        const replicas = new Set(toRetry.map((j) => j.replicaNum));
        for (const j of latest.filter((x) => replicas.has(x.replicaNum))) this.resubmit(em, j, run, now, events);
        assertRunTransition(run.status, RunStatus.SUBMITTED);
        run.status = RunStatus.SUBMITTED;
        run.resubmissionAttempt += 1;
        run.lastProcessedAt = now;
        runEvent();
        return NONE;
      }

      if (run.status !== RunStatus.TERMINATING && (run.runSpec as { configuration?: { type?: string } }).configuration?.type === "service") {
        const rolled = await this.rollDeployment(em, run, latest, now, events, lock);
        if (rolled === null) return NONE;
        latest.push(...rolled);
      }

      if (run.status !== RunStatus.TERMINATING) {
        const views: JobView[] = latest.map((j) => ({
          replicaNum: j.replicaNum,
          jobNum: j.jobNum,
          status: j.status,
          terminationReason: j.terminationReason,
          retry: {
            policy: spec(j).retry,
            runStartedAt: run.submittedAt,
            lastProvisionedAt: lastProvisioned(jobs, j),
            now,
          },
        }));
        // stop_criteria: master-done ends the run (and its other nodes) once job 0 is done.
        const d = deriveRunStatus(views, { stopOnMasterDone: latest.some((j) => spec(j).stopCriteria === "master-done") });
        if (d.status === RunStatus.TERMINATING) {
          if (!(await lock())) return NONE;
          assertRunTransition(run.status, RunStatus.TERMINATING);
          run.status = RunStatus.TERMINATING;
          run.terminationReason = d.terminationReason;
          run.lastProcessedAt = now;
          runEvent();
          // fall through to terminate the jobs in this same transaction
        } else if (d.status === RunStatus.PENDING) {
          // Wait for every job of the replicas to retry to finish before counting the backoff.
          if (latest.some((j) => d.replicasToRetry.includes(j.replicaNum) && !isJobFinished(j.status))) return NONE;
          if (!(await lock())) return NONE;
          assertRunTransition(run.status, RunStatus.PENDING);
          run.status = RunStatus.PENDING;
          run.lastProcessedAt = now;
          runEvent();
          return { nextAt: new Date(now.getTime() + retryBackoffMs(run.resubmissionAttempt)) };
        } else {
          // Replicas that failed while others keep going are resubmitted at once.
          for (const replica of d.replicasToRetry) {
            const mine = latest.filter((j) => j.replicaNum === replica);
            if (mine.every((j) => isJobFinished(j.status))) {
              if (!(await lock())) return NONE;
              for (const j of mine) this.resubmit(em, j, run, now, events);
            }
          }
          if (d.status !== run.status) {
            if (!(await lock())) return NONE;
            assertRunTransition(run.status, d.status);
            run.status = d.status;
            run.lastProcessedAt = now;
            runEvent();
          }
          return NONE;
        }
      }

      // Terminating: stop every active job, then settle the run once all have finished.
      if (!(await lock())) return NONE;
      const reason = run.terminationReason ?? RunTerminationReason.SERVER_ERROR;
      const jobReason = jobReasonForRunReason(reason);
      let nextAt: Date | null = null;
      for (const j of latest) {
        if (isJobFinished(j.status)) continue;
        if (j.status === JobStatus.TERMINATING) {
          // An abort cuts a graceful stop short.
          if (reason === RunTerminationReason.ABORTED_BY_USER && j.removeAt && j.removeAt > now) {
            j.terminationReason = JobTerminationReason.ABORTED_BY_USER;
            j.removeAt = now;
            events.push({ kind: "job", id: j.id, projectId, runId: run.id });
          }
          continue;
        }
        const grace = spec(j).stopDuration;
        // Only a running process gets a graceful stop; anything earlier has nothing to save.
        const removeAt = reason === RunTerminationReason.STOPPED_BY_USER && j.status === JobStatus.RUNNING && grace ? new Date(now.getTime() + grace * 1000) : now;
        this.terminate(j, jobReason, now, removeAt, events, run);
        if (removeAt <= now) await this.finalize(em, j, run, now, events);
        if (removeAt > now && (nextAt === null || removeAt.getTime() < (nextAt as Date).getTime())) nextAt = removeAt;
      }
      if (latest.every((j) => isJobFinished(j.status))) {
        const final = runStatusForReason(reason);
        assertRunTransition(run.status, final);
        run.status = final;
        run.finishedAt = now;
        run.lastProcessedAt = now;
        runEvent();
      }
      return { nextAt };
    });
    this.bus.publish(events.map((e) => (e.kind === "run" && e.id === runId ? { ...e, by: `run:${runId}` } : e)));
    return result;
  }

  /**
   * A service's replicas against its spec. Rolling deployment (dstack's, with a surge of one
   * replica): while replicas of an older deployment are active, start new-spec replicas up to
   * the desired count plus one, stop old ones that are not running yet, and stop an old running
   * one only once the running replicas exceed the desired count, i.e. once its replacement
   * runs. Otherwise, when `replicas` changed in place, add or scale down replicas to the desired
   * count. Returns the new jobs, or null when another reconciler holds the run.
   */
  private async rollDeployment(em: Em, run: Run, latest: Job[], now: Date, events: DomainEvent[], lock: () => Promise<boolean>): Promise<Job[] | null> {
    const byReplica = new Map<number, Job[]>();
    for (const j of latest) byReplica.set(j.replicaNum, [...(byReplica.get(j.replicaNum) ?? []), j]);
    const replicas = [...byReplica].map(([replicaNum, jobs]) => ({
      replicaNum,
      jobs,
      outdated: jobs.some((j) => j.deploymentNum < run.deploymentNum),
      active: jobs.some((j) => !isJobFinished(j.status)),
      stopping: jobs.some((j) => j.status === JobStatus.TERMINATING),
      running: jobs.every((j) => j.status === JobStatus.RUNNING),
      scaledDown: jobs.every((j) => j.terminationReason === JobTerminationReason.SCALED_DOWN),
    }));
    const stored = run.runSpec as unknown as RunSpecInput & { runName: string };
    const specs = buildJobSpecs(run.runName, stored.configuration, stored);
    const slots = [...new Set(specs.map((j) => j.replicaNum))];
    // The autoscaler's count when it chose one (single-group services: every replica shares one spec).
    const desired = run.desiredReplicaCount ?? slots.length;
    const template = (slot: number) => slots[Math.min(slot, slots.length - 1)]!;
    const live = replicas.filter((r) => r.active && !r.stopping);
    const outdated = live.filter((r) => r.outdated);
    const current = live.filter((r) => !r.outdated);
    const toAdd: number[] = [];
    const stop: typeof replicas = [];
    if (outdated.length > 0) {
      // Scale up to desired + 1 (the surge), filling the slots the up-to-date replicas leave.
      for (let n = live.length, slot = current.length; n < desired + 1 && slot < desired; n++, slot++) toAdd.push(template(slot));
      // Old replicas not serving yet go at once; running ones only beyond the desired count.
      stop.push(...outdated.filter((r) => !r.running));
      const excess = live.filter((r) => r.running).length - desired;
      if (excess > 0) stop.push(...outdated.filter((r) => r.running).sort((a, b) => a.replicaNum - b.replicaNum).slice(0, excess));
    } else {
      // A replica that ended by itself is the retry logic's (deriveRunStatus), not a scaling matter.
      if (!replicas.every((r) => r.active || r.scaledDown)) return [];
      for (let slot = live.length; slot < desired; slot++) toAdd.push(template(slot));
      // Fewer wanted: those not serving yet first, then the newest.
      const extra = [...live].sort((a, b) => Number(a.running) - Number(b.running) || b.replicaNum - a.replicaNum);
      stop.push(...extra.slice(0, Math.max(0, live.length - desired)));
    }
    if (toAdd.length === 0 && stop.length === 0) return [];
    if (!(await lock())) return null;
    const projectId = run.project.id;
    const created: Job[] = [];
    let nextReplica = Math.max(-1, ...replicas.map((r) => r.replicaNum)) + 1;
    for (const slot of toAdd) {
      const replicaNum = nextReplica++;
      for (const js of specs.filter((j) => j.replicaNum === slot)) {
        const job = build(Job, {
          run: em.getReference(Run, run.id, { wrapped: true }),
          jobNum: js.jobNum,
          replicaNum,
          submissionNum: 0,
          status: JobStatus.SUBMITTED,
          jobSpec: { ...js, replicaNum, jobName: `${run.runName}-${js.jobNum}-${replicaNum}` } as unknown as Record<string, unknown>,
          deploymentNum: run.deploymentNum,
          submittedAt: now,
          lastProcessedAt: now,
        });
        em.persist(job);
        created.push(job);
        events.push({ kind: "job", id: job.id, projectId, runId: run.id });
      }
    }
    for (const r of stop) {
      for (const j of r.jobs) {
        if (isJobFinished(j.status)) continue;
        const grace = spec(j).stopDuration;
        const removeAt = j.status === JobStatus.RUNNING && grace ? new Date(now.getTime() + grace * 1000) : now;
        this.terminate(j, JobTerminationReason.SCALED_DOWN, now, removeAt, events, run, r.outdated ? "replaced by a replica of the new deployment" : "scaled down");
        if (removeAt <= now) await this.finalize(em, j, run, now, events);
      }
    }
    run.lastProcessedAt = now;
    events.push({ kind: "run", id: run.id, projectId });
    return created;
  }

  private resubmit(em: Em, prev: Job, run: Run, now: Date, events: DomainEvent[]): void {
    const job = build(Job, {
      run: em.getReference(Run, run.id, { wrapped: true }),
      jobNum: prev.jobNum,
      replicaNum: prev.replicaNum,
      submissionNum: prev.submissionNum + 1,
      status: JobStatus.SUBMITTED,
      jobSpec: prev.jobSpec,
      deploymentNum: prev.deploymentNum,
      submittedAt: now,
      lastProcessedAt: now,
    });
    em.persist(job);
    events.push({ kind: "job", id: job.id, projectId: run.project.id, runId: run.id });
  }
}

function lastProvisioned(all: readonly Job[], j: Job): Date | null {
  let best: Job | null = null;
  for (const x of all) if (x.replicaNum === j.replicaNum && x.jobNum === j.jobNum && x.provisioningData && (!best || x.submissionNum > best.submissionNum)) best = x;
  return best ? (best.finishedAt ?? best.lastProcessedAt) : null;
}

