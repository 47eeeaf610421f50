// Agent mesh benchmark (not part of `npm test`):
//   npx tsx test/bench/mesh.bench.ts [--agents 1000] [--per-process 500] [--enroll-concurrency 32]
//       [--dial-concurrency 256] [--settle-seconds 12] [--cpu-seconds 60] [--pings 1000] [--ping-interval-ms 10]
//   N = 10,000 on 2 cores: --agents 10000 --per-process 1000 (10 agent processes); the server needs
//   N + a few hundred file descriptors (`ulimit -n`), checked before anything starts.
//
// One REAL `dstack-server` process (server/bin/dstack-server.js, its own temp home and SQLite, the
// default 5 s heartbeat) and N simulated shims built on the real link library (`enroll` +
// `connectLink` from @dstack/proto/link, kind "shim", real mutual TLS), spread over child
// processes (test/bench/mesh/agents.ts) so no agent memory or CPU is counted as the server's.
// test/bench/mesh/probe.mjs is preloaded into the server (`node --import`, plus --expose-gc) so the
// bench can read the server's heap after a full GC and make `ping` reverse calls from inside it,
// without the server needing a debug endpoint.
//
// Phases, in order:
//   1. enrollment: every shim enrolls with one reusable fleet join token (created in the server's
//      database, as `CreateFleetJoinToken` would); enrolls/s over the whole fleet.
//   2. link set-up: every shim dials (at most --dial-concurrency in flight); links/s from the first
//      dial until the last LinkAccepted, and per-link dial → accepted latency.
//   3. memory: server RSS (/proc/<pid>/status VmRSS) and V8 heap (after GC) before the links and
//      after they have run --settle-seconds of heartbeats; the difference divided by N.
//   4. CPU: server utime+stime (/proc/<pid>/stat) over --cpu-seconds of steady heartbeats, as % of
//      one core, with the 1-minute load average at its end (other work on the machine shows there).
//      The server stretches the heartbeat period past 1,000 heartbeats/s (links.ts), so the
//      message rate is computed from the periods the links were actually told.
//   5. reverse calls: --pings `ping` calls from the server to random linked shims, one every
//      --ping-interval-ms (open loop); round trip p50/p99 measured inside the server.
//   6. restart: SIGTERM the server, start a new one on the same home and ports; from the moment the
//      new agent port accepts TCP until every shim is accepted again. Shims use the library's
//      default backoff (full jitter, 1 s window doubling to 30 s).
import { fork, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { openDatabase } from "../../server/src/db/database.js";
import { Fleet, Instance, Project, build } from "../../server/src/db/entities.js";
import { JoinTokens } from "../../server/src/mesh/join-tokens.js";
import { DEFAULT_LINK_SETTINGS, Links } from "../../server/src/mesh/links.js";
import { loadSettings } from "../../server/src/settings.js";
import { createServerEnv, freePort, type ServerEnv } from "../helpers/server.js";
import type { AgentsRequest, DialResult, EnrollResult, ReconnectResult } from "./mesh/agents.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const N = Number(arg("agents", "1000"));
const PER_PROCESS = Number(arg("per-process", "500"));
const ENROLL_CONCURRENCY = Number(arg("enroll-concurrency", "32"));
const DIAL_CONCURRENCY = Number(arg("dial-concurrency", "256"));
const SETTLE_S = Number(arg("settle-seconds", "12"));
const CPU_S = Number(arg("cpu-seconds", "60"));
const PINGS = Number(arg("pings", "1000"));
const PING_INTERVAL_MS = Number(arg("ping-interval-ms", "10"));
/** Extra node flags for the server process, e.g. MESH_BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof". */
const SERVER_NODE_ARGS = (process.env.MESH_BENCH_SERVER_NODE_ARGS ?? "").split(" ").filter(Boolean);
/** With MESH_BENCH_PROFILE_DIR set, the server's main thread is CPU-profiled per phase into that folder. */
const PROFILE_DIR = process.env.MESH_BENCH_PROFILE_DIR;
/**
 * With MESH_BENCH_HEAP_SNAPSHOTS=1 as well, heap snapshots are taken before and after the links. Off
 * by default: writing one stops the server's event loop for longer than the agents' watchdog
 * (3 heartbeats) at a few thousand links, so they redial and the later phases measure a reconnect storm.
 */
const HEAP_SNAPSHOTS = PROFILE_DIR !== undefined && process.env.MESH_BENCH_HEAP_SNAPSHOTS === "1";
const RECONNECT_TIMEOUT_MS = Number(arg("reconnect-timeout-s", "300")) * 1000;

const REPO = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const BIN = join(REPO, "server", "bin", "dstack-server.js");
const PROBE = new URL("./mesh/probe.mjs", import.meta.url).href;
const AGENTS = fileURLToPath(new URL("./mesh/agents.ts", import.meta.url));
const CLK_TCK = 100; // `getconf CLK_TCK` on Linux x86-64

const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number): number => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};
const MB = (b: number) => `${(b / 2 ** 20).toFixed(0)} MB`;
const KB = (b: number) => `${(b / 1024).toFixed(1)} KB`;

