// Scheduler benchmark (not part of `npm test`):
//   npx tsx test/bench/scheduler.bench.ts [--dialect sqlite|postgresql|both] [--runs 1000] [--list-runs 10000] [--concurrency 8]
//
// A. Placement throughput: N runs (one 1-GPU job each) are applied through RunsService while
//    the event-driven scheduler is running, onto simulated 8×H100 hosts split into 8 blocks
//    (N slots in all). Measured from the first apply until every job holds an instance. The
//    floor is N plain single-row INSERTs (one autocommit each, same concurrency, same process
//    and database): no scheduler can beat one commit per run, so placed/s ÷ inserts/s says how
//    close the whole path (authorize + run + job + event + claim + placement) gets to it.
// B. `ps` latency: the first page of 50 runs through RunsService.list with M runs in the
//    database, against the floor of a bare indexed SELECT of the same 50 rows.
//
// PostgreSQL: DSTACK_TEST_DATABASE_URL (default postgresql://dstack:dstack@127.0.0.1:5432/dstack_test).
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { parseConfiguration, type FleetConfig, type RunConfig } from "@dstack/proto";
import { openDatabase, type Orm } from "../../server/src/db/database.js";
import { Job, Project, Run, User, build } from "../../server/src/db/entities.js";
import { JobStatus, RunStatus } from "../../server/src/domain/enums.js";
import { createScheduler } from "../../server/src/scheduler/index.js";
import { bootstrap, createServices, type Services } from "../../server/src/services/index.js";
import type { Principal } from "../../server/src/services/users.js";
import { createTestEnv, DIALECTS, type Dialect, type TestEnv } from "../../server/src/testing/db.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const dialectArg = arg("dialect", "both");
const N_RUNS = Number(arg("runs", "1000"));
const N_LIST = Number(arg("list-runs", "10000"));
const CONCURRENCY = Number(arg("concurrency", "8"));
const dialects: Dialect[] = dialectArg === "both" ? [...DIALECTS] : [dialectArg as Dialect];

const GPUS_PER_HOST = 8;
const TASK = parseConfiguration("type: task\ncommands: [python train.py]\nresources:\n  gpu: H100:1\n", "bench.dstack.yml") as RunConfig;
const FLEET = parseConfiguration(`type: fleet\nname: bench\nnodes: 0..\nblocks: ${GPUS_PER_HOST}\n`, "fleet.dstack.yml") as FleetConfig;
const HOST = {
  cpus: 128,
  cpuArch: "x86" as const,
  memoryGb: 1024,
  diskGb: 4000,
  gpus: Array.from({ length: GPUS_PER_HOST }, () => ({ vendor: "nvidia" as const, name: "H100", memoryGb: 80 })),
};

interface Env {
  env: TestEnv;
  orm: Orm;
  services: Services;
  admin: Principal;
}

async function open(dialect: Dialect): Promise<Env> {
  const env = await createTestEnv(dialect);
  const orm = await openDatabase(env.settings.database);
  const services = createServices(orm, env.settings);
  const admin = await services.users.authenticate((await bootstrap(services)).adminToken);
  return { env, orm, services, admin };
}

async function close(e: Env): Promise<void> {
  await e.orm.close(true);
  await e.env.cleanup();
}

/** Runs `fn(i)` for i in [0, n) with at most `c` in flight. */
async function pool(n: number, c: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(c, n) }, async () => {
      for (let i = next++; i < n; i = next++) await fn(i);
    }),
  );
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};

async function measure(iterations: number, fn: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < 10; i++) await fn(); // warm caches and prepared paths
  const out: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t = performance.now();
    await fn();
    out.push(performance.now() - t);
  }
  return out;
}

interface Row {
  dialect: Dialect;
  metric: string;
  value: string;
  floor: string;
  ratio: string;
}

