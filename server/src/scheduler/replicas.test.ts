// The replica bridge's wire form: what one replica NOTIFYs, another decodes into the same events
// (marked remote); a replica skips its own notifications; big batches split under PostgreSQL's
// 8000-byte payload limit. The LISTEN/NOTIFY path itself runs in test/server/replicas.test.ts.
import { describe, expect, it } from "vitest";
import type { DomainEvent } from "./events.js";
import { decodePayload, decodePresence, encodePayloads, encodePresence } from "./replicas.js";

describe("replica bridge payloads", () => {
  const events: DomainEvent[] = [
    { kind: "run", id: "r1", projectId: "p1" },
    { kind: "job", id: "j1", projectId: "p1", runId: "r1", by: "job:j1" },
    { kind: "log", id: "j1", projectId: "p1" },
  ];

  it("round-trips events to another replica, marked remote", () => {
    const [payload, ...rest] = encodePayloads("A", events);
    expect(rest).toEqual([]);
    expect(decodePayload("B", payload!)).toEqual(events.map((e) => ({ ...e, remote: true })));
  });

  it("a replica ignores its own notifications and malformed ones", () => {
    const [payload] = encodePayloads("A", events);
    expect(decodePayload("A", payload!)).toBeNull();
    expect(decodePayload("B", "not json")).toBeNull();
    expect(decodePayload("B", JSON.stringify({ o: "A", e: [["instance", "i1", "p1"]] }))).toEqual([]);
  });

  it("splits a large batch into payloads under 8000 bytes, keeping order", () => {
    const many: DomainEvent[] = Array.from({ length: 500 }, (_, i) => ({ kind: "job", id: `job-${i}-${"x".repeat(20)}`, projectId: "p", runId: "r" }));
    const payloads = encodePayloads("A", many);
    expect(payloads.length).toBeGreaterThan(1);
    for (const p of payloads) expect(Buffer.byteLength(p)).toBeLessThan(8000);
    expect(payloads.flatMap((p) => decodePayload("B", p)!).map((e) => e.id)).toEqual(many.map((e) => e.id));
  });
});

describe("replica link presence", () => {
  it("announces shims another replica holds, in payloads under the limit; events and presence never mix up", () => {
    const ids = Array.from({ length: 400 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`);
    const payloads = encodePresence("A", "up", ids);
    expect(payloads.length).toBeGreaterThan(1);
    for (const p of payloads) expect(Buffer.byteLength(p)).toBeLessThan(8000);
    expect(payloads.flatMap((p) => decodePresence("B", p)!.up)).toEqual(ids);
    expect(decodePresence("A", payloads[0]!)).toBeNull(); // our own
    expect(decodePresence("B", encodePresence("A", "down", ["x"])[0]!)).toEqual({ from: "A", up: [], down: ["x"], ask: false });
    expect(decodePayload("B", payloads[0]!)).toBeNull();
    expect(decodePresence("B", encodePayloads("A", [{ kind: "job", id: "j", projectId: "p" }])[0]!)).toBeNull();
  });
});
