// SSH to a fleet host with ssh2: connect (optionally through one jump host), run commands,
// stream stdin into a command. Errors say what failed in the words a user can act on.
import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import ssh2, { Client, type ConnectConfig } from "ssh2";

export interface SshEndpoint {
  hostname: string;
  port: number;
  user: string;
  /** The private key's text (the CLI read it from the user's identity_file). */
  privateKey: string;
  /** The identity_file it came from, for messages only: the server never reads it. */
  identityFile?: string;
  /** The host key fingerprint seen at the first connection; any other key is refused. */
  hostKey?: string;
}

export interface SshTarget extends SshEndpoint {
  proxyJump?: SshEndpoint;
}

export class SshHostError extends Error {
  override name = "SshHostError";
}

/** OpenSSH's fingerprint form: `SHA256:` and the unpadded base64 of the key blob's SHA-256. */
export const fingerprint = (key: Buffer): string => `SHA256:${createHash("sha256").update(key).digest("base64").replace(/=+$/, "")}`;

const where = (e: SshEndpoint): string => `${e.user}@${e.hostname}:${e.port}`;

function describeConnectError(e: SshEndpoint, x: Error & { level?: string; code?: string }): SshHostError {
  if (x.level === "client-authentication") return new SshHostError(`SSH authentication refused for ${where(e)}${e.identityFile ? ` (identity_file ${e.identityFile})` : ""}`);
  if (x.code === "ECONNREFUSED") return new SshHostError(`SSH connection refused by ${e.hostname}:${e.port}`);
  if (x.code === "ENOTFOUND" || x.code === "EAI_AGAIN") return new SshHostError(`SSH host ${e.hostname} cannot be resolved`);
  if (x.level === "client-timeout" || /timed out/i.test(x.message)) return new SshHostError(`SSH connection to ${e.hostname}:${e.port} timed out`);
  return new SshHostError(`SSH connection to ${where(e)} failed: ${x.message}`);
}

interface Connected {
  client: Client;
  hostKey: string;
}

function connectOne(e: SshEndpoint, extra: Partial<ConnectConfig> = {}): Promise<Connected> {
  const privateKey = e.privateKey;
  const parsed = ssh2.utils.parseKey(privateKey);
  if (parsed instanceof Error) return Promise.reject(new SshHostError(`the private key for ${where(e)}${e.identityFile ? ` (identity_file ${e.identityFile})` : ""} cannot be used: ${parsed.message}`));
  return new Promise((resolve, reject) => {
    const c = new Client();
    let seen = "";
    let settled = false;
    // One listener for the client's whole life: ssh2 can emit more than one error (e.g. a
    // handshake timeout, then the socket's reset), and an unheard one would end the server.
    c.on("error", (x: Error) => {
      if (settled) return; // later errors surface on the calls that hit them
      settled = true;
      c.end();
      // A refused host key surfaces as a handshake error; say what was refused.
      if (e.hostKey && seen && seen !== e.hostKey) reject(new SshHostError(`host key for ${e.hostname}:${e.port} changed (was ${e.hostKey}, now ${seen}); if the host was reinstalled, remove it from the fleet, apply, then add it back`));
      else reject(describeConnectError(e, x));
    });
    c.once("ready", () => {
      settled = true;
      resolve({ client: c, hostKey: seen });
    });
    c.connect({
      host: e.hostname,
      port: e.port,
      username: e.user,
      privateKey,
      readyTimeout: 20_000,
      keepaliveInterval: 15_000,
      hostVerifier: (key: Buffer) => {
        seen = fingerprint(key);
        return !e.hostKey || seen === e.hostKey;
      },
      ...extra,
    });
  });
}

/** A connected client; `close()` ends it and its jump host. */
export interface SshSession {
  client: Client;
  /** The fingerprints the host (and its jump host) presented: recorded at the first connection. */
  hostKey: string;
  jumpHostKey?: string;
  close(): void;
}

export async function connect(t: SshTarget): Promise<SshSession> {
  if (!t.proxyJump) {
    const { client, hostKey } = await connectOne(t);
    return { client, hostKey, close: () => client.end() };
  }
  const jump = await connectOne(t.proxyJump);
  try {
    const sock = await new Promise<import("node:stream").Duplex>((resolve, reject) =>
      jump.client.forwardOut("127.0.0.1", 0, t.hostname, t.port, (x, stream) =>
        x ? reject(new SshHostError(`jump host ${where(t.proxyJump!)} cannot reach ${t.hostname}:${t.port}: ${x.message}`)) : resolve(stream),
      ),
    );
    const { client, hostKey } = await connectOne(t, { sock: sock as never });
    return { client, hostKey, jumpHostKey: jump.hostKey, close: () => (client.end(), jump.client.end()) };
  } catch (x) {
    jump.client.end();
    throw x;
  }
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `command` (a sh command line) on the host; `stdin` is piped in when given. With
 * `timeoutMs`, a command still running then is abandoned (its channel closed) with an error
 * naming it: a hung Docker daemon must not hold a host (and the fleet's later applies) forever.
 */
export function exec(c: Client, command: string, stdin?: Readable, o: { timeoutMs?: number; host?: string } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    c.exec(command, (x, ch) => {
      if (x) return reject(new SshHostError(`cannot run a command over SSH: ${x.message}`));
      const out: Buffer[] = [];
      const errOut: Buffer[] = [];
      let code = -1;
      const timer = o.timeoutMs
        ? setTimeout(() => {
            reject(new SshHostError(`\`${command.split(" ").slice(0, 2).join(" ")}\` did not finish within ${Math.round(o.timeoutMs! / 1000)} s on ${o.host ?? "the host"}`));
            ch.close();
          }, o.timeoutMs)
        : null;
      ch.on("data", (d: Buffer) => out.push(d));
      ch.stderr.on("data", (d: Buffer) => errOut.push(d));
      ch.on("exit", (c: number | null) => (code = c ?? -1));
      ch.on("close", () => {
        if (timer) clearTimeout(timer);
        resolve({ code, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(errOut).toString("utf8") });
      });
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
