import { describe, expect, it } from "vitest";
import type { ScalingPolicy } from "@dstack/proto";
import { RequestStats, decideReplicas } from "./autoscaler.js";

const policy: ScalingPolicy = { metric: "rps", target: 10, window: 60, scaleUpDelay: 300, scaleDownDelay: 600 };
const now = new Date("2026-11-24T02:00:00Z");
const ago = (s: number) => new Date(now.getTime() - s * 1000);

describe("RequestStats", () => {
  it("averages requests over the window and forgets seconds that passed", () => {
    let t = 1_000_000_000;
    const stats = new RequestStats(() => t);
    for (let i = 0; i < 30; i++) stats.record("r");
    expect(stats.rps("r", 30)).toBe(1);
    t += 10_000;
    for (let i = 0; i < 30; i++) stats.record("r");
    expect(stats.rps("r", 30)).toBe(2);
    expect(stats.rps("r", 5)).toBe(6);
    t += 31_000; // both bursts are now out of a 30 s window
    expect(stats.rps("r", 30)).toBe(0);
    expect(stats.rps("r", 60)).toBe(1);
    t += 600_000; // longer than the ring: everything is gone
    expect(stats.rps("r", 300)).toBe(0);
    expect(stats.rps("unknown", 60)).toBe(0);
  });
});

describe("decideReplicas (dstack's RPS autoscaler)", () => {
  const base = { min: 1, max: 4, current: 1, rps: 0, policy, lastScaledAt: null, now };

  it("wants ceil(rps / target) within the range, never below one replica", () => {
    expect(decideReplicas({ ...base, rps: 25 })).toBe(3);
    expect(decideReplicas({ ...base, rps: 1000 })).toBe(4);
    expect(decideReplicas({ ...base, rps: 0, current: 2, min: 0 })).toBe(1);
    expect(decideReplicas({ ...base, rps: 5, min: 2, current: 2 })).toBe(2);
  });

  it("scales up only scale_up_delay after the last change, down only scale_down_delay after it", () => {
    expect(decideReplicas({ ...base, rps: 25, lastScaledAt: ago(299) })).toBe(1);
    expect(decideReplicas({ ...base, rps: 25, lastScaledAt: ago(300) })).toBe(3);
    expect(decideReplicas({ ...base, rps: 0, current: 3, lastScaledAt: ago(599) })).toBe(3);
    expect(decideReplicas({ ...base, rps: 0, current: 3, lastScaledAt: ago(600) })).toBe(1);
    // Never scaled: the first change happens at once.
    expect(decideReplicas({ ...base, rps: 25 })).toBe(3);
  });
});
