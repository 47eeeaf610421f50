// The registry of connected agents and the reverse-call machinery.
//
// One `AgentLink` per agent identity (kind + id) lives as long as the server knows the agent; each
// stream the agent opens attaches to it as a session, and a newer stream replaces an older one.
// Calls made while the agent is away wait (within their deadline) and are sent again when it
// returns: agents answer a re-delivered request id from their stored replies, so nothing runs twice.
import { EventEmitter } from "node:events";
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  CancelSchema,
  HeartbeatSchema,
  LinkAcceptedSchema,
  LinkErrorCode,
  RunnerCommandSchema,
  RunnerLinkServiceConnectResponseSchema,
  ShimCommandSchema,
  ShimLinkServiceConnectResponseSchema,
  type RunnerStateReport,
  type ShimStateReport,
} from "@dstack/proto/agent";
import { AsyncQueue, LinkCallError, type AgentKindName, type CommandCase, type CommandOf, type EventOf, type ReplyResultOf, type ResultOf } from "@dstack/proto/link";
import type { Message } from "@bufbuild/protobuf";

export interface LinkSettings {
  /** How often both sides send heartbeats. Default 5 s (Teleport's reverse-tunnel period). */
  heartbeatIntervalMs: number;
  /** Heartbeat intervals without a message before the agent is marked unreachable. Default 3. */
  missedHeartbeats: number;
  /** Intervals of silence after which the server closes a session it no longer hears. Default 10. */
  idleCloseHeartbeats: number;
  /** Deadline of a call made without one. Default 30 s. */
  defaultCallDeadlineMs: number;
  /**
   * Heartbeats per second this server sends (and so receives) at most: with more links than
   * `heartbeatIntervalMs` allows, a newly accepted link is told a longer period (whole seconds),
   * as Nomad stretches its heartbeat TTL to N/50 s (anchors §1.2, §1.7 d); links already up are
   * told the longer period in a heartbeat. Default 1000: 5 s up to 5,000 links, 10 s at 10,000.
   */
  maxHeartbeatsPerSecond: number;
}

export const DEFAULT_LINK_SETTINGS: LinkSettings = {
  heartbeatIntervalMs: 5_000,
  missedHeartbeats: 3,
  idleCloseHeartbeats: 10,
  defaultCallDeadlineMs: 30_000,
  maxHeartbeatsPerSecond: 1000,
};

export interface CallOptions {
  /** Total time budget in ms, measured from the call; default `defaultCallDeadlineMs`. */
  deadlineMs?: number;
  /** Aborting sends the agent a Cancel and rejects the call with `canceled`. */
  signal?: AbortSignal;
}

type StateReport<K extends AgentKindName> = K extends "shim" ? ShimStateReport : RunnerStateReport;

interface Pending {
  requestId: string;
  envelope: Message; // the whole server→agent message, ready to re-send
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

/** One stream of an agent. */
export interface LinkSession {
  id: string;
  out: AsyncQueue<Message>;
  connectedAt: Date;
  remoteAddress: string | undefined;
}

export class AgentLink<K extends AgentKindName = AgentKindName> {
  session: LinkSession | null = null;
  reachable = false;
  lastSeenAt = 0;
  /** The last full state report the agent sent (first message of every stream). */
  stateReport: StateReport<K> | null = null;
  /** The heartbeat period the current session was told in LinkAccepted. */
  heartbeatMs = 0;
  /** When the heartbeat timer wheel next looks at this link (epoch ms). */
  nextBeatAt = 0;
  /** When anything but a heartbeat last went down the link: such traffic makes a heartbeat redundant. */
  lastSentAt = 0;
  private readonly pending = new Map<string, Pending>();

  constructor(
    readonly kind: K,
    readonly id: string,
    private readonly registry: Links,
  ) {}

  get connected(): boolean {
    return this.session !== null;
  }

  /**
   * Sends `command` down the link and resolves with the agent's typed result. Rejects with a
   * LinkCallError: the agent's own error, DEADLINE_EXCEEDED, or CANCELLED when `signal` aborts.
   */
  call<C extends CommandCase<K>>(command: Extract<CommandOf<K>, { case: C }>, opts: CallOptions = {}): Promise<ResultOf<K, C>> {
    const deadlineMs = opts.deadlineMs ?? this.registry.settings.defaultCallDeadlineMs;
    const requestId = randomUUID();
    const commandMsg =
      this.kind === "shim"
        ? create(ShimCommandSchema, { requestId, deadline: durationFromMs(deadlineMs), command: command as never })
        : create(RunnerCommandSchema, { requestId, deadline: durationFromMs(deadlineMs), command: command as never });
    const envelope =
      this.kind === "shim"
        ? create(ShimLinkServiceConnectResponseSchema, { message: { case: "command", value: commandMsg as never } })
        : create(RunnerLinkServiceConnectResponseSchema, { message: { case: "command", value: commandMsg as never } });
    return new Promise<ResultOf<K, C>>((resolve, reject) => {
      if (opts.signal?.aborted) return reject(new LinkCallError(`call ${requestId} cancelled before it was sent`, LinkErrorCode.CANCELLED));
      const finish = (): void => {
        clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
        this.pending.delete(requestId);
      };
      const timer = setTimeout(() => {
        finish();
        this.sendCancel(requestId, "deadline exceeded");
        reject(new LinkCallError(`${this.kind} ${this.id} did not answer ${String(command.case)} within ${deadlineMs} ms`, LinkErrorCode.DEADLINE_EXCEEDED, true));
      }, deadlineMs);
      const onAbort = (): void => {
        finish();
        this.sendCancel(requestId, String(opts.signal?.reason ?? "cancelled by the server"));
        reject(new LinkCallError(`call ${String(command.case)} to ${this.kind} ${this.id} was cancelled`, LinkErrorCode.CANCELLED));
      };
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      this.pending.set(requestId, {
        requestId,
        envelope,
        resolve: (v) => (finish(), resolve(v as ResultOf<K, C>)),
        reject: (e) => (finish(), reject(e)),
      });
      this.send(envelope);
    });
  }

