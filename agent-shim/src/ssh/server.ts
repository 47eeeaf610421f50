// The shim's embedded SSH server (ssh2). Users `ssh <run>` into task containers whose images have
// no sshd: sessions run through `docker exec`, `-L` forwards dial the container's ports, and `-J`
// hops to this same server are served in-process. Connections arrive on a TCP port (`listen`) or
// as byte streams handed over by tunnels (`handleConnection`), which bind the task.
//
// Security posture (shared/reference/anchors.md §4.2): publickey only, with the signature checked;
// modern algorithms only (algorithms.ts); failed attempts capped per connection; a login grace
// period; a cap on connections still authenticating; each login logged with its key fingerprint.
import net from "node:net";
import type { Duplex } from "node:stream";
import ssh2 from "ssh2";
import type { AuthContext, ClientInfo, Connection, PublicKeyAuthContext } from "ssh2";
import { CLIENT_SIGNATURE_ALGORITHMS, MIN_RSA_BITS, SSH_SERVER_ALGORITHMS } from "./algorithms.js";
import { bridge, connectTcp, forwardHost, isLocalAddress } from "./forward.js";
import { loadOrCreateHostKey } from "./host-key.js";
import { blobKeyType, publicKeyFromBlob, rsaModulusBits, type SshPublicKey } from "./keys.js";
import { ContainerSession } from "./session.js";
import type { ConnectionContext, LoginTarget, ShimSshLogger, ShimSshServer, ShimSshServerOptions } from "./types.js";

const { Server, utils } = ssh2;

/** Defaults for the tunables in ShimSshServerOptions. */
export const SSH_SERVER_DEFAULTS = {
  keepaliveIntervalMs: 15_000,
  keepaliveCountMax: 3,
  loginGraceMs: 60_000,
  maxAuthTries: 6,
  maxUnauthenticated: 64,
  forwardConnectTimeoutMs: 10_000,
} as const;

/** How long a connection being ended may take to flush its DISCONNECT before it is destroyed. */
const END_GRACE_MS = 2_000;

/** The software name in the SSH identification string ("SSH-2.0-dstack_shim"). */
const IDENT = "dstack_shim";

type Login = { kind: "task"; target: LoginTarget } | { kind: "jump" };

interface ConnState {
  socket: Duplex;
  ctx: ConnectionContext;
  client: Connection | undefined;
  authenticated: boolean;
  login: Login | undefined;
  publicKey: SshPublicKey | undefined;
  username: string | undefined;
  failures: number;
  decisions: Map<string, Promise<Login | null>>;
  sessions: Set<ContainerSession>;
  forwards: Set<net.Socket>;
  graceTimer: NodeJS.Timeout | undefined;
  closed: boolean;
}

const silentLogger: ShimSshLogger = { info: () => undefined, warn: () => undefined };

/**
 * Creates the server. Synchronous: it only loads (or makes) the host key; nothing listens until
 * `listen` is called, and `handleConnection` works without ever listening.
 */
