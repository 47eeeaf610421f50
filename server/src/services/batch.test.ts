import { describe, expect, it } from "vitest";
import { Batcher } from "./batch.js";

describe("Batcher", () => {
  it("answers keys asked together from one load, each caller its own key, missing keys the default", async () => {
    const loads: string[][] = [];
    const b = new Batcher<string, number | null>(async (keys) => {
      loads.push(keys);
      return new Map(keys.filter((k) => k !== "none").map((k) => [k, k.length]));
    }, null);
    const answers = await Promise.all([b.get("a"), b.get("bbb"), b.get("a"), b.get("none")]);
    expect(answers).toEqual([1, 3, 1, null]);
    expect(loads).toEqual([["a", "bbb", "none"]]);
    // A later ask is a new batch.
    expect(await b.get("cc")).toBe(2);
    expect(loads).toHaveLength(2);
  });

  it("splits a burst into loads of at most maxKeys and waits windowMs for more", async () => {
    const loads: number[][] = [];
    const b = new Batcher<number, number>(async (keys) => (loads.push(keys), new Map(keys.map((k) => [k, k * 2]))), 0, { maxKeys: 2, windowMs: 20 });
    const first = b.get(1);
    await new Promise((r) => setTimeout(r, 5));
    const rest = [b.get(2), b.get(3)];
    expect(await Promise.all([first, ...rest])).toEqual([2, 4, 6]);
    expect(loads).toEqual([[1, 2], [3]]);
  });

  it("rejects every caller of a failed load (thrown or rejected), and the next batch loads again", async () => {
    let fail: "throw" | "reject" | null = "throw";
    const b = new Batcher<string, string>((keys) => {
      if (fail === "throw") throw new Error("sync boom");
      if (fail === "reject") return Promise.reject(new Error("async boom"));
      return Promise.resolve(new Map(keys.map((k) => [k, k])));
    }, "");
    await expect(Promise.all([b.get("x"), b.get("y")])).rejects.toThrow("sync boom");
    fail = "reject";
    await expect(b.get("x")).rejects.toThrow("async boom");
    fail = null;
    expect(await b.get("x")).toBe("x");
  });
});
