// `dstack metrics RUN` end to end on this machine: a REAL server with its local fleet (the real host
// agent, real containers, the in-container runner sampling cgroups), the real `dstack` binary. A
// busybox task holds ~20 MB in a shell variable and idles; `metrics --json` shows that memory and
// the CPU fields, the text form prints dstack's columns, and runs that are not running (finished,
// unknown) are clear errors. A non-member of the project is denied through the API.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { MetricsService, RunStatus, UserService } from "@dstack/proto/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client } from "../../cli/src/index.js";
import { dstack, type CliRun } from "../cli/run-cli.js";
import { TEST_IMAGES, requireTestImages } from "../helpers/docker.js";
import { localFleetReady, startTestServer, type ServerEnv, type TestServer } from "../helpers/server.js";

const SLOW = 240_000;
// Container names follow run names and the engine outlives the test: unique per attempt.
const RUN = `metrics-${Date.now().toString(36)}`;
const DONE = `${RUN}-done`;

let server: TestServer & { where: ServerEnv };
let cli: CliRun;
let client: Client;
let work: string;

const task = (name: string, commands: string[]) =>
  [`type: task`, `name: ${name}`, `image: ${TEST_IMAGES.busybox}`, `commands:`, ...commands.map((c) => `  - ${JSON.stringify(c)}`), `resources:`, `  cpu: 1..`, `  memory: 256MB..`, `  disk: 1GB..`, ``].join("\n");

/** Polls `fn` until it returns a value (no timing asserted: the test's own timeout bounds it). */
async function until<T>(fn: () => Promise<T | undefined>, what: string): Promise<T> {
  let last: unknown;
  for (let i = 0; i < 1200; i++) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} never happened${last ? ` (last error: ${String(last)})` : ""}`);
}

async function apply(name: string, commands: string[], detach: boolean): Promise<void> {
  const d = await mkdtemp(join(work, "proj-"));
  await writeFile(join(d, ".dstack.yml"), task(name, commands));
  const r = await dstack(["apply", "-y", "--no-repo", ...(detach ? ["-d"] : [])], { ...cli, cwd: d });
  if (detach) expect(r.code, r.stderr).toBe(0);
}

beforeAll(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
  server = await startTestServer("sqlite", { localFleet: true });
  await localFleetReady(server);
  work = await mkdtemp(join(tmpdir(), "dstack-metrics-"));
  cli = { home: server.where.home };
  client = Client.fromConfig({ env: { HOME: server.where.home } });
}, SLOW);

afterAll(async () => {
  await client?.runs.stop([RUN], true).catch(() => {});
  await server?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("dstack metrics", () => {
  it(
    "shows a running job's memory and CPU, as JSON and as dstack's table",
    async () => {
      await apply(RUN, [`x=$(head -c 20000000 /dev/zero | tr "\\0" a); while true; do sleep 0.2; done`], true);
      await until(async () => ((await client.runs.get(RUN)).status === RunStatus.RUNNING ? true : undefined), "the run running");

      // The variable fills while the shell reads: poll until the runner sees all of it.
      const json = await until(async () => {
        const r = await dstack(["metrics", RUN, "--json"], cli);
        if (r.code !== 0) return undefined;
        const m = JSON.parse(r.stdout) as Record<string, unknown>;
        return typeof m.memory_usage_bytes === "number" && m.memory_usage_bytes >= 20_000_000 ? m : undefined;
      }, "20 MB of memory in use");
      expect(json.run_name).toBe(RUN);
      expect(json.status).toBe("running");
      expect(typeof json.cpu_usage_percent).toBe("number");
      expect(json.cpu_usage_percent as number).toBeGreaterThanOrEqual(0);
      expect(typeof json.memory_working_set_bytes).toBe("number");
      expect(json.gpus).toEqual([]);

      const text = await dstack(["metrics", RUN], cli);
      expect(text.code, text.stderr).toBe(0);
      expect(text.stdout).toMatch(/^ NAME\s+STATUS\s+CPU\s+MEMORY\s+GPU$/m);
      expect(text.stdout).toMatch(new RegExp(`^ ${RUN}\\s+running\\s+\\d+%\\s+\\d+MB\\s+-$`, "m"));

      // The client API answers the same.
      const m = await client.runs.metrics(RUN);
      expect(m.samples).toHaveLength(1);
      expect(m.samples[0]!.memoryUsageBytes).toBeGreaterThanOrEqual(20_000_000n);
    },
    SLOW,
  );

  it(
    "denies a user who is not a member of the project",
    async () => {
      const transport = createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" });
      const admin = { headers: { authorization: `Bearer ${server.adminToken}` } };
      const outsider = (await createClient(UserService, transport).createUser({ username: "metrics-outsider" }, admin)).user!.token;
      const e = await createClient(MetricsService, transport)
        .getJobMetrics({ projectName: "main", runName: RUN }, { headers: { authorization: `Bearer ${outsider}` } })
        .then(() => null, (x: unknown) => ConnectError.from(x));
      expect(e?.code).toBe(Code.PermissionDenied);
    },
    SLOW,
  );

  it(
    "fails clearly, with exit 1, for a finished run and an unknown one",
    async () => {
      await apply(DONE, ["echo done"], false);
      const done = await dstack(["metrics", DONE], cli);
      expect(done.code).toBe(1);
      expect(done.stderr).toMatch(new RegExp(`Run '${DONE}' is \\w+; metrics need it running`));

      const unknown = await dstack(["metrics", "no-such-run"], cli);
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toMatch(/Run 'no-such-run' does not exist/);
    },
    SLOW,
  );

  it(
    "stops the run; then metrics says it is not running",
    async () => {
      const r = await dstack(["stop", RUN, "-x", "-y"], cli);
      expect(r.code, r.stderr).toBe(0);
      await until(async () => ((await client.runs.get(RUN)).status === RunStatus.TERMINATED ? true : undefined), "the run terminated");
      const after = await dstack(["metrics", RUN], cli);
      expect(after.code).toBe(1);
      expect(after.stderr).toMatch(/metrics need it running/);
    },
    SLOW,
  );
});