export function createShimSshServer(options: ShimSshServerOptions): ShimSshServer {
  const hostKey = loadOrCreateHostKey(options.hostKeyPath);
  const logger = options.logger ?? silentLogger;
  const cfg = { ...SSH_SERVER_DEFAULTS, ...definedOnly(options) };
  const selfPorts = new Set(options.selfPorts ?? []);
  const listenHosts: string[] = [];
  const listeners = new Set<net.Server>();
  const conns = new Set<ConnState>();
  let closing = false;

  function unauthenticatedCount(): number {
    let n = 0;
    for (const c of conns) if (!c.authenticated) n++;
    return n;
  }

  function handleConnection(socket: Duplex, ctx: ConnectionContext = {}): void {
    socket.on("error", () => undefined); // the connection's own handlers report what matters
    if (closing || unauthenticatedCount() >= cfg.maxUnauthenticated) {
      if (!closing) logger.warn("ssh connection dropped: too many connections authenticating", { remote: ctx.remoteAddress });
      socket.destroy();
      return;
    }
    const state: ConnState = {
      socket,
      ctx,
      client: undefined,
      authenticated: false,
      login: undefined,
      publicKey: undefined,
      username: undefined,
      failures: 0,
      decisions: new Map(),
      sessions: new Set(),
      forwards: new Set(),
      graceTimer: undefined,
      closed: false,
    };
    conns.add(state);
    state.graceTimer = setTimeout(() => {
      if (state.authenticated) return;
      logger.warn("ssh login grace time over", { remote: ctx.remoteAddress, user: state.username });
      endConnection(state);
    }, cfg.loginGraceMs);
    state.graceTimer.unref();

    // A stream that is not a TCP socket (a tunnel, an SSH channel) may stay half-open after the
    // peer's end; finish it so the connection closes.
    socket.once("end", () => {
      if (!socket.writableEnded) socket.end();
    });
    socket.once("close", () => cleanup(state));

    // One ssh2 Server per connection: its listener is where this stream's context (the tunnel's
    // task) meets ssh2's client object. It never listens, and the host key is parsed already.
    const server = new Server(
      {
        hostKeys: [{ key: hostKey.parsed }],
        algorithms: SSH_SERVER_ALGORITHMS,
        ident: IDENT,
        keepaliveInterval: cfg.keepaliveIntervalMs,
        keepaliveCountMax: cfg.keepaliveCountMax,
      },
      (client: Connection, info: ClientInfo) => onClient(state, client, info),
    );
    server.injectSocket(socket as net.Socket);
  }

  function onClient(state: ConnState, client: Connection, info: ClientInfo): void {
    state.client = client;
    client.on("error", (err: Error & { level?: string }) => {
      // Socket resets, keepalive timeouts and failed negotiations (scanners, old clients) are
      // routine; anything else is worth a warning.
      const routine = err.level === "socket" || err.level === "client-timeout" || err.message.startsWith("Handshake failed");
      (routine ? logger.info : logger.warn)("ssh connection error", { remote: state.ctx.remoteAddress, error: err.message });
      // ssh2 only ends its side after a keepalive timeout or a protocol error; a dead peer would
      // keep the stream (and the sessions on it) open, so drop it.
      if (err.level !== "socket") endConnection(state);
    });
    client.on("authentication", (auth: AuthContext) => void authenticate(state, auth));
    client.on("ready", () => {
      state.authenticated = true;
      clearTimeout(state.graceTimer);
      const login = state.login!;
      logger.info("ssh login", {
        user: state.username,
        key: state.publicKey?.fingerprint,
        keyType: state.publicKey?.type,
        remote: state.ctx.remoteAddress,
        taskId: state.ctx.taskId,
        kind: login.kind,
        ...(login.kind === "task" ? { containerId: login.target.containerId } : {}),
        client: info.header?.versions?.software,
      });
    });
    client.on("session", (accept, reject) => {
      const login = state.login;
      if (login?.kind !== "task") return reject();
      const session = accept();
      const cs: ContainerSession = new ContainerSession(
        session,
        {
          docker: options.docker,
          target: login.target,
          baseEnv: sshConnectionEnv(state),
          logger,
          logFields: { user: state.username, taskId: state.ctx.taskId, containerId: login.target.containerId },
        },
        () => state.sessions.delete(cs),
      );
      state.sessions.add(cs);
    });
    client.on("tcpip", (accept, reject, info) => {
      const login = state.login;
      if (!login) return reject();
      if (selfPorts.has(info.destPort) && isLocalAddress(info.destIP, listenHosts)) {
        // `ssh -J`: the hop's target is this server; serve the inner connection here, bound to
        // the same task as the outer one.
        const channel = accept();
        handleConnection(channel, { ...state.ctx });
        return;
      }
      if (login.kind !== "task") {
        logger.warn("ssh forward refused: jump-only login", { user: state.username, dest: `${info.destIP}:${info.destPort}` });
        return reject();
      }
      const host = forwardHost(info.destIP, login.target);
      if (!host) return reject();
      connectTcp(host, info.destPort, cfg.forwardConnectTimeoutMs).then(
        (sock) => {
          if (state.closed) return sock.destroy();
          const channel = accept();
          if (!channel) return sock.destroy();
          state.forwards.add(sock);
          sock.once("close", () => state.forwards.delete(sock));
          bridge(channel, sock);
        },
        () => reject(),
      );
    });
    // Remote forwarding (-R) and streamlocal are not offered; ssh2 answers failure for the rest.
    client.on("request", (_accept, reject) => reject?.());
    client.on("close", () => cleanup(state));
  }

  async function authenticate(state: ConnState, auth: AuthContext): Promise<void> {
    state.username = auth.username;
    if (auth.method !== "publickey") {
      // "none" is how clients ask which methods exist; it is not a failed attempt.
      if (auth.method !== "none") {
        logger.warn("ssh auth method refused", { method: auth.method, user: auth.username, remote: state.ctx.remoteAddress });
        return refuse(state, auth, true);
      }
      return refuse(state, auth, false);
    }
    const checked = checkKey(auth);
    if (!checked.ok) {
      logger.warn("ssh key refused", { reason: checked.reason, user: auth.username, remote: state.ctx.remoteAddress });
      return refuse(state, auth, true);
    }
    const publicKey = checked.key;
    let login: Login | null;
    try {
      login = await decide(state, auth.username, publicKey);
    } catch (err) {
      logger.warn("ssh login lookup failed", { user: auth.username, key: publicKey.fingerprint, error: err instanceof Error ? err.message : String(err) });
      login = null;
    }
    if (state.closed) return;
    if (!login) {
      logger.warn("ssh key not authorised", { user: auth.username, key: publicKey.fingerprint, taskId: state.ctx.taskId, remote: state.ctx.remoteAddress });
      return refuse(state, auth, true);
    }
    if (auth.signature) {
      state.login = login;
      state.publicKey = publicKey;
    }
    auth.accept(); // without a signature this only says "this key would do" (PK_OK)
  }

  function refuse(state: ConnState, auth: AuthContext, counts: boolean): void {
    if (counts) state.failures++;
    auth.reject(["publickey"]);
    if (state.failures >= cfg.maxAuthTries) {
      logger.warn("ssh too many authentication failures", { user: state.username, remote: state.ctx.remoteAddress });
      endConnection(state);
    }
  }

  function decide(state: ConnState, username: string, publicKey: SshPublicKey): Promise<Login | null> {
    const cacheKey = `${username}\0${publicKey.openssh}`;
    let d = state.decisions.get(cacheKey);
    if (!d) {
      d = (async (): Promise<Login | null> => {
        const target = await options.resolveLogin({ username, publicKey, ...(state.ctx.taskId !== undefined ? { taskId: state.ctx.taskId } : {}) });
        if (target) return { kind: "task", target };
        if (options.jumpHost && (await options.jumpHost.authorize(username, publicKey))) return { kind: "jump" };
        return null;
      })();
      state.decisions.set(cacheKey, d);
    }
    return d;
  }

  function endConnection(state: ConnState): void {
    if (state.closed) return;
    const { socket } = state;
    try {
      state.client?.end(); // sends DISCONNECT, ends the stream's write side
    } catch {
      // already gone
    }
    // Drop the stream once the DISCONNECT is out, whatever the peer does (it may be dead).
    const timer = setTimeout(() => socket.destroy(), END_GRACE_MS);
    timer.unref();
    socket.once("close", () => clearTimeout(timer));
    if (socket.writableFinished || !socket.writable) socket.destroy();
    else socket.end(() => socket.destroy());
  }

  function cleanup(state: ConnState): void {
    if (state.closed) return;
    state.closed = true;
    clearTimeout(state.graceTimer);
    conns.delete(state);
    for (const s of [...state.sessions]) s.teardown();
    for (const f of state.forwards) f.destroy();
    state.socket.destroy();
  }

  return {
    hostKey: hostKey.publicKey,
    handleConnection,
    listen(port: number, host?: string): Promise<number> {
      return new Promise((resolve, reject) => {
        const listener = net.createServer((socket) => {
          socket.setNoDelay(true);
          socket.setKeepAlive(true, 30_000);
          handleConnection(socket, {
            ...(socket.remoteAddress ? { remoteAddress: socket.remoteAddress } : {}),
            ...(socket.remotePort ? { remotePort: socket.remotePort } : {}),
          });
        });
        listener.once("error", reject);
        listener.listen(port, host, () => {
          listener.off("error", reject);
          listener.on("error", (err) => logger.warn("ssh listener error", { error: err.message }));
          const bound = (listener.address() as net.AddressInfo).port;
          selfPorts.add(bound);
          if (host) listenHosts.push(host.toLowerCase());
          listeners.add(listener);
          resolve(bound);
        });
      });
    },
    async close(): Promise<void> {
      closing = true;
      const closed = [...listeners].map((l) => new Promise<void>((r) => l.close(() => r())));
      listeners.clear();
      for (const c of [...conns]) {
        for (const s of [...c.sessions]) s.teardown();
        endConnection(c);
      }
      await Promise.all(closed);
    },
  };
}

