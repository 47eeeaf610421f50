import { describe, expect, it } from "vitest";
import { InstanceStatus as I, JobStatus as J, JobTerminationReason as JR, RunStatus as R, RunTerminationReason as RR } from "../domain/enums.js";
import { isDstackError } from "../errors.js";
import {
  INSTANCE_TRANSITIONS,
  JOB_TRANSITIONS,
  RUN_TRANSITIONS,
  assertJobTransition,
  canTransitionInstance,
  canTransitionJob,
  canTransitionRun,
  deriveRunStatus,
  isPendingRunDue,
  jobReasonForRunReason,
  jobStatusForReason,
  resolveRetryPolicy,
  retryBackoffMs,
  retryDecision,
  retryEventForReason,
  runStatusForReason,
  type JobView,
  type RetryPolicy,
  mayStartNode,
} from "./state-machines.js";

const members = <E extends Record<string, string | number>>(e: E) =>
  Object.values(e).filter((v): v is E[keyof E] & number => typeof v === "number" && v !== 0);

describe("transition tables", () => {
  it("cover every status the protobuf contract defines", () => {
    expect([...RUN_TRANSITIONS.keys()].sort()).toEqual(members(R).sort());
    expect([...JOB_TRANSITIONS.keys()].sort()).toEqual(members(J).sort());
    expect([...INSTANCE_TRANSITIONS.keys()].sort()).toEqual(members(I).sort());
  });
});

describe("run transitions", () => {
  it.each<[R, R, boolean]>([
    [R.PENDING, R.SUBMITTED, true],
    [R.PENDING, R.TERMINATING, true],
    [R.PENDING, R.RUNNING, false],
    [R.SUBMITTED, R.PROVISIONING, true],
    [R.SUBMITTED, R.RUNNING, true],
    [R.PROVISIONING, R.RUNNING, true],
    [R.RUNNING, R.PENDING, true],
    [R.RUNNING, R.SUBMITTED, true],
    [R.RUNNING, R.DONE, false],
    [R.TERMINATING, R.DONE, true],
    [R.TERMINATING, R.FAILED, true],
    [R.TERMINATING, R.TERMINATED, true],
    [R.TERMINATING, R.PENDING, true],
    [R.TERMINATING, R.RUNNING, false],
    [R.DONE, R.SUBMITTED, false],
    [R.FAILED, R.PENDING, false],
    [R.TERMINATED, R.TERMINATING, false],
  ])("%s → %s allowed: %s", (from, to, ok) => expect(canTransitionRun(from, to)).toBe(ok));

  it("every active status can start terminating; no finished status can move", () => {
    for (const s of [R.PENDING, R.SUBMITTED, R.PROVISIONING, R.RUNNING]) expect(canTransitionRun(s, R.TERMINATING)).toBe(true);
    for (const s of [R.DONE, R.FAILED, R.TERMINATED]) for (const t of members(R)) expect(canTransitionRun(s, t)).toBe(false);
  });
});

describe("job transitions", () => {
  it.each<[J, J, boolean]>([
    [J.SUBMITTED, J.PROVISIONING, true],
    [J.SUBMITTED, J.RUNNING, false],
    [J.PROVISIONING, J.PULLING, true],
    [J.PROVISIONING, J.RUNNING, true],
    [J.PULLING, J.RUNNING, true],
    [J.PULLING, J.PROVISIONING, false],
    [J.RUNNING, J.TERMINATING, true],
    [J.RUNNING, J.DONE, false],
    [J.TERMINATING, J.DONE, true],
    [J.TERMINATING, J.ABORTED, true],
    [J.TERMINATING, J.RUNNING, false],
    [J.FAILED, J.SUBMITTED, false],
  ])("%s → %s allowed: %s", (from, to, ok) => expect(canTransitionJob(from, to)).toBe(ok));

  it("every active status can start terminating", () => {
    for (const s of [J.SUBMITTED, J.PROVISIONING, J.PULLING, J.RUNNING]) expect(canTransitionJob(s, J.TERMINATING)).toBe(true);
  });

  it("a forbidden transition throws a catalogued error naming both statuses", () => {
    try {
      assertJobTransition(J.DONE, J.RUNNING);
      expect.unreachable();
    } catch (e) {
      expect(isDstackError(e, "DSTACK_INVALID_TRANSITION")).toBe(true);
      expect((e as Error).message).toBe("Job cannot move from 'done' to 'running'.");
    }
  });
});

