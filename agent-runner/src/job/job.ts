// One job submission inside the container: prepare (working dir, code, archives, repo), run the
// commands in one shell, forward output, stop on request or at max_duration, report every state.
import { mkdirSync, writeFileSync } from "node:fs";
import { lchown, readdir } from "node:fs/promises";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { create } from "@bufbuild/protobuf";
import { durationMs, timestampNow } from "@bufbuild/protobuf/wkt";
import type { Transport } from "@connectrpc/connect";
import { JobState, JobStateChangedSchema, LinkErrorCode, LogStream, RunnerRepoType, type JobStateChanged, type SubmitJobCommand } from "@dstack/proto/agent";
import { JobTerminationReason } from "@dstack/proto/api";
import { LinkCallError } from "@dstack/proto/link";
import { downloadBlob } from "../code/download.js";
import { extractArchive } from "../code/extract.js";
import { prepareGitRepo } from "../code/git.js";
import { composeEnv, type ClusterFacts } from "../exec/env.js";
import { DEFAULT_TTY_SIZE, JobProcess, type Exit } from "../exec/process.js";
import { selectPython } from "../exec/python.js";
import { jobArgv } from "../exec/shell.js";
import { resolveUser, UserError, type ResolvedUser } from "../exec/user.js";
import { LineSplitter } from "../logs/splitter.js";

/** dstack's legacy repo dir, also its default working dir. */
export const DEFAULT_WORKING_DIR = "/workflow";
/** StopJob without a grace period. */
export const DEFAULT_STOP_GRACE_MS = 10_000;

export interface JobDeps {
  /** Where downloaded blobs go. */
  blobDir: string;
  /** Scratch space of the runner (git key files). */
  scratchDir: string;
  /** Connection for CodeService downloads. */
  connect(): { transport: Transport; close(): void };
  /** The job's output, already cut into entries. */
  output(stream: LogStream, data: Buffer): void;
  /** The runner's diagnostics about this job. */
  diag(message: string): void;
  /** Every job state change, in order. */
  onState(state: JobStateChanged): void;
  /** The container's environment; default process.env. */
  containerEnv?: Record<string, string | undefined>;
  /** File existence, for picking the shell; default fs.existsSync. */
  exists?: (path: string) => boolean;
  /** Where the MPI hostfile goes for multi-node jobs; default /dstack/mpi/hostfile. */
  mpiHostfile?: string;
  /** The runner's own uid (only root can switch users). */
  selfUid?: number;
  /** Where `python:` puts its python/python3 links; default /dstack/python/bin. */
  pythonShimDir?: string;
  /** Partial-line flush for output; default 100 ms. */
  partialFlushMs?: number;
}

type Stop = { reason: JobTerminationReason; message: string };

function expandHome(p: string, home: string): string {
  return p === "~" ? home : p.startsWith("~/") ? join(home, p.slice(2)) : p;
}

export class Job {
  readonly id: string;
  readonly workingDir: string;
  readonly repoDir: string;
  readonly user: ResolvedUser;
  /** Resolves with the final state. */
  readonly done: Promise<JobStateChanged>;
  private resolveDone!: (s: JobStateChanged) => void;
  private proc: JobProcess | null = null;
  private stopping: Stop | null = null;
  private stopGraceMs = DEFAULT_STOP_GRACE_MS;
  private readonly abort = new AbortController();
  private started = false;
  private final: JobStateChanged | null = null;

