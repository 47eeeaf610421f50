// One plain-text port for HTTP/1.1 (curl, browsers, Connect-JSON, gRPC-Web) and h2c with prior
// knowledge (gRPC clients such as connect-node's createGrpcTransport or grpc-js).
//
// Why not fastify's `http2: true`: Node 20's `http2.createServer` ignores `allowHTTP1` without
// TLS, so curl's HTTP/1.1 requests would fail. Instead the listening http.Server looks at the
// first bytes of each connection: the HTTP/2 client preface starts with "PRI * HTTP/2.0", which
// no HTTP/1 request line does. HTTP/2 connections go to an internal http2 server that shares the
// request handler.
//
// Two details matter (both found by sending 200 KB bodies):
// - Node's http2 session reads the native socket handle directly and ignores bytes already read
//   into JS, so h2 sockets are handed over wrapped in a Duplex that replays the sniffed bytes
//   (http2 then uses its JS stream path).
// - Node's HTTP/1 parser likewise "consumes" the native handle when it can, which would put later
//   bytes ahead of the unshifted first chunk; marking the handle consumed keeps it on the 'data'
//   event path, where order is preserved.
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import http2, { type Http2ServerRequest, type Http2ServerResponse, type Http2Session } from "node:http2";
import type { Socket } from "node:net";
import { Duplex } from "node:stream";

/** fastify's handler; it serves http2 compat requests just as well (same req/res surface). */
export type DualHandler = (req: IncomingMessage, res: ServerResponse) => void;

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const H2_STREAM_WINDOW = 1 << 20;
const H2_CONNECTION_WINDOW = 8 << 20;

export interface DualServer extends http.Server {
  /** Sends GOAWAY on every h2c session: open streams finish, no new ones start. */
  closeHttp2Sessions(): void;
  /** Destroys the h2c sessions still open (after the grace period). */
  destroyHttp2Sessions(): void;
}

export interface DualServerOptions {
  /** Idle h2c sessions are closed after this long; default 72 s (fastify's default). */
  http2SessionTimeoutMs?: number;
}

export function createDualServer(handler: DualHandler, opts: DualServerOptions = {}): DualServer {
  const h1 = http.createServer(handler) as DualServer;
  // Wide flow-control windows (Node keeps 64 KiB per connection otherwise): tunnels (`ssh <run>`,
  // scp, port forwards) would be capped at 64 KiB per round trip from a distant client.
  const h2 = http2.createServer({ settings: { initialWindowSize: H2_STREAM_WINDOW } }, handler as unknown as (req: Http2ServerRequest, res: Http2ServerResponse) => void);
  const sessions = new Set<Http2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.setLocalWindowSize(H2_CONNECTION_WINDOW);
    session.once("close", () => sessions.delete(session));
    session.setTimeout(opts.http2SessionTimeoutMs ?? 72_000, () => session.close());
  });

  const h1ConnectionListeners = h1.listeners("connection") as ((s: Socket) => void)[];
  h1.removeAllListeners("connection");
  h1.on("connection", (socket: Socket) => {
    let seen: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, PREFACE.length);
      const isH2 = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
      if (isH2 && seen.length < PREFACE.length) return; // not enough bytes to decide yet
      socket.off("data", onData);
      socket.pause();
      if (isH2) {
        h2.emit("connection", replay(socket, seen));
        return;
      }
      socket.unshift(seen);
      const handle = (socket as unknown as { _handle?: { _consumed?: boolean } })._handle;
      if (handle) handle._consumed = true;
      for (const l of h1ConnectionListeners) l.call(h1, socket);
      socket.resume();
    };
    socket.on("data", onData);
  });

  h1.closeHttp2Sessions = () => {
    for (const s of sessions) s.close();
  };
  h1.destroyHttp2Sessions = () => {
    for (const s of sessions) s.destroy();
  };
  return h1;
}

/** A Duplex over `socket` that first yields `head` (bytes already read from it). */
function replay(socket: Socket, head: Buffer): Duplex {
  const d = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      socket.write(chunk, cb);
    },
    final(cb) {
      socket.end(cb);
    },
    destroy(error, cb) {
      socket.destroy(error ?? undefined);
      cb(error);
    },
  });
  d.push(head);
  socket.on("data", (chunk: Buffer) => {
    if (!d.push(chunk)) socket.pause();
  });
  socket.once("end", () => d.push(null));
  socket.once("error", (e) => d.destroy(e));
  socket.once("close", () => d.destroy());
  // Loggers read the peer address off the stream.
  Object.defineProperties(d, {
    remoteAddress: { get: () => socket.remoteAddress },
    remotePort: { get: () => socket.remotePort },
    remoteFamily: { get: () => socket.remoteFamily },
    localAddress: { get: () => socket.localAddress },
    localPort: { get: () => socket.localPort },
  });
  return d;
}