describe("instance transitions", () => {
  it.each<[I, I, boolean]>([
    [I.PENDING, I.PROVISIONING, true],
    [I.PENDING, I.TERMINATED, true],
    [I.PROVISIONING, I.IDLE, true],
    [I.PROVISIONING, I.BUSY, true],
    [I.IDLE, I.BUSY, true],
    [I.BUSY, I.IDLE, true],
    [I.IDLE, I.TERMINATING, true],
    [I.BUSY, I.TERMINATED, false],
    [I.TERMINATING, I.TERMINATED, true],
    [I.TERMINATING, I.IDLE, false],
    [I.TERMINATED, I.PENDING, false],
  ])("%s → %s allowed: %s", (from, to, ok) => expect(canTransitionInstance(from, to)).toBe(ok));
});

describe("termination reason → final status", () => {
  it.each<[JR, J]>([
    [JR.FAILED_TO_START_DUE_TO_NO_CAPACITY, J.FAILED],
    [JR.INTERRUPTED_BY_NO_CAPACITY, J.FAILED],
    [JR.INSTANCE_UNREACHABLE, J.FAILED],
    [JR.INSTANCE_ACCESS_REVOKED, J.FAILED],
    [JR.WAITING_INSTANCE_LIMIT_EXCEEDED, J.FAILED],
    [JR.WAITING_RUNNER_LIMIT_EXCEEDED, J.FAILED],
    [JR.VOLUME_ERROR, J.FAILED],
    [JR.GATEWAY_ERROR, J.FAILED],
    [JR.TERMINATED_BY_USER, J.TERMINATED],
    [JR.SCALED_DOWN, J.TERMINATED],
    [JR.TERMINATED_BY_SERVER, J.TERMINATED],
    [JR.INACTIVITY_DURATION_EXCEEDED, J.TERMINATED],
    [JR.TERMINATED_DUE_TO_UTILIZATION_POLICY, J.TERMINATED],
    [JR.DONE_BY_RUNNER, J.DONE],
    [JR.ABORTED_BY_USER, J.ABORTED],
    [JR.CONTAINER_EXITED_WITH_ERROR, J.FAILED],
    [JR.PORTS_BINDING_FAILED, J.FAILED],
    [JR.CREATING_CONTAINER_ERROR, J.FAILED],
    [JR.EXECUTOR_ERROR, J.FAILED],
    [JR.LOG_QUOTA_EXCEEDED, J.FAILED],
    [JR.MAX_DURATION_EXCEEDED, J.TERMINATED],
  ])("job reason %s ends %s", (reason, status) => expect(jobStatusForReason(reason)).toBe(status));

  it("every job termination reason has a final status", () => {
    for (const r of members(JR)) expect([J.FAILED, J.TERMINATED, J.DONE, J.ABORTED]).toContain(jobStatusForReason(r));
  });

  it.each<[RR, R, JR]>([
    [RR.ALL_JOBS_DONE, R.DONE, JR.DONE_BY_RUNNER],
    [RR.JOB_FAILED, R.FAILED, JR.TERMINATED_BY_SERVER],
    [RR.RETRY_LIMIT_EXCEEDED, R.FAILED, JR.TERMINATED_BY_SERVER],
    [RR.SERVER_ERROR, R.FAILED, JR.TERMINATED_BY_SERVER],
    [RR.GATEWAY_ERROR, R.FAILED, JR.TERMINATED_BY_SERVER],
    [RR.STOPPED_BY_USER, R.TERMINATED, JR.TERMINATED_BY_USER],
    [RR.ABORTED_BY_USER, R.TERMINATED, JR.ABORTED_BY_USER],
  ])("run reason %s ends %s and stamps jobs %s", (reason, status, jobReason) => {
    expect(runStatusForReason(reason)).toBe(status);
    expect(jobReasonForRunReason(reason)).toBe(jobReason);
  });

  it("every run termination reason is mapped", () => {
    for (const r of members(RR)) expect(() => runStatusForReason(r)).not.toThrow();
  });
});

