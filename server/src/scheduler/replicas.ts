// Several server replicas on one PostgreSQL database. Each replica LISTENs on one channel; what
// its services publish on the in-process bus after a commit (run, job and log events: ids only)
// is NOTIFYed there, and every other replica re-publishes it on its own bus marked `remote`.
// So the replica that holds an agent's link hears about a job placed, stopped or aborted through
// any replica and sends the agent the command at once (its dispatcher listens to the bus), and
// log followers on any replica see new lines. The scheduler ignores remote events: the replica
// that made the change already reconciles it, and placement claims are race-safe anyway.
// Instance and fleet events stay local: the replica where capacity changed wakes the project's
// waiting jobs itself (it reads them from the database), and SSH fleet provisioning is not
// claimed across replicas, so it must not be woken twice.
// Link presence: each replica also announces which host agents (shims) are linked to it (when
// one links or drops, every `presenceMs`, and when another replica starts and asks), so a
// replica that does not hold a host's link does not give up on that host's jobs while another
// replica still talks to it. Announcements expire, so a replica that dies stops vouching.
// SQLite has one process by construction and uses the in-process bus only.
import { randomUUID } from "node:crypto";
import type { Orm } from "../db/database.js";
import type { DomainEvent, EventBus, EventKind } from "./events.js";

/** The LISTEN/NOTIFY channel every replica shares. */
export const REPLICA_CHANNEL = "dstack_events";
/** NOTIFY payloads must stay under 8000 bytes; larger batches are split. */
const MAX_PAYLOAD = 7000;
const FORWARDED: ReadonlySet<EventKind> = new Set(["run", "job", "log"]);

export interface ReplicaLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

/** The agent links of this replica, as much of mesh's Links as presence needs. */
export interface PresenceLinks {
  connected(): { kind: string; id: string }[];
  on(ev: "connected" | "disconnected", fn: (link: { kind: string; id: string }) => void): unknown;
  off(ev: "connected" | "disconnected", fn: (link: { kind: string; id: string }) => void): unknown;
}

export interface ReplicaBridgeOptions {
  orm: Orm;
  bus: EventBus;
  /** postgresql://… of the shared database (the LISTEN connection is a dedicated one). */
  url: string;
  channel?: string;
  log?: ReplicaLogger;
  /** Called after the LISTEN connection came back: events may have been missed meanwhile. */
  onResync?: () => void;
  /** Reconnect delay after the LISTEN connection drops; default 500 ms, doubling to 10 s. */
  reconnectMs?: number;
  /** This replica's agent links, to announce; without them it only hears others' announcements. */
  links?: PresenceLinks;
  /** How often linked shims are re-announced; an announcement lasts three periods. Default 10 s. */
  presenceMs?: number;
}

export interface ReplicaBridge {
  /** This process's replica id (a random UUID): its own notifications are skipped. */
  readonly replicaId: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Whether another live replica holds the link of this host's shim (instance id). */
  linkedElsewhere(instanceId: string): boolean;
}

/** Compact wire form: [kind, id, projectId, runId, by]. */
type Wire = [EventKind, string, string, string?, string?];
interface Payload {
  o: string;
  e?: Wire[];
  /** Presence: shims linked to replica `o` (up), shims that left it (down), a request to announce (ask). */
  up?: string[];
  down?: string[];
  ask?: 1;
}

/** A presence message from another replica; null for our own, malformed, or not presence. */
export function decodePresence(replicaId: string, payload: string): { from: string; up: string[]; down: string[]; ask: boolean } | null {
  let p: Payload;
  try {
    p = JSON.parse(payload) as Payload;
  } catch {
    return null;
  }
  if (!p || typeof p.o !== "string" || p.o === replicaId || (p.up === undefined && p.down === undefined && p.ask === undefined)) return null;
  const ids = (x: unknown) => (Array.isArray(x) ? x.filter((i): i is string => typeof i === "string") : []);
  return { from: p.o, up: ids(p.up), down: ids(p.down), ask: p.ask === 1 };
}