async function placement(dialect: Dialect): Promise<Row[]> {
  const e = await open(dialect);
  const { orm, services, admin } = e;
  const errors: unknown[] = [];
  const scheduler = createScheduler({ orm, services, settings: e.env.settings, onError: (err) => errors.push(err) });
  try {
    const fleet = await services.fleets.apply(admin, "main", FLEET);
    const SERIAL = 50; // runs applied one at a time afterwards, for the unloaded submit → placed latency
    const hosts = Math.ceil((N_RUNS + SERIAL) / GPUS_PER_HOST);
    for (let h = 0; h < hosts; h++) await services.fleets.registerInstance(fleet.id, { ...HOST, hostname: `gpu-${h}` });
    await scheduler.start();
    await scheduler.idle();

    const t0 = performance.now();
    await pool(N_RUNS, CONCURRENCY, async (i) => {
      await services.runs.apply(admin, "main", { runName: `bench-${i}`, configuration: TASK });
    });
    const applied = performance.now();
    // Every placement was woken by the apply's event; wait for the last ones to commit.
    const em = () => orm.em.fork();
    let placed = 0;
    for (let tries = 0; tries < 600; tries++) {
      await scheduler.idle();
      placed = await em().count(Job, { status: JobStatus.PROVISIONING });
      if (placed >= N_RUNS) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const done = performance.now();
    if (placed < N_RUNS) throw new Error(`${dialect}: only ${placed}/${N_RUNS} jobs placed; scheduler errors: ${errors.length} ${String(errors[0] ?? "")}`);

    // Never double-booked: per instance, the blocks its jobs hold add up to busy_blocks ≤ total.
    const rows = await orm.em.getConnection().execute<{ instance_id: string; held: number | string; busy_blocks: number; total_blocks: number }[]>(
      "select j.instance_id, sum(j.blocks) as held, i.busy_blocks, i.total_blocks from jobs j join instances i on i.id = j.instance_id " +
        "where j.status = 'provisioning' group by j.instance_id, i.busy_blocks, i.total_blocks",
    );
    const bad = rows.filter((r) => Number(r.held) !== r.busy_blocks || r.busy_blocks > r.total_blocks);
    if (bad.length) throw new Error(`${dialect}: ${bad.length} instances with inconsistent block accounting`);

    // One run at a time on an otherwise idle scheduler: the latency a single `dstack apply` sees.
    const serialIds: string[] = [];
    for (let i = 0; i < SERIAL; i++) {
      const run = await services.runs.apply(admin, "main", { runName: `solo-${i}`, configuration: TASK });
      await scheduler.idle();
      serialIds.push(run.id);
    }
    const solo = await em().find(Job, { run: { $in: serialIds }, status: JobStatus.PROVISIONING }, { fields: ["submittedAt", "lastProcessedAt"] });
    if (solo.length !== SERIAL) throw new Error(`${dialect}: only ${solo.length}/${SERIAL} solo runs placed`);
    const soloLatencies = solo.map((j) => j.lastProcessedAt.getTime() - j.submittedAt.getTime());

    const jobs = await em().find(Job, { status: JobStatus.PROVISIONING, run: { $nin: serialIds } }, { fields: ["submittedAt", "lastProcessedAt"] });
    // Placement stamps lastProcessedAt; later no-op wakes of a provisioning job leave it alone.
    const latencies = jobs.map((j) => j.lastProcessedAt.getTime() - j.submittedAt.getTime());
    const placeSecs = (done - t0) / 1000;
    const applySecs = (applied - t0) / 1000;

    // Floor: N single-row inserts of a run-sized row, one autocommit each, same concurrency.
    const conn = orm.em.getConnection();
    const ts = dialect === "sqlite" ? "datetime" : "timestamptz";
    await conn.execute(`create table bench_floor (id varchar(36) primary key, name varchar(200) not null, submitted_at ${ts} not null, spec text not null)`);
    const spec = JSON.stringify({ runName: "bench-0", configuration: TASK });
    const f0 = performance.now();
    await pool(N_RUNS, CONCURRENCY, async (i) => {
      await conn.execute("insert into bench_floor (id, name, submitted_at, spec) values (?, ?, ?, ?)", [randomUUID(), `bench-${i}`, new Date(), spec]);
    });
    const floorSecs = (performance.now() - f0) / 1000;

    const placedRate = N_RUNS / placeSecs;
    const floorRate = N_RUNS / floorSecs;
    return [
      {
        dialect,
        metric: `runs applied+placed/s (${N_RUNS} runs, ${hosts} hosts × ${GPUS_PER_HOST} blocks, c=${CONCURRENCY})`,
        value: placedRate.toFixed(0),
        floor: `${floorRate.toFixed(0)} inserts/s`,
        ratio: `${((placedRate / floorRate) * 100).toFixed(1)}% of floor`,
      },
      { dialect, metric: "apply calls/s (client side)", value: (N_RUNS / applySecs).toFixed(0), floor: "", ratio: "" },
      {
        dialect,
        metric: `submit → placed under that load, p50 / p99 (ms)`,
        value: `${pct(latencies, 50).toFixed(0)} / ${pct(latencies, 99).toFixed(0)}`,
        floor: "",
        ratio: errors.length ? `${errors.length} scheduler errors` : "",
      },
      {
        dialect,
        metric: `submit → placed, one run at a time (${SERIAL}): p50 / p99 (ms)`,
        value: `${pct(soloLatencies, 50).toFixed(0)} / ${pct(soloLatencies, 99).toFixed(0)}`,
        floor: "",
        ratio: "",
      },
    ];
  } finally {
    await scheduler.stop();
    await close(e);
  }
}

async function listLatency(dialect: Dialect): Promise<Row[]> {
  const e = await open(dialect);
  const { orm, services, admin } = e;
  try {
    const setup = orm.em.fork();
    const project = await setup.findOneOrFail(Project, { name: "main" });
    const user = await setup.findOneOrFail(User, { id: admin.id });
    // 10,000 runs over 30 days, one job each; one in ten still active (like a busy project).
    const start = Date.now() - 30 * 86_400_000;
    const BATCH = 1000;
    for (let b = 0; b < N_LIST; b += BATCH) {
      const em = orm.em.fork();
      for (let i = b; i < Math.min(N_LIST, b + BATCH); i++) {
        const at = new Date(start + Math.floor((i / N_LIST) * 30 * 86_400_000));
        const active = i % 10 === 0;
        const run = build(Run, {
          project: em.getReference(Project, project.id, { wrapped: true }),
          user: em.getReference(User, user.id, { wrapped: true }),
          runName: `hist-${i}`,
          status: active ? RunStatus.RUNNING : RunStatus.DONE,
          runSpec: { runName: `hist-${i}`, configuration: TASK } as unknown as Record<string, unknown>,
          submittedAt: at,
          lastProcessedAt: at,
        });
        em.persist(run);
        em.persist(
          build(Job, {
            run: em.getReference(Run, run.id, { wrapped: true }),
            status: active ? JobStatus.RUNNING : JobStatus.DONE,
            jobSpec: { jobNum: 0, replicaNum: 0, jobName: `hist-${i}-0-0` },
            submittedAt: at,
            lastProcessedAt: at,
          }),
        );
      }
      await em.flush();
    }
    if (dialect === "postgresql") await orm.em.getConnection().execute("analyze");

    const ITER = 100;
    const ps = await measure(ITER, () => services.runs.list(admin, { projectName: "main", limit: 50 }));
    const first = await services.runs.list(admin, { projectName: "main", limit: 50 });
    const page2 = await measure(ITER, () => services.runs.list(admin, { projectName: "main", limit: 50, pageToken: first.nextPageToken }));
    const active = await measure(ITER, () => services.runs.list(admin, { projectName: "main", limit: 50, onlyActive: true }));
    const conn = orm.em.getConnection();
    const floorSql = "select * from runs where project_id = ? and deleted = ? order by submitted_at desc, id desc limit 50";
    const floor = await measure(ITER, () => conn.execute(floorSql, [project.id, false]));
    if (first.runs.length !== 50) throw new Error(`${dialect}: first page has ${first.runs.length} runs`);

    const f50 = pct(floor, 50);
    const row = (metric: string, xs: number[]): Row => ({
      dialect,
      metric,
      value: `${pct(xs, 50).toFixed(2)} / ${pct(xs, 95).toFixed(2)}`,
      floor: `${f50.toFixed(2)} / ${pct(floor, 95).toFixed(2)}`,
      ratio: `${(pct(xs, 50) / f50).toFixed(1)}× floor`,
    });
    return [
      row(`ps first page of 50, ${N_LIST} runs: p50 / p95 (ms)`, ps),
      row("ps second page (keyset token): p50 / p95 (ms)", page2),
      row("ps --only-active first page: p50 / p95 (ms)", active),
    ];
  } finally {
    await close(e);
  }
}

function printTable(rows: Row[]): void {
  const head: Row = { dialect: "db" as Dialect, metric: "metric", value: "value", floor: "floor", ratio: "vs floor" };
  const all = [head, ...rows];
  const w = (k: keyof Row) => Math.max(...all.map((r) => String(r[k]).length));
  const line = (r: Row) => `| ${[r.dialect.padEnd(w("dialect")), r.metric.padEnd(w("metric")), r.value.padStart(w("value")), r.floor.padStart(w("floor")), r.ratio.padEnd(w("ratio"))].join(" | ")} |`;
  console.log(line(head));
  console.log(`|${(["dialect", "metric", "value", "floor", "ratio"] as const).map((k) => "-".repeat(w(k) + 2)).join("|")}|`);
  for (const r of rows) console.log(line(r));
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  for (const d of dialects) {
    rows.push(...(await placement(d)));
    rows.push(...(await listLatency(d)));
  }
  console.log(`\nnode ${process.version}, ${new Date().toISOString()}`);
  printTable(rows);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
