// One SSH "session" channel served by `docker exec` in the task's container: the image needs no
// sshd. pty-req becomes a TTY exec (resized on window-change), env requests become the exec's Env,
// shell/exec pick bash when the image has it and sh otherwise, output keeps stdout and stderr apart
// without a TTY, stdin EOF reaches the process, and the exec's exit code goes back as exit-status.
import type { Duplex, Writable } from "node:stream";
import type Docker from "dockerode";
import type { ServerChannel, Session } from "ssh2";
import { signalContainerProcess } from "./signals.js";
import type { LoginTarget, ShimSshLogger } from "./types.js";

/** Exit status sent when the exec could not be started or its outcome is unknown (as ssh itself uses). */
const EXIT_UNKNOWN = 255;

// `sh` is looked up on the container's PATH; `exec` keeps one PID so signals reach the shell.
const LOGIN_SHELL = "if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l";
const COMMAND_SHELL = 'if command -v bash >/dev/null 2>&1; then exec bash -c "$1"; fi; exec sh -c "$1"';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_ENV_VARS = 256;
const MAX_ENV_BYTES = 64 * 1024;

interface Pty {
  term: string;
  cols: number;
  rows: number;
}

export interface SessionDeps {
  docker: Docker;
  target: LoginTarget;
  /** Variables every exec gets (SSH_CONNECTION…); the client's env requests override them. */
  baseEnv: Record<string, string>;
  logger: ShimSshLogger;
  logFields: Record<string, unknown>;
}

/** Serves one accepted ssh2 Session until its channel closes; `teardown` ends it early. */
export class ContainerSession {
  private readonly env = new Map<string, string>();
  private envBytes = 0;
  private pty: Pty | undefined;
  private started = false;
  private channel: ServerChannel | undefined;
  private exec: Docker.Exec | undefined;
  private stream: Duplex | undefined;
  /** Set once the process's end has been seen (or teardown ran): nothing more to do. */
  private finished = false;
  private tornDown = false;
  private resizing: Promise<void> = Promise.resolve();

  constructor(
    session: Session,
    private readonly deps: SessionDeps,
    private readonly onDone: () => void,
  ) {
    session.on("pty", (accept, reject, info) => {
      if (this.started) return reject?.();
      this.pty = { term: info.term || "vt100", cols: dimension(info.cols, 80), rows: dimension(info.rows, 24) };
      accept?.();
    });
    session.on("window-change", (accept, _reject, info) => {
      if (this.pty) {
        this.pty.cols = dimension(info.cols, this.pty.cols);
        this.pty.rows = dimension(info.rows, this.pty.rows);
        void this.resize();
      }
      accept?.();
    });
    session.on("env", (accept, reject, info) => {
      const ok = this.setEnv(info.key, info.val);
      if (ok) accept?.();
      else reject?.();
    });
    session.on("shell", (accept, reject) => {
      if (this.started) return reject?.();
      void this.start(accept(), undefined);
    });
    session.on("exec", (accept, reject, info) => {
      if (this.started) return reject?.();
      void this.start(accept(), info.command);
    });
    // sftp and any other subsystem: refused with a channel failure ("subsystem request failed").
    session.on("subsystem", (_accept, reject, info) => {
      this.deps.logger.info("ssh subsystem refused", { ...this.deps.logFields, subsystem: info.name });
      reject?.();
    });
    session.on("signal", (accept, reject, info) => {
      void this.signal(info.name).then((sent) => (sent ? accept?.() : reject?.()));
    });
    session.on("close", () => this.teardown());
  }

  private setEnv(key: string, val: string): boolean {
    if (this.started || !ENV_NAME.test(key) || val.includes("\0")) return false;
    const bytes = key.length + val.length + 2;
    if (!this.env.has(key) && (this.env.size >= MAX_ENV_VARS || this.envBytes + bytes > MAX_ENV_BYTES)) return false;
    this.env.set(key, val);
    this.envBytes += bytes;
    return true;
  }