/** Presence messages for these shim ids, each under the payload limit. */
export function encodePresence(replicaId: string, field: "up" | "down", ids: readonly string[]): string[] {
  const out: string[] = [];
  const per = Math.max(1, Math.floor((MAX_PAYLOAD - 100) / 40)); // uuids: 36 chars + quotes and comma
  for (let i = 0; i < ids.length; i += per) out.push(JSON.stringify({ o: replicaId, [field]: ids.slice(i, i + per) } satisfies Payload));
  return out;
}

const toWire = (e: DomainEvent): Wire => {
  const w: Wire = [e.kind, e.id, e.projectId];
  if (e.runId !== undefined || e.by !== undefined) w.push(e.runId ?? "");
  if (e.by !== undefined) w.push(e.by);
  return w;
};
const fromWire = (w: Wire): DomainEvent => ({
  kind: w[0],
  id: w[1],
  projectId: w[2],
  ...(w[3] ? { runId: w[3] } : {}),
  ...(w[4] ? { by: w[4] } : {}),
  remote: true,
});

/** Splits events into NOTIFY payloads that each fit the limit. */
export function encodePayloads(replicaId: string, events: readonly DomainEvent[]): string[] {
  const out: string[] = [];
  let batch: Wire[] = [];
  const flush = () => {
    if (batch.length) out.push(JSON.stringify({ o: replicaId, e: batch } satisfies Payload));
    batch = [];
  };
  let size = 0;
  for (const e of events) {
    const w = toWire(e);
    const len = JSON.stringify(w).length + 1;
    if (batch.length && size + len > MAX_PAYLOAD - 64) {
      flush();
      size = 0;
    }
    batch.push(w);
    size += len;
  }
  flush();
  return out;
}

/** The events of a payload from another replica; null for our own or a malformed one. */
export function decodePayload(replicaId: string, payload: string): DomainEvent[] | null {
  let p: Payload;
  try {
    p = JSON.parse(payload) as Payload;
  } catch {
    return null;
  }
  if (!p || typeof p.o !== "string" || p.o === replicaId || !Array.isArray(p.e)) return null;
  return p.e.filter((w) => Array.isArray(w) && typeof w[1] === "string" && FORWARDED.has(w[0])).map(fromWire);
}

interface PgClient {
  connect(): Promise<void>;
  query(sql: string, params?: unknown[]): Promise<unknown>;
  end(): Promise<void>;
  on(ev: "notification", fn: (m: { channel: string; payload?: string }) => void): void;
  on(ev: "error" | "end", fn: (e?: Error) => void): void;
  removeAllListeners(): void;
}

