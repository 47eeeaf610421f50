import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import type { Orm } from "../db/database.js";
import { EventBus } from "../scheduler/events.js";
import { LogsService, type NewLogEntry } from "./logs.js";
import type { ProjectsService } from "./projects.js";

const home = mkdtempSync(join(tmpdir(), "dstack-logs-"));
afterAll(() => rmSync(home, { recursive: true, force: true }));

// Follow asks the database whether the job finished; a stub ORM answers from a flag.
let finished = false;
const orm = { em: { fork: () => ({ findOne: async () => ({ status: finished ? 9 : 4 }) }) } } as unknown as Orm;
const bus = new EventBus();
const logs = new LogsService(orm, {} as ProjectsService, bus, home);
const entries = (from: number, n: number, t0 = 1_000_000): NewLogEntry[] =>
  Array.from({ length: n }, (_, i) => ({ timestamp: new Date(t0 + (from + i) * 10), source: "stdout" as const, message: Buffer.from(`line ${from + i}\n`) }));

describe("logs", () => {
  it("acks appends and stores a re-sent batch once", async () => {
    const id = randomUUID();
    expect(await logs.append(id, 1, entries(1, 3))).toBe(3);
    expect(await logs.append(id, 2, entries(2, 4))).toBe(5); // 2,3 are duplicates; 4,5 are new
    expect(await logs.append(id, 1, entries(1, 2))).toBe(5);
    const { entries: all } = await logs.poll(id, { limit: 100 });
    expect(all.map((e) => e.message.toString())).toEqual([1, 2, 3, 4, 5].map((i) => `line ${i}\n`));
    // a fresh service (server restart) still knows the last sequence
    const again = new LogsService(orm, {} as ProjectsService, bus, home);
    expect(await again.append(id, 5, entries(5, 2))).toBe(6);
    expect((await again.poll(id)).entries).toHaveLength(6);
  });

  it("polls by time window, both directions, with page tokens; runner logs apart", async () => {
    const id = randomUUID();
    await logs.append(id, 1, entries(1, 10));
    await logs.append(id, 1, [{ timestamp: new Date(), source: "runner", message: Buffer.from("runner says hi") }], "runner");
    const p1 = await logs.poll(id, { limit: 4 });
    const p2 = await logs.poll(id, { limit: 4, nextToken: p1.nextToken });
    const p3 = await logs.poll(id, { limit: 4, nextToken: p2.nextToken });
    expect([...p1.entries, ...p2.entries, ...p3.entries].map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(p3.nextToken).toBe("");
    const desc = await logs.poll(id, { descending: true, limit: 3 });
    expect(desc.entries.map((e) => e.seq)).toEqual([10, 9, 8]);
    expect((await logs.poll(id, { descending: true, limit: 3, nextToken: desc.nextToken })).entries.map((e) => e.seq)).toEqual([7, 6, 5]);
    const window = await logs.poll(id, { startTime: new Date(1_000_000 + 30), endTime: new Date(1_000_000 + 60) });
    expect(window.entries.map((e) => e.seq)).toEqual([3, 4, 5]);
    expect((await logs.poll(id, { diagnose: true })).entries.map((e) => e.message.toString())).toEqual(["runner says hi"]);
  });

  it("follow never drops lines when the writer outpaces the reader, and ends when the job finishes", async () => {
    const id = randomUUID();
    finished = false;
    const got: number[] = [];
    const reader = (async () => {
      for await (const batch of logs.follow(id)) {
        for (const e of batch.entries) got.push(e.seq);
        await new Promise((r) => setTimeout(r, 5)); // a slow reader
        if (batch.finished) break;
      }
    })();
    for (let i = 0; i < 50; i++) await logs.append(id, 1 + i * 20, entries(1 + i * 20, 20));
    finished = true;
    bus.publish({ kind: "job", id, projectId: "" });
    await reader;
    expect(got).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
  });
});