  private async start(channel: ServerChannel | undefined, command: string | undefined): Promise<void> {
    if (!channel) return;
    this.started = true;
    this.channel = channel;
    channel.on("close", () => this.teardown());
    const tty = this.pty !== undefined;
    const env = new Map(Object.entries(this.deps.baseEnv));
    for (const [k, v] of this.env) env.set(k, v);
    if (this.pty) env.set("TERM", this.pty.term);
    // Docker can only resize a TTY exec once it runs, after the process may have read its size;
    // stty sets the requested size first (silently skipped where the image has no stty).
    const size = this.pty ? `stty rows ${this.pty.rows} cols ${this.pty.cols} 2>/dev/null; ` : "";
    const cmd = command === undefined ? ["sh", "-c", size + LOGIN_SHELL] : ["sh", "-c", size + COMMAND_SHELL, "sh", command];
    try {
      const container = this.deps.docker.getContainer(this.deps.target.containerId);
      const exec = await container.exec({
        Cmd: cmd,
        AttachStdin: true,
        AttachStdout: true,
        AttachStderr: true,
        Tty: tty,
        Env: [...env].map(([k, v]) => `${k}=${v}`),
        ...(this.deps.target.containerUser ? { User: this.deps.target.containerUser } : {}),
      });
      this.exec = exec;
      if (this.tornDown) return;
      const stream = (await exec.start({ hijack: true, stdin: true, Tty: tty })) as Duplex;
      this.stream = stream;
      if (this.tornDown) {
        this.killExec();
        return;
      }
      this.wire(channel, stream, tty);
      if (tty) void this.resize();
    } catch (err) {
      this.deps.logger.warn("ssh exec failed", { ...this.deps.logFields, error: errorText(err) });
      channel.stderr.write(`dstack-shim: cannot start a process in the container: ${errorText(err)}\r\n`);
      await this.finishWith(channel, EXIT_UNKNOWN);
    }
  }

  private wire(channel: ServerChannel, stream: Duplex, tty: boolean): void {
    stream.on("error", () => undefined); // its end follows; the exit code comes from inspect
    if (tty) {
      stream.on("data", (chunk: Buffer) => this.forward(stream, [[channel, chunk]]));
    } else {
      const demux = new DockerDemuxer();
      stream.on("data", (chunk: Buffer) => this.forward(stream, demux.push(chunk).map(([kind, data]) => [kind === 2 ? channel.stderr : channel, data])));
    }
    let ended = false;
    const onEnd = () => {
      if (ended) return;
      ended = true;
      void this.finish();
    };
    stream.on("end", onEnd);
    stream.on("close", onEnd);
    // stdin: client EOF half-closes the exec's attach, which closes the process's stdin. A TTY
    // exec keeps its stdin open (a terminal has no EOF but ^D), as sshd does for a pty session.
    channel.pipe(stream, { end: !tty });
  }

  /** Writes output to the channel's stdout/stderr, pausing Docker's stream while SSH pushes back. */
  private forward(source: Duplex, writes: Array<[Writable, Buffer]>): void {
    let pending = 0;
    for (const [dest, data] of writes) {
      if (dest.write(data)) continue;
      pending++;
      dest.once("drain", () => {
        if (--pending === 0) source.resume();
      });
    }
    if (pending > 0) source.pause();
  }

  /** Resizes the exec's TTY to the latest size; calls run one after another so the last one wins. */
  private resize(): Promise<void> {
    this.resizing = this.resizing.then(async () => {
      if (!this.exec || !this.stream || !this.pty || this.finished) return;
      try {
        await this.exec.resize({ h: this.pty.rows, w: this.pty.cols });
      } catch {
        // The process may already be gone; nothing to resize.
      }
    });
    return this.resizing;
  }

  private async finish(): Promise<void> {
    const channel = this.channel;
    if (this.finished || !channel) return;
    const code = await this.exitCode();
    await this.finishWith(channel, code);
  }

