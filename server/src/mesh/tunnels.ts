// The server's end of tunnels. Nothing ever connects into a host: to reach a container port or
// the shim's SSH server, the server sends the shim an `open_tunnel` command down its link, and
// the shim dials TunnelService.Open on the agent port, naming the tunnel id in its first frame.
// The broker matches that stream to the waiting `open()` and hands the caller a Duplex.
//
// Refusals: a tunnel id is accepted once, only from the agent it was opened for (the TLS
// certificate's identity), and only while `open()` waits for it; anything else ends the stream
// with MESH_TUNNEL_UNKNOWN or MESH_TUNNEL_FORBIDDEN.
//
// Backpressure: the Duplex pulls the agent's frames only as fast as its reader reads (HTTP/2 flow
// control then stops the agent), and its writes complete only as the agent's stream takes them.
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { UniversalHandlerOptions } from "@connectrpc/connect/protocol";
import { OpenResponseSchema, OpenTunnelCommandSchema, TunnelTarget, type OpenRequest, type OpenResponse, type TunnelService } from "@dstack/proto/agent";
import { TunnelDuplex, type AgentKindName, type TunnelFrame } from "@dstack/proto/link";
import { meshErr } from "./errors.js";
import type { Links } from "./links.js";
import { requirePeer } from "./peer.js";
import type { Revocations } from "./revocations.js";

export { TunnelDuplex, TunnelError } from "@dstack/proto/link";

export interface TunnelSettings {
  /** How long `open()` waits for the shim to reach the target and dial the tunnel in. Default 10 s. */
  openDeadlineMs: number;
}

export const DEFAULT_TUNNEL_SETTINGS: TunnelSettings = { openDeadlineMs: 10_000 };

export type TunnelTargetName = "ssh" | "container-port" | "host-port";

export interface OpenTunnelOptions {
  /** The instance whose shim opens the tunnel. */
  instanceId: string;
  /** The shim's SSH server, a port of a task's container, or a port on the host. */
  target: TunnelTargetName;
  /** The task (job submission id) for `container-port`, and for `ssh` into a container. */
  taskId?: string;
  /** For `host-port`; empty means 127.0.0.1. */
  host?: string;
  /** For `container-port` and `host-port`. */
  port?: number;
  /** Aborting while opening rejects with `canceled`; once open, destroy the Duplex instead. */
  signal?: AbortSignal;
  /** Overrides `openDeadlineMs` for this tunnel. */
  deadlineMs?: number;
}

const TARGETS: Record<TunnelTargetName, TunnelTarget> = {
  ssh: TunnelTarget.SSH,
  "container-port": TunnelTarget.CONTAINER_PORT,
  "host-port": TunnelTarget.HOST_PORT,
};

interface Pending {
  instanceId: string;
  /** Hands the agent's stream to the waiting open(); false when it no longer waits. */
  accept(tunnel: TunnelDuplex): boolean;
}

/** Frames of the agent's stream, after its hello. */
async function* fromRequests(it: AsyncIterator<OpenRequest>): AsyncGenerator<TunnelFrame> {
  for (;;) {
    const r = await it.next();
    if (r.done) return;
    const f = r.value.frame;
    if (f.case === "data") yield { case: "data", value: f.value };
    else if (f.case === "halfClose") yield { case: "halfClose" };
    else if (f.case === "error") yield { case: "error", message: f.value.message };
    else if (f.case === "hello") yield { case: "error", message: "protocol error: a second hello" };
  }
}

function toResponse(f: TunnelFrame): OpenResponse {
  return create(OpenResponseSchema, {
    frame: f.case === "data" ? f : f.case === "halfClose" ? { case: "halfClose", value: {} } : { case: "error", value: { message: f.message } },
  });
}

export class TunnelBroker {
  private readonly pending = new Map<string, Pending>();
  /** Open tunnels and the instance each reaches. */
  private readonly open_ = new Map<TunnelDuplex, string>();

  constructor(
    private readonly links: Links,
    private readonly revocations: Revocations,
    readonly settings: TunnelSettings = DEFAULT_TUNNEL_SETTINGS,
  ) {}

  /** Tunnels waiting for their agent's stream. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Tunnels open now (both directions not yet closed). */
  get openCount(): number {
    return this.open_.size;
  }

