// Git over SSH without git or ssh in the image: an isomorphic-git `http` client that speaks to
// the remote's git-upload-pack through ssh2 (pure JS, in the runner bundle).
//
// Smart HTTP and SSH carry the same upload-pack conversation; over SSH the server speaks first
// (its ref advertisement) and keeps one process for the whole exchange. So the GET for
// /info/refs opens `git-upload-pack '<path>'` on an exec channel and answers with the
// advertisement it reads up to the first flush (behind the `# service=` line HTTP adds), and the
// POST that follows writes its request (wants, flush, done) into that same channel and streams
// the channel's output back as the response body.
import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import ssh2 from "ssh2";
import type { ClientChannel, Client as SshClient } from "ssh2";
import { GitError } from "./git.js";

export interface SshTarget {
  user: string;
  host: string;
  port: number;
  /** The repo path as the remote shell gets it (`org/repo.git`, `/srv/repo.git`, `~/repo.git`). */
  path: string;
}

/** User a URL without one logs in as: what GitHub, GitLab and Bitbucket expect. */
export const DEFAULT_SSH_USER = "git";

/** `ssh://[user@]host[:port]/path` (also `git+ssh://`, `ssh+git://`) or scp-like `[user@]host:path`. */
export function parseSshUrl(url: string): SshTarget {
  const scheme = /^(?:ssh|git\+ssh|ssh\+git):\/\//.exec(url);
  if (scheme) {
    let u: URL;
    try {
      u = new URL("ssh://" + url.slice(scheme[0].length));
    } catch {
      throw new GitError(`the repo URL ${JSON.stringify(url)} is not a valid SSH URL`);
    }
    const host = u.hostname.replace(/^\[(.*)\]$/, "$1");
    let path = decodeURIComponent(u.pathname);
    // As git: ssh://host/~user/repo is relative to that user's home.
    if (path.startsWith("/~")) path = path.slice(1);
    if (!host || path === "/" || !path) throw new GitError(`the repo URL ${JSON.stringify(url)} names no host or no repository path`);
    return { user: decodeURIComponent(u.username) || DEFAULT_SSH_USER, host, port: u.port ? Number(u.port) : 22, path };
  }
  const scp = /^(?:([^@/:]+)@)?(\[[^\]]+\]|[^/:]+):(.+)$/.exec(url);
  if (!scp) throw new GitError(`the repo URL ${JSON.stringify(url)} is not an SSH URL (ssh://user@host[:port]/path or user@host:path)`);
  return { user: scp[1] ?? DEFAULT_SSH_USER, host: scp[2]!.replace(/^\[(.*)\]$/, "$1"), port: 22, path: scp[3]! };
}

