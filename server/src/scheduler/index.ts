// The event-driven scheduler. Services publish an event after every commit; the scheduler
// wakes the reconciler for exactly that object at once (no polling on the hot path). Each
// object is reconciled by one task at a time in this process; what a reconciler wants to
// revisit later (retry backoff, max_duration, stop_duration) becomes an in-process timer,
// re-armed from the database at start. A slow sweep catches anything an event missed.
import type { Orm } from "../db/database.js";
import type { Services } from "../services/index.js";
import type { Settings } from "../settings.js";
import { realClock, type Clock } from "./clock.js";
import type { DomainEvent } from "./events.js";

export type WakeKind = "job" | "run" | "instance";

export interface SchedulerOptions {
  orm: Orm;
  services: Services;
  settings?: Settings;
  clock?: Clock;
  /** Safety sweep period; default 15 s. */
  sweepMs?: number;
  onError?: (e: unknown, kind: WakeKind, id: string) => void;
}

export interface Scheduler {
  start(): Promise<void>;
  stop(): Promise<void>;
  wake(kind: WakeKind, id: string): void;
  /** Looks at every active object now (events may have been missed, e.g. while the replica bridge reconnected). */
  resync(): void;
  /** Resolves when no reconciliation is running or queued (tests and benchmarks). */
  idle(): Promise<void>;
}

export function createScheduler(opts: SchedulerOptions): Scheduler {
  const { services } = opts;
  const clock = opts.clock ?? services.clock;
  const sweepMs = opts.sweepMs ?? 15_000;
  const onError = opts.onError ?? ((e, kind, id) => console.error(`scheduler: ${kind} ${id} failed`, e));
  // Per object: is a reconcile running, and should it run again when done (coalesces bursts).
  const running = new Set<string>();
  const again = new Set<string>();
  const timers = new Map<string, () => void>();
  const inFlight = new Set<Promise<void>>();
  let idleWaiters: (() => void)[] = [];
  let started = false;
  let unsubscribe: (() => void) | null = null;
  let sweepTimer: NodeJS.Timeout | null = null;

  const settleIdle = () => {
    if (running.size === 0 && inFlight.size === 0) {
      const w = idleWaiters;
      idleWaiters = [];
      for (const f of w) f();
    }
  };

  const arm = (k: string, kind: WakeKind, id: string, at: Date | null) => {
    timers.get(k)?.();
    timers.delete(k);
    if (at === null || !started) return;
    timers.set(k, clock.setTimer(at, () => {
      timers.delete(k);
      wake(kind, id);
    }));
  };

  const run = async (kind: WakeKind, id: string): Promise<void> => {
    const k = `${kind}:${id}`;
    try {
      const r = kind === "job" ? await services.jobs.processJob(id) : kind === "run" ? await services.jobs.processRun(id) : await services.instances.processInstance(id);
      arm(k, kind, id, r.nextAt);
    } catch (e) {
      onError(e, kind, id);
    }
  };

  function wake(kind: WakeKind, id: string): void {
    if (!started) return;
    const k = `${kind}:${id}`;
    if (running.has(k)) {
      again.add(k);
      return;
    }
    running.add(k);
    const p = (async () => {
      do {
        again.delete(k);
        await run(kind, id);
      } while (again.has(k) && started);
      running.delete(k);
    })();
    inFlight.add(p);
    void p.finally(() => {
      inFlight.delete(p);
      settleIdle();
    });
  }

  const onEvent = (e: DomainEvent) => {
    // Another replica's change: its own scheduler reconciles it (claims keep a race harmless,
    // but doing the work twice on every replica would not scale). The dispatcher still hears it.
    if (e.remote) return;
    if (e.by !== undefined && e.by === `${e.kind}:${e.id}`) return;
    if (e.kind === "job") wake("job", e.id);
    else if (e.kind === "run") wake("run", e.id);
    else if (e.kind === "instance" || e.kind === "fleet") {
      // An instance that became idle arms its idle_duration timer (a busy one disarms it); a
      // fleet whose configuration changed (idle_duration) re-arms its idle instances' timers.
      if (e.kind === "instance") wake("instance", e.id);
      const rearm = e.kind === "fleet" ? services.instances.idleInstanceIds(e.id).then((ids) => ids.forEach((id) => wake("instance", id))) : Promise.resolve();
      // Capacity changed: jobs waiting in that project get another look.
      const p = Promise.all([rearm, services.jobs.waitingJobIds(e.projectId).then((ids) => ids.forEach((id) => wake("job", id)))]).then(
        () => {},
        (er: unknown) => onError(er, "job", "*"),
      );
      inFlight.add(p);
      void p.finally(() => {
        inFlight.delete(p);
        settleIdle();
      });
    }
  };

  // At start every active object gets a look (re-arming its timers); later sweeps only look at
  // objects no event has touched for a whole period, so a busy system is not swept twice.
  const sweep = async (all = false) => {
    const { jobs, runs } = await services.jobs.activeIds(all ? undefined : new Date(Date.now() - sweepMs));
    for (const id of jobs) wake("job", id);
    for (const id of runs) wake("run", id);
    // Idle timers live in memory: at start every idle instance gets its timer back.
    if (all) for (const id of await services.instances.idleInstanceIds()) wake("instance", id);
  };

  return {
    async start() {
      if (started) return;
      started = true;
      unsubscribe = services.bus.subscribe(onEvent);
      await sweep(true); // re-arms every timer from the database
      sweepTimer = setInterval(() => void sweep().catch((e) => onError(e, "run", "sweep")), sweepMs);
      sweepTimer.unref();
    },
    async stop() {
      started = false;
      unsubscribe?.();
      if (sweepTimer) clearInterval(sweepTimer);
      for (const cancel of timers.values()) cancel();
      timers.clear();
      await Promise.allSettled([...inFlight]);
    },
    wake,
    resync() {
      if (started) void sweep(true).catch((e) => onError(e, "run", "sweep"));
    },
    idle() {
      return new Promise<void>((resolve) => {
        idleWaiters.push(resolve);
        settleIdle();
      });
    },
  };
}

export { EventBus, type DomainEvent, type EventKind } from "./events.js";
export { FakeClock, realClock, type Clock } from "./clock.js";
export { createReplicaBridge, REPLICA_CHANNEL, type ReplicaBridge } from "./replicas.js";
