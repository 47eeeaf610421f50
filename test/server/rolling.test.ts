// Re-applying an active run, end to end on the REAL local fleet (real server, real Docker, the
// `dstack` binary): a service with changed commands is updated in place by a rolling
// deployment (the new replica starts with the new spec, the old one is scaled down once its
// replacement runs); the same configuration again is "no changes"; a task with changes cannot
// be updated in place and is stopped and re-submitted.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { JobStatus, JobTerminationReason, RunStatus, type Run } from "@dstack/proto/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client } from "../../cli/src/index.js";
import { dstack } from "../cli/run-cli.js";
import { TEST_IMAGES, requireTestImages, removeContainers } from "../helpers/docker.js";
import { localFleetReady, startTestServer, type ServerEnv, type TestServer } from "../helpers/server.js";
import { until } from "../helpers/sim-agents.js";

const SLOW = 240_000;
// Container names come from run names: unique ones keep a concurrent run of this file (another
// checkout's, or a leftover container of an interrupted run) from colliding on the local engine.
const SUFFIX = `${process.pid.toString(36)}${Date.now().toString(36).slice(-3)}`;
const SVC = `svc-${SUFFIX}`;
const TSK = `tsk-${SUFFIX}`;

let server: TestServer & { where: ServerEnv };
let client: Client;
let work: string;

const service = (name: string, word: string, replicas = 1) =>
  [
    "type: service",
    `name: ${name}`,
    `replicas: ${replicas}`,
    `image: ${TEST_IMAGES.busybox}`,
    "port: 8000",
    "stop_duration: 5s",
    "commands:",
    `  - echo ${word}`,
    "  - sleep 600",
    "resources:",
    "  cpu: 1..",
    "  memory: 128MB..",
    "",
  ].join("\n");

const task = (name: string, word: string) =>
  ["type: task", `name: ${name}`, `image: ${TEST_IMAGES.busybox}`, "commands:", `  - echo ${word}`, "  - sleep 600", "resources:", "  cpu: 1..", "  memory: 128MB..", ""].join("\n");

async function runUntil(name: string, pred: (r: Run) => boolean, what: string, ms = 90_000): Promise<Run> {
  try {
    return await until(async () => ((r) => (pred(r) ? r : undefined))(await client.runs.get(name)), `${name}: ${what}`, ms);
  } catch (e) {
    // What the run and the server were doing, for a failure seen only under load.
    const r = await client.runs.get(name).catch(() => undefined);
    const jobs = r?.jobs.map((j) => j.jobSubmissions.map((s) => `${j.jobSpec?.jobName} ${JobStatus[s.status]} ${s.statusMessage ?? ""}`).join("; ")).join("\n");
    throw new Error(`${(e as Error).message}\nrun: ${r ? RunStatus[r.status] : "?"}\n${jobs}\nserver log (tail):\n${server.stderr().slice(-6000)}`);
  }
}

/** Latest submission of each replica, by replica number. */
const replicas = (r: Run) =>
  r.jobs.map((j) => ({ replica: j.jobSpec!.replicaNum, commands: j.jobSpec!.commands, sub: j.jobSubmissions.at(-1)! })).sort((a, b) => a.replica - b.replica);

beforeAll(async () => {
  await requireTestImages([TEST_IMAGES.busybox]);
  server = await startTestServer("sqlite", { localFleet: true });
  await localFleetReady(server);
  work = await mkdtemp(join(tmpdir(), "dstack-rolling-"));
  client = Client.fromConfig({ env: { HOME: server.where.home } });
}, SLOW);

afterAll(async () => {
  await server?.stop();
  await removeContainers(SUFFIX);
  if (work) await rm(work, { recursive: true, force: true });
});