  /** Number of calls waiting for a reply. */
  get pendingCalls(): number {
    return this.pending.size;
  }

  private sendCancel(requestId: string, reason: string): void {
    const cancel = create(CancelSchema, { requestId, reason });
    const msg =
      this.kind === "shim"
        ? create(ShimLinkServiceConnectResponseSchema, { message: { case: "cancel", value: cancel } })
        : create(RunnerLinkServiceConnectResponseSchema, { message: { case: "cancel", value: cancel } });
    this.send(msg);
  }

  private send(msg: Message): void {
    if (this.session?.out.push(msg)) this.lastSentAt = Date.now();
  }

  /** @internal A reply came up the link. */
  settle(requestId: string, result: ReplyResultOf<K> | { case: undefined }): void {
    const p = this.pending.get(requestId);
    if (!p) return; // late reply to a call that timed out or was cancelled
    if (result.case === undefined) p.reject(new LinkCallError("agent sent an empty reply", LinkErrorCode.INTERNAL));
    else if (result.case === "error") p.reject(LinkCallError.fromLinkError(result.value));
    else p.resolve(result.value);
  }

  /** @internal */
  attach(session: LinkSession, heartbeatIntervalMs: number): void {
    this.session = session;
    this.heartbeatMs = heartbeatIntervalMs;
    this.nextBeatAt = Date.now() + heartbeatIntervalMs;
    const accepted = create(LinkAcceptedSchema, { linkId: session.id, serverTime: timestampNow(), heartbeatIntervalSeconds: Math.max(1, Math.round(heartbeatIntervalMs / 1000)) });
    session.out.push(
      this.kind === "shim"
        ? create(ShimLinkServiceConnectResponseSchema, { message: { case: "accepted", value: accepted } })
        : create(RunnerLinkServiceConnectResponseSchema, { message: { case: "accepted", value: accepted } }),
    );
    // Calls made while the agent was away, or lost with the previous stream.
    for (const p of this.pending.values()) this.send(p.envelope);
  }

  /** @internal */
  heartbeat(intervalSeconds = 0): void {
    const hb = create(HeartbeatSchema, { sentAt: timestampNow(), intervalSeconds });
    this.session?.out.push(
      this.kind === "shim"
        ? create(ShimLinkServiceConnectResponseSchema, { message: { case: "heartbeat", value: hb } })
        : create(RunnerLinkServiceConnectResponseSchema, { message: { case: "heartbeat", value: hb } }),
    );
  }

  /** @internal Fails every waiting call (the agent was revoked or forgotten). */
  failPending(e: unknown): void {
    for (const p of [...this.pending.values()]) p.reject(e);
  }
}

export type DisconnectReason = "closed" | "replaced" | "error" | "idle" | "revoked" | "server-closed";

export interface LinkEvents {
  connected: [link: AgentLink, session: LinkSession];
  disconnected: [link: AgentLink, reason: DisconnectReason, error?: unknown];
  event: [link: AgentLink, event: EventOf<"shim"> | EventOf<"runner">];
  unreachable: [link: AgentLink];
  reachable: [link: AgentLink];
  violation: [link: AgentLink, error: Error];
}

/** Every agent the server has heard from, by identity. Subscribe with `links.on("connected", …)`. */
export class Links extends EventEmitter<LinkEvents> {
  private readonly agents = new Map<string, AgentLink>();
  private sweeper: NodeJS.Timeout | null = null;
  private live = 0;
  private tickMs = 1000;
  private lastSweepAt = Date.now();

  constructor(readonly settings: LinkSettings = DEFAULT_LINK_SETTINGS) {
    super();
    // One coarse timer for every link (a wheel, not a timer per link): each tick beats only the
    // links that are due, so heartbeats spread over the period instead of 10,000 leaving in one
    // burst that stalls the event loop (and every reverse call) once per period.
    const tick = Math.max(10, Math.min(1000, Math.floor(settings.heartbeatIntervalMs / 10)));
    this.tickMs = tick;
    this.sweeper = setInterval(() => this.sweep(), tick);
    this.sweeper.unref();
  }

