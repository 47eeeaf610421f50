// The lifecycle rules of runs, jobs and instances as pure functions over plain data:
// which status may follow which, what status a termination reason ends in, how a run's
// status follows from its jobs, and when a failed job is retried. The scheduler and the
// services call these; nothing here touches the database or the clock (callers pass `now`).
import { err } from "../errors.js";
import {
  InstanceStatus,
  JobStatus,
  JobTerminationReason,
  RunStatus,
  RunTerminationReason,
  enumName,
} from "../domain/enums.js";

// ---------------------------------------------------------------------------------------
// Allowed transitions

export const RUN_TRANSITIONS: ReadonlyMap<RunStatus, readonly RunStatus[]> = new Map([
  // pending: waiting for retry backoff, a cron trigger or autoscaling to want replicas.
  [RunStatus.PENDING, [RunStatus.SUBMITTED, RunStatus.TERMINATING]],
  // A run's status follows its jobs, so every active status may step back when a replica
  // is resubmitted (e.g. running → submitted) or the whole run is retried (→ pending).
  [RunStatus.SUBMITTED, [RunStatus.PROVISIONING, RunStatus.RUNNING, RunStatus.PENDING, RunStatus.TERMINATING]],
  [RunStatus.PROVISIONING, [RunStatus.SUBMITTED, RunStatus.RUNNING, RunStatus.PENDING, RunStatus.TERMINATING]],
  [RunStatus.RUNNING, [RunStatus.SUBMITTED, RunStatus.PROVISIONING, RunStatus.PENDING, RunStatus.TERMINATING]],
  // Scheduled runs that ended on their own go back to pending for the next trigger.
  [RunStatus.TERMINATING, [RunStatus.TERMINATED, RunStatus.FAILED, RunStatus.DONE, RunStatus.PENDING]],
  [RunStatus.TERMINATED, []],
  [RunStatus.FAILED, []],
  [RunStatus.DONE, []],
]);

export const JOB_TRANSITIONS: ReadonlyMap<JobStatus, readonly JobStatus[]> = new Map([
  [JobStatus.SUBMITTED, [JobStatus.PROVISIONING, JobStatus.TERMINATING]],
  // Container-only backends have no shim task to pull, so provisioning may go straight to running.
  [JobStatus.PROVISIONING, [JobStatus.PULLING, JobStatus.RUNNING, JobStatus.TERMINATING]],
  [JobStatus.PULLING, [JobStatus.RUNNING, JobStatus.TERMINATING]],
  [JobStatus.RUNNING, [JobStatus.TERMINATING]],
  // Every ending goes through terminating, which releases the instance and volumes first.
  [JobStatus.TERMINATING, [JobStatus.TERMINATED, JobStatus.ABORTED, JobStatus.FAILED, JobStatus.DONE]],
  [JobStatus.TERMINATED, []],
  [JobStatus.ABORTED, []],
  [JobStatus.FAILED, []],
  [JobStatus.DONE, []],
]);

export const INSTANCE_TRANSITIONS: ReadonlyMap<InstanceStatus, readonly InstanceStatus[]> = new Map([
  // A placeholder that never got an offer ends at once: there is nothing to tear down.
  [InstanceStatus.PENDING, [InstanceStatus.PROVISIONING, InstanceStatus.TERMINATING, InstanceStatus.TERMINATED]],
  [InstanceStatus.PROVISIONING, [InstanceStatus.IDLE, InstanceStatus.BUSY, InstanceStatus.TERMINATING]],
  [InstanceStatus.IDLE, [InstanceStatus.BUSY, InstanceStatus.TERMINATING]],
  [InstanceStatus.BUSY, [InstanceStatus.IDLE, InstanceStatus.TERMINATING]],
  [InstanceStatus.TERMINATING, [InstanceStatus.TERMINATED]],
  [InstanceStatus.TERMINATED, []],
]);