describe("re-applying an active run", () => {
  it(
    "a service with changed commands rolls to a new deployment: new replica first, then the old one goes",
    async () => {
      const cli = { home: server.where.home, cwd: work };
      await writeFile(join(work, "svc.dstack.yml"), service(SVC, "v1"));
      const first = await dstack(["apply", "-y", "-d", "--no-repo", "-f", "svc.dstack.yml"], cli);
      expect(first.stdout, first.stderr).toContain(`Run ${SVC} submitted, detaching...`);
      const v1 = await runUntil(SVC, (r) => r.status === RunStatus.RUNNING, "running");
      expect(v1.deploymentNum).toBe(0);

      // Same configuration: nothing to update; with -y and no --force nothing happens.
      const same = await dstack(["apply", "-y", "-d", "--no-repo", "-f", "svc.dstack.yml"], cli);
      expect(same.stdout).toContain(`Active run ${SVC} already exists. Detected no changes.\nUse --force to apply anyway.\n`);
      expect((await client.runs.get(SVC)).id).toBe(v1.id);

      await writeFile(join(work, "svc.dstack.yml"), service(SVC, "v2"));
      const upd = await dstack(["apply", "-y", "-d", "--no-repo", "-f", "svc.dstack.yml"], cli);
      expect(upd.stdout, upd.stderr).toContain(`Active run ${SVC} already exists. Detected changes that can be updated in-place:\n  - Configuration properties:\n    - commands\n`);
      expect(upd.stdout).toContain(`Run ${SVC} updated, detaching...`);
      expect(upd.code).toBe(0);

      // The same run, a new deployment; replica 1 runs the new commands, replica 0 is scaled down.
      const rolled = await runUntil(
        SVC,
        (r) => {
          const rs = replicas(r);
          return rs.length === 2 && rs[1]!.sub.status === JobStatus.RUNNING && rs[0]!.sub.status === JobStatus.TERMINATED;
        },
        "the new replica running and the old one gone",
      );
      expect(rolled.id).toBe(v1.id);
      expect(rolled.deploymentNum).toBe(1);
      expect(rolled.status).toBe(RunStatus.RUNNING);
      const [old, fresh] = replicas(rolled);
      expect(old!.commands).toContain("echo v1");
      expect(old!.sub.deploymentNum).toBe(0);
      expect(old!.sub.terminationReason).toBe(JobTerminationReason.SCALED_DOWN);
      expect(fresh!.commands).toContain("echo v2");
      expect(fresh!.sub.deploymentNum).toBe(1);
      // The old replica was stopped only after its replacement was running.
      expect(old!.sub.finishedAt!.seconds).toBeGreaterThanOrEqual(fresh!.sub.submittedAt!.seconds);

      // `replicas` changes in place: the running replica stays (same spec, new deployment), one more starts.
      await writeFile(join(work, "svc.dstack.yml"), service(SVC, "v2", 2));
      const up = await dstack(["apply", "-y", "-d", "--no-repo", "-f", "svc.dstack.yml"], cli);
      expect(up.stdout, up.stderr).toContain("Detected changes that can be updated in-place:\n  - Configuration properties:\n    - replicas\n");
      const two = await runUntil(SVC, (r) => replicas(r).filter((x) => x.sub.status === JobStatus.RUNNING).length === 2, "two replicas running");
      const running = replicas(two).filter((x) => x.sub.status === JobStatus.RUNNING);
      expect(running.map((x) => x.replica)).toEqual([1, 2]);
      expect(running.map((x) => x.sub.deploymentNum)).toEqual([2, 2]);
      expect(running[0]!.sub.id).toBe(fresh!.sub.id); // not replaced: updated in place
      // Back to one: the newest replica is scaled down.
      await writeFile(join(work, "svc.dstack.yml"), service(SVC, "v2", 1));
      await dstack(["apply", "-y", "-d", "--no-repo", "-f", "svc.dstack.yml"], cli);
      const one = await runUntil(SVC, (r) => replicas(r).find((x) => x.replica === 2)?.sub.status === JobStatus.TERMINATED, "replica 2 scaled down");
      expect(replicas(one).find((x) => x.replica === 2)!.sub.terminationReason).toBe(JobTerminationReason.SCALED_DOWN);
      expect(replicas(one).find((x) => x.replica === 1)!.sub.status).toBe(JobStatus.RUNNING);
      expect(one.status).toBe(RunStatus.RUNNING);

      expect(await dstack(["stop", SVC, "-x", "-y"], cli)).toMatchObject({ code: 0, stdout: "Aborted\n" });
      await runUntil(SVC, (r) => r.status === RunStatus.TERMINATED, "stopped");
    },
    SLOW,
  );

  it(
    "a task with changed commands cannot be updated in place: it is stopped and submitted again",
    async () => {
      const cli = { home: server.where.home, cwd: work };
      await writeFile(join(work, "task.dstack.yml"), task(TSK, "one"));
      await dstack(["apply", "-y", "-d", "--no-repo", "-f", "task.dstack.yml"], cli);
      const before = await runUntil(TSK, (r) => r.status === RunStatus.RUNNING, "running");
      await writeFile(join(work, "task.dstack.yml"), task(TSK, "two"));
      const again = await dstack(["apply", "-y", "-d", "--no-repo", "-f", "task.dstack.yml"], cli);
      expect(again.stdout, again.stderr).toContain(`Active run ${TSK} already exists. Detected changes that cannot be updated in-place:\n  - Configuration properties:\n    - commands\n`);
      expect(again.stdout).toContain(`Run ${TSK} submitted, detaching...`);
      const after = await client.runs.get(TSK);
      expect(after.id).not.toBe(before.id);
      expect(after.jobs[0]!.jobSpec!.commands).toContain("echo two");
      expect(await dstack(["stop", TSK, "-x", "-y"], cli)).toMatchObject({ code: 0, stdout: "Aborted\n" });
      await runUntil(TSK, (r) => r.status === RunStatus.TERMINATED, "stopped");
    },
    SLOW,
  );
});