  private async finishWith(channel: ServerChannel, code: number): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    // exit-status must follow every byte of output; a zero-length write completes after the rest.
    await Promise.all([flushed(channel, channel), flushed(channel.stderr, channel)]);
    channel.exit(code);
    channel.end();
    // Drain whatever the client still sends so the channel can reach 'close'.
    channel.unpipe();
    channel.resume();
    this.stream?.destroy();
    this.onDone();
  }

  /** The exec's exit code; the attach can end a moment before Docker records it. */
  private async exitCode(): Promise<number> {
    const exec = this.exec;
    if (!exec) return EXIT_UNKNOWN;
    for (let attempt = 0; attempt < 30; attempt++) {
      try {
        const info = await exec.inspect();
        if (!info.Running && typeof info.ExitCode === "number") return info.ExitCode;
      } catch {
        return EXIT_UNKNOWN; // the container (and its execs) are gone
      }
      await new Promise((r) => setTimeout(r, Math.min(5 * 2 ** attempt, 200)));
    }
    return EXIT_UNKNOWN;
  }

  /**
   * SSH `signal` requests. Best effort: the signal goes to the exec's first process (the shell, or
   * the command the shell exec'd into) when the shim can see the container's PIDs; otherwise the
   * request is refused. OpenSSH's client never sends these; other clients (and ssh2) may.
   */
  private async signal(name: string): Promise<boolean> {
    return !this.finished && (await this.sendSignalSoon(name));
  }

  /** On a loaded host Docker may not report the exec's PID at once: ask a few times. */
  private async sendSignalSoon(name: string, o: { evenIfFinished?: boolean } = {}): Promise<boolean> {
    for (let i = 0; i < 6; i++) {
      if (await this.sendSignal(name)) return true;
      if (this.finished && !o.evenIfFinished) return false;
      await new Promise((r) => setTimeout(r, 150));
    }
    return false;
  }

  private async sendSignal(name: string): Promise<boolean> {
    const exec = this.exec;
    if (!exec) return false;
    try {
      const [info, container] = await Promise.all([exec.inspect(), this.deps.docker.getContainer(this.deps.target.containerId).inspect()]);
      return info.Running === true && signalContainerProcess(info.Pid, container.State.Pid, name);
    } catch {
      return false;
    }
  }

  /** The process outlived its client: hang it up, as sshd does when a connection drops. */
  private killExec(): void {
    this.stream?.destroy();
    void this.sendSignalSoon("HUP", { evenIfFinished: true });
  }

  /** Ends the session at once: the channel or the connection went away, or the server closes. */
  teardown(): void {
    if (this.tornDown) return;
    this.tornDown = true;
    if (!this.finished) {
      this.finished = true;
      this.killExec();
      this.channel?.unpipe();
      this.channel?.destroy();
      this.onDone();
    }
  }
}

/** Resolves when every write queued on `w` so far has gone out, or the channel closes. */
function flushed(w: Writable, channel: ServerChannel): Promise<void> {
  if (!w.writable) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      channel.off("close", done);
      resolve();
    };
    channel.once("close", done);
    w.write(Buffer.alloc(0), done);
  });
}

/**
 * Splits Docker's multiplexed attach stream (non-TTY): frames of an 8-byte header [stream, 0, 0, 0,
 * size as big-endian uint32] then `size` bytes; stream 1 is stdout, 2 stderr. Frames may be split
 * across chunks at any byte.
 */
export class DockerDemuxer {
  private header = Buffer.alloc(0);
  private kind = 0;
  private remaining = 0;

  push(chunk: Buffer): Array<[number, Buffer]> {
    const out: Array<[number, Buffer]> = [];
    let off = 0;
    while (off < chunk.length) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - off);
        out.push([this.kind, chunk.subarray(off, off + n)]);
        this.remaining -= n;
        off += n;
        continue;
      }
      const need = 8 - this.header.length;
      this.header = Buffer.concat([this.header, chunk.subarray(off, off + need)]);
      off += Math.min(need, chunk.length - off);
      if (this.header.length < 8) break;
      this.kind = this.header[0]!;
      this.remaining = this.header.readUInt32BE(4);
      this.header = Buffer.alloc(0);
    }
    return out;
  }
}

/** A terminal dimension from the client: a positive integer (it ends up in a shell command), else `fallback`. */
function dimension(n: number, fallback: number): number {
  return Number.isInteger(n) && n > 0 && n < 10_000 ? n : fallback;
}

function errorText(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/^\(HTTP code \d+\) [^-]*- /, "").trim();
}