describe("retry", () => {
  const all: RetryPolicy = { onEvents: ["no-capacity", "interruption", "error"], durationSeconds: 3600 };
  const t0 = new Date("2025-01-01T00:00:00Z");
  const at = (s: number) => new Date(t0.getTime() + s * 1000);

  it.each([
    [JR.FAILED_TO_START_DUE_TO_NO_CAPACITY, "no-capacity"],
    [JR.INTERRUPTED_BY_NO_CAPACITY, "interruption"],
    [JR.CONTAINER_EXITED_WITH_ERROR, "error"],
    [JR.INSTANCE_UNREACHABLE, "error"],
    [JR.DONE_BY_RUNNER, null],
    [JR.TERMINATED_BY_USER, null],
    [JR.ABORTED_BY_USER, null],
    [JR.SCALED_DOWN, null],
    [JR.MAX_DURATION_EXCEEDED, null],
  ] as const)("reason %s counts as retry event %s", (reason, event) => expect(retryEventForReason(reason)).toBe(event));

  it("resolves `retry: true`, object defaults and off", () => {
    expect(resolveRetryPolicy(true)).toEqual(all);
    expect(resolveRetryPolicy({ onEvents: ["error"] })).toEqual({ onEvents: ["error"], durationSeconds: 3600 });
    expect(resolveRetryPolicy({ durationSeconds: 60 })).toEqual({ ...all, durationSeconds: 60 });
    expect(resolveRetryPolicy(false)).toBeNull();
    expect(resolveRetryPolicy(undefined)).toBeNull();
  });

  it.each<[string, RetryPolicy | null, JR, Date | null, Date, string]>([
    ["no policy", null, JR.CONTAINER_EXITED_WITH_ERROR, t0, at(1), "not-retryable"],
    ["event not listed", { onEvents: ["no-capacity"], durationSeconds: 3600 }, JR.CONTAINER_EXITED_WITH_ERROR, t0, at(1), "not-retryable"],
    ["stopped by user", all, JR.TERMINATED_BY_USER, t0, at(1), "not-retryable"],
    ["no capacity, within window from run start", all, JR.FAILED_TO_START_DUE_TO_NO_CAPACITY, null, at(3599), "retry"],
    ["no capacity, window from run start exceeded", all, JR.FAILED_TO_START_DUE_TO_NO_CAPACITY, null, at(3601), "limit-exceeded"],
    ["error after provisioning, measured from last provisioned", all, JR.CONTAINER_EXITED_WITH_ERROR, at(7000), at(7000 + 3599), "retry"],
    ["error after provisioning, exceeded", all, JR.CONTAINER_EXITED_WITH_ERROR, at(7000), at(7000 + 3601), "limit-exceeded"],
    ["interruption never provisioned", all, JR.INTERRUPTED_BY_NO_CAPACITY, null, at(1), "not-retryable"],
    ["interruption after provisioning", all, JR.INTERRUPTED_BY_NO_CAPACITY, at(100), at(200), "retry"],
  ])("%s → %s", (_name, policy, reason, lastProvisionedAt, now, expected) => {
    expect(retryDecision({ policy, reason, runStartedAt: t0, lastProvisionedAt, now })).toBe(expected);
  });

  it.each([
    [0, 15_000],
    [1, 30_000],
    [2, 60_000],
    [3, 120_000],
    [4, 300_000],
    [5, 600_000],
    [6, 600_000],
    [50, 600_000],
  ])("backoff before resubmission %i is %i ms", (attempt, ms) => expect(retryBackoffMs(attempt)).toBe(ms));

  it("a pending run is due after its backoff, or at its cron trigger", () => {
    expect(isPendingRunDue({ attempt: 0, pendingSince: t0, nextTriggeredAt: null, now: at(14) })).toBe(false);
    expect(isPendingRunDue({ attempt: 0, pendingSince: t0, nextTriggeredAt: null, now: at(15) })).toBe(true);
    expect(isPendingRunDue({ attempt: 3, pendingSince: t0, nextTriggeredAt: null, now: at(100) })).toBe(false);
    expect(isPendingRunDue({ attempt: 0, pendingSince: t0, nextTriggeredAt: at(500), now: at(499) })).toBe(false);
    expect(isPendingRunDue({ attempt: 0, pendingSince: t0, nextTriggeredAt: at(500), now: at(500) })).toBe(true);
  });
});

