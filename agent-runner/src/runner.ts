// The runner's core: holds the control link, serves SubmitJob/StopJob/GetMetrics/Ping, runs one
// job, ships logs, and decides when to exit: after every log entry is acknowledged and then the
// job's final state is out (or the waits ran out), like dstack's wait_logs_finished. The final
// state waits for the logs so that a server that sees the job finished has all its output and a
// log follower that ends there misses nothing — also after a reconnect, where the state report
// would otherwise overtake the entries still spooled.
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { durationMs, timestampNow } from "@bufbuild/protobuf/wkt";
import type { Transport } from "@connectrpc/connect";
import {
  JobState,
  LinkErrorCode,
  LogStream,
  PingResultSchema,
  RunnerState,
  StopJobResultSchema,
  SubmitJobResultSchema,
  type JobStateChanged,
  type SubmitJobCommand,
  type SubmitJobResult,
} from "@dstack/proto/agent";
import { JobTerminationReason } from "@dstack/proto/api";
import { connectLink, LinkCallError, type BackoffOptions, type LinkClient } from "@dstack/proto/link";
import { DEFAULT_STOP_GRACE_MS, Job, type JobDeps } from "./job/job.js";
import { collectMetrics } from "./metrics/index.js";
import { LogPusher } from "./logs/pusher.js";
import { RUNNER_VERSION } from "./version.js";

export interface RunnerOptions {
  /** The runner's home: identity/, logs/, blobs/. */
  home: string;
  /** Where the identity store lives (default `<home>/identity`). */
  identityDir?: string;
  /** This runner's job submission id (its certificate identity). */
  jobSubmissionId: string;
  /** A fresh mTLS connection for LogService and CodeService. */
  connect(): { transport: Transport; close(): void };
  /** Exit when no SubmitJob comes within this long; default 5 min (dstack). */
  submitTimeoutMs?: number;
  /** Longest wait for log acks and the final state's delivery after the job; default 60 s. */
  finishTimeoutMs?: number;
  linkBackoff?: Partial<BackoffOptions>;
  logBackoff?: Partial<BackoffOptions>;
  /** Overrides for the job (tests: file checks, uid). */
  jobDeps?: Partial<JobDeps>;
  /** Where the runner's own diagnostics go besides the RUNNER log stream; default stderr. */
  stderr?: (line: string) => void;
  /** cgroup root for GetMetrics; default /sys/fs/cgroup. */
  cgroupRoot?: string;
}

export const RUNNER_DEFAULTS = { submitTimeoutMs: 5 * 60_000, finishTimeoutMs: 60_000 } as const;

export class Runner {
  private runnerState = RunnerState.WAIT_SUBMIT;
  private readonly jobStates: JobStateChanged[] = [];
  /** The job's final state, held back from jobStates (and the server) until its logs are in. */
  private finalState: JobStateChanged | null = null;
  /** How many of jobStates the server has certainly been told (sent on a live stream or in an accepted report). */
  private deliveredStates = 0;
  private reportedStates = 0;
  private job: Job | null = null;
  private submitResult: SubmitJobResult | null = null;
  private stoppedBeforeSubmit = false;
  private submitTimedOut = false;
  private closing = false;
  private link: LinkClient | null = null;
  readonly logs: LogPusher;
  private readonly ended: Promise<void>;
  private endNow!: () => void;
  private deliveredWaiters: (() => void)[] = [];

  constructor(private readonly o: RunnerOptions) {
    this.logs = new LogPusher({ jobSubmissionId: o.jobSubmissionId, dir: join(o.home, "logs"), connect: o.connect, backoff: o.logBackoff });
    this.logs.on("overflow", () => this.stderr("log spool full: new output is being dropped until the server acknowledges"));
    let lastErr = "";
    this.logs.on("error", (e) => {
      if (this.closing) return; // our own close aborts the stream
      const m = e instanceof Error ? e.message : String(e);
      if (m !== lastErr) this.stderr(`log push: ${m}`); // the same failure once, not per retry
      lastErr = m;
    });
    this.ended = new Promise((r) => (this.endNow = r));
  }

  get state(): RunnerState {
    return this.runnerState;
  }

