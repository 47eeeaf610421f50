// SSH to a fleet host with ssh2: connect (optionally through one jump host), run commands,
// stream stdin into a command. Errors say what failed in the words a user can act on.
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import type { Readable } from "node:stream";
import { Client, type ConnectConfig } from "ssh2";

export interface SshEndpoint {
  hostname: string;
  port: number;
  user: string;
  /** Path of the private key, as written in the fleet configuration (~ is the server's home). */
  identityFile: string;
}

export interface SshTarget extends SshEndpoint {
  proxyJump?: SshEndpoint;
}

export class SshHostError extends Error {
  override name = "SshHostError";
}

const expandHome = (p: string): string => (p === "~" ? homedir() : p.startsWith("~/") ? `${homedir()}${p.slice(1)}` : p);

function readKey(e: SshEndpoint): Buffer {
  try {
    return readFileSync(expandHome(e.identityFile));
  } catch (x) {
    throw new SshHostError(`cannot read identity_file ${e.identityFile}: ${(x as Error).message}`);
  }
}

const where = (e: SshEndpoint): string => `${e.user}@${e.hostname}:${e.port}`;

function describeConnectError(e: SshEndpoint, x: Error & { level?: string; code?: string }): SshHostError {
  if (x.level === "client-authentication") return new SshHostError(`SSH authentication refused for ${where(e)} (identity_file ${e.identityFile})`);
  if (x.code === "ECONNREFUSED") return new SshHostError(`SSH connection refused by ${e.hostname}:${e.port}`);
  if (x.code === "ENOTFOUND" || x.code === "EAI_AGAIN") return new SshHostError(`SSH host ${e.hostname} cannot be resolved`);
  if (x.level === "client-timeout" || /timed out/i.test(x.message)) return new SshHostError(`SSH connection to ${e.hostname}:${e.port} timed out`);
  return new SshHostError(`SSH connection to ${where(e)} failed: ${x.message}`);
}

function connectOne(e: SshEndpoint, extra: Partial<ConnectConfig> = {}): Promise<Client> {
  const privateKey = readKey(e);
  return new Promise((resolve, reject) => {
    const c = new Client();
    const fail = (x: Error) => {
      c.end();
      reject(describeConnectError(e, x));
    };
    c.once("ready", () => {
      c.off("error", fail);
      c.on("error", () => {}); // later errors surface on the calls that hit them
      resolve(c);
    });
    c.once("error", fail);
    c.connect({ host: e.hostname, port: e.port, username: e.user, privateKey, readyTimeout: 20_000, keepaliveInterval: 15_000, ...extra });
  });
}

/** A connected client; `close()` ends it and its jump host. */
export interface SshSession {
  client: Client;
  close(): void;
}

export async function connect(t: SshTarget): Promise<SshSession> {
  if (!t.proxyJump) {
    const client = await connectOne(t);
    return { client, close: () => client.end() };
  }
  const jump = await connectOne(t.proxyJump);
  try {
    const sock = await new Promise<import("node:stream").Duplex>((resolve, reject) =>
      jump.forwardOut("127.0.0.1", 0, t.hostname, t.port, (x, stream) =>
        x ? reject(new SshHostError(`jump host ${where(t.proxyJump!)} cannot reach ${t.hostname}:${t.port}: ${x.message}`)) : resolve(stream),
      ),
    );
    const client = await connectOne(t, { sock: sock as never });
    return { client, close: () => (client.end(), jump.end()) };
  } catch (x) {
    jump.end();
    throw x;
  }
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `command` (a sh command line) on the host; `stdin` is piped in when given. */
export function exec(c: Client, command: string, stdin?: Readable): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    c.exec(command, (x, ch) => {
      if (x) return reject(new SshHostError(`cannot run a command over SSH: ${x.message}`));
      const out: Buffer[] = [];
      const errOut: Buffer[] = [];
      let code = -1;
      ch.on("data", (d: Buffer) => out.push(d));
      ch.stderr.on("data", (d: Buffer) => errOut.push(d));
      ch.on("exit", (c: number | null) => (code = c ?? -1));
      ch.on("close", () => resolve({ code, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(errOut).toString("utf8") }));
      ch.on("error", (e: Error) => reject(new SshHostError(`SSH channel failed: ${e.message}`)));
      if (stdin) {
        stdin.on("error", (e) => reject(e));
        stdin.pipe(ch);
      } else ch.end();
    });
  });
}

/** Single-quotes a word for sh. */
export const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