export const canTransitionRun = (from: RunStatus, to: RunStatus): boolean => RUN_TRANSITIONS.get(from)?.includes(to) ?? false;
export const canTransitionJob = (from: JobStatus, to: JobStatus): boolean => JOB_TRANSITIONS.get(from)?.includes(to) ?? false;
export const canTransitionInstance = (from: InstanceStatus, to: InstanceStatus): boolean =>
  INSTANCE_TRANSITIONS.get(from)?.includes(to) ?? false;

export function assertRunTransition(from: RunStatus, to: RunStatus): void {
  if (!canTransitionRun(from, to)) throw err("DSTACK_INVALID_TRANSITION", { kind: "Run", from: enumName(RunStatus, from), to: enumName(RunStatus, to) });
}
export function assertJobTransition(from: JobStatus, to: JobStatus): void {
  if (!canTransitionJob(from, to)) throw err("DSTACK_INVALID_TRANSITION", { kind: "Job", from: enumName(JobStatus, from), to: enumName(JobStatus, to) });
}
export function assertInstanceTransition(from: InstanceStatus, to: InstanceStatus): void {
  if (!canTransitionInstance(from, to)) {
    throw err("DSTACK_INVALID_TRANSITION", { kind: "Instance", from: enumName(InstanceStatus, from), to: enumName(InstanceStatus, to) });
  }
}

export const FINISHED_RUN_STATUSES: readonly RunStatus[] = [RunStatus.TERMINATED, RunStatus.FAILED, RunStatus.DONE];
export const FINISHED_JOB_STATUSES: readonly JobStatus[] = [JobStatus.TERMINATED, JobStatus.ABORTED, JobStatus.FAILED, JobStatus.DONE];
export const isRunFinished = (s: RunStatus): boolean => FINISHED_RUN_STATUSES.includes(s);
export const isJobFinished = (s: JobStatus): boolean => FINISHED_JOB_STATUSES.includes(s);
export const isInstanceFinished = (s: InstanceStatus): boolean => s === InstanceStatus.TERMINATED;

// ---------------------------------------------------------------------------------------
// Termination reasons → final status

const JOB_REASON_STATUS: ReadonlyMap<JobTerminationReason, JobStatus> = new Map([
  // set by the server
  [JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY, JobStatus.FAILED],
  [JobTerminationReason.INTERRUPTED_BY_NO_CAPACITY, JobStatus.FAILED],
  [JobTerminationReason.INSTANCE_UNREACHABLE, JobStatus.FAILED],
  [JobTerminationReason.INSTANCE_ACCESS_REVOKED, JobStatus.FAILED],
  [JobTerminationReason.WAITING_INSTANCE_LIMIT_EXCEEDED, JobStatus.FAILED],
  [JobTerminationReason.WAITING_RUNNER_LIMIT_EXCEEDED, JobStatus.FAILED],
  [JobTerminationReason.VOLUME_ERROR, JobStatus.FAILED],
  [JobTerminationReason.GATEWAY_ERROR, JobStatus.FAILED],
  [JobTerminationReason.TERMINATED_BY_USER, JobStatus.TERMINATED],
  [JobTerminationReason.SCALED_DOWN, JobStatus.TERMINATED],
  [JobTerminationReason.TERMINATED_BY_SERVER, JobStatus.TERMINATED],
  [JobTerminationReason.INACTIVITY_DURATION_EXCEEDED, JobStatus.TERMINATED],
  [JobTerminationReason.TERMINATED_DUE_TO_UTILIZATION_POLICY, JobStatus.TERMINATED],
  [JobTerminationReason.DONE_BY_RUNNER, JobStatus.DONE],
  [JobTerminationReason.ABORTED_BY_USER, JobStatus.ABORTED],
  // set by the runner or shim
  [JobTerminationReason.CONTAINER_EXITED_WITH_ERROR, JobStatus.FAILED],
  [JobTerminationReason.PORTS_BINDING_FAILED, JobStatus.FAILED],
  [JobTerminationReason.CREATING_CONTAINER_ERROR, JobStatus.FAILED],
  [JobTerminationReason.EXECUTOR_ERROR, JobStatus.FAILED],
  [JobTerminationReason.LOG_QUOTA_EXCEEDED, JobStatus.FAILED],
  [JobTerminationReason.MAX_DURATION_EXCEEDED, JobStatus.TERMINATED],
]);