  /** Runs until the job is over and its logs are delivered; resolves with the exit code. */
  async run(): Promise<number> {
    this.logs.start();
    this.link = connectLink({
      kind: "runner",
      home: this.o.identityDir ?? join(this.o.home, "identity"),
      backoff: this.o.linkBackoff,
      stateReport: () => {
        this.reportedStates = this.jobStates.length;
        return { agentVersion: RUNNER_VERSION, runnerState: this.runnerState, jobSubmissionId: this.o.jobSubmissionId, jobStates: [...this.jobStates] };
      },
      handlers: {
        submitJob: (cmd) => this.submit(cmd),
        stopJob: (cmd) => {
          const grace = cmd.grace ? durationMs(cmd.grace) : DEFAULT_STOP_GRACE_MS;
          this.stop(grace, cmd.reason || JobTerminationReason.TERMINATED_BY_SERVER, "stopped by the server");
          return create(StopJobResultSchema, {});
        },
        getMetrics: async () => {
          try {
            return await collectMetrics({ cgroupRoot: this.o.cgroupRoot });
          } catch (e) {
            throw new LinkCallError(`no metrics: ${e instanceof Error ? e.message : String(e)}`, LinkErrorCode.UNAVAILABLE);
          }
        },
        ping: () => create(PingResultSchema, { agentTime: timestampNow() }),
      },
    });
    this.link.on("connected", () => {
      // The accepted report covered the states recorded before it; later ones go again as events.
      this.markDelivered(this.reportedStates);
      for (let i = this.reportedStates; i < this.jobStates.length; i++) this.sendState(i);
    });
    let lastLinkErr = "";
    this.link.on("error", (e) => {
      if (this.closing) return;
      const m = e instanceof Error ? e.message : String(e);
      if (m !== lastLinkErr) this.diag(`link: ${m}`);
      lastLinkErr = m;
    });
    this.diag(`dstack-runner ${RUNNER_VERSION} serving job submission ${this.o.jobSubmissionId}`);

    const submitTimer = setTimeout(() => {
      if (!this.job) {
        this.diag(`no job submitted within ${Math.round((this.o.submitTimeoutMs ?? RUNNER_DEFAULTS.submitTimeoutMs) / 1000)} s; exiting`);
        this.stoppedBeforeSubmit = true;
        this.submitTimedOut = true;
        this.endNow();
      }
    }, this.o.submitTimeoutMs ?? RUNNER_DEFAULTS.submitTimeoutMs);
    await this.ended;
    clearTimeout(submitTimer);
    const final = this.job ? await this.job.done : null;

    this.runnerState = RunnerState.WAIT_LOGS_FINISHED;
    const timeout = this.o.finishTimeoutMs ?? RUNNER_DEFAULTS.finishTimeoutMs;
    const logsOk = await this.logs.drain(timeout);
    if (this.finalState) {
      this.jobStates.push(this.finalState);
      this.sendState(this.jobStates.length - 1);
    }
    const statesOk = await this.waitDelivered(timeout);
    if (!logsOk) this.stderr(`${this.logs.unacked} log entries still unacknowledged after ${timeout / 1000} s; exiting anyway`);
    if (!statesOk) this.stderr(`could not tell the server the final job state within ${timeout / 1000} s; exiting anyway`);
    this.closing = true;
    await this.link.close();
    await this.logs.close();
    return final || !this.submitTimedOut ? 0 : 1;
  }

  /** Stops the job (or, before one came, the runner). */
  stop(graceMs: number, reason: JobTerminationReason, message: string): void {
    if (this.job) this.job.stop(graceMs, reason, message);
    else if (!this.stoppedBeforeSubmit) {
      this.stoppedBeforeSubmit = true;
      this.diag("stopped before a job was submitted");
      this.endNow();
    }
  }

  private submit(cmd: SubmitJobCommand): SubmitJobResult {
    if (cmd.jobSubmissionId !== this.o.jobSubmissionId) {
      throw new LinkCallError(`this runner serves job submission ${this.o.jobSubmissionId}, not ${cmd.jobSubmissionId}`, LinkErrorCode.FAILED_PRECONDITION);
    }
    if (this.submitResult) return this.submitResult; // re-sent SubmitJob: same answer, nothing runs twice
    if (this.stoppedBeforeSubmit) throw new LinkCallError("the runner was stopped before the job was submitted", LinkErrorCode.FAILED_PRECONDITION);
    const job = new Job(cmd, {
      blobDir: join(this.o.home, "blobs"),
      scratchDir: this.o.home,
      connect: this.o.connect,
      output: (stream, data) => this.logs.append(stream, data),
      diag: (m) => this.diag(m),
      onState: (s) => this.onJobState(s),
      ...this.o.jobDeps,
    });
    this.job = job;
    this.runnerState = RunnerState.WAIT_RUN;
    this.submitResult = create(SubmitJobResultSchema, { workingDir: job.workingDir, username: job.user.username });
    job.start();
    return this.submitResult;
  }

  private onJobState(s: JobStateChanged): void {
    if (s.state === JobState.DONE || s.state === JobState.FAILED || s.state === JobState.TERMINATED) {
      // Told in run(), once the logs (this line included) are acknowledged.
      this.finalState = s;
      this.diag(`job ${JobState[s.state]}${s.exitStatus !== undefined ? ` (exit status ${s.exitStatus})` : ""}`);
      this.endNow();
      return;
    }
    this.jobStates.push(s);
    if (s.state === JobState.RUNNING) this.runnerState = RunnerState.SERVE_LOGS;
    this.sendState(this.jobStates.length - 1);
  }

  private sendState(i: number): void {
    const s = this.jobStates[i]!;
    if (this.link?.sendEvent({ event: { case: "jobStateChanged", value: s } }) && this.link.connected) this.markDelivered(i + 1);
  }

  private markDelivered(n: number): void {
    if (n <= this.deliveredStates) return;
    this.deliveredStates = n;
    if (this.deliveredStates >= this.jobStates.length) for (const w of this.deliveredWaiters.splice(0)) w();
  }

  private waitDelivered(timeoutMs: number): Promise<boolean> {
    if (this.deliveredStates >= this.jobStates.length) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      this.deliveredWaiters.push(() => (clearTimeout(t), resolve(true)));
    });
  }

  /** The runner's own log line: stderr (docker logs) and the RUNNER stream (dstack's runner logs). */
  diag(message: string): void {
    this.stderr(message);
    this.logs.append(LogStream.RUNNER, Buffer.from(`${message}\n`));
  }

  private stderr(message: string): void {
    const line = `${new Date().toISOString()} dstack-runner: ${message}`;
    if (this.o.stderr) this.o.stderr(line);
    else process.stderr.write(line + "\n");
  }
}
