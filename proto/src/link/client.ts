// The agent's end of its control link: hold one stream to the server, report full state first on
// every (re)connect, answer commands through handlers, send heartbeats, reconnect with full-jitter
// exponential backoff, and renew the certificate before it expires.
import { EventEmitter } from "node:events";
import { create, type Message, type MessageInitShape } from "@bufbuild/protobuf";
import { durationMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { ConnectError, createClient } from "@connectrpc/connect";
import {
  HeartbeatSchema,
  LinkErrorCode,
  LinkErrorSchema,
  RunnerEventSchema,
  RunnerLinkService,
  RunnerLinkServiceConnectRequestSchema,
  RunnerReplySchema,
  ShimEventSchema,
  ShimLinkService,
  ShimLinkServiceConnectRequestSchema,
  ShimReplySchema,
  type RunnerCommand,
  type ShimCommand,
} from "../agent.js";
import { agentTransport, renewCertificate } from "./enroll.js";
import { IdentityStore } from "./identity.js";
import { LinkCallError, linkErrorCodeOf, type AgentKindName, type CommandCase, type CommandOf, type KindTypes } from "./protocol.js";
import { AsyncQueue } from "./queue.js";

type EventInit<K extends AgentKindName> = K extends "shim" ? MessageInitShape<typeof ShimEventSchema> : MessageInitShape<typeof RunnerEventSchema>;
type ReplyInit<K extends AgentKindName> = K extends "shim" ? MessageInitShape<typeof ShimReplySchema> : MessageInitShape<typeof RunnerReplySchema>;
type StateReportInit<K extends AgentKindName> = Extract<NonNullable<EventInit<K>["event"]>, { case: "stateReport" }>["value"];
type ResultInit<K extends AgentKindName, C> = Extract<NonNullable<ReplyInit<K>["result"]>, { case: C }>["value"];

export interface CommandContext {
  requestId: string;
  /** Aborts on the server's Cancel, on the command's deadline, or when the link closes for good. */
  signal: AbortSignal;
}

export type CommandHandlers<K extends AgentKindName> = {
  [C in CommandCase<K>]?: (command: Extract<CommandOf<K>, { case: C }>["value"], ctx: CommandContext) => Promise<ResultInit<K, C>> | ResultInit<K, C>;
};

export interface BackoffOptions {
  /** First window, ms; default 1000. */
  initialMs: number;
  /** Largest window, ms; default 30 000. */
  maxMs: number;
}

export interface ConnectLinkOptions<K extends AgentKindName> {
  kind: K;
  /** The identity store written by `enroll`. */
  home: string;
  /** Full state, sent first on every (re)connect so the server can reconcile. */
  stateReport: () => StateReportInit<K> | Promise<StateReportInit<K>>;
  handlers: CommandHandlers<K>;
  backoff?: Partial<BackoffOptions>;
  /** Heartbeat period; default: what the server announces in LinkAccepted. */
  heartbeatIntervalMs?: number;
  /** Silent intervals before the agent drops the stream and redials; default 3. */
  missedHeartbeats?: number;
  /** Replies remembered for re-delivered request ids; default 1000. */
  replyCacheSize?: number;
  /** Renew the certificate at `renewAfter`; default true. */
  autoRenew?: boolean;
}

export interface LinkClientEvents {
  connected: [info: { linkId: string; attempt: number }];
  disconnected: [error: unknown];
  renewed: [notAfter: string];
  error: [error: unknown];
}

export interface LinkClient extends EventEmitter<LinkClientEvents> {
  readonly connected: boolean;
  /** Sends an event (e.g. a task state change); returns false while disconnected (the next state report covers it). */
  sendEvent(event: EventInit<K_ANY>): boolean;
  /** Resolves at the next successful connect (or now, if connected). */
  waitConnected(timeoutMs?: number): Promise<void>;
  /**
   * Stops the link for good. A connected link first sends what is queued (a final event, a
   * last reply) and half-closes, so the server reads all of it before the stream ends; after
   * `graceMs` (default 2 s) without the server ending the stream, it is cut.
   */
  close(graceMs?: number): Promise<void>;
}
type K_ANY = AgentKindName;

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });

/** Full jitter (AWS architecture blog): a uniform wait in [0, min(max, initial·2^attempt)). */
export function backoffDelay(attempt: number, o: BackoffOptions, random = Math.random): number {
  return Math.floor(random() * Math.min(o.maxMs, o.initialMs * 2 ** Math.min(attempt, 30)));
}

class Client<K extends AgentKindName> extends EventEmitter<LinkClientEvents> implements LinkClient {
  connected = false;
  private readonly stop = new AbortController();
  /** close() was called: no redial, even before the stream is cut. */
  private closing = false;
  private out: AsyncQueue<Message> | null = null;
  private readonly done = new Map<string, ReplyInit<K>>();
  private readonly running = new Map<string, AbortController>();
  private loop: Promise<void> = Promise.resolve();
  private renewTimer: NodeJS.Timeout | null = null;
  private readonly backoff: BackoffOptions;
  /** When a reply or event last went up the link: such traffic makes a heartbeat redundant. */
  private lastSentAt = 0;