  /** Validates the command and resolves user and directories; throws a LinkCallError when it cannot run. */
  constructor(
    readonly spec: SubmitJobCommand,
    private readonly deps: JobDeps,
  ) {
    this.id = spec.jobSubmissionId;
    try {
      this.user = resolveUser(spec.user ? { uid: spec.user.uid, username: spec.user.username, gid: spec.user.gid, groupname: spec.user.groupname } : undefined);
    } catch (e) {
      if (e instanceof UserError) throw new LinkCallError(e.message, LinkErrorCode.INVALID_ARGUMENT);
      throw e;
    }
    const wd = spec.workingDir || DEFAULT_WORKING_DIR;
    if (!isAbsolute(wd)) throw new LinkCallError(`working_dir must be absolute, got '${wd}'`, LinkErrorCode.INVALID_ARGUMENT);
    this.workingDir = wd;
    const rd = expandHome(spec.repo?.repoDir ?? "", this.user.home);
    this.repoDir = rd ? resolve(wd, rd) : wd;
    if (spec.commands.length === 0 && spec.entrypoint.length === 0) {
      throw new LinkCallError("the job has neither commands nor an entrypoint", LinkErrorCode.INVALID_ARGUMENT);
    }
    const self = deps.selfUid ?? process.getuid?.() ?? 0;
    if (self !== 0 && this.user.uid !== self) {
      throw new LinkCallError(`the runner runs as uid ${self} and cannot start commands as uid ${this.user.uid}`, LinkErrorCode.FAILED_PRECONDITION);
    }
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  get state(): JobState {
    return this.final?.state ?? (this.proc ? JobState.RUNNING : this.started ? JobState.PREPARING : JobState.UNSPECIFIED);
  }

  /** Starts preparing and running; the states arrive through deps.onState. */
  start(): void {
    if (this.started || this.final) return;
    this.started = true;
    this.emit(JobState.PREPARING);
    void this.run().catch((e: unknown) => this.finish(JobState.FAILED, JobTerminationReason.EXECUTOR_ERROR, `runner error: ${e instanceof Error ? e.message : String(e)}`));
  }

  /** SIGTERM to the job's process group, SIGKILL after `graceMs`; before the commands start, ends preparation. */
  stop(graceMs: number, reason: JobTerminationReason, message = ""): void {
    if (this.final) return;
    this.stopping ??= { reason: reason || JobTerminationReason.TERMINATED_BY_SERVER, message };
    this.stopGraceMs = graceMs;
    this.abort.abort();
    if (this.proc) this.deps.diag(graceMs > 0 ? `stopping: SIGTERM to the commands, SIGKILL after ${graceMs / 1000} s` : "stopping: SIGTERM and SIGKILL to the commands at once");
    if (this.proc) void this.proc.stop(graceMs);
    else if (!this.started) this.finishStopped();
  }

  private async run(): Promise<void> {
    const spec = this.spec;
    const { uid, gid } = this.user;
    const owner = { uid, gid };
    try {
      // Hand the job user the directories made for it, never an existing one like / or /home.
      const created = mkdirSync(this.workingDir, { recursive: true });
      if (created && uid !== 0) await chownTree(created, owner);
      await this.prepareCode(owner);
      for (const a of spec.fileArchives) {
        if (this.stopping) break;
        if (!a.archive) continue;
        const dest = resolve(this.workingDir, expandHome(a.path, this.user.home));
        const file = await this.download(a.archive.sha256, Number(a.archive.sizeBytes), a.archive.inline);
        this.deps.diag(`extracting files archive ${a.archive.sha256.slice(0, 12)} into ${dest}`);
        await extractArchive(file, dest, { ...owner, onWarn: (m) => this.deps.diag(`tar: ${m}`) });
      }
    } catch (e) {
      if (this.stopping) return this.finishStopped();
      return this.finish(JobState.FAILED, JobTerminationReason.EXECUTOR_ERROR, e instanceof Error ? e.message : String(e));
    }
    if (this.stopping) return this.finishStopped();

    const hostfile = this.writeMpiHostfile(spec.clusterInfo ? clusterOf(spec) : undefined);
    const env = composeEnv({
      container: this.deps.containerEnv ?? process.env,
      runId: spec.runId,
      runName: spec.runName,
      repoId: spec.repoId,
      jobSubmissionId: spec.jobSubmissionId,
      workingDir: this.workingDir,
      repoDir: this.repoDir,
      home: this.user.home,
      username: this.user.username,
      cluster: spec.clusterInfo ? clusterOf(spec) : undefined,
      mpiHostfile: hostfile,
      secrets: { ...spec.secrets },
      env: { ...spec.env },
    });
    if (spec.python) {
      try {
        const py = selectPython(spec.python, env.PATH ?? "", this.deps.pythonShimDir);
        env.PATH = py.path;
        this.deps.diag(`python ${spec.python}: ${py.interpreter} is python and python3 on PATH`);
      } catch (e) {
        return this.finish(JobState.FAILED, JobTerminationReason.EXECUTOR_ERROR, e instanceof Error ? e.message : String(e));
      }
    }
    const argv = jobArgv({ commands: spec.commands, entrypoint: spec.entrypoint, shell: spec.shell }, this.deps.exists);
    const self = this.deps.selfUid ?? process.getuid?.() ?? 0;
    let proc: JobProcess;
    try {
      proc = await JobProcess.start({
        argv,
        cwd: this.workingDir,
        env,
        ...(uid !== self || gid !== (process.getgid?.() ?? 0) ? { uid, gid } : {}),
        ...(spec.tty ? { tty: DEFAULT_TTY_SIZE } : {}),
      });
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const why = err.code === "ENOENT" ? `${argv[0]} does not exist in the image` : err.message;
      return this.finish(JobState.FAILED, JobTerminationReason.EXECUTOR_ERROR, `cannot start the commands: ${why}`);
    }
    this.proc = proc;
    this.deps.diag(`running ${argv[0]} as ${this.user.username} (uid ${uid}) in ${this.workingDir}, pid ${proc.pid}${proc.ttyName ? ` on ${proc.ttyName}` : ""}`);
    this.emit(JobState.RUNNING);
    if (this.stopping) void proc.stop(this.stopGraceMs);
    const out = new LineSplitter((d) => this.deps.output(LogStream.STDOUT, d), this.deps.partialFlushMs);
    const err = new LineSplitter((d) => this.deps.output(LogStream.STDERR, d), this.deps.partialFlushMs);
    proc.stdout.on("data", (d: Buffer) => out.write(d));
    proc.stderr.on("data", (d: Buffer) => err.write(d));
    const maxMs = spec.maxDuration ? durationMs(spec.maxDuration) : 0;
    const limit = maxMs > 0 ? setTimeout(() => this.stop(DEFAULT_STOP_GRACE_MS, JobTerminationReason.MAX_DURATION_EXCEEDED, `max_duration ${maxMs / 1000}s exceeded`), maxMs) : null;
    const exit: Exit = await proc.done;
    if (limit) clearTimeout(limit);
    out.flush();
    err.flush();
    if (this.stopping) return this.finishStopped(exit.code);
    if (exit.code === 0) return this.finish(JobState.DONE, JobTerminationReason.DONE_BY_RUNNER, "", 0);
    this.finish(JobState.FAILED, JobTerminationReason.CONTAINER_EXITED_WITH_ERROR, `the commands exited with status ${exit.code}`, exit.code);
  }

  private async prepareCode(owner: { uid: number; gid: number }): Promise<void> {
    const repo = this.spec.repo;
    const code = this.spec.code;
    if (repo?.type === RunnerRepoType.REMOTE) {
      const diff = code?.sha256 ? await this.download(code.sha256, Number(code.sizeBytes), code.inline) : undefined;
      this.deps.diag(`cloning ${repo.cloneUrl.replace(/\/\/[^@/]*@/, "//")} into ${this.repoDir}`);
      const how = await prepareGitRepo(repo, this.repoDir, { diffFile: diff, keyDir: this.deps.scratchDir, env: { ...(this.deps.containerEnv ?? process.env), HOME: this.user.home }, log: (t) => this.deps.output(LogStream.RUNNER, Buffer.from(t)) });
      if (how === "skipped") this.deps.diag(`${this.repoDir} exists; keeping it (if_exists: skip)`);
      else if (owner.uid !== 0) await chownTree(this.repoDir, owner);
      return;
    }
    if (code?.sha256) {
      const file = await this.download(code.sha256, Number(code.sizeBytes), code.inline);
      this.deps.diag(`extracting code ${code.sha256.slice(0, 12)} into ${this.repoDir}`);
      await extractArchive(file, this.repoDir, { ...owner, onWarn: (m) => this.deps.diag(`tar: ${m}`) });
    }
  }

  private download(sha256: string, sizeBytes: number, inline?: Uint8Array): Promise<string> {
    return downloadBlob({
      sha256,
      sizeBytes,
      ...(inline?.length ? { inline } : {}),
      dir: this.deps.blobDir,
      connect: this.deps.connect,
      signal: this.abort.signal,
      onRetry: (n, e, off) => this.deps.diag(`download of ${sha256.slice(0, 12)} failed (${e instanceof Error ? e.message : String(e)}); retry ${n} from byte ${off}`),
    });
  }

  private writeMpiHostfile(cluster: ClusterFacts | undefined): string | undefined {
    if (!cluster || cluster.jobIps.length < 2) return undefined;
    const path = this.deps.mpiHostfile ?? "/dstack/mpi/hostfile";
    try {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, cluster.jobIps.map((ip) => (cluster.gpusPerJob > 0 ? `${ip} slots=${cluster.gpusPerJob}` : ip)).join("\n") + "\n");
      return path;
    } catch (e) {
      this.deps.diag(`cannot write the MPI hostfile ${path}: ${e instanceof Error ? e.message : String(e)}`);
      return undefined;
    }
  }

