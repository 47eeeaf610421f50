// A child process of test/bench/mesh.bench.ts holding a slice of the simulated fleet: `count`
// shims built on the real link library (enroll + connectLink, real mTLS, real heartbeats, the
// library's default jittered backoff), each with its own identity dir. Driven over IPC; every
// timestamp it reports is epoch ms (performance.timeOrigin + now), comparable across processes.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { IdentityStore, connectLink, enroll, type LinkClient } from "@dstack/proto/link";

export interface AgentsInit {
  op: "init";
  url: string;
  caSha256: string;
  token: string;
  count: number;
  /** This process's first agent number (agent homes and host names are unique across processes). */
  offset: number;
  dir: string;
}
export type AgentsRequest =
  | AgentsInit
  | { op: "enroll"; concurrency: number }
  | { op: "dial"; concurrency: number }
  | { op: "arm" }
  | { op: "await-reconnect"; timeoutMs: number }
  | { op: "count" }
  | { op: "ids" }
  | { op: "close" };

export interface EnrollResult {
  latencies: number[];
  start: number;
  end: number;
  failed: number;
  /** Enrollments that failed at first and were tried again (up to 3 tries; a slow machine can time one out). */
  retried: number;
  firstError?: string;
}
export interface DialResult {
  latencies: number[];
  start: number;
  end: number;
}
export interface ReconnectResult {
  /** When each agent was accepted again (epoch ms); missing ones are NaN. */
  at: number[];
  /** The backoff attempt number each agent was on when it got back in. */
  attempts: number[];
  /** Failed dials (connection refused, reset, …) seen while reconnecting. */
  errors: number;
  rssBytes: number;
}

const now = (): number => performance.timeOrigin + performance.now();

let init: AgentsInit | null = null;
const homes: string[] = [];
const links: (LinkClient | null)[] = [];
let armedAt = Infinity;
const reconnectAt: number[] = [];
const reconnectAttempt: number[] = [];
let dialErrors = 0;
let allBack: (() => void) | null = null;
let exitAfterReply = false;

async function pool(n: number, c: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(c, n)) }, async () => {
      for (let i = next++; i < n; i = next++) await fn(i);
    }),
  );
}

function backCount(): number {
  let n = 0;
  for (const t of reconnectAt) if (t >= armedAt) n++;
  return n;
}

async function handle(msg: AgentsRequest): Promise<unknown> {
  switch (msg.op) {
    case "init": {
      init = msg;
      for (let i = 0; i < msg.count; i++) {
        const home = join(msg.dir, `a${msg.offset + i}`);
        mkdirSync(home, { recursive: true });
        homes.push(home);
        links.push(null);
        reconnectAt.push(NaN);
        reconnectAttempt.push(-1);
      }
      return { pid: process.pid };
    }
    case "enroll": {
      const o = init!;
      const latencies: number[] = [];
      let failed = 0;
      let retried = 0;
      let firstError: string | undefined;
      const start = now();
      await pool(o.count, msg.concurrency, async (i) => {
        const t = now();
        for (let attempt = 1; ; attempt++) {
          try {
            await enroll({ serverUrl: o.url, token: o.token, caSha256: o.caSha256, kind: "shim", home: homes[i]!, identity: { hostname: `bench-${o.offset + i}` } });
            latencies.push(now() - t);
            return;
          } catch (e) {
            firstError ??= e instanceof Error ? e.message : String(e);
            if (attempt === 3) return void failed++;
            retried++;
            await new Promise((r) => setTimeout(r, 1000 * attempt));
          }
        }
      });
      return { latencies, start, end: now(), failed, retried, firstError } satisfies EnrollResult;
    }
    case "dial": {
      const o = init!;
      const latencies: number[] = [];
      const start = now();
      await pool(o.count, msg.concurrency, async (i) => {
        const t = now();
        const link = connectLink({
          kind: "shim",
          home: homes[i]!,
          stateReport: () => ({ agentVersion: "bench", tasks: [] }),
          handlers: { ping: () => ({}) },
        });
        links[i] = link;
        link.on("connected", ({ attempt }) => {
          reconnectAt[i] = now();
          reconnectAttempt[i] = attempt;
          if (allBack && backCount() === o.count) allBack();
        });
        link.on("error", () => dialErrors++);
        await link.waitConnected(300_000);
        latencies.push(now() - t);
      });
      return { latencies, start, end: now() } satisfies DialResult;
    }
    case "arm": {
      armedAt = now();
      dialErrors = 0;
      return { armedAt };
    }
    case "await-reconnect": {
      const o = init!;
      if (backCount() < o.count) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, msg.timeoutMs);
          allBack = () => (clearTimeout(t), resolve());
        });
        allBack = null;
      }
      return {
        at: reconnectAt.map((t) => (t >= armedAt ? t : NaN)),
        attempts: reconnectAttempt.map((a, i) => (reconnectAt[i]! >= armedAt ? a : -1)),
        errors: dialErrors,
        rssBytes: process.memoryUsage().rss,
      } satisfies ReconnectResult;
    }
    case "ids":
      return homes.map((h) => new IdentityStore(h).load().agentId);
    case "count":
      return { connected: links.filter((l) => l?.connected).length, rssBytes: process.memoryUsage().rss, heapUsed: process.memoryUsage().heapUsed, pingOnDestroyed, pingTimedOut };
    case "close": {
      await Promise.all(links.map((l) => l?.close()));
      exitAfterReply = true;
      return { closed: true };
    }
  }
}

process.on("message", (msg: AgentsRequest & { id: number }) => {
  const sent = () => exitAfterReply && process.exit(0);
  handle(msg).then(
    (result) => process.send!({ id: msg.id, ok: true, result }, sent),
    (e: unknown) => process.send!({ id: msg.id, ok: false, error: e instanceof Error ? (e.stack ?? e.message) : String(e) }, sent),
  );
});
process.on("disconnect", () => process.exit(0));

// connect-node 2.1.2 can re-arm its keepalive PING timer on a session that abort() has already
// destroyed; the timer then throws ERR_HTTP2_INVALID_SESSION out of a setTimeout and would kill
// the process (connectrpc/connect-es#1795). A real shim dies of it ~30 s after a server restart;
// here it is counted, so the benchmark can go on and report how often it happened.
// It also destroys a session whose keepalive PING took longer than pingTimeoutMs (15 s, e.g. a
// server stalled in shutdown at 10,000 links on loaded cores) with a ConnectError that nothing
// catches: counted the same way (once it killed every agent process of a run at N = 10,000).
let pingOnDestroyed = 0;
let pingTimedOut = 0;
process.on("uncaughtException", (e: Error & { code?: string }) => {
  if (e.code === "ERR_HTTP2_INVALID_SESSION" && /commonPing|onPingInterval/.test(e.stack ?? "")) pingOnDestroyed++;
  else if (e.message.includes("PING timed out") && /http2-session-manager/.test(e.stack ?? "")) pingTimedOut++;
  else {
    console.error(e);
    process.exit(1);
  }
});
