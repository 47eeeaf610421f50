// LogService.Push over real mTLS: ordering, acks, deduplication across re-sends, cut
// connections and server restarts, and who may push what.
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { LogEntrySchema, LogService, LogStream, PushRequestSchema, type PushRequest, type PushResponse } from "@dstack/proto/agent";
import { agentTransport, enroll, IdentityStore } from "@dstack/proto/link";
import { createMeshServer, meshDataHooks, type MeshDataHooks } from "../../server/src/mesh/index.js";
import { createServices, type Services } from "../../server/src/services/index.js";
import type { LogEntry } from "../../server/src/services/logs.js";
import { agentHome, enrollShim, FAST_LINK, startMesh, type MeshFixture } from "./harness.js";

type Entry = MessageInitShape<typeof LogEntrySchema>;

/** Entry i: stdout mostly, every 7th stderr, every 50th from the runner; its text names i. */
function makeEntries(n: number): Entry[] {
  const t0 = Date.UTC(2025, 0, 1);
  return Array.from({ length: n }, (_, i) => ({
    timestamp: timestampFromDate(new Date(t0 + i)),
    stream: i % 50 === 0 ? LogStream.RUNNER : i % 7 === 0 ? LogStream.STDERR : LogStream.STDOUT,
    data: Buffer.from(`line ${i} ${"x".repeat(i % 60)}\n`),
  }));
}

const batch = (job: string, first: number, entries: Entry[]): PushRequest =>
  create(PushRequestSchema, { batch: { jobSubmissionId: job, firstSequence: BigInt(first), entries } });

async function errorOf(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("the call unexpectedly succeeded");
}

async function* iter<T>(items: T[]): AsyncGenerator<T> {
  yield* items;
}

/** One stream: sends the batches in `reqs` and collects every ack until the server ends it. */
async function pushStream(client: Client<typeof LogService>, reqs: PushRequest[]): Promise<PushResponse[]> {
  const acks: PushResponse[] = [];
  for await (const r of client.push(iter(reqs))) acks.push(r);
  return acks;
}

/**
 * What a runner's pusher does, reduced to the protocol: keep entries until acked, send batches
 * from the oldest unacked with a window, and on a broken stream open a new one (new connection)
 * and re-send from the oldest unacked. `onAck` may break things mid-stream.
 */
class Pusher {
  acked = 0;
  streams = 0;
  constructor(
    private readonly job: string,
    private readonly home: string,
    private readonly entries: Entry[],
    private readonly o: { url: () => string; batch: number; window: number; onAck?: (next: number) => void | Promise<void> },
  ) {}

