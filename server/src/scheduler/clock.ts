// Time as a dependency: the scheduler's timers (retry backoff, max_duration, stop_duration)
// and every `now` go through a Clock, so tests can move time forward instead of sleeping.

export interface Clock {
  now(): Date;
  /** Calls `fn` at (or soon after) `at`; returns a function that cancels it. */
  setTimer(at: Date, fn: () => void): () => void;
}

// setTimeout takes at most a signed 32-bit delay; longer waits are re-armed in steps.
const MAX_DELAY = 2_147_483_647;

export const realClock: Clock = {
  now: () => new Date(),
  setTimer(at, fn) {
    let handle: NodeJS.Timeout;
    const arm = () => {
      const delay = at.getTime() - Date.now();
      if (delay > MAX_DELAY) handle = setTimeout(arm, MAX_DELAY);
      else handle = setTimeout(fn, Math.max(0, delay));
      handle.unref?.();
    };
    arm();
    return () => clearTimeout(handle);
  },
};

/** A clock that only moves when told to; timers fire during `advance`. */
export class FakeClock implements Clock {
  private t: number;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private seq = 0;

  constructor(start = new Date("2026-01-01T00:00:00Z")) {
    this.t = start.getTime();
  }

  now(): Date {
    return new Date(this.t);
  }

  setTimer(at: Date, fn: () => void): () => void {
    const id = ++this.seq;
    this.timers.push({ at: at.getTime(), fn, id });
    return () => {
      this.timers = this.timers.filter((x) => x.id !== id);
    };
  }

  /** Moves time forward by `ms`, firing due timers in time order. */
  advance(ms: number): void {
    const target = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (!next || next.at > target) break;
      this.timers.shift();
      this.t = Math.max(this.t, next.at);
      next.fn();
    }
    this.t = target;
  }

  pendingTimers(): number {
    return this.timers.length;
  }
}
