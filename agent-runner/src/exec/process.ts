// The job's process: plain pipes, its own session and process group (so a stop reaches every
// child it started), SIGTERM → grace → SIGKILL to the whole group.
import { spawn, type ChildProcess } from "node:child_process";
import type { Readable } from "node:stream";

export interface StartOptions {
  argv: readonly string[];
  cwd: string;
  env: Record<string, string>;
  uid?: number;
  gid?: number;
}

export interface Exit {
  /** Exit status; for a signal death, 128 + signal number as a shell reports it. */
  code: number;
  signal: NodeJS.Signals | null;
}

const SIGNUM: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGABRT: 6, SIGKILL: 9, SIGSEGV: 11, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15 };

export class JobProcess {
  readonly pid: number;
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** Resolves when the process exited and its output pipes are drained. */
  readonly done: Promise<Exit>;
  private exited = false;
  private killTimer: NodeJS.Timeout | null = null;

  private constructor(private readonly child: ChildProcess) {
    this.pid = child.pid!;
    this.stdout = child.stdout!;
    this.stderr = child.stderr!;
    this.done = new Promise<Exit>((resolve) => {
      let exit: Exit | null = null;
      child.once("exit", (code, signal) => {
        this.exited = true;
        exit = { code: code ?? 128 + (signal ? (SIGNUM[signal] ?? 0) : 0), signal };
        // Background children (`cmd &`) would hold the pipes open forever: the job is over
        // when its shell is, as in dstack, so the rest of its group goes too.
        this.signalGroup("SIGKILL");
      });
      child.once("close", () => {
        if (this.killTimer) clearTimeout(this.killTimer);
        resolve(exit!);
      });
    });
  }

  /** Spawns the process; rejects when it cannot start (no such shell, bad cwd, no permission). */
  static start(o: StartOptions): Promise<JobProcess> {
    const [file, ...args] = o.argv;
    if (!file) return Promise.reject(new Error("empty command"));
    const child = spawn(file, args, {
      cwd: o.cwd,
      env: o.env,
      detached: true, // setsid: its own process group, and no controlling terminal of ours
      stdio: ["ignore", "pipe", "pipe"],
      ...(o.uid !== undefined ? { uid: o.uid } : {}),
      ...(o.gid !== undefined ? { gid: o.gid } : {}),
    });
    return new Promise((resolve, reject) => {
      child.once("spawn", () => resolve(new JobProcess(child)));
      child.once("error", (e) => reject(e));
    });
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
