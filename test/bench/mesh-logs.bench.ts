// Log push benchmark (not part of `npm test`):
//   npx tsx test/bench/mesh-logs.bench.ts [--entries 200000] [--bytes 100] [--batch 500] [--window 8]
//
// The mesh agent port (createMeshServer with the default data hooks over the real LogsService,
// SQLite, a temp home) runs in this process; the runner side runs in a forked child (real
// enrollment, real mutual TLS, LogService.Push with a window of unacked batches), so the
// client's CPU is not counted as the server's. Reports, per case: entries/s and MB/s of payload
// from the first batch sent to the last ack, and the CPU of the server and of the pusher over
// that time (as % of one core).
// Every case ends by reading the log back and checking the count.
import { fork } from "node:child_process";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { LogService, LogStream, PushRequestSchema, type PushRequest } from "@dstack/proto/agent";
import { agentTransport, enroll, IdentityStore } from "@dstack/proto/link";
import { openDatabase } from "../../server/src/db/database.js";
import { Job, Project, Run, User, build } from "../../server/src/db/entities.js";
import { createMeshServer, meshDataHooks } from "../../server/src/mesh/index.js";
import { createServices } from "../../server/src/services/index.js";
import { createTestEnv } from "../../server/src/testing/db.js";
import { agentHome } from "../mesh/harness.js";

interface Case {
  entries: number;
  bytes: number;
  batch: number;
  window: number;
}
interface ChildJob extends Case {
  home: string;
  job: string;
}

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

/** The runner side: push `entries` entries of `bytes` bytes, `batch` per request, at most `window` batches unacked. */
async function pushAll(c: ChildJob): Promise<{ ms: number; cpuMs: number }> {
  const id = new IdentityStore(c.home).load();
  const { transport, session } = agentTransport(id.serverUrl, { caPem: id.caPem, certPem: id.certPem, keyPem: id.keyPem });
  const line = Buffer.alloc(c.bytes, "x");
  line[c.bytes - 1] = 10;
  const t0 = Date.now();
  let acked = 0;
  let wake = (): void => {};
  async function* requests(): AsyncGenerator<PushRequest> {
    for (let sent = 0; sent < c.entries; ) {
      if (sent - acked >= c.window * c.batch) {
        await new Promise<void>((r) => (wake = r));
        continue;
      }
      const n = Math.min(c.batch, c.entries - sent);
      const entries = Array.from({ length: n }, (_, k) => ({ timestamp: timestampFromDate(new Date(t0 + sent + k)), stream: LogStream.STDOUT, data: line }));
      yield create(PushRequestSchema, { batch: { jobSubmissionId: c.job, firstSequence: BigInt(sent), entries } });
      sent += n;
    }
    while (acked < c.entries) await new Promise<void>((r) => (wake = r));
  }
  const start = performance.now();
  const cpu0 = process.cpuUsage();
  for await (const r of createClient(LogService, transport).push(requests())) {
    acked = Number(r.nextSequence);
    wake();
  }
  const ms = performance.now() - start;
  const cpu = process.cpuUsage(cpu0);
  session.abort();
  return { ms, cpuMs: (cpu.user + cpu.system) / 1000 };
}

async function main(): Promise<void> {
  const env = await createTestEnv("sqlite");
  const orm = await openDatabase(env.settings.database);
  const services = createServices(orm, env.settings);
  const mesh = createMeshServer({ settings: env.settings, orm, data: meshDataHooks(orm, services) });
  const { port } = await mesh.listen(0, "127.0.0.1");
  const url = `https://127.0.0.1:${port}`;
  const em = orm.em.fork();
  const user = build(User, { name: "admin", tokenHash: "x".repeat(64) });
  const project = build(Project, { name: "main", owner: user as never, sshPublicKey: "k", sshPrivateKey: "k" });
  const run = build(Run, { runName: "bench", project: project as never, user: user as never });
  await em.persistAndFlush([user, project, run]);

  const base: Case = { entries: arg("entries", 200_000), bytes: arg("bytes", 100), batch: arg("batch", 500), window: arg("window", 8) };
  const cases: Case[] = [base, { ...base, entries: Math.round(base.entries / 10), bytes: 4096, batch: 200 }, { ...base, entries: Math.round(base.entries / 10), batch: 1 }];
  const rows: string[] = [];
  for (const c of cases) {
    const job = build(Job, { run: run as never });
    await orm.em.fork().persistAndFlush(job);
    const { token } = await mesh.joinTokens.create({ projectId: project.id, kind: "runner", boundId: job.id });
    const home = agentHome();
    await enroll({ serverUrl: url, token, caSha256: mesh.caFingerprint, kind: "runner", home });
    const cpu0 = process.cpuUsage();
    const { ms, cpuMs } = await new Promise<{ ms: number; cpuMs: number }>((resolve, reject) => {
      // fork() reuses this process's execArgv, i.e. tsx's loader.
      const child = fork(fileURLToPath(import.meta.url), ["--child"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
      child.once("message", (m) => resolve(m as { ms: number; cpuMs: number }));
      child.once("exit", (code) => code && reject(new Error(`pusher exited with ${code}`)));
      child.send({ ...c, home, job: job.id } satisfies ChildJob);
    });
    const cpu = process.cpuUsage(cpu0);
    let stored = 0;
    for (let token = ""; ; ) {
      const page = await services.logs.poll(job.id, { limit: 1000, nextToken: token });
      stored += page.entries.length;
      if (!(token = page.nextToken)) break;
    }
    if (stored !== c.entries) throw new Error(`stored ${stored} of ${c.entries}`);
    const mb = (c.entries * c.bytes) / 1e6;
    rows.push(
      `| ${c.entries} × ${c.bytes} B | ${c.batch} × ${c.window} | ${Math.round(c.entries / (ms / 1000))} | ${(mb / (ms / 1000)).toFixed(1)} | ${(ms / 1000).toFixed(2)} s | ${Math.round(((cpu.user + cpu.system) / 1000 / ms) * 100)} % | ${Math.round((cpuMs / ms) * 100)} % |`,
    );
  }
  console.log("| entries | batch × window | entries/s | MB/s (payload) | time | server CPU (of one core) | pusher CPU |\n| --- | --- | --- | --- | --- | --- | --- |");
  for (const r of rows) console.log(r);
  await mesh.close();
  await orm.close(true);
  await env.cleanup();
}

if (process.argv.includes("--child")) {
  process.once("message", (c: ChildJob) => {
    void pushAll(c).then((r) => process.send!(r, () => process.exit(0)));
  });
} else {
  await main();
}