  /**
   * Asks the instance's shim to open a tunnel to `target` and resolves with it once the shim
   * reached the target and its stream arrived. Rejects with MESH_AGENT_OFFLINE when the shim is
   * not connected, with the shim's own error (e.g. UNAVAILABLE "connect ECONNREFUSED …") when it
   * could not reach the target, and with MESH_TUNNEL_TIMEOUT at the deadline.
   */
  open(o: OpenTunnelOptions): Promise<TunnelDuplex> {
    const link = this.links.shim(o.instanceId);
    if (!link.connected) return Promise.reject(meshErr("MESH_AGENT_OFFLINE", { kind: "shim", id: o.instanceId }));
    const deadlineMs = o.deadlineMs ?? this.settings.openDeadlineMs;
    const tunnelId = randomUUID();
    return new Promise<TunnelDuplex>((resolve, reject) => {
      let tunnel: TunnelDuplex | null = null;
      let replied = false;
      let settled = false;
      const callAbort = new AbortController();
      const cleanup = (): void => {
        clearTimeout(timer);
        this.pending.delete(tunnelId);
        o.signal?.removeEventListener("abort", onAbort);
      };
      const fail = (e: unknown): void => {
        if (settled) return;
        settled = true;
        cleanup();
        callAbort.abort(e);
        tunnel?.once("error", () => {}); // never handed out: the error goes to the agent as a frame
        tunnel?.destroy(e instanceof Error ? e : new Error(String(e)));
        reject(e);
      };
      const maybeDone = (): void => {
        if (settled || !tunnel || !replied) return;
        settled = true;
        cleanup();
        resolve(tunnel);
      };
      const onAbort = (): void => fail(meshErr("MESH_TUNNEL_CANCELED", { tunnel: tunnelId, reason: String(o.signal?.reason ?? "aborted") }));
      const timer = setTimeout(() => fail(meshErr("MESH_TUNNEL_TIMEOUT", { kind: "shim", id: o.instanceId, tunnel: tunnelId, ms: deadlineMs })), deadlineMs);
      if (o.signal?.aborted) return onAbort();
      o.signal?.addEventListener("abort", onAbort, { once: true });
      this.pending.set(tunnelId, {
        instanceId: o.instanceId,
        accept: (t) => {
          if (settled) return false;
          tunnel = t;
          maybeDone();
          return true;
        },
      });
      const command = create(OpenTunnelCommandSchema, { tunnelId, target: TARGETS[o.target], taskId: o.taskId ?? "", host: o.host ?? "", port: o.port ?? 0 });
      link.call({ case: "openTunnel", value: command }, { deadlineMs, signal: callAbort.signal }).then(() => {
        replied = true;
        maybeDone();
      }, fail);
    });
  }

  /** TunnelService.Open: an agent's stream for a tunnel the server asked it to open. */
  async *serve(requests: AsyncIterable<OpenRequest>, ctx: HandlerContext): AsyncGenerator<OpenResponse> {
    const peer = requirePeer(ctx);
    if (this.revocations.isRevoked(peer.kind, peer.id)) throw meshErr("MESH_REVOKED", { kind: peer.kind, id: peer.id });
    const it = requests[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done) return;
    const hello = first.value.frame;
    if (hello.case !== "hello") throw meshErr("MESH_PROTOCOL", { reason: "the first message of a tunnel must be its hello" });
    const id = hello.value.tunnelId;
    const p = this.pending.get(id);
    if (!p) throw meshErr("MESH_TUNNEL_UNKNOWN", { tunnel: id });
    if (peer.kind !== "shim" || peer.id !== p.instanceId) throw meshErr("MESH_TUNNEL_FORBIDDEN", { kind: peer.kind, id: peer.id, tunnel: id });
    this.pending.delete(id);
    const tunnel = new TunnelDuplex();
    tunnel.attach(fromRequests(it));
    if (!p.accept(tunnel)) throw meshErr("MESH_TUNNEL_UNKNOWN", { tunnel: id });
    this.open_.set(tunnel, peer.id);
    tunnel.once("close", () => this.open_.delete(tunnel));
    const onAbort = (): void => void tunnel.destroy(new Error(`the agent's stream for tunnel ${id} closed`));
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    try {
      // An empty first frame tells the agent the tunnel was accepted.
      yield create(OpenResponseSchema, { frame: { case: "data", value: new Uint8Array(0) } });
      for await (const f of tunnel.outgoing()) yield toResponse(f);
    } finally {
      ctx.signal.removeEventListener("abort", onAbort);
    }
  }

  /** Closes every open tunnel of an agent (it was revoked or removed); their readers see `error`. */
  closeAgent(kind: AgentKindName, id: string, error: Error): number {
    if (kind !== "shim") return 0;
    let n = 0;
    for (const [t, instanceId] of this.open_) if (instanceId === id) (t.destroy(error), n++);
    return n;
  }

  /**
   * Handler options for TunnelService: no compression. Tunnel bytes are mostly encrypted (SSH) or
   * already compressed, and gzip would cost more CPU than everything else on the path.
   */
  static readonly handlerOptions: Partial<UniversalHandlerOptions> = { acceptCompression: [] };

  /** The TunnelService implementation for the agent port's router. */
  service(): Partial<ServiceImpl<typeof TunnelService>> {
    return { open: (requests, ctx) => this.serve(requests, ctx) };
  }
}
