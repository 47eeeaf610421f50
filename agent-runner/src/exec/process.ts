// The job's process in its own session and process group (so a stop reaches every child it
// started), SIGTERM → grace → SIGKILL to the whole group. Plain pipes (stdout and stderr apart),
// or, for attachable jobs, a pseudo-terminal (node-pty) whose output is all stdout.
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, chownSync, constants, statSync } from "node:fs";
import { join } from "node:path";
import { PassThrough, type Readable } from "node:stream";

export interface StartOptions {
  argv: readonly string[];
  cwd: string;
  env: Record<string, string>;
  uid?: number;
  gid?: number;
  /** Run under a pseudo-terminal of this size (stdin is the terminal; stderr is merged into stdout). */
  tty?: { cols: number; rows: number };
}

export interface Exit {
  /** Exit status; for a signal death, 128 + signal number as a shell reports it. */
  code: number;
  signal: NodeJS.Signals | null;
}

/** The terminal jobs get: wide enough that progress bars and tables do not wrap in the logs. */
export const DEFAULT_TTY_SIZE = { cols: 160, rows: 50 } as const;

const SIGNUM: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGABRT: 6, SIGKILL: 9, SIGSEGV: 11, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15 };
const SIGNAME = new Map(Object.entries(SIGNUM).map(([k, v]) => [v!, k as NodeJS.Signals]));

/** What the process type gives the common part: its pid, output and two milestones. */
interface Backend {
  pid: number;
  stdout: Readable;
  stderr: Readable;
  /** The process exited (its output may still be in flight). */
  onExit(cb: (e: Exit) => void): void;
  /** The output is drained (after exit). */
  onDrained(cb: () => void): void;
  /** The pseudo-terminal's device, e.g. /dev/pts/3. */
  ttyName: string | null;
}

export class JobProcess {
  readonly pid: number;
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** The terminal device when running under a PTY, else null. */
  readonly ttyName: string | null;
  /** Resolves when the process exited and its output is drained. */
  readonly done: Promise<Exit>;
  private exited = false;
  private killTimer: NodeJS.Timeout | null = null;

  private constructor(b: Backend) {
    this.pid = b.pid;
    this.stdout = b.stdout;
    this.stderr = b.stderr;
    this.ttyName = b.ttyName;
    this.done = new Promise<Exit>((resolve) => {
      let exit: Exit | null = null;
      b.onExit((e) => {
        this.exited = true;
        exit = e;
        // Background children (`cmd &`) would hold the pipes open forever: the job is over
        // when its shell is, as in dstack, so the rest of its group goes too.
        this.signalGroup("SIGKILL");
      });
      b.onDrained(() => {
        if (this.killTimer) clearTimeout(this.killTimer);
        resolve(exit!);
      });
    });
  }

  /** Spawns the process; rejects when it cannot start (no such shell, bad cwd, no permission). */
  static start(o: StartOptions): Promise<JobProcess> {
    const [file] = o.argv;
    if (!file) return Promise.reject(new Error("empty command"));
    return o.tty ? startPty(o, o.tty).then((b) => new JobProcess(b)) : startPiped(o).then((b) => new JobProcess(b));
  }

  get running(): boolean {
    return !this.exited;
  }