describe("run status derived from jobs", () => {
  const t0 = new Date("2025-01-01T00:00:00Z");
  const policy: RetryPolicy = { onEvents: ["no-capacity", "interruption", "error"], durationSeconds: 3600 };
  const retryable = { policy, runStartedAt: t0, lastProvisionedAt: t0, now: new Date(t0.getTime() + 60_000) };
  const expired = { ...retryable, now: new Date(t0.getTime() + 7200_000) };
  const job = (replicaNum: number, jobNum: number, status: J, reason: JR | null = null, retry: JobView["retry"] = null): JobView => ({
    replicaNum,
    jobNum,
    status,
    terminationReason: reason,
    retry,
  });

  it.each<[string, JobView[], R, RR | null, number[]]>([
    ["one running job", [job(0, 0, J.RUNNING)], R.RUNNING, null, []],
    ["running beats provisioning", [job(0, 0, J.RUNNING), job(1, 0, J.PULLING)], R.RUNNING, null, []],
    ["pulling counts as provisioning", [job(0, 0, J.PULLING), job(1, 0, J.SUBMITTED)], R.PROVISIONING, null, []],
    ["still waiting", [job(0, 0, J.SUBMITTED)], R.SUBMITTED, null, []],
    ["all done", [job(0, 0, J.DONE), job(0, 1, J.DONE)], R.TERMINATING, RR.ALL_JOBS_DONE, []],
    ["terminating with done_by_runner counts as done", [job(0, 0, J.TERMINATING, JR.DONE_BY_RUNNER)], R.TERMINATING, RR.ALL_JOBS_DONE, []],
    ["one done, one running", [job(0, 0, J.DONE), job(1, 0, J.RUNNING)], R.RUNNING, null, []],
    ["failure without retry ends the run even if another runs", [job(0, 0, J.FAILED, JR.CONTAINER_EXITED_WITH_ERROR), job(1, 0, J.RUNNING)], R.TERMINATING, RR.JOB_FAILED, []],
    ["failure past the retry window", [job(0, 0, J.FAILED, JR.CONTAINER_EXITED_WITH_ERROR, expired)], R.TERMINATING, RR.RETRY_LIMIT_EXCEEDED, []],
    ["job_failed wins over retry_limit_exceeded", [job(0, 0, J.FAILED, JR.EXECUTOR_ERROR, expired), job(1, 0, J.FAILED, JR.EXECUTOR_ERROR)], R.TERMINATING, RR.JOB_FAILED, []],
    ["retryable failure, nothing else active → pending", [job(0, 0, J.FAILED, JR.CONTAINER_EXITED_WITH_ERROR, retryable)], R.PENDING, null, [0]],
    ["retryable replica while another serves → keep running and retry it", [job(0, 0, J.RUNNING), job(1, 0, J.FAILED, JR.INSTANCE_UNREACHABLE, retryable)], R.RUNNING, null, [1]],
    ["multi-node replica retried as a whole", [job(0, 0, J.RUNNING), job(0, 1, J.FAILED, JR.INTERRUPTED_BY_NO_CAPACITY, retryable)], R.PENDING, null, [0]],
    ["scaled-down replicas are ignored", [job(0, 0, J.TERMINATED, JR.SCALED_DOWN), job(1, 0, J.RUNNING)], R.RUNNING, null, []],
    ["stopped by server counts as failure", [job(0, 0, J.TERMINATED, JR.TERMINATED_BY_SERVER)], R.TERMINATING, RR.JOB_FAILED, []],
    ["done replica plus retrying replica → pending", [job(0, 0, J.DONE), job(1, 0, J.FAILED, JR.EXECUTOR_ERROR, retryable)], R.PENDING, null, [1]],
  ])("%s", (_name, jobs, status, reason, retry) => {
    expect(deriveRunStatus(jobs)).toEqual({ status, terminationReason: reason, replicasToRetry: retry });
  });

  it("stop_criteria master-done ends the run when job 0 is done", () => {
    const jobs = [job(0, 0, J.DONE), job(0, 1, J.RUNNING)];
    expect(deriveRunStatus(jobs).status).toBe(R.RUNNING);
    expect(deriveRunStatus(jobs, { stopOnMasterDone: true })).toEqual({ status: R.TERMINATING, terminationReason: RR.ALL_JOBS_DONE, replicasToRetry: [] });
  });
});

describe("mayStartNode (startup_order)", () => {
  const nodes = (...s: J[]) => s.map((status, jobNum) => ({ jobNum, status }));
  it("any: every node at once", () => {
    expect(mayStartNode("any", 1, nodes(J.PULLING, J.PULLING))).toBe(true);
    expect(mayStartNode(undefined, 0, nodes(J.PULLING, J.PULLING))).toBe(true);
  });
  it("master-first: workers wait for the master to run; the master never waits", () => {
    expect(mayStartNode("master-first", 0, nodes(J.PULLING, J.PULLING))).toBe(true);
    expect(mayStartNode("master-first", 1, nodes(J.PULLING, J.PULLING))).toBe(false);
    expect(mayStartNode("master-first", 2, nodes(J.RUNNING, J.PULLING, J.PULLING))).toBe(true);
  });
  it("workers-first: the master waits for every worker to run", () => {
    expect(mayStartNode("workers-first", 1, nodes(J.PULLING, J.PULLING))).toBe(true);
    expect(mayStartNode("workers-first", 0, nodes(J.PULLING, J.RUNNING, J.PULLING))).toBe(false);
    expect(mayStartNode("workers-first", 0, nodes(J.PULLING, J.RUNNING, J.RUNNING))).toBe(true);
  });
});
