import { describe, expect, it } from "vitest";
import { DstackError } from "./errors.js";
import { followLogs, parseSince, type LogBatch, type LogEntry, type LogSource } from "./logs.js";

const at = (ms: number, text: string, source: LogEntry["source"] = "stdout"): LogEntry => ({ timestamp: new Date(ms), source, message: Buffer.from(text) });

type Step = LogBatch | Error;

/**
 * A scripted LogSource: each FollowLogs call plays the next script (batches, then maybe an
 * error); nextSubmission answers from a queue. Every request is recorded.
 */
function fakeSource(scripts: Step[][], next: ({ submissionId: string } | "finished" | Error)[] = ["finished"]) {
  const follows: { submissionId?: string; since?: Date }[] = [];
  const nextCalls: (string | undefined)[] = [];
  const source: LogSource = {
    async *follow(req) {
      follows.push(req);
      const script = scripts.shift();
      if (!script) throw new Error("unexpected FollowLogs call");
      for (const step of script) {
        if (step instanceof Error) throw step;
        yield step;
      }
    },
    async nextSubmission(current) {
      nextCalls.push(current);
      const n = next.shift();
      if (n === undefined) throw new Error("unexpected nextSubmission call");
      if (n instanceof Error) throw n;
      return n;
    },
    isTransient: (e) => e instanceof DstackError && e.kind === "unavailable",
  };
  return { source, follows, nextCalls };
}

const noWait = async () => {};
const unavailable = () => new DstackError("unavailable", "connection reset");

async function collect(source: LogSource, opts: Parameters<typeof followLogs>[1] = {}): Promise<string[]> {
  const out: string[] = [];
  for await (const e of followLogs(source, { sleep: noWait, ...opts })) out.push(Buffer.from(e.message).toString());
  return out;
}

describe("the log follower", () => {
  it("yields every entry of a finished job once and stops when the run has finished", async () => {
    const { source, follows, nextCalls } = fakeSource([[{ entries: [at(1, "a"), at(2, "b")], finished: false, submissionId: "s1" }, { entries: [at(3, "c")], finished: true, submissionId: "s1" }]]);
    expect(await collect(source)).toEqual(["a", "b", "c"]);
    expect(follows).toEqual([{}]);
    expect(nextCalls).toEqual(["s1"]);
  });

  it("resumes a broken stream from the last timestamp without repeating entries, even ones sharing it", async () => {
    const { source, follows } = fakeSource([
      [{ entries: [at(1, "a"), at(2, "b1"), at(2, "b2")], finished: false, submissionId: "s1" }, unavailable()],
      // The server resends from `since` inclusive: b1 and b2 again, then new ones (one more at t=2).
      [{ entries: [at(2, "b1"), at(2, "b2"), at(2, "b3"), at(3, "c")], finished: true, submissionId: "s1" }],
    ]);
    expect(await collect(source)).toEqual(["a", "b1", "b2", "b3", "c"]);
    expect(follows[1]).toEqual({ submissionId: "s1", since: new Date(2) });
  });

  it("resumes when the stream ends without `finished` (server shutting down)", async () => {
    const { source, follows } = fakeSource([[{ entries: [at(5, "x")], finished: false, submissionId: "s1" }], [{ entries: [at(6, "y")], finished: true, submissionId: "s1" }]]);
    expect(await collect(source)).toEqual(["x", "y"]);
    expect(follows[1]).toEqual({ submissionId: "s1", since: new Date(5) });
  });

  it("follows a retry's new submission from its start", async () => {
    const { source, follows, nextCalls } = fakeSource(
      [[{ entries: [at(1, "first try")], finished: true, submissionId: "s1" }], [{ entries: [at(1, "second try")], finished: true, submissionId: "s2" }]],
      [{ submissionId: "s2" }, "finished"],
    );
    expect(await collect(source)).toEqual(["first try", "second try"]);
    expect(follows).toEqual([{}, { submissionId: "s2" }]);
    expect(nextCalls).toEqual(["s1", "s2"]);
  });

  it("keeps the caller's --since for every submission", async () => {
    const since = new Date(100);
    const { source, follows } = fakeSource([[{ entries: [], finished: true, submissionId: "s1" }], [{ entries: [], finished: true, submissionId: "s2" }]], [{ submissionId: "s2" }, "finished"]);
    await collect(source, { since });
    expect(follows).toEqual([{ since }, { submissionId: "s2", since }]);
  });

  it("retries transient failures of the run watch too", async () => {
    const { source } = fakeSource([[{ entries: [at(1, "a")], finished: true, submissionId: "s1" }]], [unavailable(), "finished"]);
    expect(await collect(source)).toEqual(["a"]);
  });

  it("passes a non-transient error through at once", async () => {
    const { source } = fakeSource([[new DstackError("not_found", "Run 'x' does not exist")]]);
    await expect(collect(source)).rejects.toThrow("Run 'x' does not exist");
  });

  it("gives up after maxRetries consecutive transient failures", async () => {
    const { source, follows } = fakeSource([[unavailable()], [unavailable()], [unavailable()]]);
    await expect(collect(source, { maxRetries: 2 })).rejects.toThrow("connection reset");
    expect(follows).toHaveLength(3);
  });

  it("ends quietly when aborted", async () => {
    const ac = new AbortController();
    const { source } = fakeSource([[{ entries: [at(1, "a"), at(2, "b")], finished: false, submissionId: "s1" }, unavailable()]]);
    const out: string[] = [];
    for await (const e of followLogs(source, { signal: ac.signal, sleep: noWait })) {
      out.push(Buffer.from(e.message).toString());
      ac.abort();
    }
    expect(out).toEqual(["a"]);
  });
});

describe("--since", () => {
  const now = new Date("2024-09-24T15:30:00Z");
  it("takes durations back from now", () => {
    expect(parseSince("10s", now)).toEqual(new Date("2024-09-24T15:29:50Z"));
    expect(parseSince("5m", now)).toEqual(new Date("2024-09-24T15:25:00Z"));
    expect(parseSince("1d", now)).toEqual(new Date("2024-09-23T15:30:00Z"));
  });
  it("takes RFC 3339 times", () => {
    expect(parseSince("2024-09-24T15:30:00Z")).toEqual(now);
    expect(parseSince("2024-09-24T17:30:00+02:00")).toEqual(now);
  });
  it("rejects anything else as a usage error", () => {
    expect(() => parseSince("yesterday")).toThrow(/Invalid --since 'yesterday'/);
    try {
      parseSince("5 minutes");
    } catch (e) {
      expect((e as DstackError).kind).toBe("usage");
    }
  });
});