  /** Sends `signal` to the whole process group; false if it is gone. */
  signalGroup(signal: NodeJS.Signals): boolean {
    try {
      process.kill(-this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  /** SIGTERM to the group, SIGKILL after `graceMs` if the shell is still alive. Resolves on exit. */
  stop(graceMs: number): Promise<Exit> {
    if (this.running) {
      this.signalGroup("SIGTERM");
      if (!this.killTimer) {
        this.killTimer = setTimeout(() => this.signalGroup("SIGKILL"), Math.max(0, graceMs));
        this.killTimer.unref();
      }
    }
    return this.done;
  }
}

function startPiped(o: StartOptions): Promise<Backend> {
  const [file, ...args] = o.argv;
  const child: ChildProcess = spawn(file!, args, {
    cwd: o.cwd,
    env: o.env,
    detached: true, // setsid: its own process group, and no controlling terminal of ours
    stdio: ["ignore", "pipe", "pipe"],
    ...(o.uid !== undefined ? { uid: o.uid } : {}),
    ...(o.gid !== undefined ? { gid: o.gid } : {}),
  });
  return new Promise((resolve, reject) => {
    child.once("spawn", () =>
      resolve({
        pid: child.pid!,
        stdout: child.stdout!,
        stderr: child.stderr!,
        ttyName: null,
        onExit: (cb) => child.once("exit", (code, signal) => cb({ code: code ?? 128 + (signal ? (SIGNUM[signal] ?? 0) : 0), signal })),
        onDrained: (cb) => child.once("close", () => cb()),
      }),
    );
    child.once("error", (e) => reject(e));
  });
}

/**
 * A terminal turns "\n" into "\r\n" (ONLCR); the logs keep plain "\n" line ends as over pipes.
 * A lone "\r" (progress bars redrawing a line) is kept.
 */
export class CrlfToLf {
  private pendingCr = false;
  push(d: Buffer): Buffer {
    let s = d;
    if (this.pendingCr) s = Buffer.concat([Buffer.from("\r"), s]);
    this.pendingCr = s.length > 0 && s[s.length - 1] === 0x0d;
    if (this.pendingCr) s = s.subarray(0, s.length - 1);
    return s.includes("\r\n") ? Buffer.from(s.toString("latin1").replaceAll("\r\n", "\n"), "latin1") : s;
  }
  /** What is held back at the end of the stream. */
  end(): Buffer {
    const rest = this.pendingCr ? Buffer.from("\r") : Buffer.alloc(0);
    this.pendingCr = false;
    return rest;
  }
}

async function startPty(o: StartOptions, size: { cols: number; rows: number }): Promise<Backend> {
  const [file, ...args] = o.argv;
  // node-pty forks before exec, so a missing program would look like a job exiting 1: say so now.
  requireExecutable(file!, o.env.PATH);
  // Loaded on first use: the addon ships in the runner bundle (node_modules/node-pty).
  const pty = await import("node-pty");
  const spawnPty = (pty as unknown as { spawn?: typeof pty.spawn; default?: { spawn: typeof pty.spawn } }).spawn ?? pty.default!.spawn;
  const term = spawnPty(file!, args, {
    name: o.env.TERM || "xterm-256color",
    cols: size.cols,
    rows: size.rows,
    cwd: o.cwd,
    env: o.env,
    encoding: null,
    ...(o.uid !== undefined ? { uid: o.uid } : {}),
    ...(o.gid !== undefined ? { gid: o.gid } : {}),
  });
  const ttyName = (term as unknown as { _pty?: string })._pty ?? null;
  // The slave was opened by root: a job user must own it to reopen /dev/tty, as dstack does.
  if (ttyName && o.uid !== undefined) {
    try {
      chownSync(ttyName, o.uid, o.gid ?? -1);
    } catch {
      /* the job can still use its inherited descriptors */
    }
  }
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stderr.end();
  const lf = new CrlfToLf();
  term.onData((d: string | Buffer) => stdout.write(lf.push(typeof d === "string" ? Buffer.from(d) : d)));
  // node-pty's exit comes after the terminal's output is read (or 200 ms later at most).
  let exit: Exit | null = null;
  const exitCbs: ((e: Exit) => void)[] = [];
  term.onExit(({ exitCode, signal }) => {
    const sig = signal ? (SIGNAME.get(signal) ?? null) : null;
    exit = { code: signal ? 128 + signal : exitCode, signal: sig };
    for (const cb of exitCbs) cb(exit);
    const rest = lf.end();
    if (rest.length) stdout.write(rest);
    stdout.end();
  });
  return {
    pid: term.pid,
    stdout,
    stderr,
    ttyName,
    onExit: (cb) => (exit ? cb(exit) : exitCbs.push(cb)),
    // "finish": everything written went through, whether or not anyone reads it; a flowing
    // reader has had it once the current tick is over.
    onDrained: (cb) => stdout.once("finish", () => setImmediate(cb)),
  };
}

/** Throws an ENOENT/EACCES error, as spawn would, when `file` cannot be executed. */
function requireExecutable(file: string, path = "/usr/local/bin:/usr/bin:/bin"): void {
  const candidates = file.includes("/") ? [file] : path.split(":").filter(Boolean).map((d) => join(d, file));
  let last: NodeJS.ErrnoException | null = null;
  for (const c of candidates) {
    try {
      if (!statSync(c).isFile()) continue;
      accessSync(c, constants.X_OK);
      return;
    } catch (e) {
      last = e as NodeJS.ErrnoException;
    }
  }
  const err: NodeJS.ErrnoException = new Error(`spawn ${file} ${last?.code ?? "ENOENT"}`);
  err.code = last?.code === "EACCES" ? "EACCES" : "ENOENT";
  throw err;
}
