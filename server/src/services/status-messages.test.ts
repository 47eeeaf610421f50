import { describe, expect, it } from "vitest";
import { JobStatus, JobTerminationReason, RunStatus, RunTerminationReason } from "../domain/enums.js";
import { jobStatusMessage, runStatusMessage, type RunJobStatus, type SubmissionStatus } from "./status-messages.js";
import { resolveRetryPolicy } from "./state-machines.js";

const sub = (status: JobStatus, terminationReason: JobTerminationReason | null = null, more: Partial<SubmissionStatus & { submissionNum: number }> = {}): SubmissionStatus & { submissionNum: number } => ({
  status,
  terminationReason,
  terminationReasonMessage: null,
  exitStatus: null,
  submissionNum: 0,
  ...more,
});
const job = (subs: ReturnType<typeof sub>[], retry = false): RunJobStatus => ({ submissions: subs, retry: () => (retry ? resolveRetryPolicy({ onEvents: ["no-capacity"] }) : null) });

describe("job status messages", () => {
  it.each([
    [sub(JobStatus.DONE, JobTerminationReason.DONE_BY_RUNNER, { exitStatus: 0 }), "exited (0)"],
    [sub(JobStatus.FAILED, JobTerminationReason.CONTAINER_EXITED_WITH_ERROR, { exitStatus: 3 }), "exited (3)"],
    [sub(JobStatus.FAILED, JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY, { terminationReasonMessage: "No matching fleet found" }), "no fleets"],
    [sub(JobStatus.FAILED, JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY), "no capacity"],
    [sub(JobStatus.FAILED, JobTerminationReason.INTERRUPTED_BY_NO_CAPACITY), "interrupted"],
    [sub(JobStatus.FAILED, JobTerminationReason.INSTANCE_UNREACHABLE), "error"],
    [sub(JobStatus.TERMINATED, JobTerminationReason.TERMINATED_BY_USER), "stopped"],
    [sub(JobStatus.TERMINATED, JobTerminationReason.ABORTED_BY_USER), "aborted"],
    [sub(JobStatus.TERMINATED, JobTerminationReason.TERMINATED_BY_SERVER), "terminated"],
    [sub(JobStatus.PULLING), "pulling"],
    [sub(JobStatus.RUNNING), "running"],
  ])("%o → %s", (s, text) => {
    expect(jobStatusMessage(s)).toBe(text);
  });
});

describe("run status messages", () => {
  const run = (status: RunStatus, terminationReason: RunTerminationReason | null = null) => ({ status, terminationReason });

  it("a finished run says what its last job did, or that the user ended it", () => {
    const failed = sub(JobStatus.FAILED, JobTerminationReason.CONTAINER_EXITED_WITH_ERROR, { exitStatus: 3 });
    expect(runStatusMessage(run(RunStatus.FAILED, RunTerminationReason.JOB_FAILED), [job([failed])], failed)).toBe("exited (3)");
    expect(runStatusMessage(run(RunStatus.TERMINATED, RunTerminationReason.STOPPED_BY_USER), [job([failed])], failed)).toBe("stopped");
    expect(runStatusMessage(run(RunStatus.TERMINATED, RunTerminationReason.ABORTED_BY_USER), [], null)).toBe("aborted");
    expect(runStatusMessage(run(RunStatus.DONE, RunTerminationReason.ALL_JOBS_DONE), [], null)).toBe("done");
  });

  it("'pulling' when every job pulls, 'retrying' while a job that found no capacity waits to retry", () => {
    expect(runStatusMessage(run(RunStatus.PROVISIONING), [job([sub(JobStatus.PULLING)]), job([sub(JobStatus.PULLING)])], null)).toBe("pulling");
    expect(runStatusMessage(run(RunStatus.PROVISIONING), [job([sub(JobStatus.PULLING)]), job([sub(JobStatus.PROVISIONING)])], null)).toBe("provisioning");
    const noCapacity = sub(JobStatus.FAILED, JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY);
    expect(runStatusMessage(run(RunStatus.PENDING), [job([noCapacity], true)], noCapacity)).toBe("retrying");
    expect(runStatusMessage(run(RunStatus.SUBMITTED), [job([noCapacity, sub(JobStatus.SUBMITTED, null, { submissionNum: 1 })], true)], null)).toBe("retrying");
    expect(runStatusMessage(run(RunStatus.PENDING), [job([noCapacity], false)], noCapacity)).toBe("pending");
    expect(runStatusMessage(run(RunStatus.RUNNING), [job([sub(JobStatus.RUNNING)])], null)).toBe("running");
  });
});
