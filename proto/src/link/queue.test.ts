import { describe, expect, it } from "vitest";
import { AsyncQueue } from "./queue.js";

const collect = async <T>(q: AsyncIterable<T>): Promise<T[]> => {
  const out: T[] = [];
  for await (const x of q) out.push(x);
  return out;
};

describe("AsyncQueue", () => {
  it("yields items pushed before and while iterating, then ends after them", async () => {
    const q = new AsyncQueue<number>();
    q.push(1);
    const all = collect(q);
    await Promise.resolve();
    q.push(2);
    q.push(3);
    q.end();
    expect(q.push(4)).toBe(false);
    expect(await all).toEqual([1, 2, 3]);
  });

  it("fails the iterator with end(error), dropping what is queued, and is done afterwards", async () => {
    const q = new AsyncQueue<number>();
    q.push(1);
    q.end(new Error("boom"));
    const it = q[Symbol.asyncIterator]();
    await expect(it.next()).rejects.toThrow("boom");
    expect(await it.next()).toEqual({ value: undefined, done: true });
    const waiting = new AsyncQueue<number>();
    const w = waiting[Symbol.asyncIterator]().next();
    waiting.end(new Error("late"));
    await expect(w).rejects.toThrow("late");
  });

  it("answers next() calls made before earlier ones settle, in order", async () => {
    const q = new AsyncQueue<number>();
    const it = q[Symbol.asyncIterator]();
    const a = it.next();
    const b = it.next();
    const c = it.next();
    q.push(1);
    q.push(2);
    q.end();
    expect(await Promise.all([a, b, c])).toEqual([
      { value: 1, done: false },
      { value: 2, done: false },
      { value: undefined, done: true },
    ]);
  });

  it("is an iterable iterator with return() and throw() that finish it, as a generator is", async () => {
    const q = new AsyncQueue<number>();
    const it = q[Symbol.asyncIterator]();
    expect(it[Symbol.asyncIterator]!()).toBe(it);
    expect(await it.return!()).toEqual({ value: undefined, done: true });
    q.push(1);
    expect(await it.next()).toEqual({ value: undefined, done: true });
    const it2 = q[Symbol.asyncIterator]();
    await expect(it2.throw!(new Error("stop"))).rejects.toThrow("stop");
    expect(await it2.next()).toEqual({ value: undefined, done: true });
    // The item is still queued for a fresh iterator.
    expect(await q[Symbol.asyncIterator]().next()).toEqual({ value: 1, done: false });
  });

  it("a for-await that breaks leaves the queue open", async () => {
    const q = new AsyncQueue<number>();
    q.push(1);
    q.push(2);
    for await (const x of q) {
      expect(x).toBe(1);
      break;
    }
    expect(q.closed).toBe(false);
    expect(await q[Symbol.asyncIterator]().next()).toEqual({ value: 2, done: false });
  });
});