  /** Connected links (kept as a count: the registry also holds agents that are away). */
  get connectedCount(): number {
    return this.live;
  }

  /** The period a link accepted now is told: the configured one, stretched to keep within maxHeartbeatsPerSecond. */
  heartbeatIntervalFor(links: number): number {
    const { heartbeatIntervalMs, maxHeartbeatsPerSecond } = this.settings;
    const scaled = (links / Math.max(1, maxHeartbeatsPerSecond)) * 1000;
    return scaled <= heartbeatIntervalMs ? heartbeatIntervalMs : Math.ceil(scaled / 1000) * 1000;
  }

  /** The link of an agent (created on first use, so calls can wait for an agent still dialing in). */
  get<K extends AgentKindName>(kind: K, id: string): AgentLink<K> {
    const key = `${kind}/${id}`;
    let link = this.agents.get(key);
    if (!link) {
      link = new AgentLink(kind, id, this);
      this.agents.set(key, link);
    }
    return link as AgentLink<K>;
  }

  shim(instanceId: string): AgentLink<"shim"> {
    return this.get("shim", instanceId);
  }

  runner(jobSubmissionId: string): AgentLink<"runner"> {
    return this.get("runner", jobSubmissionId);
  }

  /** Links with a live stream. */
  connected(): AgentLink[] {
    return [...this.agents.values()].filter((l) => l.connected);
  }

  /** Drops an agent: its waiting calls fail and its stream (if any) closes. */
  forget(kind: AgentKindName, id: string, error: unknown = new ConnectError(`${kind} ${id} was removed`, Code.Unavailable)): void {
    const link = this.agents.get(`${kind}/${id}`);
    if (!link) return;
    this.agents.delete(`${kind}/${id}`);
    link.failPending(error);
    if (link.session) this.detach(link, link.session, "revoked", error);
  }

  /** @internal A stream opened and its first message (the state report) was accepted. */
  open<K extends AgentKindName>(kind: K, id: string, report: StateReport<K>, remoteAddress: string | undefined): { link: AgentLink<K>; session: LinkSession } {
    const link = this.get(kind, id);
    const session: LinkSession = { id: randomUUID(), out: new AsyncQueue<Message>(), connectedAt: new Date(), remoteAddress };
    if (link.session) this.detach(link, link.session, "replaced", new ConnectError(`a newer connection of ${kind} ${id} replaced this one`, Code.Aborted));
    link.stateReport = report;
    this.live++;
    link.attach(session, this.heartbeatIntervalFor(this.live));
    this.emit("connected", link, session);
    this.seen(link);
    return { link, session };
  }

  /** @internal Any message from the agent proves it alive. */
  seen(link: AgentLink): void {
    link.lastSeenAt = Date.now();
    if (!link.reachable) {
      link.reachable = true;
      this.emit("reachable", link);
    }
  }

  /** @internal Ends a session; `error` ends its stream with that status. */
  detach(link: AgentLink, session: LinkSession, reason: DisconnectReason, error?: unknown): void {
    session.out.end(error);
    if (link.session !== session) return; // an older session, already replaced
    link.session = null;
    this.live--;
    this.emit("disconnected", link, reason, error);
  }

  private sweep(): void {
    const now = Date.now();
    // A sweep that comes late means the event loop was busy (GC, a long task): messages that
    // arrived meanwhile are still unread, so no link is judged silent until the next sweep.
    const stalled = now - this.lastSweepAt > this.tickMs * 3;
    this.lastSweepAt = now;
    const { missedHeartbeats, idleCloseHeartbeats } = this.settings;
    for (const link of this.agents.values()) {
      if (now < link.nextBeatAt) continue;
      // More links than the heartbeat budget: stretch this live link's period and tell the agent
      // in this heartbeat. Only ever stretched within a session (a shorter period the agent has
      // not heard yet would make it look silent); a reconnect gets the period of that moment.
      const want = link.session ? this.heartbeatIntervalFor(this.live) : 0;
      const stretch = want > link.heartbeatMs && link.heartbeatMs > 0;
      if (stretch) link.heartbeatMs = want;
      const hb = link.heartbeatMs || this.settings.heartbeatIntervalMs;
      link.nextBeatAt = now + hb;
      // A command or cancel sent within the period already told the agent the server is alive.
      if (link.session && (stretch || now - link.lastSentAt >= hb)) link.heartbeat(stretch ? Math.round(hb / 1000) : 0);
      const silent = now - link.lastSeenAt;
      if (stalled) continue;
      if (link.reachable && silent > hb * missedHeartbeats) {
        link.reachable = false;
        this.emit("unreachable", link);
      }
      if (link.session && silent > hb * idleCloseHeartbeats) {
        this.detach(link, link.session, "idle", new ConnectError(`no message for ${silent} ms`, Code.DeadlineExceeded));
      }
    }
  }

  /** Stops the heartbeat timer and ends every stream. */
  close(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const link of this.agents.values()) if (link.session) this.detach(link, link.session, "server-closed");
  }
}