/** The status a terminating job ends in, given why it terminates. */
export function jobStatusForReason(reason: JobTerminationReason): JobStatus {
  const s = JOB_REASON_STATUS.get(reason);
  if (s === undefined) throw new RangeError(`unknown job termination reason ${reason}`);
  return s;
}

const RUN_REASON_STATUS: ReadonlyMap<RunTerminationReason, RunStatus> = new Map([
  [RunTerminationReason.ALL_JOBS_DONE, RunStatus.DONE],
  [RunTerminationReason.JOB_FAILED, RunStatus.FAILED],
  [RunTerminationReason.RETRY_LIMIT_EXCEEDED, RunStatus.FAILED],
  [RunTerminationReason.SERVER_ERROR, RunStatus.FAILED],
  [RunTerminationReason.GATEWAY_ERROR, RunStatus.FAILED],
  [RunTerminationReason.STOPPED_BY_USER, RunStatus.TERMINATED],
  [RunTerminationReason.ABORTED_BY_USER, RunStatus.TERMINATED],
]);

export function runStatusForReason(reason: RunTerminationReason): RunStatus {
  const s = RUN_REASON_STATUS.get(reason);
  if (s === undefined) throw new RangeError(`unknown run termination reason ${reason}`);
  return s;
}

const RUN_REASON_TO_JOB_REASON: ReadonlyMap<RunTerminationReason, JobTerminationReason> = new Map([
  [RunTerminationReason.ALL_JOBS_DONE, JobTerminationReason.DONE_BY_RUNNER],
  [RunTerminationReason.JOB_FAILED, JobTerminationReason.TERMINATED_BY_SERVER],
  [RunTerminationReason.RETRY_LIMIT_EXCEEDED, JobTerminationReason.TERMINATED_BY_SERVER],
  [RunTerminationReason.SERVER_ERROR, JobTerminationReason.TERMINATED_BY_SERVER],
  [RunTerminationReason.GATEWAY_ERROR, JobTerminationReason.TERMINATED_BY_SERVER],
  [RunTerminationReason.STOPPED_BY_USER, JobTerminationReason.TERMINATED_BY_USER],
  [RunTerminationReason.ABORTED_BY_USER, JobTerminationReason.ABORTED_BY_USER],
]);

/** When a run terminates, the reason stamped on its still-active jobs. */
export function jobReasonForRunReason(reason: RunTerminationReason): JobTerminationReason {
  const r = RUN_REASON_TO_JOB_REASON.get(reason);
  if (r === undefined) throw new RangeError(`unknown run termination reason ${reason}`);
  return r;
}

// ---------------------------------------------------------------------------------------
// Retry policy

export type RetryEvent = "no-capacity" | "interruption" | "error";
export const RETRY_EVENTS: readonly RetryEvent[] = ["no-capacity", "interruption", "error"];

export interface RetryPolicy {
  onEvents: readonly RetryEvent[];
  /** Seconds a job keeps being retried, measured as described in `retryDecision`. */
  durationSeconds: number;
}

/** dstack's default window when `retry: true` or `duration` is left out. */
export const DEFAULT_RETRY_DURATION_SECONDS = 3600;

/**
 * The effective policy from a profile's `retry` (already parsed from YAML; durations in
 * seconds). `true` = every event for 1h; an object defaults `on_events` to every event and
 * `duration` to 1h; `false`/absent = no retry.
 */
export function resolveRetryPolicy(
  retry: boolean | { onEvents?: readonly RetryEvent[] | undefined; durationSeconds?: number | undefined } | null | undefined,
): RetryPolicy | null {
  if (retry === undefined || retry === null || retry === false) return null;
  if (retry === true) return { onEvents: RETRY_EVENTS, durationSeconds: DEFAULT_RETRY_DURATION_SECONDS };
  return {
    onEvents: retry.onEvents ?? RETRY_EVENTS,
    durationSeconds: retry.durationSeconds ?? DEFAULT_RETRY_DURATION_SECONDS,
  };
}

