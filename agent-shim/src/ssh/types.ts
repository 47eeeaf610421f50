// The embedded SSH server's contract with the rest of the shim.
import type Docker from "dockerode";
import type { SshPublicKey } from "./keys.js";

/** What a login asks for: the SSH user name, the (already signature-checked) key, the tunnel's task. */
export interface LoginRequest {
  username: string;
  publicKey: SshPublicKey;
  /** Set when the connection came through a tunnel bound to one task (`handleConnection(…, { taskId })`). */
  taskId?: string;
}

/** The container a login lands in. */
export interface LoginTarget {
  containerId: string;
  /** `docker exec --user`; the image's default user when absent. */
  containerUser?: string;
  /** Decides where `direct-tcpip` to localhost goes: the host's loopback, or the container's IP. */
  networkMode: "host" | "bridge";
  /** Required for bridge networking: where forwards to localhost/127.0.0.1 connect. */
  containerIp?: string;
}

export interface JumpHostPolicy {
  /**
   * Whether this user/key may use the server only as an `ssh -J` hop (direct-tcpip to the server's
   * own address). Asked when `resolveLogin` returned null.
   */
  authorize(username: string, publicKey: SshPublicKey): boolean | Promise<boolean>;
}

export interface ShimSshLogger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

export interface ShimSshServerOptions {
  /** Where the ed25519 host key lives; made (0600) on first use, reused afterwards. */
  hostKeyPath: string;
  /** The engine the task containers run on. */
  docker: Docker;
  /**
   * Which container a login reaches, or null to refuse it. Called once the key's signature has been
   * verified (and, without a signature, when the client only asks whether a key would do).
   */
  resolveLogin(req: LoginRequest): Promise<LoginTarget | null>;
  /** Logins that may only forward to this server itself (the `ssh -J` hop). */
  jumpHost?: JumpHostPolicy;
  /**
   * Ports that name this server in a jump, besides the one `listen` bound: the port the server
   * advertises when connections reach it through tunnels. A direct-tcpip to a local address on one
   * of these ports is served in-process by this server.
   */
  selfPorts?: number[];
  /** Server→client keepalive interval; default 15 000 ms. */
  keepaliveIntervalMs?: number;
  /** Unanswered keepalives before the connection is dropped; default 3. */
  keepaliveCountMax?: number;
  /** Time allowed from connect to successful authentication; default 60 000 ms. */
  loginGraceMs?: number;
  /** Failed authentication attempts before disconnecting; default 6 (OpenSSH MaxAuthTries). */
  maxAuthTries?: number;
  /** Connections still authenticating that may exist at once; more are dropped; default 64. */
  maxUnauthenticated?: number;
  /** Timeout for connecting a direct-tcpip forward; default 10 000 ms. */
  forwardConnectTimeoutMs?: number;
  logger?: ShimSshLogger;
}

/** Per-connection context a tunnel hands over with its byte stream. */
export interface ConnectionContext {
  /** The task the tunnel is bound to; passed to resolveLogin. */
  taskId?: string;
  /** The end user's address, when the tunnel knows it (logs, SSH_CONNECTION). */
  remoteAddress?: string;
  remotePort?: number;
}

export interface ShimSshServer {
  /** Binds a TCP port (0 = any) and resolves with the bound port. */
  listen(port: number, host?: string): Promise<number>;
  /** Serves one SSH connection over an already-open byte stream (a tunnel, a socket). */
  handleConnection(socket: import("node:stream").Duplex, ctx?: ConnectionContext): void;
  /** Stops listening, ends every connection and session; resolves when the listener has closed. */
  close(): Promise<void>;
  /** The host key's public half, for pinning (known_hosts) by the server and CLI. */
  readonly hostKey: SshPublicKey;
}