  constructor(private readonly o: ConnectLinkOptions<K>) {
    super();
    this.backoff = { initialMs: 1000, maxMs: 30_000, ...o.backoff };
    this.on("error", () => {}); // errors are reported, never fatal: the loop redials
  }

  start(): this {
    this.loop = this.run();
    if (this.o.autoRenew !== false) this.scheduleRenewal();
    return this;
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stop.signal.aborted) {
      const wasConnected = await this.attemptOnce(attempt).catch((e: unknown) => {
        this.emit("error", e);
        return false;
      });
      if (this.stop.signal.aborted || this.closing) break;
      attempt = wasConnected ? 0 : attempt + 1;
      await sleep(backoffDelay(attempt, this.backoff), this.stop.signal);
    }
  }

  /** One stream, from dial to end. Resolves true if the server accepted it. */
  private async attemptOnce(attempt: number): Promise<boolean> {
    const id = new IdentityStore(this.o.home).load();
    const { transport, session } = agentTransport(id.serverUrl, { caPem: id.caPem, certPem: id.certPem, keyPem: id.keyPem, servername: id.servername });
    const abort = new AbortController();
    const onStop = () => abort.abort();
    this.stop.signal.addEventListener("abort", onStop, { once: true });
    const out = new AsyncQueue<Message>();
    let accepted = false;
    let timer: NodeJS.Timeout | null = null;
    try {
      const report = await this.o.stateReport();
      out.push(this.envelope("event", create(this.o.kind === "shim" ? ShimEventSchema : RunnerEventSchema, { event: { case: "stateReport", value: report } } as never)));
      const client = createClient((this.o.kind === "shim" ? ShimLinkService : RunnerLinkService) as typeof ShimLinkService, transport);
      let lastHeard = Date.now();
      let every = 0;
      // Set once accepted: the server stretches the period in a heartbeat as its links grow.
      let setPeriod: (ms: number) => void = () => {};
      for await (const msg of client.connect(out as never, { signal: abort.signal })) {
        lastHeard = Date.now();
        const m = msg.message;
        if (m.case === "accepted") {
          accepted = true;
          this.out = out;
          this.connected = true;
          const missed = this.o.missedHeartbeats ?? 3;
          const beat = (every: number) => {
            if (timer) clearInterval(timer);
            let lastTick = Date.now();
            timer = setInterval(() => {
              const now = Date.now();
              // A tick that comes late means this process was busy (GC, a long task): what the
              // server sent meanwhile is still unread, so silence is judged on the next tick.
              const stalled = now - lastTick > every * 1.5;
              lastTick = now;
              // A silent server may be a half-open TCP connection: only our own watchdog notices.
              if (!stalled && now - lastHeard > every * missed) abort.abort(new Error(`no message from the server for ${now - lastHeard} ms`));
              // A reply or event sent within the period already told the server this agent is alive.
              else if (Date.now() - this.lastSentAt >= every) out.push(this.envelope("heartbeat", create(HeartbeatSchema, { sentAt: timestampNow() })));
            }, every);
          };
          every = this.o.heartbeatIntervalMs ?? m.value.heartbeatIntervalSeconds * 1000;
          beat(every);
          setPeriod = (ms) => {
            // An explicit heartbeatIntervalMs wins over what the server says.
            if (this.o.heartbeatIntervalMs === undefined && ms > 0 && ms !== every) beat((every = ms));
          };
          this.emit("connected", { linkId: m.value.linkId, attempt });
        } else if (m.case === "heartbeat") setPeriod(m.value.intervalSeconds * 1000);
        else if (m.case === "command") this.dispatch(m.value as ShimCommand | RunnerCommand);
        else if (m.case === "cancel") this.running.get(m.value.requestId)?.abort(new LinkCallError(m.value.reason || "cancelled by the server", LinkErrorCode.CANCELLED));
      }
      return accepted;
    } finally {
      if (timer) clearInterval(timer);
      this.stop.signal.removeEventListener("abort", onStop);
      out.end();
      if (this.out === out) {
        this.out = null;
        this.connected = false;
      }
      session.abort();
      if (accepted) this.emit("disconnected", abort.signal.reason);
    }
  }

  private envelope(kase: "reply" | "event" | "heartbeat", value: Message): Message {
    return create((this.o.kind === "shim" ? ShimLinkServiceConnectRequestSchema : RunnerLinkServiceConnectRequestSchema) as typeof ShimLinkServiceConnectRequestSchema, {
      message: { case: kase, value } as never,
    });
  }

  private sendReply(reply: ReplyInit<K>): void {
    const schema = (this.o.kind === "shim" ? ShimReplySchema : RunnerReplySchema) as typeof ShimReplySchema;
    if (this.out?.push(this.envelope("reply", create(schema, reply as never)))) this.lastSentAt = Date.now();
  }

  private dispatch(cmd: ShimCommand | RunnerCommand): void {
    const requestId = cmd.requestId;
    const stored = this.done.get(requestId);
    if (stored) return this.sendReply(stored); // re-delivered after a reconnect: same answer, no second run
    if (this.running.has(requestId)) return; // still working; the reply goes out on whatever stream is current
    const command = cmd.command as unknown as { case: CommandCase<K> | undefined; value: unknown };
    const ctl = new AbortController();
    this.running.set(requestId, ctl);
    const deadline = cmd.deadline ? durationMs(cmd.deadline) : 0;
    const timer = deadline > 0 ? setTimeout(() => ctl.abort(new LinkCallError("deadline exceeded", LinkErrorCode.DEADLINE_EXCEEDED)), deadline) : null;
    const onStop = () => ctl.abort(new LinkCallError("agent shutting down", LinkErrorCode.UNAVAILABLE, true));
    this.stop.signal.addEventListener("abort", onStop, { once: true });
    const handler = command.case ? (this.o.handlers as Record<string, ((v: unknown, c: CommandContext) => unknown) | undefined>)[command.case] : undefined;
    const aborted = new Promise<never>((_, reject) => ctl.signal.addEventListener("abort", () => reject(ctl.signal.reason), { once: true }));
    const work = handler
      ? Promise.race([Promise.resolve().then(() => handler(command.value, { requestId, signal: ctl.signal })), aborted])
      : Promise.reject(new LinkCallError(`this ${this.o.kind} does not implement ${String(command.case)}`, LinkErrorCode.UNIMPLEMENTED));
    work.then(
      (value) => this.finish(requestId, { requestId, result: { case: command.case, value } } as ReplyInit<K>),
      (e: unknown) =>
        this.finish(requestId, {
          requestId,
          result: {
            case: "error",
            value: create(LinkErrorSchema, {
              code: linkErrorCodeOf(e),
              message: e instanceof ConnectError ? e.rawMessage : e instanceof Error ? e.message : String(e),
              retryable: e instanceof LinkCallError ? e.retryable : false,
              details: e instanceof LinkCallError ? e.linkDetails : {},
            }),
          },
        } as ReplyInit<K>),
    ).finally(() => {
      if (timer) clearTimeout(timer);
      this.stop.signal.removeEventListener("abort", onStop);
    });
  }

  private finish(requestId: string, reply: ReplyInit<K>): void {
    this.running.delete(requestId);
    this.done.set(requestId, reply);
    const max = this.o.replyCacheSize ?? 1000;
    for (const k of this.done.keys()) {
      if (this.done.size <= max) break;
      this.done.delete(k); // Map keeps insertion order: oldest first
    }
    this.sendReply(reply);
  }

  sendEvent(event: EventInit<K_ANY>): boolean {
    if (!this.out) return false;
    const schema = (this.o.kind === "shim" ? ShimEventSchema : RunnerEventSchema) as typeof ShimEventSchema;
    const sent = this.out.push(this.envelope("event", create(schema, event as never)));
    if (sent) this.lastSentAt = Date.now();
    return sent;
  }

  waitConnected(timeoutMs = 30_000): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => (this.off("connected", ok), reject(new Error(`not connected within ${timeoutMs} ms`))), timeoutMs);
      const ok = () => (clearTimeout(t), resolve());
      this.once("connected", ok);
    });
  }

  private scheduleRenewal(): void {
    if (this.stop.signal.aborted) return;
    let id;
    try {
      id = new IdentityStore(this.o.home).load();
    } catch {
      return;
    }
    const wait = Math.max(0, new Date(id.renewAfter).getTime() - Date.now());
    // setTimeout caps at ~24.8 days; re-check rather than overflow.
    this.renewTimer = setTimeout(() => void this.renew(), Math.min(wait, 2 ** 31 - 1));
    this.renewTimer.unref();
  }

  private async renew(): Promise<void> {
    const id = new IdentityStore(this.o.home).load();
    if (new Date(id.renewAfter).getTime() > Date.now()) return this.scheduleRenewal();
    try {
      const next = await renewCertificate(this.o.home);
      this.emit("renewed", next.notAfter);
      this.scheduleRenewal();
    } catch (e) {
      this.emit("error", e);
      // Retry well before expiry: a tenth of what is left, at least a second.
      const left = new Date(id.notAfter).getTime() - Date.now();
      this.renewTimer = setTimeout(() => void this.renew(), Math.max(1000, left / 10));
      this.renewTimer.unref();
    }
  }

  async close(graceMs = 2_000): Promise<void> {
    this.closing = true;
    if (this.renewTimer) clearTimeout(this.renewTimer);
    const out = this.out;
    if (out && this.connected && graceMs > 0) {
      // Ending the request stream sends everything queued before it; the server then ends its side.
      out.end();
      const cut = setTimeout(() => this.stop.abort(), graceMs);
      await this.loop;
      clearTimeout(cut);
    }
    this.stop.abort();
    await this.loop;
  }
}

/** Opens the agent's control link and keeps it open until `close()`. */
export function connectLink<K extends AgentKindName>(o: ConnectLinkOptions<K>): LinkClient {
  return new Client(o).start();
}

export type { KindTypes };