export function createReplicaBridge(opts: ReplicaBridgeOptions): ReplicaBridge {
  const replicaId = randomUUID();
  const channel = opts.channel ?? REPLICA_CHANNEL;
  const log = opts.log ?? { info() {}, warn() {} };
  const baseDelay = opts.reconnectMs ?? 500;
  // The pg driver MikroORM's knex already loaded: no second copy, no new dependency.
  const knex = opts.orm.em.getConnection().getKnex() as unknown as { client: { driver: { Client: new (c: { connectionString: string }) => PgClient } } };
  const PgClientCtor = knex.client.driver.Client;
  let client: PgClient | null = null;
  let stopped = true;
  let unsubscribe: (() => void) | null = null;
  let retry: NodeJS.Timeout | null = null;
  let delay = baseDelay;
  // Events of one tick go out together, in publish order.
  let queue: DomainEvent[] = [];
  let sending: Promise<void> = Promise.resolve();
  const presenceMs = opts.presenceMs ?? 10_000;
  /** Shims linked to other replicas: instance id → which replica, and until when we believe it. */
  const remoteLinks = new Map<string, { replica: string; until: number }>();
  let presenceTimer: NodeJS.Timeout | null = null;
  const localShims = () => (opts.links?.connected() ?? []).filter((l) => l.kind === "shim").map((l) => l.id);
  const announce = () => {
    if (opts.links) notify(encodePresence(replicaId, "up", localShims()));
  };
  const onLinked = (l: { kind: string; id: string }) => {
    if (l.kind === "shim") notify(encodePresence(replicaId, "up", [l.id]));
  };
  const onUnlinked = (l: { kind: string; id: string }) => {
    if (l.kind === "shim") notify(encodePresence(replicaId, "down", [l.id]));
  };

  const notify = (payloads: string[]) => {
    if (payloads.length === 0) return;
    // NOTIFY through the pool: it works even while the LISTEN connection is being re-opened.
    sending = sending.then(async () => {
      for (const p of payloads) {
        try {
          await opts.orm.em.getConnection().execute("select pg_notify(?, ?)", [channel, p]);
        } catch (e) {
          log.warn({ err: e }, "replicas: NOTIFY failed; other replicas catch up at their next sweep");
        }
      }
    });
  };

  const send = () => {
    const events = queue;
    queue = [];
    notify(encodePayloads(replicaId, events));
  };

  const onLocal = (e: DomainEvent) => {
    if (e.remote || !FORWARDED.has(e.kind)) return;
    if (queue.length === 0) queueMicrotask(send);
    queue.push(e);
  };

  const connect = async (resync: boolean): Promise<void> => {
    const c = new PgClientCtor({ connectionString: opts.url });
    const lost = (e?: Error) => {
      if (client !== c) return;
      client = null;
      c.removeAllListeners();
      void c.end().catch(() => {});
      if (stopped) return;
      log.warn({ err: e }, "replicas: the LISTEN connection dropped; reconnecting");
      schedule();
    };
    c.on("error", lost);
    c.on("end", lost);
    c.on("notification", (m) => {
      if (m.channel !== channel || !m.payload) return;
      const presence = decodePresence(replicaId, m.payload);
      if (presence) {
        const until = Date.now() + 3 * presenceMs;
        for (const id of presence.up) remoteLinks.set(id, { replica: presence.from, until });
        for (const id of presence.down) if (remoteLinks.get(id)?.replica === presence.from) remoteLinks.delete(id);
        if (presence.ask) announce();
        return;
      }
      const events = decodePayload(replicaId, m.payload);
      if (events?.length) opts.bus.publish(events);
    });
    await c.connect();
    await c.query(`LISTEN "${channel.replace(/"/g, '""')}"`);
    if (stopped) {
      await c.end().catch(() => {});
      return;
    }
    client = c;
    delay = baseDelay;
    if (resync) opts.onResync?.();
  };

  const schedule = () => {
    if (stopped || retry) return;
    retry = setTimeout(() => {
      retry = null;
      connect(true).catch((e: unknown) => {
        log.warn({ err: e }, "replicas: could not LISTEN; retrying");
        delay = Math.min(delay * 2, 10_000);
        schedule();
      });
    }, delay);
    retry.unref();
  };

  return {
    replicaId,
    linkedElsewhere(instanceId) {
      const r = remoteLinks.get(instanceId);
      return r !== undefined && r.until >= Date.now();
    },
    async start() {
      if (!stopped) return;
      stopped = false;
      await connect(false);
      unsubscribe = opts.bus.subscribe(onLocal);
      if (opts.links) {
        opts.links.on("connected", onLinked);
        opts.links.on("disconnected", onUnlinked);
      }
      // Who holds which host now? The others answer at once; then everyone re-announces periodically.
      notify([JSON.stringify({ o: replicaId, ask: 1 } satisfies Payload)]);
      announce();
      presenceTimer = setInterval(() => {
        announce();
        const now = Date.now();
        for (const [id, r] of remoteLinks) if (r.until < now) remoteLinks.delete(id);
      }, presenceMs);
      presenceTimer.unref();
      log.info({ replica: replicaId, channel }, "replicas: listening for other replicas' events");
    },
    async stop() {
      stopped = true;
      unsubscribe?.();
      unsubscribe = null;
      if (presenceTimer) clearInterval(presenceTimer);
      presenceTimer = null;
      if (opts.links) {
        opts.links.off("connected", onLinked);
        opts.links.off("disconnected", onUnlinked);
        // This replica's hosts are no longer vouched for (they re-link to a live replica, or are given up).
        notify(encodePresence(replicaId, "down", localShims()));
      }
      if (retry) clearTimeout(retry);
      retry = null;
      if (queue.length) send();
      await sending;
      const c = client;
      client = null;
      if (c) {
        c.removeAllListeners();
        await c.end().catch(() => {});
      }
    },
  };
}