type KeyCheck = { ok: true; key: SshPublicKey } | { ok: false; reason: string };

/**
 * The key's algorithm and size are acceptable and, when the client signed, the signature over the
 * session is valid for that key.
 */
function checkKey(auth: PublicKeyAuthContext): KeyCheck {
  const blob = auth.key.data;
  // ssh2 reports rsa-sha2-* requests as key algo "ssh-rsa" plus a hash; no hash means SHA-1.
  const sigAlgo = auth.key.algo === "ssh-rsa" ? (auth.hashAlgo === "sha512" ? "rsa-sha2-512" : auth.hashAlgo === "sha256" ? "rsa-sha2-256" : "ssh-rsa") : auth.key.algo;
  if (!CLIENT_SIGNATURE_ALGORITHMS.has(sigAlgo)) return { ok: false, reason: `signature algorithm ${sigAlgo} not accepted` };
  if (blobKeyType(blob) !== auth.key.algo) return { ok: false, reason: "key blob does not match its algorithm" };
  if (auth.key.algo === "ssh-rsa" && rsaModulusBits(blob) < MIN_RSA_BITS) return { ok: false, reason: `RSA key shorter than ${MIN_RSA_BITS} bits` };
  let key: SshPublicKey;
  try {
    key = publicKeyFromBlob(blob);
  } catch {
    return { ok: false, reason: "malformed key" };
  }
  if (auth.signature) {
    const parsed = utils.parseKey(blob);
    if (parsed instanceof Error || Array.isArray(parsed)) return { ok: false, reason: "unparsable key" };
    if (!auth.blob || parsed.verify(auth.blob, auth.signature, auth.hashAlgo) !== true) {
      return { ok: false, reason: `bad signature for ${key.fingerprint}` };
    }
  }
  return { ok: true, key };
}

/** SSH_CONNECTION / SSH_CLIENT as sshd sets them, when the addresses are known. */
function sshConnectionEnv(state: ConnState): Record<string, string> {
  const { remoteAddress, remotePort } = state.ctx;
  const sock = state.socket as Partial<net.Socket>;
  if (!remoteAddress || !remotePort) return {};
  const env: Record<string, string> = { SSH_CLIENT: `${remoteAddress} ${remotePort} ${sock.localPort ?? 0}` };
  if (sock.localAddress && sock.localPort) env.SSH_CONNECTION = `${remoteAddress} ${remotePort} ${sock.localAddress} ${sock.localPort}`;
  return env;
}

function definedOnly(o: ShimSshServerOptions): Partial<typeof SSH_SERVER_DEFAULTS> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(SSH_SERVER_DEFAULTS) as Array<keyof typeof SSH_SERVER_DEFAULTS>) {
    const v = o[k];
    if (typeof v === "number") out[k] = v;
  }
  return out;
}
