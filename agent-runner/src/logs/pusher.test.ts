import http2 from "node:http2";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { LogEntrySchema, LogService, LogStream, PushResponseSchema, type LogEntry, type PushRequest } from "@dstack/proto/agent";
import { afterEach, describe, expect, it } from "vitest";
import { LogPusher } from "./pusher.js";

/** A real LogService over h2c: stores entries by sequence (duplicates skipped, gaps refused). */
class LogServer {
  stored: LogEntry[] = [];
  batches = 0;
  /** Called after a batch is handled; return "cut" to drop the connection before the ack. */
  onBatch: (n: number) => "ack" | "cut" | "silent" = () => "ack";
  private server!: http2.Http2Server;
  private sessions = new Set<http2.ServerHttp2Session>();
  port = 0;

  async listen(port = 0): Promise<this> {
    const routes = (r: ConnectRouter) =>
      r.service(LogService, {
        push: (reqs: AsyncIterable<PushRequest>) => this.push(reqs),
      });
    this.server = http2.createServer(connectNodeAdapter({ routes }));
    this.server.on("session", (s) => {
      this.sessions.add(s);
      s.on("close", () => this.sessions.delete(s));
    });
    await new Promise<void>((ok) => this.server.listen(port, "127.0.0.1", ok));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  private async *push(reqs: AsyncIterable<PushRequest>) {
    for await (const r of reqs) {
      const b = r.batch!;
      b.entries.forEach((e, i) => {
        const seq = Number(b.firstSequence) + i;
        if (seq === this.stored.length) this.stored.push(e);
      });
      const what = this.onBatch(++this.batches);
      if (what === "cut") {
        this.cut();
        return;
      }
      if (what === "ack") yield create(PushResponseSchema, { jobSubmissionId: b.jobSubmissionId, nextSequence: BigInt(this.stored.length) });
    }
  }

  cut(): void {
    for (const s of this.sessions) s.destroy();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((ok) => this.server.close(() => ok()));
  }
}

const texts = (entries: LogEntry[]) => entries.map((e) => Buffer.from(e.data).toString());
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

function pusherFor(port: () => number, dir: string, extra: Partial<ConstructorParameters<typeof LogPusher>[0]> = {}): LogPusher {
  const p = new LogPusher({
    jobSubmissionId: "job-1",
    dir,
    backoff: { initialMs: 5, maxMs: 20 },
    connect: () => {
      const url = `http://127.0.0.1:${port()}`;
      const session = new Http2SessionManager(url);
      return { transport: createGrpcTransport({ baseUrl: url, sessionManager: session }), close: () => session.abort() };
    },
    ...extra,
  });
  closers.push(() => p.close());
  return p;
}

describe("LogPusher", () => {
  it("numbers entries from 0, batches them and drops what the server acknowledged", async () => {
    const server = await new LogServer().listen();
    closers.push(() => server.close());
    const p = pusherFor(() => server.port, mkdtempSync(join(tmpdir(), "pusher-"))).start();
    for (let i = 0; i < 100; i++) p.append(LogStream.STDOUT, Buffer.from(`line ${i}\n`));
    expect(await p.drain(10_000)).toBe(true);
    expect(texts(server.stored)).toEqual(Array.from({ length: 100 }, (_, i) => `line ${i}\n`));
    expect(server.batches).toBeLessThan(100); // batched, not one request per entry
    expect(p.acked).toBe(100);
    expect(p.unacked).toBe(0);
    const ms = server.stored.map((e) => Number(e.timestamp!.seconds) * 1000 + e.timestamp!.nanos / 1e6);
    for (let i = 1; i < ms.length; i++) expect(ms[i]).toBeGreaterThan(ms[i - 1]!);
  });

  it("loses and doubles nothing when the connection is cut mid-stream, before and after storing", async () => {
    const server = await new LogServer().listen();
    closers.push(() => server.close());
    // Every 3rd batch is stored but its ack is lost to a cut; every 5th is stored and never acked.
    server.onBatch = (n) => (n % 3 === 0 ? "cut" : n % 5 === 0 ? "silent" : "ack");
    const p = pusherFor(() => server.port, mkdtempSync(join(tmpdir(), "pusher-")), { flushMs: 1, flushBytes: 200 }).start();
    const want: string[] = [];
    for (let i = 0; i < 400; i++) {
      const line = `entry ${i} ${"x".repeat(i % 50)}\n`;
      want.push(line);
      p.append(i % 2 ? LogStream.STDERR : LogStream.STDOUT, Buffer.from(line));
      if (i % 40 === 0) await new Promise((r) => setImmediate(r));
    }
    server.onBatch = () => "ack";
    expect(await p.drain(20_000)).toBe(true);
    expect(texts(server.stored)).toEqual(want);
    expect(server.stored.map((e) => e.stream)).toEqual(want.map((_, i) => (i % 2 ? LogStream.STDERR : LogStream.STDOUT)));
  });

  it("resends unacknowledged entries from the spool after a runner restart, with the same numbers", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pusher-"));
    const server = await new LogServer().listen();
    closers.push(() => server.close());
    server.onBatch = () => "silent"; // stores, never acks: everything stays in the spool
    const first = pusherFor(() => server.port, dir).start();
    for (let i = 0; i < 10; i++) first.append(LogStream.STDOUT, Buffer.from(`a${i}\n`));
    await new Promise<void>((ok) => {
      const t = setInterval(() => server.stored.length === 10 && (clearInterval(t), ok()), 5);
    });
    await first.close();

    server.onBatch = () => "ack";
    const second = pusherFor(() => server.port, dir);
    expect(second.unacked).toBe(10);
    expect(second.nextSequence).toBe(10);
    second.start();
    second.append(LogStream.STDOUT, Buffer.from("b0\n"));
    expect(await second.drain(10_000)).toBe(true);
    expect(texts(server.stored)).toEqual([...Array.from({ length: 10 }, (_, i) => `a${i}\n`), "b0\n"]);
    await second.close();

    const third = pusherFor(() => server.port, dir);
    expect(third.unacked).toBe(0);
    expect(third.nextSequence).toBe(11);
  });

  it("keeps the oldest output when the unacked bound is reached and says what it dropped", async () => {
    const server = new LogServer();
    let port = 1; // nothing listens: every dial fails until the server starts
    const p = pusherFor(() => port, mkdtempSync(join(tmpdir(), "pusher-")), { maxUnackedBytes: 1000 }).start();
    let overflow = 0;
    p.on("overflow", (n) => (overflow += n));
    for (let i = 0; i < 20; i++) p.append(LogStream.STDOUT, Buffer.from(`${String(i).padStart(2, "0")}${"y".repeat(97)}\n`));
    expect(p.unacked).toBe(10);
    expect(p.droppedBytes).toBe(1000);
    expect(overflow).toBe(100);
    await server.listen();
    closers.push(() => server.close());
    port = server.port;
    await new Promise<void>((ok) => p.on("acked", () => p.unacked === 0 && server.stored.length === 11 && ok()));
    expect(texts(server.stored.slice(0, 10)).map((t) => t.slice(0, 2))).toEqual(["00", "01", "02", "03", "04", "05", "06", "07", "08", "09"]);
    expect(server.stored[10]!.stream).toBe(LogStream.RUNNER);
    expect(texts(server.stored.slice(10))[0]).toMatch(/1000 bytes of output \(10 chunks\) were dropped/);
  });

  it("follows the server's count when it already holds more than this spool numbered", async () => {
    const server = await new LogServer().listen();
    closers.push(() => server.close());
    for (let i = 0; i < 5; i++) server.stored.push(create(LogEntrySchema, { data: Buffer.from(`old${i}\n`) }));
    const p = pusherFor(() => server.port, mkdtempSync(join(tmpdir(), "pusher-"))).start();
    p.append(LogStream.STDOUT, Buffer.from("new0\n"));
    p.append(LogStream.STDOUT, Buffer.from("new1\n"));
    await new Promise<void>((ok) => p.on("acked", () => p.unacked === 0 && ok()));
    expect(texts(server.stored)).toEqual(["old0\n", "old1\n", "old2\n", "old3\n", "old4\n", "new0\n", "new1\n"]);
    expect(p.nextSequence).toBe(7);
  });
});