/** Request/response over a child's IPC channel. */
function ipc(child: ChildProcess) {
  let seq = 0;
  const waiting = new Map<number, { ok(v: unknown): void; fail(e: Error): void }>();
  child.on("message", (m: { id: number; ok: boolean; result?: unknown; error?: string }) => {
    const w = waiting.get(m.id);
    if (!w) return;
    waiting.delete(m.id);
    if (m.ok) w.ok(m.result);
    else w.fail(new Error(m.error));
  });
  child.once("exit", (code) => {
    for (const w of waiting.values()) w.fail(new Error(`child ${child.pid} exited with ${code}`));
    waiting.clear();
  });
  return <T>(msg: Record<string, unknown>): Promise<T> =>
    new Promise<T>((ok, fail) => {
      const id = ++seq;
      waiting.set(id, { ok: ok as (v: unknown) => void, fail });
      child.send({ ...msg, id }, (e) => {
        if (e) (waiting.delete(id), fail(e));
      });
    });
}

// ---- the server process ----

interface Server {
  child: ChildProcess;
  pid: number;
  caSha256: string;
  call: ReturnType<typeof ipc>;
  exited: Promise<number | null>;
  stderr(): string;
}

/** Spawns the server; `call` works at once (the probe answers as soon as the process runs), `ready` waits for the banner. */
function spawnServer(where: ServerEnv, port: number, agentPort: number): { call: ReturnType<typeof ipc>; ready: Promise<Server> } {
  const child = spawn(
    process.execPath,
    ["--expose-gc", ...SERVER_NODE_ARGS, "--import", PROBE, BIN, "--port", String(port), "--agent-port", String(agentPort), "--log-level", "warn", "--no"],
    // No local fleet: its host agent would be one more link, and not ours.
    { cwd: REPO, env: { ...process.env, DSTACK_SERVER_ADMIN_TOKEN: "", DSTACK_SERVER_NO_LOCAL_FLEET: "1", ...where.env }, stdio: ["ignore", "pipe", "pipe", "ipc"] },
  );
  const call = ipc(child);
  let out = "";
  let err = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (err = (err + d).slice(-20_000)));
  const exited = new Promise<number | null>((ok) => child.once("exit", (code) => ok(code)));
  const ready = new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`no banner within 120 s\n${out}\n${err}`)), 120_000);
    const check = () => {
      const m = /CA SHA-256 ([0-9a-f:]+)/i.exec(out);
      if (m && /The server is running at/.test(out)) {
        clearTimeout(timer);
        child.stdout!.off("data", check);
        ok(m[1]!);
      }
    };
    child.stdout!.on("data", check);
    void exited.then((code) => (clearTimeout(timer), fail(new Error(`dstack-server exited with ${code}\n${out}\n${err}`))));
  }).then((caSha256): Server => ({ child, pid: child.pid!, caSha256, call, exited, stderr: () => err }));
  return { call, ready };
}

