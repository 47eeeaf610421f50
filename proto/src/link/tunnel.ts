// Tunnels: one TCP-like byte stream carried as frames on one bidi RPC.
//
// `TunnelDuplex` is the stream both ends use: a Node Duplex whose readable side is fed from the
// frames the peer sends (data, half-close, error) and whose writable side becomes frames for the
// peer. It never reads ahead: the next frame is pulled from the RPC only when the Duplex's reader
// wants bytes, so a slow reader stops the RPC stream, and HTTP/2 flow control stops the sender.
// Writes complete only once their last frame was handed to the RPC and the RPC asked for more.
//
// The agent's side: after the server sends the `open_tunnel` command, `acceptTunnel` dials
// TunnelService.Open with the hello naming the tunnel and resolves once the server accepted it;
// `serveTunnelToTcp` then joins the tunnel to a TCP port (the common case). The shim's embedded
// SSH server takes the Duplex as a connection instead.
import { connect as netConnect, type Socket } from "node:net";
import { Duplex } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { LinkErrorCode, OpenRequestSchema, TunnelService, type OpenRequest, type OpenResponse } from "../agent.js";
import { agentTransport } from "./enroll.js";
import { IdentityStore } from "./identity.js";
import { LinkCallError } from "./protocol.js";

/** Largest data frame, both directions (the contract's limit). */
export const TUNNEL_FRAME_BYTES = 64 * 1024;

/** One frame of a tunnel, whichever RPC carries it. */
export type TunnelFrame = { case: "data"; value: Uint8Array } | { case: "halfClose" } | { case: "error"; message: string };

/** The peer ended the tunnel with an error frame (its connection to the target failed, or it gave up). */
export class TunnelError extends Error {
  override name = "TunnelError";
}

export interface TunnelDuplexOptions {
  /** Ends the carrying RPC at once (e.g. aborts the call); used when the peer does not finish it within `closeGraceMs` of a close. */
  cancel?: (reason: Error) => void;
  /** How long a closed tunnel waits for the peer to end the RPC before cancelling it; default 5 s. */
  closeGraceMs?: number;
  /** Readable buffer before the tunnel stops pulling frames; default 64 KiB. */
  highWaterMark?: number;
}

interface Outgoing {
  frame: TunnelFrame;
  done?: (e?: Error | null) => void;
}

/**
 * A byte stream over frames. Feed it the peer's frames with `attach(source)`; send its frames by
 * iterating `outgoing()` in the RPC's request (agent) or response (server) stream.
 */
