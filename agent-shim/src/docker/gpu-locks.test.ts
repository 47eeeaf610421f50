import { describe, expect, it } from "vitest";
import { GpuLocks } from "./gpu-locks.js";

const two = () => new GpuLocks([{ id: "GPU-aaa", vendor: "nvidia" }, { id: "GPU-bbb", vendor: "nvidia" }]);

describe("GPU locks", () => {
  it("a GPU serves one task at a time; release gives it back", () => {
    const l = two();
    expect(l.acquire("t1", 1)).toEqual(["GPU-aaa"]);
    expect(l.acquire("t2", 1)).toEqual(["GPU-bbb"]);
    expect(() => l.acquire("t3", 1)).toThrow(/asks for 1 GPU\(s\) but only 0 of 2 are free/);
    l.release("t1");
    expect(l.acquire("t3", 1)).toEqual(["GPU-aaa"]);
    expect(l.held("t3")).toEqual(["GPU-aaa"]);
  });

  it("-1 takes all GPUs, only when none is in use; 0 takes none", () => {
    const l = two();
    expect(l.acquire("none", 0)).toEqual([]);
    expect(l.acquire("all", -1)).toEqual(["GPU-aaa", "GPU-bbb"]);
    l.release("all");
    l.acquire("one", 1);
    expect(() => l.acquire("all2", -1)).toThrow(/all 2 GPUs but 1 are in use/);
    expect(l.free()).toEqual(["GPU-bbb"]); // a failed acquire takes nothing
    expect(() => new GpuLocks([]).acquire("x", -1)).toThrow(/has none/);
  });

  it("asking for more than the host has fails without taking any", () => {
    const l = two();
    expect(() => l.acquire("t", 3)).toThrow(/asks for 3 GPU\(s\) but only 2 of 2 are free/);
    expect(l.free()).toHaveLength(2);
  });

  it("acquire is idempotent per task; restore re-locks known ids only", () => {
    const l = two();
    expect(l.acquire("t", 1)).toEqual(["GPU-aaa"]);
    expect(l.acquire("t", 1)).toEqual(["GPU-aaa"]);
    expect(l.restore("r", ["GPU-bbb", "GPU-gone"])).toEqual(["GPU-bbb"]);
    expect(l.free()).toEqual([]);
    expect(l.vendorOf(["GPU-bbb"])).toBe("nvidia");
  });
});
