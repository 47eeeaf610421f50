// The runner dial-in limit (dstack's waiting_runner_limit) on the REAL local fleet: the server
// tells runners an agent URL where nothing listens, so the container starts (real Docker) but
// its runner never links home. After DSTACK_SERVER_RUNNER_DIAL_TIMEOUT the job fails with
// WAITING_RUNNER_LIMIT_EXCEEDED and its container is removed from the host; no request or
// poll drives it, only the scheduler's timer.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobStatus, JobTerminationReason, RunStatus } from "@dstack/proto/api";
import { parseConfiguration } from "@dstack/proto";
import { Client } from "../../cli/src/index.js";
import { TEST_IMAGES, docker, requireTestImages } from "../helpers/docker.js";
import { localFleetReady, startTestServer, type ServerEnv, type TestServer } from "../helpers/server.js";
import { until } from "../helpers/sim-agents.js";

const SLOW = 180_000;
const DIAL_TIMEOUT_S = 6;
// Unique per process: containers are found by name on the shared Docker engine.
const RUN = `no-runner-${process.pid.toString(36)}${Date.now().toString(36).slice(-3)}`;

let server: TestServer & { where: ServerEnv };
let client: Client;

beforeAll(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
  server = await startTestServer("sqlite", {
    localFleet: true,
    // Port 9 (discard) has no listener here: the runner dials and dials, never linking.
    env: { DSTACK_SERVER_AGENT_URL: "https://127.0.0.1:9", DSTACK_SERVER_RUNNER_DIAL_TIMEOUT: String(DIAL_TIMEOUT_S) },
  });
  await localFleetReady(server);
  client = Client.fromConfig({ env: { HOME: server.where.home } });
}, SLOW);

afterAll(async () => {
  await server?.stop();
});

const containersOf = async (runName: string) => (await docker().listContainers({ all: true })).filter((c) => c.Names.some((n) => n.startsWith(`/${runName}-`)));

describe("runner dial-in limit", () => {
  it(
    "a job whose runner never links home fails with waiting_runner_limit_exceeded and its container goes",
    async () => {
      const configuration = parseConfiguration(
        ["type: task", `name: ${RUN}`, `image: ${TEST_IMAGES.busybox}`, "commands:", "  - echo never", "resources:", "  cpu: 1..", "  memory: 256MB..", ""].join("\n"),
        "no-runner.yml",
      );
      if (configuration.type !== "task") throw new Error("expected a task");
      const t0 = Date.now();
      await client.runs.apply({ configuration });
      // The container really runs (its runner is up and dialing) before the limit strikes.
      await until(async () => ((await containersOf(RUN)).some((c) => c.State === "running") ? true : undefined), "the job's container running", 60_000);
      const run = await until(async () => {
        const r = await client.runs.get(RUN);
        return r.status === RunStatus.FAILED || r.status === RunStatus.TERMINATED || r.status === RunStatus.DONE ? r : undefined;
      }, "the run finished", 90_000);
      const elapsed = (Date.now() - t0) / 1000;
      const sub = run.jobs[0]!.jobSubmissions.at(-1)!;
      expect(run.status).toBe(RunStatus.FAILED);
      expect(sub.status).toBe(JobStatus.FAILED);
      expect(sub.terminationReason).toBe(JobTerminationReason.WAITING_RUNNER_LIMIT_EXCEEDED);
      expect(sub.terminationReasonMessage).toBe(`Runner did not become available within ${DIAL_TIMEOUT_S}s.`);
      expect(elapsed).toBeGreaterThanOrEqual(DIAL_TIMEOUT_S);
      // The task is terminated and removed on the shim: no container of the run is left.
      await until(async () => ((await containersOf(RUN)).length === 0 ? true : undefined), "the job's container removed", 60_000);
    },
    SLOW,
  );
});