export class TunnelDuplex extends Duplex {
  private source: AsyncIterator<TunnelFrame> | null = null;
  private pulling = false;
  /** The peer half-closed: only an error or the end of the RPC may follow. */
  private peerClosed = false;
  private sourceDone = false;
  /** The peer sent an error frame. */
  private peerFailed = false;
  private readonly queue: Outgoing[] = [];
  private inFlight: Outgoing | null = null;
  private queueEnded = false;
  private wake: (() => void) | null = null;
  private graceTimer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: TunnelDuplexOptions = {}) {
    super({ allowHalfOpen: true, readableHighWaterMark: opts.highWaterMark ?? 64 * 1024, writableHighWaterMark: opts.highWaterMark ?? 64 * 1024 });
  }

  /** Sets where the peer's frames come from; reading starts when the Duplex is read. */
  attach(source: AsyncIterable<TunnelFrame> | AsyncIterator<TunnelFrame>): this {
    this.source = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source;
    if (this.destroyed || this.peerClosed) this.pump(); // closed before attach: drain only
    return this;
  }

  /** Whether the peer's bytes all arrived (half-close or the end of its stream). */
  get peerEnded(): boolean {
    return this.peerClosed;
  }

  override _read(): void {
    this.pump();
  }

  /** The only reader of `source`: pushes bytes while wanted; after a close it drains to the end. */
  private pump(): void {
    if (this.pulling || this.sourceDone || !this.source) return;
    this.pulling = true;
    void this.pull(this.source);
  }

  private async pull(source: AsyncIterator<TunnelFrame>): Promise<void> {
    try {
      for (;;) {
        const r = await source.next();
        if (r.done) {
          this.sourceDone = true;
          this.finishGrace();
          if (!this.peerClosed) {
            this.peerClosed = true;
            if (!this.destroyed) this.push(null); // the RPC ended without a half-close: EOF all the same
          }
          return;
        }
        const f = r.value;
        if (this.destroyed) continue; // closing: discard until the peer ends the RPC
        if (f.case === "error") {
          this.peerClosed = this.peerFailed = true;
          this.destroy(new TunnelError(f.message || "the peer closed the tunnel"));
          continue;
        }
        if (this.peerClosed) {
          if (f.case === "data" && f.value.length > 0) this.destroy(new TunnelError("protocol error: data after half-close"));
          continue;
        }
        if (f.case === "halfClose") {
          this.peerClosed = true;
          this.push(null);
          continue; // keep listening: an error may still come while this side writes
        }
        if (f.value.length === 0) continue;
        if (!this.push(f.value)) {
          this.pulling = false; // resumes on the next _read
          return;
        }
      }
    } catch (e) {
      this.sourceDone = true;
      this.finishGrace();
      if (!this.destroyed) this.destroy(e instanceof Error ? e : new Error(String(e)));
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (chunk.length === 0) return cb();
    for (let at = 0; at < chunk.length; at += TUNNEL_FRAME_BYTES) {
      const end = Math.min(chunk.length, at + TUNNEL_FRAME_BYTES);
      this.enqueue({ frame: { case: "data", value: chunk.subarray(at, end) }, done: end === chunk.length ? cb : undefined });
    }
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.enqueue({ frame: { case: "halfClose" }, done: cb });
  }

  override _destroy(error: Error | null, cb: (e?: Error | null) => void): void {
    const clean = !error && this.writableFinished && this.peerClosed;
    // Tell the peer, unless the tunnel ended cleanly or the peer is the one that failed.
    if (!clean && !this.peerFailed) this.enqueue({ frame: { case: "error", message: error?.message || "tunnel closed" } });
    this.queueEnded = true;
    this.wakeUp();
    // Keep reading the peer's frames until it ends the RPC; cancel the RPC if that takes too long.
    if (this.source && !this.sourceDone) {
      this.graceTimer = setTimeout(() => this.opts.cancel?.(error ?? new Error("tunnel closed")), this.opts.closeGraceMs ?? 5_000);
      this.graceTimer.unref();
      this.pump();
    }
    cb(error);
  }

  private finishGrace(): void {
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
  }

  private enqueue(o: Outgoing): void {
    if (this.queueEnded) return o.done?.(new Error("tunnel closed"));
    this.queue.push(o);
    this.wakeUp();
  }

  private wakeUp(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /**
   * The frames to send, pulled by the RPC. A write's callback runs when the RPC asks for the
   * frame after its last one, i.e. once that one was written: the writer's backpressure.
   */
  async *outgoing(): AsyncGenerator<TunnelFrame, void, undefined> {
    try {
      for (;;) {
        while (this.queue.length === 0 && !this.queueEnded) await new Promise<void>((r) => (this.wake = r));
        const o = this.queue.shift();
        if (!o) return;
        this.inFlight = o;
        yield o.frame;
        this.inFlight = null;
        o.done?.();
      }
    } finally {
      // The RPC stopped taking frames: fail what is still waiting, and the tunnel with it.
      const gone = new Error("the tunnel's stream ended");
      this.inFlight?.done?.(gone);
      this.inFlight = null;
      for (const o of this.queue.splice(0)) o.done?.(gone);
      this.queueEnded = true;
      if (!this.destroyed && !(this.writableFinished && this.peerClosed)) this.destroy(gone);
    }
  }
}

/** Frames of an agent-side stream (server → agent responses). */
async function* fromResponses(it: AsyncIterator<OpenResponse>): AsyncGenerator<TunnelFrame> {
  for (;;) {
    const r = await it.next();
    if (r.done) return;
    const f = r.value.frame;
    if (f.case === "data") yield { case: "data", value: f.value };
    else if (f.case === "halfClose") yield { case: "halfClose" };
    else if (f.case === "error") yield { case: "error", message: f.value.message };
  }
}

/** Agent → server message for a frame. */
export function tunnelRequest(f: TunnelFrame): OpenRequest {
  return create(OpenRequestSchema, {
    frame: f.case === "data" ? f : f.case === "halfClose" ? { case: "halfClose", value: {} } : { case: "error", value: { message: f.message } },
  });
}

export interface AcceptTunnelOptions {
  /** Tunnel id from the `open_tunnel` command. */
  tunnelId: string;
  /** The agent's identity store (a new HTTP/2 connection per tunnel, closed with it)… */
  home?: string;
  /** …or a transport to the agent port to share (e.g. one `agentTransport` for all of a shim's tunnels). */
  transport?: Transport;
  /** How long to wait for the server to accept the tunnel; default 10 s. */
  timeoutMs?: number;
  /** Aborting closes the tunnel (while opening: rejects). */
  signal?: AbortSignal;
  /** How long a closed tunnel waits for the server to end the stream before cancelling it; default 5 s. */
  closeGraceMs?: number;
}

/**
 * Dials TunnelService.Open for `tunnelId` and resolves with the tunnel once the server accepted
 * it. Rejects with the server's refusal (unknown or expired id, a tunnel of another agent), or on
 * timeout. Ending the Duplex half-closes; destroying it with an error sends the peer an error frame.
 */
export async function acceptTunnel(o: AcceptTunnelOptions): Promise<TunnelDuplex> {
  if (!o.transport && !o.home) throw new Error("acceptTunnel needs `home` (an identity store) or `transport`");
  let transport = o.transport;
  let closeSession = (): void => {};
  if (!transport) {
    const id = new IdentityStore(o.home!).load();
    const made = agentTransport(id.serverUrl, { caPem: id.caPem, certPem: id.certPem, keyPem: id.keyPem, servername: id.servername });
    transport = made.transport;
    closeSession = () => made.session.abort();
  }
  const abort = new AbortController();
  const onAbort = (): void => abort.abort(o.signal?.reason ?? new Error("aborted"));
  if (o.signal?.aborted) onAbort();
  o.signal?.addEventListener("abort", onAbort, { once: true });
  const tunnel = new TunnelDuplex({ cancel: (reason) => abort.abort(reason), closeGraceMs: o.closeGraceMs });
  async function* requests(): AsyncGenerator<OpenRequest> {
    yield create(OpenRequestSchema, { frame: { case: "hello", value: { tunnelId: o.tunnelId } } });
    for await (const f of tunnel.outgoing()) yield tunnelRequest(f);
  }
  const responses = createClient(TunnelService, transport).open(requests(), { signal: abort.signal })[Symbol.asyncIterator]();
  const finished = (): void => {
    o.signal?.removeEventListener("abort", onAbort);
    closeSession();
  };
  // The server answers the hello with an (empty) first frame once it matched the tunnel.
  const timeoutMs = o.timeoutMs ?? 10_000;
  let timer: NodeJS.Timeout | undefined;
  let first: IteratorResult<OpenResponse>;
  try {
    first = await Promise.race([
      responses.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new ConnectError(`the server did not accept tunnel ${o.tunnelId} within ${timeoutMs} ms`, Code.DeadlineExceeded)), timeoutMs);
      }),
    ]);
  } catch (e) {
    abort.abort(e);
    tunnel.destroy();
    finished();
    throw e;
  } finally {
    clearTimeout(timer);
  }
  if (first.done) {
    tunnel.destroy();
    finished();
    throw new ConnectError(`the server ended tunnel ${o.tunnelId} before accepting it`, Code.Unavailable);
  }
  const head = first.value;
  async function* all(): AsyncGenerator<TunnelFrame> {
    try {
      yield* fromResponses((async function* () {
        yield head;
        for (;;) {
          const r = await responses.next();
          if (r.done) return;
          yield r.value;
        }
      })());
    } finally {
      finished();
    }
  }
  return tunnel.attach(all());
}