  private finishStopped(exitStatus?: number): void {
    const s = this.stopping!;
    this.finish(JobState.TERMINATED, s.reason, s.message, exitStatus);
  }

  private finish(state: JobState, reason: JobTerminationReason, message: string, exitStatus?: number): void {
    if (this.final) return;
    if (message) this.deps.diag(message);
    this.final = this.emit(state, reason, message, exitStatus);
    this.resolveDone(this.final);
  }

  private emit(state: JobState, reason = JobTerminationReason.UNSPECIFIED, message = "", exitStatus?: number): JobStateChanged {
    const s = create(JobStateChangedSchema, { jobSubmissionId: this.id, state, timestamp: timestampNow(), terminationReason: reason, terminationMessage: message, exitStatus });
    this.deps.onState(s);
    return s;
  }
}

function clusterOf(spec: SubmitJobCommand): ClusterFacts {
  const c = spec.clusterInfo!;
  return { jobIps: c.jobIps, masterJobIp: c.masterJobIp, gpusPerJob: c.gpusPerJob, nodeRank: c.nodeRank, nodesNum: c.nodesNum, gpusNum: c.gpusNum };
}

async function chownTree(dir: string, o: { uid: number; gid: number }): Promise<void> {
  await lchown(dir, o.uid, o.gid);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await chownTree(p, o);
    else await lchown(p, o.uid, o.gid);
  }
}