async function profiled<T>(s: Server, phase: string, fn: () => Promise<T>): Promise<T> {
  if (!PROFILE_DIR) return fn();
  await s.call({ op: "profile-start" });
  try {
    return await fn();
  } finally {
    await s.call({ op: "profile-stop", path: join(PROFILE_DIR, `server-${phase}-N${N}.cpuprofile`) });
  }
}

async function stopServer(s: Server): Promise<number | null> {
  if (s.child.connected) s.child.disconnect(); // an open IPC channel would keep the server's event loop alive
  if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill("SIGTERM");
  return s.exited;
}

function procStatus(pid: number): { rss: number } {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return { rss: Number(m?.[1] ?? NaN) * 1024 };
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

interface Mem {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  links: number;
}

async function serverMem(s: Server): Promise<Mem & { procRss: number }> {
  const m = await s.call<Mem>({ op: "mem" });
  return { ...m, procRss: procStatus(s.pid).rss };
}

/** Polls until the port accepts a TCP connection; returns when it did (epoch ms). */
async function waitListening(port: number, timeoutMs = 60_000): Promise<number> {
  const until = now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((done) => {
      const sock = connect(port, "127.0.0.1");
      sock.once("connect", () => (sock.destroy(), done(true)));
      sock.once("error", () => done(false));
    });
    if (ok) return now();
    if (now() > until) throw new Error(`port ${port} not listening within ${timeoutMs} ms`);
    await sleep(10);
  }
}

// ---- fleet and token, written where CreateFleetJoinToken would write them ----

async function createFleetToken(where: ServerEnv): Promise<{ token: string; fleetId: string }> {
  const orm = await openDatabase(loadSettings(where.env).database);
  try {
    const em = orm.em.fork();
    const project = await em.findOneOrFail(Project, { name: "main" });
    const fleet = build(Fleet, { name: "bench", project: project as never });
    await em.persistAndFlush(fleet);
    const t = await new JoinTokens(orm).create({ projectId: project.id, fleetId: fleet.id, kind: "shim", reusable: true, ttlMs: 6 * 3600_000 });
    return { token: t.token, fleetId: fleet.id };
  } finally {
    await orm.close(true);
  }
}

async function instanceNames(where: ServerEnv, fleetId: string): Promise<{ rows: number; distinct: number }> {
  const orm = await openDatabase(loadSettings(where.env).database);
  try {
    const rows = await orm.em.fork().find(Instance, { fleet: fleetId }, { fields: ["name"] });
    return { rows: rows.length, distinct: new Set(rows.map((r) => r.name)).size };
  } finally {
    await orm.close(true);
  }
}

// ---- agent processes ----

interface Agents {
  child: ChildProcess;
  call: ReturnType<typeof ipc>;
  count: number;
}

