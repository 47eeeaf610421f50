// `dstack-shim` as a real process against a real mesh server: join, state report with host facts,
// submitTask over the link, task events to the end, SIGKILL mid-task and adoption by `run`.
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { JobTerminationReason } from "@dstack/proto/api";
import { SubmitTaskCommandSchema, TaskState, type ShimStateReport, type TaskInfo } from "@dstack/proto/agent";
import { startMesh, type MeshFixture } from "../mesh/harness.js";
import { docker } from "../helpers/docker.js";
import { removeInstanceContainers, requireScriptImage, SCRIPT_IMAGE, tempHome, uniq } from "./helpers.js";

const BIN = fileURLToPath(new URL("../../agent-shim/bin/dstack-shim.js", import.meta.url));

interface Shim {
  proc: ChildProcess;
  stderr: string[];
  exited: Promise<number | null>;
}

function startShim(args: string[]): Shim {
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, DSTACK_SHIM_HOME: "" } });
  const stderr: string[] = [];
  proc.stderr!.on("data", (b: Buffer) => stderr.push(b.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  return { proc, stderr, exited };
}

describe("shim: the dstack-shim process on a real link", () => {
  let f: MeshFixture;
  const shims: Shim[] = [];
  let instanceId = "";
  const reports: { link: string; report: ShimStateReport }[] = [];
  const taskEvents: TaskInfo[] = [];

  const nextReport = (after: number, timeoutMs = 30_000): Promise<ShimStateReport> =>
    new Promise((resolve, reject) => {
      const t0 = Date.now();
      const tick = setInterval(() => {
        const r = reports[after];
        if (r) return clearInterval(tick), resolve(r.report);
        if (Date.now() - t0 > timeoutMs) clearInterval(tick), reject(new Error(`no state report #${after + 1} within ${timeoutMs} ms; shim said:\n${shims.flatMap((s) => s.stderr).join("")}`));
      }, 20);
    });
  const taskState = (taskId: string, state: TaskState, timeoutMs = 30_000): Promise<TaskInfo> =>
    new Promise((resolve, reject) => {
      const t0 = Date.now();
      const tick = setInterval(() => {
        const e = taskEvents.find((t) => t.taskId === taskId && t.state === state);
        if (e) return clearInterval(tick), resolve(e);
        if (Date.now() - t0 > timeoutMs) clearInterval(tick), reject(new Error(`no ${TaskState[state]} event for ${taskId}; shim said:\n${shims.flatMap((s) => s.stderr).join("")}`));
      }, 20);
    });

  beforeAll(async () => {
    await requireScriptImage();
    // Heartbeats of 1 s: the shim takes the period the server announces (whole seconds).
    f = await startMesh("sqlite", { link: { heartbeatIntervalMs: 1000, missedHeartbeats: 3, idleCloseHeartbeats: 10, defaultCallDeadlineMs: 30_000 } });
    f.mesh.links.on("event", (link, e) => {
      if (e.case === "stateReport") reports.push({ link: link.id, report: e.value as ShimStateReport });
      if (e.case === "taskStateChanged" && e.value.task) taskEvents.push(e.value.task as TaskInfo);
    });
  });
  afterAll(async () => {
    for (const s of shims) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill("SIGKILL");
    if (instanceId) await removeInstanceContainers(instanceId);
    await f?.cleanup();
  });

  it("joins, reports host facts, runs a submitted task to the end, survives SIGKILL and is adopted by run", async () => {
    const home = tempHome();
    const shim = startShim(["join", "--server", f.url, "--token", await f.shimToken(), "--ca-sha256", f.mesh.caFingerprint, "--home", home, "--log-level", "debug"]);
    shims.push(shim);
    const first = await nextReport(0);
    instanceId = reports[0]!.link;
    expect(first.agentVersion).toBe("0.1.0");
    expect(first.startedAt).toBeDefined();
    expect(first.hostInfo?.cpus).toBeGreaterThan(0);
    expect(first.hostInfo?.memoryBytes).toBeGreaterThan(0n);
    expect(first.hostInfo?.hostname).not.toBe("");
    expect(first.tasks).toEqual([]);
    const link = f.mesh.links.shim(instanceId);

    // A task that runs to the end.
    const job1 = await f.addJob(instanceId);
    const submitted = await link.call({
      case: "submitTask",
      value: create(SubmitTaskCommandSchema, { taskId: job1, containerName: uniq("shimtest"), imageName: SCRIPT_IMAGE, env: { SCRIPT: "echo hi; exit 0" } }),
    });
    expect(submitted.task?.taskId).toBe(job1);
    expect(submitted.task?.state).toBe(TaskState.PENDING);
    const done = await taskState(job1, TaskState.TERMINATED);
    expect(done.exitCode).toBe(0);
    expect(done.terminationReason).toBe(JobTerminationReason.DONE_BY_RUNNER);
    const seen = taskEvents.filter((t) => t.taskId === job1).map((t) => TaskState[t.state]);
    expect(seen).toEqual(expect.arrayContaining(["PREPARING", "CREATING", "RUNNING", "TERMINATED"]));
    expect((await link.call({ case: "getTask", value: { taskId: job1 } as never })).task?.state).toBe(TaskState.TERMINATED);

    // A long task; the shim is killed hard while it runs.
    const job2 = await f.addJob(instanceId);
    await link.call({
      case: "submitTask",
      value: create(SubmitTaskCommandSchema, { taskId: job2, containerName: uniq("shimtest"), imageName: SCRIPT_IMAGE, env: { SCRIPT: 'trap "exit 0" TERM; while true; do sleep 0.1; done' } }),
    });
    const running = await taskState(job2, TaskState.RUNNING);
    shim.proc.kill("SIGKILL");
    await shim.exited;
    expect((await docker().getContainer(running.containerId).inspect()).State.Running).toBe(true);

    // `run` with the stored identity adopts the running task from its labels.
    const again = startShim(["run", "--home", home]);
    shims.push(again);
    const second = await nextReport(1);
    expect(reports[1]!.link).toBe(instanceId);
    const byId = new Map(second.tasks.map((t) => [t.taskId, t]));
    expect(byId.get(job2)?.state).toBe(TaskState.RUNNING);
    expect(byId.get(job2)?.containerId).toBe(running.containerId);
    expect(byId.get(job1)?.state).toBe(TaskState.TERMINATED);
    expect(byId.get(job1)?.exitCode).toBe(0);

    // The adopted task is still driven by the server: graceful stop, then removal.
    const relink = f.mesh.links.shim(instanceId);
    const stopped = await relink.call({
      case: "terminateTask",
      value: { taskId: job2, terminationReason: JobTerminationReason.TERMINATED_BY_USER, terminationMessage: "dstack stop", timeout: durationFromMs(20_000) } as never,
    });
    expect(stopped.task?.state).toBe(TaskState.TERMINATED);
    expect(stopped.task?.exitCode).toBe(0);
    expect(stopped.task?.terminationReason).toBe(JobTerminationReason.TERMINATED_BY_USER);
    expect((await taskState(job2, TaskState.TERMINATED)).terminationMessage).toBe("dstack stop");
    await relink.call({ case: "removeTask", value: { taskId: job2 } as never });
    await expect(docker().getContainer(running.containerId).inspect()).rejects.toMatchObject({ statusCode: 404 });
    const listed = await relink.call({ case: "listTasks", value: {} as never });
    expect(listed.tasks.map((t) => t.taskId)).toEqual([job1]);
    await expect(relink.call({ case: "removeTask", value: { taskId: "no-such-task" } as never })).rejects.toThrow(/no task no-such-task/);
    const host = await relink.call({ case: "getHostInfo", value: {} as never });
    expect(host.hostInfo?.cpus).toBe(first.hostInfo?.cpus);

    // SIGTERM: the shim closes its link and exits 0; a running task keeps running.
    const job3 = await f.addJob(instanceId);
    await relink.call({
      case: "submitTask",
      value: create(SubmitTaskCommandSchema, { taskId: job3, containerName: uniq("shimtest"), imageName: SCRIPT_IMAGE, env: { SCRIPT: "while true; do sleep 0.1; done" } }),
    });
    const r3 = await taskState(job3, TaskState.RUNNING);
    again.proc.kill("SIGTERM");
    expect(await again.exited).toBe(0);
    expect((await docker().getContainer(r3.containerId).inspect()).State.Running).toBe(true);
    const lines = again.stderr.join("").trim().split("\n");
    for (const l of lines) expect(JSON.parse(l)).toMatchObject({ time: expect.any(String), level: expect.any(String), msg: expect.any(String) });
    expect(lines.some((l) => JSON.parse(l).msg === "stopping; task containers keep running")).toBe(true);

    // The server's shutdown command: refused while a task runs unless forced; the shim then exits 0.
    const third = startShim(["run", "--home", home]);
    shims.push(third);
    const report3 = await nextReport(2);
    expect(report3.tasks.find((t) => t.taskId === job3)?.state).toBe(TaskState.RUNNING);
    const link3 = f.mesh.links.shim(instanceId);
    expect((await link3.call({ case: "ping", value: {} as never })).agentTime).toBeDefined();
    await expect(link3.call({ case: "shutdown", value: { force: false } as never })).rejects.toThrow(/1 task\(s\) still running/);
    await link3.call({ case: "shutdown", value: { force: true } as never });
    expect(await third.exited).toBe(0);
    expect((await docker().getContainer(r3.containerId).inspect()).State.Running).toBe(true);
  });
});