/** Which retry event a job termination counts as; null = never retried (done, stopped, aborted, scaled down). */
export function retryEventForReason(reason: JobTerminationReason): RetryEvent | null {
  if (reason === JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY) return "no-capacity";
  if (reason === JobTerminationReason.INTERRUPTED_BY_NO_CAPACITY) return "interruption";
  return JOB_REASON_STATUS.get(reason) === JobStatus.FAILED ? "error" : null;
}

export interface RetryContext {
  policy: RetryPolicy | null;
  reason: JobTerminationReason;
  /** When the run was submitted (or, for scheduled runs, the current trigger time). */
  runStartedAt: Date;
  /** `last_processed_at` of the latest submission of this job that got provisioned; null if none did. */
  lastProvisionedAt: Date | null;
  now: Date;
}

export type RetryDecision = "retry" | "not-retryable" | "limit-exceeded";

/**
 * Whether a failed job is resubmitted. A job that never got capacity is retried for
 * `duration` from the run's start; one that ran is retried for `duration` from when its
 * last provisioned submission was last seen, so a long healthy run still gets retries.
 */
export function retryDecision(ctx: RetryContext): RetryDecision {
  const event = retryEventForReason(ctx.reason);
  if (ctx.policy === null || event === null || !ctx.policy.onEvents.includes(event)) return "not-retryable";
  let since: Date;
  if (event === "no-capacity" && ctx.lastProvisionedAt === null) since = ctx.runStartedAt;
  else if (ctx.lastProvisionedAt !== null) since = ctx.lastProvisionedAt;
  else return "not-retryable"; // interrupted or errored without ever being provisioned: nothing to resume
  const elapsedMs = ctx.now.getTime() - since.getTime();
  return elapsedMs > ctx.policy.durationSeconds * 1000 ? "limit-exceeded" : "retry";
}

/** Delay before resubmission number `attempt` (0 = first retry): 15s, 30s, 1m, 2m, 5m, then 10m. */
export const RETRY_BACKOFF_MS: readonly number[] = [15_000, 30_000, 60_000, 120_000, 300_000, 600_000];

export function retryBackoffMs(attempt: number): number {
  const i = Math.min(Math.max(0, Math.floor(attempt)), RETRY_BACKOFF_MS.length - 1);
  return RETRY_BACKOFF_MS[i]!;
}

/** A pending run is resubmitted once its backoff has passed, or at its cron trigger. */
export function isPendingRunDue(p: { attempt: number; pendingSince: Date; nextTriggeredAt: Date | null; now: Date }): boolean {
  if (p.nextTriggeredAt !== null) return p.now.getTime() >= p.nextTriggeredAt.getTime();
  return p.now.getTime() - p.pendingSince.getTime() >= retryBackoffMs(p.attempt);
}

// ---------------------------------------------------------------------------------------
// Run status derived from its jobs

export interface JobView {
  replicaNum: number;
  jobNum: number;
  status: JobStatus;
  terminationReason: JobTerminationReason | null;
  /** Only consulted for failed jobs. */
  retry: Omit<RetryContext, "reason"> | null;
}

export interface RunDerivation {
  status: RunStatus;
  terminationReason: RunTerminationReason | null;
  /** Replicas to stop and resubmit as a whole (a multi-node replica is retried together). */
  replicasToRetry: number[];
}

/**
 * The status an active run moves to, from the latest submission of each of its jobs.
 * Priority: a non-retryable failure ends the run (job_failed, else retry_limit_exceeded);
 * `stop_criteria: master-done` with job 0 done ends it; then running > provisioning >
 * submitted; all done → all_jobs_done; nothing active but replicas to retry → pending.
 */