/**
 * Joins a tunnel to TCP `host:port`: resolves once connected, then copies both ways with
 * half-closes passed through (TCP FIN ↔ half-close frame) and errors turned into error frames.
 * Rejects (and sends the peer an error frame) when the connection fails, with a LinkCallError
 * UNAVAILABLE an `open_tunnel` handler can throw as is.
 */
export function serveTunnelToTcp(tunnel: Duplex, host: string, port: number, opts: { connectTimeoutMs?: number } = {}): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: host || "127.0.0.1", port, allowHalfOpen: true, noDelay: true });
    const timeoutMs = opts.connectTimeoutMs ?? 10_000;
    const timer = setTimeout(() => socket.destroy(new Error(`connect to ${host}:${port} timed out after ${timeoutMs} ms`)), timeoutMs);
    const onConnectError = (e: Error): void => {
      clearTimeout(timer);
      tunnel.once("error", () => {}); // the error goes to the peer as a frame, and to the caller below
      tunnel.destroy(new Error(e.message));
      reject(new LinkCallError(e.message, LinkErrorCode.UNAVAILABLE, true, { host, port: String(port) }));
    };
    const onTunnelClose = (): void => void socket.destroy(new Error("the tunnel closed before the target connected"));
    socket.once("error", onConnectError);
    tunnel.once("close", onTunnelClose);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.off("error", onConnectError);
      tunnel.off("close", onTunnelClose);
      spliceStreams(tunnel, socket);
      resolve(socket);
    });
  });
}

/**
 * Copies `a` ↔ `b` with backpressure: each side's end becomes the other's end (half-close), an
 * error on either destroys the other with it, and closing one closes the other once both
 * directions are done.
 */
export function spliceStreams(a: Duplex, b: Duplex): void {
  a.pipe(b);
  b.pipe(a);
  a.once("error", (e) => b.destroy(e));
  b.once("error", (e) => a.destroy(e));
  // A side closed without an error and without finishing both directions: close the other too.
  a.once("close", () => b.destroyed || (a.readableEnded && a.writableFinished ? undefined : b.destroy()));
  b.once("close", () => a.destroyed || (b.readableEnded && b.writableFinished ? undefined : a.destroy()));
}
