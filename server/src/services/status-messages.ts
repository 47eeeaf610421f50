// The short status words dstack shows (`dstack ps` STATUS, JobSubmission/Run.status_message),
// decided here so every client shows the same. Jobs: "exited (0)", "exited (3)", "no fleets" /
// "no capacity", "interrupted", "error", "stopped", "aborted", "terminated", else the status.
// Runs: once finished, "stopped"/"aborted" when the user ended them, else their last job's words;
// while going, "pulling" when every job pulls, "retrying" while a job that found no capacity
// waits for its retry, else the status.
import { JobStatus, JobTerminationReason, RunStatus, RunTerminationReason, enumName } from "../domain/enums.js";
import { isRunFinished, type RetryPolicy } from "./state-machines.js";

/** The message `place()` gives a job no fleet of the project could ever take. */
export const NO_FLEET_MESSAGE = "No matching fleet found";

export interface SubmissionStatus {
  status: JobStatus;
  terminationReason: JobTerminationReason | number | null;
  terminationReasonMessage: string | null;
  exitStatus: number | null;
}

export function jobStatusMessage(s: SubmissionStatus): string {
  switch (s.status) {
    case JobStatus.DONE:
      return "exited (0)";
    case JobStatus.FAILED:
      switch (s.terminationReason) {
        case JobTerminationReason.CONTAINER_EXITED_WITH_ERROR:
          return `exited (${s.exitStatus ?? "?"})`;
        case JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY:
          return (s.terminationReasonMessage ?? "").includes(NO_FLEET_MESSAGE) ? "no fleets" : "no capacity";
        case JobTerminationReason.INTERRUPTED_BY_NO_CAPACITY:
          return "interrupted";
        default:
          return "error";
      }
    case JobStatus.TERMINATED:
      if (s.terminationReason === JobTerminationReason.TERMINATED_BY_USER) return "stopped";
      if (s.terminationReason === JobTerminationReason.ABORTED_BY_USER) return "aborted";
      return "terminated";
    default:
      return enumName(JobStatus, s.status);
  }
}

export interface RunJobStatus {
  /** The job's retry policy (of its latest spec; read only when needed); null = no retry. */
  retry(): RetryPolicy | null;
  /** Its submissions, oldest first. */
  submissions: readonly (SubmissionStatus & { submissionNum: number })[];
}

/**
 * `latest` is the run's latest submission (of any job); `jobs` every job of the run with its
 * submissions (empty when the run has none yet).
 */
export function runStatusMessage(run: { status: RunStatus; terminationReason: RunTerminationReason | null }, jobs: readonly RunJobStatus[], latest: SubmissionStatus | null): string {
  if (isRunFinished(run.status)) {
    // A run the user stopped says so, even if its last job had failed before (e.g. while retrying).
    if (run.terminationReason === RunTerminationReason.STOPPED_BY_USER) return "stopped";
    if (run.terminationReason === RunTerminationReason.ABORTED_BY_USER) return "aborted";
    return latest ? jobStatusMessage(latest) : enumName(RunStatus, run.status);
  }
  const lastOf = (j: RunJobStatus) => j.submissions[j.submissions.length - 1];
  if (jobs.length > 0 && jobs.every((j) => lastOf(j)?.status === JobStatus.PULLING)) return "pulling";
  if (run.status === RunStatus.SUBMITTED || run.status === RunStatus.PENDING) {
    const retrying = jobs.some((j) => {
      const ended = j.submissions.findLast((s) => s.terminationReason !== null && s.terminationReason !== 0);
      return ended?.terminationReason === JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY && (j.retry()?.onEvents.includes("no-capacity") ?? false);
    });
    if (retrying) return "retrying";
  }
  return enumName(RunStatus, run.status);
}