/** Quotes an argument for the remote shell as git does (sq_quote_buf: ' and ! escaped). */
export function shellQuote(arg: string): string {
  return "'" + arg.replace(/'/g, "'\\''").replace(/!/g, "'\\!'") + "'";
}

/** What isomorphic-git asks its `http` client for. */
interface GitHttpRequest {
  url: string;
  method?: string;
  headers?: Record<string, string>;
  body?: AsyncIterableIterator<Uint8Array> | Uint8Array[] | Iterable<Uint8Array>;
}
interface GitHttpResponse {
  url: string;
  method?: string;
  statusCode: number;
  statusMessage: string;
  headers: Record<string, string>;
  body: AsyncIterableIterator<Uint8Array>;
}

/** Pulls a readable's chunks on demand, pausing it while too much is waiting (the pack can be big). */
class ChunkQueue {
  private chunks: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private wake: (() => void) | null = null;

  constructor(private readonly stream: Readable) {
    stream.on("data", (d: Buffer) => {
      this.chunks.push(d);
      this.queued += d.length;
      if (this.queued > 8 << 20) stream.pause();
      this.notify();
    });
    const end = () => {
      this.ended = true;
      this.notify();
    };
    stream.once("end", end);
    stream.once("close", end);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** The next chunk, or null at the end. */
  async next(): Promise<Buffer | null> {
    while (this.chunks.length === 0 && !this.ended) await new Promise<void>((r) => (this.wake = r));
    const c = this.chunks.shift();
    if (!c) return null;
    this.queued -= c.length;
    if (this.stream.isPaused() && this.queued <= 8 << 20) this.stream.resume();
    return c;
  }

  /** Puts bytes read too far back in front. */
  unshift(b: Buffer): void {
    if (b.length === 0) return;
    this.chunks.unshift(b);
    this.queued += b.length;
  }
}

interface OpenChannel {
  channel: ClientChannel;
  out: ChunkQueue;
  stderr: () => string;
  exit: Promise<number | null>;
}

const pkt = (text: string): Buffer => {
  const b = Buffer.from(text);
  return Buffer.concat([Buffer.from((b.length + 4).toString(16).padStart(4, "0")), b]);
};

/**
 * One SSH connection to the repo's host, serving isomorphic-git's `http` requests. Errors name
 * `shownUrl`'s host and what to check; `close()` ends the connection.
 */
export class SshGitTransport {
  private client: Promise<SshClient> | null = null;
  private pending: OpenChannel | null = null;
  private conn: SshClient | null = null;
  readonly http = { request: (r: GitHttpRequest) => this.request(r) };

  constructor(
    readonly target: SshTarget,
    private readonly privateKey: string,
    private readonly log: (text: string) => void = () => {},
    private readonly readyTimeoutMs = 20_000,
  ) {}

  private where(): string {
    return `${this.target.user}@${this.target.host}${this.target.port === 22 ? "" : `:${this.target.port}`}`;
  }

  private connect(): Promise<SshClient> {
    this.client ??= new Promise<SshClient>((resolve, reject) => {
      const c = new ssh2.Client();
      this.conn = c;
      let ready = false;
      c.once("ready", () => {
        ready = true;
        resolve(c);
      });
      c.on("error", (err: Error & { level?: string }) => {
        if (ready) return; // A later failure shows up on the channel.
        reject(new GitError(this.connectError(err)));
      });
      c.once("close", () => {
        if (!ready) reject(new GitError(`the SSH connection to ${this.where()} closed before it was ready`));
      });
      try {
        c.connect({
          host: this.target.host,
          port: this.target.port,
          username: this.target.user,
          ...(this.privateKey ? { privateKey: this.privateKey.endsWith("\n") ? this.privateKey : this.privateKey + "\n" } : {}),
          readyTimeout: this.readyTimeoutMs,
          keepaliveInterval: 15_000,
          // dstack runs git over SSH with StrictHostKeyChecking=no: the host key is shown, not checked.
          hostVerifier: (key: Buffer) => {
            this.log(`SSH host key of ${this.target.host}:${this.target.port}: SHA256:${createHash("sha256").update(key).digest("base64").replace(/=+$/, "")} (not checked)\n`);
            return true;
          },
        });
      } catch (e) {
        // ssh2 parses the key synchronously.
        reject(new GitError(`the repo's SSH private key cannot be used: ${(e as Error).message}`));
      }
    });
    return this.client;
  }

  private connectError(err: Error & { level?: string; code?: string }): string {
    if (err.level === "client-authentication") {
      return this.privateKey
        ? `the SSH server refused the key for ${this.where()}: check the repo's SSH key (the server must accept its public key)`
        : `the SSH server asks ${this.where()} for a key and the job has none: add the repo's SSH key`;
    }
    if (err.level === "client-timeout") return `no SSH handshake with ${this.target.host}:${this.target.port} within ${Math.round(this.readyTimeoutMs / 1000)} s`;
    return `cannot reach ${this.target.host}:${this.target.port} over SSH: ${err.message}`;
  }

  private async openUploadPack(): Promise<OpenChannel> {
    const c = await this.connect();
    const cmd = `git-upload-pack ${shellQuote(this.target.path)}`;
    const channel = await new Promise<ClientChannel>((resolve, reject) =>
      c.exec(cmd, (err, ch) => (err ? reject(new GitError(`the SSH server at ${this.where()} would not run ${cmd}: ${err.message}`)) : resolve(ch))),
    );
    let stderr = "";
    channel.stderr.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    const exit = new Promise<number | null>((resolve) => {
      channel.once("exit", (code: number | null) => resolve(code));
      channel.once("close", () => resolve(null));
    });
    return { channel, out: new ChunkQueue(channel), stderr: () => stderr.trim(), exit };
  }

  /** The remote's own words when upload-pack ended early (e.g. "fatal: '…' does not appear to be a git repository"). */
  private async failure(ch: OpenChannel, what: string): Promise<GitError> {
    const code = await Promise.race([ch.exit, new Promise<null>((r) => setTimeout(() => r(null), 2000))]);
    const said = ch.stderr().split("\n").filter(Boolean).at(-1);
    return new GitError(`git-upload-pack on ${this.where()} ${what}${code !== null ? ` (exit status ${code})` : ""}${said ? `: ${said}` : ""}`);
  }

  private async request(r: GitHttpRequest): Promise<GitHttpResponse> {
    const base = { url: r.url, method: r.method, statusCode: 200, statusMessage: "OK" };
    if ((r.method ?? "GET") === "GET" && /\/info\/refs\?service=git-upload-pack$/.test(r.url)) {
      this.pending?.channel.close();
      const ch = await this.openUploadPack();
      this.pending = ch;
      const advert = await this.readAdvertisement(ch);
      const body = [pkt("# service=git-upload-pack\n"), Buffer.from("0000"), advert];
      return { ...base, headers: { "content-type": "application/x-git-upload-pack-advertisement" }, body: iterate(body) };
    }
    if (r.method === "POST" && /\/git-upload-pack$/.test(r.url)) {
      const ch = this.pending;
      if (!ch) throw new GitError(`internal: an upload-pack request to ${this.where()} came before the ref advertisement`);
      this.pending = null;
      for await (const chunk of toAsync(r.body ?? [])) {
        if (!ch.channel.write(chunk)) await new Promise((res) => ch.channel.once("drain", res));
      }
      return { ...base, headers: { "content-type": "application/x-git-upload-pack-result" }, body: this.response(ch) };
    }
    throw new GitError(`the SSH transport for ${this.where()} only fetches (asked for ${r.method} ${r.url})`);
  }

  /** Reads pkt-lines up to and including the first flush; what follows stays queued. */
  private async readAdvertisement(ch: OpenChannel): Promise<Buffer> {
    let buf = Buffer.alloc(0);
    let pos = 0;
    for (;;) {
      while (buf.length - pos >= 4) {
        const len = parseInt(buf.subarray(pos, pos + 4).toString("latin1"), 16);
        if (Number.isNaN(len) || (len > 0 && len < 4)) {
          throw new GitError(`${this.where()} did not answer as git-upload-pack: ${JSON.stringify(buf.subarray(0, 80).toString("latin1"))}`);
        }
        if (len === 0) {
          ch.out.unshift(buf.subarray(pos + 4));
          return buf.subarray(0, pos + 4);
        }
        if (buf.length - pos < len) break;
        pos += len;
      }
      const next = await ch.out.next();
      if (!next) throw await this.failure(ch, "ended before its ref advertisement");
      buf = Buffer.concat([buf, next]);
    }
  }

  /** upload-pack's answer until it closes the channel; a non-zero exit becomes the error. */
  private async *response(ch: OpenChannel): AsyncIterableIterator<Uint8Array> {
    try {
      for (;;) {
        const c = await ch.out.next();
        if (!c) break;
        yield c;
      }
      const code = await Promise.race([ch.exit, new Promise<null>((r) => setTimeout(() => r(null), 2000))]);
      if (code !== null && code !== 0) throw await this.failure(ch, "failed");
    } finally {
      ch.channel.close();
    }
  }

  close(): void {
    this.pending?.channel.close();
    this.pending = null;
    this.conn?.end();
  }
}

async function* iterate(chunks: Uint8Array[]): AsyncIterableIterator<Uint8Array> {
  yield* chunks;
}

async function* toAsync(body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncIterableIterator<Uint8Array> {
  for await (const c of body) yield c;
}