export function deriveRunStatus(jobs: readonly JobView[], opts: { stopOnMasterDone?: boolean } = {}): RunDerivation {
  const contributed = new Set<RunStatus>();
  const reasons = new Set<RunTerminationReason>();
  const retrying: number[] = [];
  const byReplica = new Map<number, JobView[]>();
  for (const j of jobs) byReplica.set(j.replicaNum, [...(byReplica.get(j.replicaNum) ?? []), j]);

  for (const [replicaNum, replicaJobs] of [...byReplica].sort((a, b) => a[0] - b[0])) {
    const mine = new Set<RunStatus>();
    const myReasons = new Set<RunTerminationReason>();
    let needsRetry = false;
    for (const j of replicaJobs) {
      const reason = j.terminationReason;
      if (j.status === JobStatus.DONE || (j.status === JobStatus.TERMINATING && reason === JobTerminationReason.DONE_BY_RUNNER)) {
        mine.add(RunStatus.DONE);
      } else if (reason === JobTerminationReason.SCALED_DOWN) {
        // a removed replica says nothing about the run
      } else if (j.status === JobStatus.RUNNING) {
        mine.add(RunStatus.RUNNING);
      } else if (j.status === JobStatus.PROVISIONING || j.status === JobStatus.PULLING) {
        mine.add(RunStatus.PROVISIONING);
      } else if (j.status === JobStatus.SUBMITTED) {
        mine.add(RunStatus.SUBMITTED);
      } else {
        // failed, or terminating/terminated/aborted for a reason other than done/scaled-down
        const decision =
          reason === null || j.retry === null ? "not-retryable" : retryDecision({ ...j.retry, reason });
        if (decision === "retry") needsRetry = true;
        else {
          mine.add(RunStatus.FAILED);
          myReasons.add(decision === "limit-exceeded" ? RunTerminationReason.RETRY_LIMIT_EXCEEDED : RunTerminationReason.JOB_FAILED);
        }
      }
    }
    if (mine.has(RunStatus.FAILED)) {
      contributed.add(RunStatus.FAILED);
      for (const r of myReasons) reasons.add(r);
    } else if (needsRetry) {
      retrying.push(replicaNum);
    } else {
      for (const s of mine) contributed.add(s);
    }
  }

  if (contributed.has(RunStatus.FAILED)) {
    const reason = reasons.has(RunTerminationReason.JOB_FAILED) ? RunTerminationReason.JOB_FAILED : RunTerminationReason.RETRY_LIMIT_EXCEEDED;
    return { status: RunStatus.TERMINATING, terminationReason: reason, replicasToRetry: [] };
  }
  if (opts.stopOnMasterDone && jobs.some((j) => j.jobNum === 0 && j.status === JobStatus.DONE)) {
    return { status: RunStatus.TERMINATING, terminationReason: RunTerminationReason.ALL_JOBS_DONE, replicasToRetry: [] };
  }
  for (const s of [RunStatus.RUNNING, RunStatus.PROVISIONING, RunStatus.SUBMITTED]) {
    if (contributed.has(s)) return { status: s, terminationReason: null, replicasToRetry: retrying };
  }
  if (retrying.length === 0) {
    // Everything finished well (or there were no jobs left to watch).
    return { status: RunStatus.TERMINATING, terminationReason: RunTerminationReason.ALL_JOBS_DONE, replicasToRetry: [] };
  }
  // Nothing is active any more and some replicas wait for a retry: the run waits out the backoff.
  return { status: RunStatus.PENDING, terminationReason: null, replicasToRetry: retrying };
}

// ---------------------------------------------------------------------------------------
// Multi-node startup order

/**
 * Whether node `jobNum` of a replica may get its job now (dstack's startup_order): any node at
 * once; master-first: workers wait for the master (job 0) to run; workers-first: the master
 * waits for every worker to run. `nodes` are the replica's latest submissions.
 */
export function mayStartNode(order: "any" | "master-first" | "workers-first" | undefined, jobNum: number, nodes: readonly { jobNum: number; status: JobStatus }[]): boolean {
  if (order === "master-first" && jobNum !== 0) return nodes.some((n) => n.jobNum === 0 && n.status === JobStatus.RUNNING);
  if (order === "workers-first" && jobNum === 0) return nodes.filter((n) => n.jobNum !== 0).every((n) => n.status === JobStatus.RUNNING);
  return true;
}