  async run(): Promise<void> {
    for (let attempt = 0; this.acked < this.entries.length; attempt++) {
      if (attempt > 200) throw new Error(`gave up at ${this.acked}`);
      try {
        await this.stream();
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  private async stream(): Promise<void> {
    this.streams++;
    const id = new IdentityStore(this.home).load();
    const { transport, session } = agentTransport(this.o.url(), { caPem: id.caPem, certPem: id.certPem, keyPem: id.keyPem });
    const total = this.entries.length;
    let sent = this.acked;
    let dead = false;
    let wake = (): void => {};
    const waitAck = () => new Promise<void>((r) => (wake = r));
    const self = this;
    async function* requests(): AsyncGenerator<PushRequest> {
      while (sent < total && !dead) {
        if (sent - self.acked >= self.o.window * self.o.batch) {
          await waitAck();
          continue;
        }
        const n = Math.min(self.o.batch, total - sent);
        yield batch(self.job, sent, self.entries.slice(sent, sent + n));
        sent += n;
      }
      // Keep the stream open until everything sent is acked: ending it ends the server's side.
      while (self.acked < total && !dead) await waitAck();
    }
    try {
      for await (const r of createClient(LogService, transport).push(requests())) {
        this.acked = Math.max(this.acked, Number(r.nextSequence));
        wake();
        await this.o.onAck?.(this.acked);
      }
    } finally {
      dead = true;
      wake();
      session.abort();
    }
  }
}

/** Every stored entry of a job (job log, then runner log), through LogsService.poll. */
async function readBack(svc: Services, job: string): Promise<{ job: LogEntry[]; runner: LogEntry[] }> {
  const all = async (diagnose: boolean) => {
    const out: LogEntry[] = [];
    let nextToken = "";
    do {
      const page = await svc.logs.poll(job, { limit: 1000, nextToken, diagnose });
      out.push(...page.entries);
      nextToken = page.nextToken;
    } while (nextToken);
    return out;
  };
  return { job: await all(false), runner: await all(true) };
}

/** Stored exactly once and in order: sequences 1..n (0-based wire i is i + 1), each with entry i's text and stream. */
function expectComplete(stored: { job: LogEntry[]; runner: LogEntry[] }, entries: Entry[]): void {
  const merged = [...stored.job, ...stored.runner].sort((a, b) => a.seq - b.seq);
  expect(merged.length).toBe(entries.length);
  for (const log of [stored.job, stored.runner]) for (let i = 1; i < log.length; i++) expect(log[i]!.seq).toBeGreaterThan(log[i - 1]!.seq);
  merged.forEach((e, i) => {
    expect(e.seq).toBe(i + 1);
    expect(e.message.toString()).toBe(Buffer.from(entries[i]!.data!).toString());
    const want = entries[i]!.stream === LogStream.RUNNER ? "runner" : entries[i]!.stream === LogStream.STDERR ? "stderr" : "stdout";
    expect(e.source).toBe(want);
  });
  expect(stored.runner.every((e) => e.source === "runner")).toBe(true);
}

describe("mesh: LogService.Push", () => {
  let f: MeshFixture;
  let svc: Services;
  let hooks: MeshDataHooks;

  /** A job row and an enrolled runner for it. */
  async function runnerFor(): Promise<{ job: string; home: string; client: Client<typeof LogService>; close(): void }> {
    const job = await f.addJob(null);
    const { token } = await f.mesh.joinTokens.create({ projectId: f.projectId, kind: "runner", boundId: job });
    const home = agentHome();
    await enroll({ serverUrl: f.url, token, caSha256: f.mesh.caFingerprint, kind: "runner", home });
    const id = new IdentityStore(home).load();
    const { transport, session } = agentTransport(f.url, { caPem: id.caPem, certPem: id.certPem, keyPem: id.keyPem });
    return { job, home, client: createClient(LogService, transport), close: () => session.abort() };
  }

  beforeAll(async () => {
    f = await startMesh();
  });
  afterAll(async () => f?.cleanup());

  it("answers UNIMPLEMENTED on a server started without data hooks", async () => {
    const r = await runnerFor();
    const e = await errorOf(pushStream(r.client, [batch(r.job, 0, makeEntries(1))]));
    expect(e.code).toBe(Code.Unimplemented);
    expect(e.rawMessage).toMatch(/does not serve LogService/);
    r.close();
    // From here on: the real services behind the default hooks.
    svc = createServices(f.orm, f.env.settings);
    hooks = meshDataHooks(f.orm, svc);
    await f.restart({ data: hooks });
  });

  it("stores 10,000 entries pushed in batches, in order, once; acks every batch with next_sequence", async () => {
    const r = await runnerFor();
    const entries = makeEntries(10_000);
    const reqs: PushRequest[] = [];
    for (let i = 0; i < entries.length; i += 250) reqs.push(batch(r.job, i, entries.slice(i, i + 250)));
    const acks = await pushStream(r.client, reqs);
    expect(acks.map((a) => Number(a.nextSequence))).toEqual(reqs.map((_, k) => Math.min((k + 1) * 250, 10_000)));
    expect(acks.every((a) => a.jobSubmissionId === r.job)).toBe(true);
    expectComplete(await readBack(svc, r.job), entries);

    // Overlapping re-sends, on other batch boundaries, are acked but not stored again.
    const again: PushRequest[] = [];
    for (let i = 4_000; i < entries.length; i += 333) again.push(batch(r.job, i, entries.slice(i, i + 333)));
    again.push(batch(r.job, 9_990, [...entries.slice(9_990), ...makeEntries(10_005).slice(10_000)]));
    const acks2 = await pushStream(r.client, again);
    expect(acks2.slice(0, -1).every((a) => Number(a.nextSequence) === 10_000)).toBe(true);
    expect(Number(acks2.at(-1)!.nextSequence)).toBe(10_005);
    expectComplete(await readBack(svc, r.job), makeEntries(10_005));
    // An empty batch asks where the server is.
    expect((await pushStream(r.client, [batch(r.job, 0, [])])).map((a) => Number(a.nextSequence))).toEqual([10_005]);
    r.close();
  });

  it("refuses a batch that starts beyond next_sequence: acks where it is, then ends the stream with OUT_OF_RANGE", async () => {
    const r = await runnerFor();
    const entries = makeEntries(20);
    const acks: PushResponse[] = [];
    const e = await errorOf(
      (async () => {
        for await (const a of r.client.push(iter([batch(r.job, 0, entries.slice(0, 10)), batch(r.job, 15, entries.slice(15)), batch(r.job, 10, entries.slice(10))]))) acks.push(a);
      })(),
    );
    expect(e.code).toBe(Code.OutOfRange);
    expect(e.rawMessage).toBe(`Log batch of job ${r.job} starts at sequence 15, but the server has stored only its first 10 entries; re-send from sequence 10.`);
    expect(acks.map((a) => Number(a.nextSequence))).toEqual([10, 10]);
    // The agent re-sends from 10 on a new stream; nothing beyond the gap was stored.
    expect((await pushStream(r.client, [batch(r.job, 10, entries.slice(10))])).map((a) => Number(a.nextSequence))).toEqual([20]);
    expectComplete(await readBack(svc, r.job), entries);
    r.close();
  });

  it("concurrent streams for one job (a reconnect overlapping the old stream) store each entry once", async () => {
    const r = await runnerFor();
    const entries = makeEntries(3_000);
    const split = (size: number) => {
      const out: PushRequest[] = [];
      for (let i = 0; i < entries.length; i += size) out.push(batch(r.job, i, entries.slice(i, i + size)));
      return out;
    };
    const [a, b, c] = await Promise.all([pushStream(r.client, split(100)), pushStream(r.client, split(77)), pushStream(r.client, split(500))]);
    for (const acks of [a, b, c]) expect(Number(acks.at(-1)!.nextSequence)).toBe(3_000);
    expectComplete(await readBack(svc, r.job), entries);
    r.close();
  });

  it("a connection cut mid-stream (TCP proxy) loses nothing: the agent re-sends unacked entries on a new stream", async () => {
    const r = await runnerFor();
    const sockets = new Set<net.Socket>();
    const proxy = net.createServer((inbound) => {
      const outbound = net.connect(f.port, "127.0.0.1");
      for (const s of [inbound, outbound]) {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
        s.on("error", () => s.destroy());
      }
      inbound.pipe(outbound).pipe(inbound);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const proxyPort = (proxy.address() as net.AddressInfo).port;
    const entries = makeEntries(10_000);
    const cutAt = [2_000, 5_000, 8_000];
    const pusher = new Pusher(r.job, r.home, entries, {
      url: () => `https://127.0.0.1:${proxyPort}`,
      batch: 200,
      window: 8, // up to 1,600 entries in flight when the cut comes
      onAck: (next) => {
        if (cutAt.length && next >= cutAt[0]!) {
          cutAt.shift();
          for (const s of sockets) s.destroy();
        }
      },
    });
    await pusher.run();
    expect(pusher.streams).toBeGreaterThanOrEqual(4);
    expectComplete(await readBack(svc, r.job), entries);
    await new Promise<void>((resolve) => proxy.close(() => resolve()));
    r.close();
  });

  it("a server restart (same home and database, fresh services) mid-push loses nothing and stores nothing twice", async () => {
    const r = await runnerFor();
    const entries = makeEntries(10_000);
    let restarts = 0;
    let inFlight = 0;
    let settled: () => void = () => {};
    // Track appends of the old server, so the new one starts only once they are on disk (as
    // after a process exit).
    const tracked = (h: MeshDataHooks): MeshDataHooks => ({
      ...h,
      async appendLogs(...a) {
        inFlight++;
        try {
          return await h.appendLogs(...a);
        } finally {
          if (--inFlight === 0) settled();
        }
      },
    });
    await f.restart({ data: tracked(hooks) });
    const pusher = new Pusher(r.job, r.home, entries, {
      url: () => f.url,
      batch: 100,
      window: 8,
      onAck: async (next) => {
        if ((restarts === 0 && next >= 3_000) || (restarts === 1 && next >= 7_000)) {
          restarts++;
          await f.mesh.close();
          if (inFlight > 0) await new Promise<void>((resolve) => (settled = resolve));
          svc = createServices(f.orm, f.env.settings); // a new process reads the logs back from disk
          f.mesh = createMeshServer({ settings: f.env.settings, orm: f.orm, link: FAST_LINK, data: tracked(meshDataHooks(f.orm, svc)) });
          await f.mesh.listen(f.port, "127.0.0.1");
        }
      },
    });
    await pusher.run();
    expect(restarts).toBe(2);
    expectComplete(await readBack(svc, r.job), entries);
    r.close();
  });

  it("refuses a runner pushing another job's logs, and ends the stream", async () => {
    const r = await runnerFor();
    const other = await runnerFor();
    const acks: PushResponse[] = [];
    const e = await errorOf(
      (async () => {
        for await (const a of r.client.push(iter([batch(r.job, 0, makeEntries(5)), batch(other.job, 0, makeEntries(5)), batch(r.job, 5, makeEntries(10).slice(5))]))) acks.push(a);
      })(),
    );
    expect(e.code).toBe(Code.PermissionDenied);
    expect(e.rawMessage).toBe(`runner ${r.job} may not report logs of job ${other.job}: it belongs to another agent.`);
    expect(acks.map((a) => Number(a.nextSequence))).toEqual([5]);
    expect(await readBack(svc, other.job)).toEqual({ job: [], runner: [] });
    const mine = await readBack(svc, r.job);
    expect(mine.job.length + mine.runner.length).toBe(5);
    r.close();
    other.close();
  });

  it("refuses a shim calling Push", async () => {
    const { home } = await enrollShim(f);
    const job = await f.addJob(null);
    const id = new IdentityStore(home).load();
    const { transport, session } = agentTransport(f.url, { caPem: id.caPem, certPem: id.certPem, keyPem: id.keyPem });
    const e = await errorOf(pushStream(createClient(LogService, transport), [batch(job, 0, makeEntries(3))]));
    expect(e.code).toBe(Code.PermissionDenied);
    expect(e.rawMessage).toBe("A shim certificate cannot open the LogService link.");
    expect(await readBack(svc, job)).toEqual({ job: [], runner: [] });
    session.abort();
  });

  it("refuses a caller without a client certificate", async () => {
    const job = await f.addJob(null);
    const id = new IdentityStore((await enrollShim(f)).home).load();
    const { transport, session } = agentTransport(f.url, { caPem: id.caPem });
    const e = await errorOf(pushStream(createClient(LogService, transport), [batch(job, 0, makeEntries(3))]));
    expect(e.code).toBe(Code.Unauthenticated);
    session.abort();
  });
});
