// The whole path on the local fleet, against `docker run` of the same image and command as the
// floor, measured in one script (issue 7's benchmark). Run by hand:
//   npx tsx test/bench/e2e.bench.ts [--repeat 5] [--burst 100]
// Needs dockerd and the local test images (scripts/setup.sh) and the runner bundle.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Client } from "../../cli/src/index.js";
import { localFleetReady, startTestServer, type TestServer } from "../helpers/server.js";

const REPO = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const CLI = join(REPO, "cli", "bin", "dstack.js");
const IMAGE = "dstack-test/busybox:1";
const GLIBC = "dstack-test/glibc:1";

const { values } = parseArgs({ options: { repeat: { type: "string", default: "5" }, burst: { type: "string", default: "100" } } });
const REPEAT = Number(values.repeat);
const BURST = Number(values.burst);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;
const ms = (n: number) => `${n.toFixed(0)} ms`;

/** Runs a command; resolves with the time its stdout first showed `marker` and the time it exited. */
function timed(cmd: string, args: string[], marker: string, env: NodeJS.ProcessEnv = process.env, cwd = REPO): Promise<{ first: number; done: number; code: number | null; out: string }> {
  return new Promise((ok, fail) => {
    const t0 = performance.now();
    let first = -1;
    let out = "";
    const child = spawn(cmd, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      if (first < 0 && out.includes(marker)) first = performance.now() - t0;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.once("error", fail);
    child.once("exit", (code) => ok({ first, done: performance.now() - t0, code, out }));
  });
}

function writeConfig(dir: string, name: string, body: string): string {
  const file = join(dir, `${name}.dstack.yml`);
  writeFileSync(file, `type: task\nname: ${name}\n${body}`);
  return file;
}

/** Polls until the run is terminated, failed or done (RunStatus 6, 7, 8). */
async function waitFinished(client: Client, name: string): Promise<void> {
  while (![6, 7, 8].includes((await client.runs.get(name)).status)) await new Promise((r) => setTimeout(r, 20));
}

/** Resolves when the watch stream (opened before the caller acts) says the run is terminated, failed or done. */
function watchFinished(client: Client, name: string): { opened: Promise<void>; finished: Promise<void> } {
  let opened!: () => void;
  const o = new Promise<void>((r) => (opened = r));
  const finished = (async () => {
    for await (const u of client.runs.watch([name])) {
      opened();
      if (u.run && [6, 7, 8].includes(u.run.status)) return;
    }
  })();
  return { opened: o, finished };
}

async function main(): Promise<void> {
  // Measure the CLI a user gets after setup: the bundle (tsx would add ~1 s to every command).
  const built = spawnSync(process.execPath, [join(REPO, "node_modules", ".bin", "tsx"), join(REPO, "scripts", "build-cli.ts")], { stdio: "inherit" });
  if (built.status !== 0) throw new Error("npm run build:cli failed");
  const server: TestServer & { where: { home: string; cleanup(): Promise<void> } } = await startTestServer("sqlite", { localFleet: true, timeoutMs: 60_000 });
  try {
    await localFleetReady(server);
    const env = { ...process.env, HOME: server.where.home, DSTACK_SERVER_URL: server.url, DSTACK_TOKEN: server.adminToken, DSTACK_PROJECT: "main" };
    const client = new Client({ serverUrl: server.url, token: server.adminToken, project: "main" });
    const work = mkdtempSync(join(tmpdir(), "dstack-bench-"));
    const rows: [string, string, string, string][] = [];

    // 1. First line and finish: docker run vs dstack apply -y.
    const floor = { first: [] as number[], done: [] as number[] };
    const ours = { first: [] as number[], done: [] as number[] };
    for (let i = 0; i < REPEAT; i++) {
      const d = await timed("docker", ["run", "--rm", IMAGE, "sh", "-c", "echo first-line; echo second"], "first-line");
      floor.first.push(d.first);
      floor.done.push(d.done);
      const file = writeConfig(work, `hello-${i}`, `image: ${IMAGE}\ncommands:\n  - echo first-line\n  - echo second\n`);
      const a = await timed(process.execPath, [CLI, "apply", "-f", file, "-y"], "first-line", env, work);
      if (a.code !== 0 || a.first < 0) throw new Error(`dstack apply failed (${a.code}):\n${a.out}`);
      ours.first.push(a.first);
      ours.done.push(a.done);
    }
    rows.push(["first log line at the client", ms(median(floor.first)), ms(median(ours.first)), `${(median(ours.first) / median(floor.first)).toFixed(2)}×`]);
    rows.push(["run finished (client exits)", ms(median(floor.done)), ms(median(ours.done)), `${(median(ours.done) / median(floor.done)).toFixed(2)}×`]);

    // 2. Log lag: a line printed in the container (its own clock) to the same line at `logs -f`.
    const lagFile = writeConfig(work, "lag", `image: ${GLIBC}\ncommands:\n  - for i in $(seq 1 50); do echo "t=$(date +%s%N)"; sleep 0.05; done\n`);
    const lagRun = await timed(process.execPath, [CLI, "apply", "-f", lagFile, "-y", "-d"], "lag", env, work);
    if (lagRun.code !== 0) throw new Error(`apply -d failed:\n${lagRun.out}`);
    const lags: number[] = [];
    for await (const e of client.runs.logs("lag", { follow: true })) {
      const m = /t=(\d+)/.exec(Buffer.from(e.message).toString());
      if (m) lags.push(Date.now() - Number(BigInt(m[1]!) / 1_000_000n));
    }
    rows.push(["line printed → seen by `logs -f` (p50 / p99)", "-", `${ms(median(lags))} / ${ms(pct(lags, 99))}`, `${lags.length} lines`]);

    // 3. Stop of a job that exits on SIGTERM: docker stop vs dstack stop.
    const stopFloor: number[] = [];
    const stopOurs: number[] = [];
    const trap = `trap 'exit 0' TERM; echo up; while true; do sleep 0.1; done`;
    for (let i = 0; i < REPEAT; i++) {
      const name = `bench-stop-floor-${process.pid}-${i}`;
      await timed("docker", ["run", "-d", "--name", name, IMAGE, "sh", "-c", trap], "");
      await new Promise((r) => setTimeout(r, 300));
      const s = await timed("docker", ["stop", "-t", "10", name], name);
      stopFloor.push(s.done);
      await timed("docker", ["rm", "-f", name], "");
      const file = writeConfig(work, `stop-${i}`, `image: ${IMAGE}\nstop_duration: 10s\ncommands:\n  - ${JSON.stringify(trap)}\n`);
      const a = await timed(process.execPath, [CLI, "apply", "-f", file, "-y", "-d"], "", env, work);
      if (a.code !== 0) throw new Error(`apply -d failed:\n${a.out}`);
      for await (const e of client.runs.logs(`stop-${i}`, { follow: true })) if (Buffer.from(e.message).toString().includes("up")) break;
      const w = watchFinished(client, `stop-${i}`);
      await w.opened;
      const t0 = performance.now();
      const st = await timed(process.execPath, [CLI, "stop", `stop-${i}`, "-y"], "", env, work);
      if (st.code !== 0) throw new Error(`stop failed:\n${st.out}`);
      await w.finished;
      stopOurs.push(performance.now() - t0);
    }
    rows.push(["stop → terminated (job exits on SIGTERM)", ms(median(stopFloor)), ms(median(stopOurs)), `${(median(stopOurs) / median(stopFloor)).toFixed(2)}×`]);

    // 4. A burst of one-line tasks submitted at once through the API (--burst 0 skips it).
    if (BURST > 0) {
      const burstFile = (i: number) => writeConfig(work, `burst-${i}`, `image: ${IMAGE}\nresources:\n  cpu: 1..\n  memory: 16MB..\ncommands:\n  - echo burst-${i}\n`);
      const t0 = performance.now();
      const started: number[] = [];
      const names = Array.from({ length: BURST }, (_, i) => `burst-${i}`);
      await Promise.all(
        names.map(async (_, i) => {
          started[i] = Date.now();
          const a = await timed(process.execPath, [CLI, "apply", "-f", burstFile(i), "-y", "-d"], "", env, work);
          if (a.code !== 0) throw new Error(`apply -d failed:\n${a.out}`);
        }),
      );
      const startLat: number[] = [];
      await Promise.all(
        names.map(async (name, i) => {
          for await (const e of client.runs.logs(name, { follow: true })) {
            if (Buffer.from(e.message).toString().includes("burst-")) startLat.push(e.timestamp.getTime() - started[i]!);
          }
          await waitFinished(client, name);
        }),
      );
      const total = performance.now() - t0;
      rows.push([`${BURST} one-line tasks at once: all finished`, "-", ms(total), `apply started → line printed p50 ${ms(median(startLat))}, p99 ${ms(pct(startLat, 99))}`]);
    }

    const w = [48, 12, 22, 40];
    console.log(["measure", "floor", "dstack-ts", "ratio / note"].map((h, i) => h.padEnd(w[i]!)).join(" "));
    for (const r of rows) console.log(r.map((c, i) => c.padEnd(w[i]!)).join(" "));
  } finally {
    await server.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