function spawnAgents(): Agents[] {
  const procs = Math.ceil(N / PER_PROCESS);
  return Array.from({ length: procs }, (_, p) => {
    const count = Math.min(PER_PROCESS, N - p * PER_PROCESS);
    // fork() reuses this process's execArgv, i.e. tsx's loader.
    const child = fork(AGENTS, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    return { child, call: ipc(child), count };
  });
}

const all = <T>(agents: Agents[], msg: AgentsRequest | ((a: Agents, i: number) => AgentsRequest)): Promise<T[]> =>
  Promise.all(agents.map((a, i) => a.call<T>((typeof msg === "function" ? msg(a, i) : msg) as unknown as Record<string, unknown>)));

// ---- report ----

interface Row {
  metric: string;
  value: string;
  note: string;
}

function printTable(rows: Row[]): void {
  const head: Row = { metric: "metric", value: "value", note: "note" };
  const everything = [head, ...rows];
  const w = (k: keyof Row) => Math.max(...everything.map((r) => r[k].length));
  const line = (r: Row) => `| ${r.metric.padEnd(w("metric"))} | ${r.value.padStart(w("value"))} | ${r.note.padEnd(w("note"))} |`;
  console.log(line(head));
  console.log(`|${(["metric", "value", "note"] as const).map((k) => "-".repeat(w(k) + 2)).join("|")}|`);
  for (const r of rows) console.log(line(r));
}

/**
 * The links already up heartbeat while the others dial, so the set-up phase's CPU includes their
 * heartbeats, and more so the larger N (a longer phase with more links up). An estimate of that
 * part per link: the steady phase's CPU per message times the heartbeats sent both ways during
 * the phase, with links coming up evenly over it and each told the period of its moment.
 */
function dialHeartbeatCpuMs(dialSeconds: number, steadyCpuPct: number, steadyMsgPerS: number): number {
  const periodMs = (links: number) => Links.prototype.heartbeatIntervalFor.call({ settings: DEFAULT_LINK_SETTINGS } as Links, links);
  let avgMsgPerS = 0;
  for (let n = 1; n <= N; n++) avgMsgPerS += (2 * n * 1000) / periodMs(n) / N;
  return ((steadyCpuPct / 100 / steadyMsgPerS) * avgMsgPerS * dialSeconds * 1000) / N;
}

const log = (s: string) => process.stderr.write(`[mesh.bench ${new Date().toISOString().slice(11, 19)}] ${s}\n`);

/** The soft limit on open files of this process (what the server inherits): `ulimit -n`. */
function openFileLimit(): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"));
  return !m || m[1] === "unlimited" ? Infinity : Number(m[1]);
}

