// Service autoscaling on the in-server proxy's request rate (dstack's RPS autoscaler, which there
// needs a gateway for its statistics): `replicas: MIN..MAX` with `scaling: {metric: rps, target}`.
// The proxy counts requests per run; every interval the autoscaler turns the window's rate into a
// replica count, honours scale_up_delay / scale_down_delay since the last change, and stores the
// count on the run; the run's reconciler (JobsService.rollDeployment) adds or scales down replicas.
import type { RunConfig, ScalingPolicy } from "@dstack/proto";
import { RunStatus } from "../domain/enums.js";
import type { Orm } from "../db/database.js";
import { Run } from "../db/entities.js";
import type { Clock } from "../scheduler/clock.js";
import type { EventBus } from "../scheduler/events.js";

const HORIZON_S = 300; // the longest scaling window dstack allows

/** Requests per run per second over the last five minutes (a ring of per-second counters). */
export class RequestStats {
  private readonly rings = new Map<string, { counts: Uint32Array; second: number }>();

  constructor(private readonly nowMs: () => number = Date.now) {}

  record(runId: string): void {
    const second = Math.floor(this.nowMs() / 1000);
    let r = this.rings.get(runId);
    if (!r) this.rings.set(runId, (r = { counts: new Uint32Array(HORIZON_S), second }));
    this.advance(r, second);
    r.counts[second % HORIZON_S]! += 1;
  }

  /** Mean requests per second over the last `windowS` whole seconds. */
  rps(runId: string, windowS: number): number {
    const r = this.rings.get(runId);
    if (!r) return 0;
    const now = Math.floor(this.nowMs() / 1000);
    this.advance(r, now);
    let sum = 0;
    for (let s = now - Math.min(windowS, HORIZON_S) + 1; s <= now; s++) sum += r.counts[((s % HORIZON_S) + HORIZON_S) % HORIZON_S]!;
    return sum / windowS;
  }

  forget(runId: string): void {
    this.rings.delete(runId);
  }

  /** Zeroes the seconds that passed without requests. */
  private advance(r: { counts: Uint32Array; second: number }, second: number): void {
    for (let s = r.second + 1; s <= second && s <= r.second + HORIZON_S; s++) r.counts[s % HORIZON_S] = 0;
    if (second > r.second) r.second = second;
  }
}

export interface ScaleInput {
  min: number;
  max: number;
  current: number;
  rps: number;
  policy: ScalingPolicy;
  /** The last change (null: never scaled: a change may happen at once). */
  lastScaledAt: Date | null;
  now: Date;
}

/**
 * The replica count to run: ceil(rps / target) within [max(1, min), max]; a rise waits
 * scale_up_delay and a fall scale_down_delay since the last change. No scaling to zero here: a
 * service keeps one replica so its first request has someone to answer.
 */
export function decideReplicas(i: ScaleInput): number {
  const floor = Math.max(1, i.min);
  const want = Math.min(i.max, Math.max(floor, Math.ceil(i.rps / i.policy.target)));
  if (want === i.current) return i.current;
  const since = i.lastScaledAt ? (i.now.getTime() - i.lastScaledAt.getTime()) / 1000 : Infinity;
  const delay = want > i.current ? i.policy.scaleUpDelay : i.policy.scaleDownDelay;
  return since >= delay ? want : i.current;
}

const ACTIVE = [RunStatus.SUBMITTED, RunStatus.PENDING, RunStatus.PROVISIONING, RunStatus.RUNNING];

export class ServiceAutoscaler {
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;

  constructor(
    private readonly orm: Orm,
    readonly stats: RequestStats,
    private readonly bus: EventBus,
    private readonly clock: Clock,
  ) {}

  start(intervalMs: number, onError: (e: unknown) => void): void {
    this.timer = setInterval(() => {
      if (this.ticking) return;
      this.ticking = true;
      this.tick()
        .catch(onError)
        .finally(() => (this.ticking = false));
    }, intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One pass over the active services that scale; returns the runs whose count changed. */
  async tick(): Promise<{ runId: string; projectId: string; from: number; to: number }[]> {
    const em = this.orm.em.fork();
    const now = this.clock.now();
    const changed: { runId: string; projectId: string; from: number; to: number }[] = [];
    for (const run of await em.find(Run, { status: { $in: ACTIVE }, deleted: false })) {
      const c = (run.runSpec as { configuration?: RunConfig }).configuration;
      if (c?.type !== "service" || !c.scaling || c.groups || !c.replicas) continue;
      const min = c.replicas.min ?? 0;
      const max = c.replicas.max ?? min;
      const current = run.desiredReplicaCount ?? Math.max(1, min);
      const to = decideReplicas({ min, max, current, rps: this.stats.rps(run.id, c.scaling.window), policy: c.scaling, lastScaledAt: run.lastScaledAt, now });
      if (to === current) continue;
      run.desiredReplicaCount = to;
      run.lastScaledAt = now;
      changed.push({ runId: run.id, projectId: run.project.id, from: current, to });
    }
    if (!changed.length) return changed;
    await em.flush();
    this.bus.publish(changed.map((x) => ({ kind: "run" as const, id: x.runId, projectId: x.projectId, by: "autoscaler" })));
    return changed;
  }
}
