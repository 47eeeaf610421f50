// A server restart in the middle of a run on the local fleet: the server stops (SIGTERM) while a
// task prints, its local host agent stops with it and leaves the container running, and a new
// server process on the same home and ports takes over — the shim is started again (`run
// --home`), the runner dials home again, and the run finishes with every line of its output
// stored exactly once, in order.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { RunStatus } from "@dstack/proto/api";
import { Client } from "../../cli/src/index.js";
import { buildRunnerBundle } from "../../scripts/build-runner-bundle.js";
import { dstack, startCli, waitForOutput, type CliRun } from "../cli/run-cli.js";
import { TEST_IMAGES, docker, requireTestImages } from "../helpers/docker.js";
import { createServerEnv, startServer, type ServerEnv, type TestServer, localFleetReady } from "../helpers/server.js";

const SLOW = 240_000;
const LINES = 120;
// Container names follow run names, and the Docker engine outlives the test: a unique name keeps
// a leftover of an earlier (failed) attempt from getting in the way.
const RUN = `restart-${Date.now().toString(36)}`;

let where: ServerEnv;
let server: TestServer | undefined;
let work: string;

/** This run's containers on the engine (running or not). */
async function runContainers(): Promise<string[]> {
  const all = await docker().listContainers({ all: true, filters: { name: [RUN] } });
  return all.map((c) => c.Id);
}


beforeEach(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
});

beforeAll(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
  await buildRunnerBundle({ log: () => {} }); // the runner in the task's container is this checkout's
  where = await createServerEnv("sqlite");
  work = await mkdtemp(join(tmpdir(), "dstack-restart-"));
}, SLOW);

afterAll(async () => {
  await server?.stop();
  // A failed attempt can leave the task's container behind (a stopped server's shim keeps it).
  if (where) for (const id of await runContainers()) await docker().getContainer(id).remove({ force: true }).catch(() => {});
  await where?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("a server restart during a run", () => {
  it(
    "the run finishes after the restart and its logs hold every line once, in order",
    async () => {
      server = await startServer(where, { localFleet: true });
      await localFleetReady(server);
      const cli: CliRun = { home: where.home };
      const { port, agentPort } = server;

      const dir = await mkdtemp(join(work, "proj-"));
      const loop = `i=0; while [ $i -lt ${LINES} ]; do echo line-$i; i=$((i+1)); sleep 0.05; done`;
      await writeFile(
        join(dir, ".dstack.yml"),
        [`type: task`, `name: ${RUN}`, `image: ${TEST_IMAGES.busybox}`, `commands:`, `  - ${JSON.stringify(loop)}`, `resources:`, `  cpu: 1..`, `  memory: 256MB..`, `  disk: 1GB..`, ``].join("\n"),
      );
      const applied = await dstack(["apply", "-y", "-d", "--no-repo"], { ...cli, cwd: dir });
      expect(applied.code, applied.stderr).toBe(0);

      // About a second of output (20 lines × 50 ms), then the server goes away mid-run.
      const follow = startCli(["logs", "-f", RUN], cli);
      await waitForOutput(follow, (out) => out.includes("line-20\n"));
      follow.child.kill("SIGTERM");
      await follow.done;
      expect(await server.stop("SIGTERM")).toBe(0);
      server = undefined;

      // Same home, same ports: the shim and the runner keep the agent URL they were given.
      server = await startServer(where, { localFleet: true, port, agentPort });
      const logs = await dstack(["logs", "-f", RUN], cli);
      expect(logs.code, logs.stderr).toBe(0);
      expect(logs.stdout.split("\n")).toEqual([...Array.from({ length: LINES }, (_, i) => `line-${i}`), ""]);

      const run = await Client.fromConfig({ env: { HOME: where.home } }).runs.get(RUN);
      expect(RunStatus[run.status]).toBe("DONE");
      // The restarted server cleans up after the run like any other: its container goes.
      while ((await runContainers()).length > 0) await new Promise((r) => setTimeout(r, 200));
    },
    SLOW,
  );
});