async function main(): Promise<void> {
  // The server holds a socket per agent, plus its database, logs and listeners.
  const fds = openFileLimit();
  if (fds < N + 512) throw new Error(`${N} agents need about ${N + 512} open files in the server, but ulimit -n is ${fds}: raise it (ulimit -n ${N + 1024}) and run again`);
  if (fds < PER_PROCESS + 256) throw new Error(`--per-process ${PER_PROCESS} agents need about ${PER_PROCESS + 256} open files per agent process, but ulimit -n is ${fds}`);
  const load0 = loadavg();
  const where = await createServerEnv("sqlite");
  const agentDir = mkdtempSync(join(tmpdir(), "dstack-meshbench-"));
  const port = await freePort();
  let agentPort = await freePort();
  while (agentPort === port) agentPort = await freePort();
  const url = `https://127.0.0.1:${agentPort}`;
  let server: Server | null = null;
  let agents: Agents[] = [];
  const rows: Row[] = [];
  try {
    server = await spawnServer(where, port, agentPort).ready;
    await server.call({ op: "hook" });
    const { token, fleetId } = await createFleetToken(where);
    const idle = await serverMem(server);
    log(`server pid ${server.pid} up: RSS ${MB(idle.procRss)}, heap ${MB(idle.heapUsed)}`);

    agents = spawnAgents();
    let offset = 0;
    await all(agents, (a) => {
      const m: AgentsRequest = { op: "init", url, caSha256: server!.caSha256, token, count: a.count, offset, dir: agentDir };
      offset += a.count;
      return m;
    });

    // 1. enrollment
    const perProc = (total: number) => Math.max(1, Math.ceil(total / agents.length));
    let cpu0 = cpuSeconds(server.pid);
    let t0 = now();
    const enrolled = await profiled(server, "enroll", () => all<EnrollResult>(agents, { op: "enroll", concurrency: perProc(ENROLL_CONCURRENCY) }));
    let t1 = now();
    const enrollCpuMs = ((cpuSeconds(server.pid) - cpu0) * 1000) / N;
    const failed = enrolled.reduce((s, r) => s + r.failed, 0);
    const retried = enrolled.reduce((s, r) => s + r.retried, 0);
    if (failed > 0) throw new Error(`${failed} enrollments failed; first: ${enrolled.find((r) => r.firstError)?.firstError}`);
    const enrollLat = enrolled.flatMap((r) => r.latencies);
    const enrollRate = N / ((t1 - t0) / 1000);
    log(`enrolled ${N} in ${((t1 - t0) / 1000).toFixed(1)} s`);
    const names = await instanceNames(where, fleetId);
    const afterEnroll = await serverMem(server);
    if (HEAP_SNAPSHOTS) await server.call({ op: "heap-snapshot", path: join(PROFILE_DIR!, `server-before-links-N${N}.heapsnapshot`) });

    // 2. link set-up
    cpu0 = cpuSeconds(server.pid);
    t0 = now();
    const dialed = await profiled(server, "dial", () => all<DialResult>(agents, { op: "dial", concurrency: perProc(DIAL_CONCURRENCY) }));
    t1 = now();
    const dialCpuMs = ((cpuSeconds(server.pid) - cpu0) * 1000) / N;
    const dialLat = dialed.flatMap((r) => r.latencies);
    const linkRate = N / ((t1 - t0) / 1000);
    const dialSeconds = (t1 - t0) / 1000;
    log(`linked ${N} in ${((t1 - t0) / 1000).toFixed(1)} s`);

    // 3. memory after the links have run a few heartbeat rounds
    await sleep(SETTLE_S * 1000);
    const linked = await serverMem(server);
    if (HEAP_SNAPSHOTS) await server.call({ op: "heap-snapshot", path: join(PROFILE_DIR!, `server-linked-N${N}.heapsnapshot`) });
    if (linked.links !== N) {
      const theirs = new Set((await all<string[]>(agents, { op: "ids" })).flat().map((id) => `shim/${id}`));
      const extra = (await server.call<string[]>({ op: "ids" })).filter((id) => !theirs.has(id));
      log(`warning: server sees ${linked.links} connected links, expected ${N}; not ours: ${extra.join(", ") || "none"}; distinct agent ids ${theirs.size}`);
    }
    const counts = await all<{ connected: number; rssBytes: number; pingOnDestroyed: number }>(agents, { op: "count" });
    const agentRss = counts.reduce((s, c) => s + c.rssBytes, 0);
    // Logged as they come, so a run cut short (a timeout at N = 10,000) still leaves its figures.
    log(`server RSS ${MB(afterEnroll.procRss)} → ${MB(linked.procRss)}: ${KB((linked.procRss - afterEnroll.procRss) / N)} per link, heap ${KB((linked.heapUsed - afterEnroll.heapUsed) / N)} per link; ${linked.links} links`);

    // 4. CPU at steady heartbeats
    const periods = await server.call<Record<string, number>>({ op: "heartbeats" });
    const hbMsgPerS = Object.entries(periods).reduce((s, [ms, n]) => s + (2 * n * 1000) / Number(ms), 0);
    const periodNote = Object.entries(periods)
      .sort((a, b) => Number(a[0]) - Number(b[0]))
      .map(([ms, n]) => `${n}×${Number(ms) / 1000}s`)
      .join(" ");
    const loadCpu0 = loadavg()[0]!;
    const c0 = cpuSeconds(server.pid);
    const w0 = now();
    await profiled(server!, "steady", () => sleep(CPU_S * 1000));
    const cpuPct = ((cpuSeconds(server.pid) - c0) / ((now() - w0) / 1000)) * 100;
    const loadCpu1 = loadavg()[0]!;
    log(`server CPU ${cpuPct.toFixed(1)} % of a core over ${CPU_S} s (load ${loadCpu0.toFixed(2)} → ${loadCpu1.toFixed(2)}); heartbeat periods ${periodNote}`);

    // 5. reverse calls
    const pinged = PINGS > 0 ? await server.call<{ rtts: number[]; failed: number; linked: number }>({ op: "ping", count: PINGS, intervalMs: PING_INTERVAL_MS, deadlineMs: 10_000 }) : null;
    if (pinged) log(`ping p50 / p99 ${pct(pinged.rtts, 50).toFixed(1)} / ${pct(pinged.rtts, 99).toFixed(1)} ms, ${pinged.failed} failed`);

    // 6. restart
    await all(agents, { op: "arm" });
    const tKill = now();
    // A shutdown that hangs would hold the whole run: after 60 s it is killed, and the row says so.
    const stuck = setTimeout(() => (log("server still running 60 s after SIGTERM: SIGKILL"), server!.child.kill("SIGKILL")), 60_000);
    const exitCode = await stopServer(server);
    clearTimeout(stuck);
    const tExit = now();
    log(`server exited (${exitCode ?? server.child.signalCode}) ${((tExit - tKill) / 1000).toFixed(1)} s after SIGTERM`);
    const listening = waitListening(agentPort, 120_000);
    const tSpawn = now();
    const restarted = spawnServer(where, port, agentPort);
    const tListen = await listening;
    // links.ts is loaded once the agent port listens; agents accepted before this hook are missed
    // by the link count below (the registry is captured at the next accept), never by the timings.
    await restarted.call({ op: "hook" });
    server = await restarted.ready;
    const back = await all<ReconnectResult>(agents, { op: "await-reconnect", timeoutMs: RECONNECT_TIMEOUT_MS });
    const at = back.flatMap((r) => r.at);
    const missing = at.filter((t) => !Number.isFinite(t)).length;
    const absorbMs = Math.max(...at.filter(Number.isFinite)) - tListen;
    const sinceListen = at.map((t) => t - tListen);
    const attempts = new Map<number, number>();
    for (const a of back.flatMap((r) => r.attempts)) attempts.set(a, (attempts.get(a) ?? 0) + 1);
    const dialErrors = back.reduce((s, r) => s + r.errors, 0);
    const afterRestart = await serverMem(server);
    const lingerMs = Math.max(0, 40_000 - (now() - tExit));
    log(`waiting ${(lingerMs / 1000).toFixed(0)} s more: connect-node's keepalive timer fires 30 s after a dead session (connectrpc/connect-es#1795)`);
    await sleep(lingerMs);
    const counted = await all<{ pingOnDestroyed: number; pingTimedOut: number }>(agents, { op: "count" });
    const crashes = counted.reduce((s, c) => s + c.pingOnDestroyed, 0);
    const pingTimeouts = counted.reduce((s, c) => s + c.pingTimedOut, 0);
    log(`reconnected ${N - missing}/${N}, last ${(absorbMs / 1000).toFixed(1)} s after listen`);

    // ---- table ----
    const perLinkRss = (linked.procRss - afterEnroll.procRss) / N;
    const perLinkHeap = (linked.heapUsed - afterEnroll.heapUsed) / N;
    const perLinkExt = (linked.external - afterEnroll.external) / N;
    rows.push(
      { metric: "enrollment rate", value: `${enrollRate.toFixed(0)} /s`, note: `${ENROLL_CONCURRENCY} in flight, ${retried} retried${retried ? ` (first error: ${enrolled.find((r) => r.firstError)?.firstError})` : ""}; latency p50 ${pct(enrollLat, 50).toFixed(0)} / p99 ${pct(enrollLat, 99).toFixed(0)} ms; server CPU ${enrollCpuMs.toFixed(1)} ms/enroll` },
      { metric: "instance names after concurrent enrollment", value: `${names.distinct} / ${names.rows}`, note: "distinct / rows (resolveShim names `<fleet>-<count>`)" },
      { metric: "link set-up rate (dial → LinkAccepted)", value: `${linkRate.toFixed(0)} /s`, note: `${DIAL_CONCURRENCY} in flight; latency p50 ${pct(dialLat, 50).toFixed(0)} / p99 ${pct(dialLat, 99).toFixed(0)} ms; server CPU ${dialCpuMs.toFixed(1)} ms/link (≈ ${dialHeartbeatCpuMs(dialSeconds, cpuPct, hbMsgPerS).toFixed(1)} of it heartbeats of the links already up)` },
      { metric: "server RSS: idle → enrolled → linked", value: `${MB(idle.procRss)} → ${MB(afterEnroll.procRss)} → ${MB(linked.procRss)}`, note: `after ${SETTLE_S} s of heartbeats; GC first` },
      { metric: "server RSS per link", value: KB(perLinkRss), note: "anchors §3.3: connect-node ~120–150 KB, grpc-js ~60–90 KB" },
      { metric: "server V8 heap per link (after GC)", value: KB(perLinkHeap), note: `heap ${MB(afterEnroll.heapUsed)} → ${MB(linked.heapUsed)}; external ${KB(perLinkExt)}/link` },
      { metric: "server CPU at steady heartbeats", value: `${cpuPct.toFixed(1)} % of a core`, note: `${CPU_S} s window, load average ${loadCpu0.toFixed(2)} → ${loadCpu1.toFixed(2)}; ${hbMsgPerS.toFixed(0)} msg/s both ways (periods ${periodNote}); anchors §3.3: 16.4 % at 4,000 conns / 800 msg/s` },
      pinged
        ? { metric: "ping reverse call round trip p50 / p99", value: `${pct(pinged.rtts, 50).toFixed(1)} / ${pct(pinged.rtts, 99).toFixed(1)} ms`, note: `${pinged.rtts.length} calls to random shims of ${pinged.linked}, 1 every ${PING_INTERVAL_MS} ms; ${pinged.failed} failed` }
        : { metric: "ping reverse call round trip", value: "skipped", note: "--pings 0" },
      { metric: "restart: SIGTERM → exit → new agent port listening", value: `${((tExit - tKill) / 1000).toFixed(1)} + ${((tListen - tSpawn) / 1000).toFixed(1)} s`, note: `graceful shutdown (exit ${exitCode ?? "by signal"}), then start-up (tsx, DB, migrations)` },
      { metric: "restart: listen → all agents accepted again", value: `${(absorbMs / 1000).toFixed(1)} s`, note: `p50 ${(pct(sinceListen, 50) / 1000).toFixed(1)} / p99 ${(pct(sinceListen, 99) / 1000).toFixed(1)} s; ${missing} missing; backoff full jitter 1 s ×2 → 30 s (library default)` },
      { metric: "restart: backoff attempt when accepted", value: [...attempts.entries()].sort((a, b) => a[0] - b[0]).map(([a, n]) => `#${a}:${n}`).join(" "), note: `${dialErrors} failed dials while the server was away` },
      { metric: "server RSS after reconnect (new process)", value: MB(afterRestart.procRss), note: `heap ${MB(afterRestart.heapUsed)}, ${afterRestart.links} links` },
      { metric: "agents that would have crashed (ping on a destroyed session)", value: `${crashes + pingTimeouts} / ${N}`, note: `uncaught ERR_HTTP2_INVALID_SESSION from connect-node's keepalive timer within 40 s of the SIGTERM (${crashes}), or its uncaught 'PING timed out' (${pingTimeouts}); caught and counted here` },
      { metric: "agent processes RSS (not the server's)", value: MB(agentRss), note: `${agents.length} processes, ${KB(agentRss / N)}/agent incl. runtime` },
    );
    const load1 = loadavg();
    console.log(`\nnode ${process.version}, ${new Date().toISOString()}, N = ${N} shims in ${agents.length} processes, load average before/after ${load0[0]!.toFixed(2)} / ${load1[0]!.toFixed(2)}`);
    printTable(rows);
    console.log(
      `\nSummary: N=${N}: enroll ${enrollRate.toFixed(0)}/s, link set-up ${linkRate.toFixed(0)}/s, server ${KB(perLinkRss)} RSS + ${KB(perLinkHeap)} heap per link, ` +
        `${cpuPct.toFixed(1)} % of a core at steady heartbeats (${hbMsgPerS.toFixed(0)} msg/s, load ${loadCpu1.toFixed(2)}), ` +
        (pinged ? `ping p50/p99 ${pct(pinged.rtts, 50).toFixed(1)}/${pct(pinged.rtts, 99).toFixed(1)} ms, ` : "") +
        `all back ${(absorbMs / 1000).toFixed(1)} s after a restart (full-jitter backoff 1→30 s).`,
    );
  } finally {
    await Promise.all(agents.map((a) => a.call({ op: "close" }).catch(() => {})));
    if (server) await stopServer(server).catch(() => {});
    rmSync(agentDir, { recursive: true, force: true });
    await where.cleanup();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
