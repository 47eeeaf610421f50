// Crash recovery: a new executor over the same engine and instance id rebuilds its tasks from
// container labels — running ones are watched again, ones that exited meanwhile are reported.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobTerminationReason } from "@dstack/proto/api";
import { TaskState } from "@dstack/proto/agent";
import { TaskExecutor } from "../../agent-shim/src/docker/index.js";
import { taskLabels } from "../../agent-shim/src/docker/labels.js";
import { docker } from "../helpers/docker.js";
import { eventually, removeInstanceContainers, requireScriptImage, SCRIPT_IMAGE, TaskEvents, tempHome, uniq } from "./helpers.js";

const instanceId = uniq("shimtest-recovery");
const others = uniq("shimtest-other");
const executors: TaskExecutor[] = [];

const task = (script: string) => ({ taskId: uniq("t"), containerName: uniq("shimtest"), imageName: SCRIPT_IMAGE, env: { SCRIPT: script } });

async function exited(containerId: string): Promise<void> {
  await eventually(async () => ((await docker().getContainer(containerId).inspect()).State.Running ? undefined : true));
}

describe("shim: recovery from container labels", () => {
  beforeAll(async () => {
    await requireScriptImage();
  });
  afterAll(async () => {
    for (const ex of executors) await ex.close();
    await removeInstanceContainers(instanceId, others);
  });

  it("a second executor restores a running task, a task that exited meanwhile, a pending termination and GPU locks", async () => {
    const home = tempHome();
    const gpus = [
      { id: "GPU-fake-0", vendor: "nvidia" as const },
      { id: "GPU-fake-1", vendor: "nvidia" as const },
    ];
    const firstEvents = new TaskEvents();
    const first = await TaskExecutor.start({ instanceId, home, gpus, onChange: firstEvents.onChange });
    executors.push(first);

    const long = task("while true; do sleep 0.1; done");
    const short = task("echo bye; sleep 1; exit 5");
    const graceful = task('trap "exit 0" TERM; while true; do sleep 0.1; done');
    for (const t of [long, short, graceful]) first.submit(t);
    const running = await Promise.all([long, short, graceful].map((t) => firstEvents.state(t.taskId, TaskState.RUNNING)));
    const [longInfo, shortInfo, gracefulInfo] = running as [(typeof running)[0], (typeof running)[0], (typeof running)[0]];

    // A container with GPUs in its record (the engine here cannot run a real NVIDIA one).
    const gpuTaskId = uniq("t-gpu");
    const gpuContainer = await docker().createContainer({
      name: uniq("shimtest"),
      Image: SCRIPT_IMAGE,
      Env: ["SCRIPT=while true; do sleep 0.1; done"],
      Labels: taskLabels(instanceId, gpuTaskId, { v: 1, containerName: "gpu-task", imageName: SCRIPT_IMAGE, gpuIds: ["GPU-fake-1"], networkMode: "host", ports: [], runner: false, sshKeys: [], containerUser: "" }),
      HostConfig: { NetworkMode: "none" },
    });
    await gpuContainer.start();
    // Another shim's container on the same engine is not adopted.
    const foreign = task("sleep 30");
    const otherEx = await TaskExecutor.start({ instanceId: others, home: tempHome(), gpus: [] });
    executors.push(otherEx);
    otherEx.submit(foreign);

    // The shim goes down while a graceful stop is under way: the request outlives it on disk.
    const stopping = first.terminate(graceful.taskId, { reason: JobTerminationReason.TERMINATED_BY_USER, message: "user stop", timeoutMs: 20_000 });
    await first.close();
    void stopping.catch(() => {});
    await exited(gracefulInfo.containerId);
    await exited(shortInfo.containerId);

    const events = new TaskEvents();
    const second = await TaskExecutor.start({ instanceId, home, gpus, onChange: events.onChange });
    executors.push(second);
    const byId = new Map(second.list().map((t) => [t.taskId, t]));
    expect([...byId.keys()].sort()).toEqual([long.taskId, short.taskId, graceful.taskId, gpuTaskId].sort());

    const l = byId.get(long.taskId)!;
    expect(l.state).toBe(TaskState.RUNNING);
    expect(l.containerId).toBe(longInfo.containerId);
    expect(l.containerName).toBe(long.containerName);

    const s = byId.get(short.taskId)!;
    expect(s.state).toBe(TaskState.TERMINATED);
    expect(s.exitCode).toBe(5);
    expect(s.terminationReason).toBe(JobTerminationReason.CONTAINER_EXITED_WITH_ERROR);
    expect(s.terminationMessage).toContain("bye");
    expect((await events.state(short.taskId, TaskState.TERMINATED)).exitCode).toBe(5);

    const g = byId.get(graceful.taskId)!;
    expect(g.state).toBe(TaskState.TERMINATED);
    expect(g.exitCode).toBe(0);
    expect(g.terminationReason).toBe(JobTerminationReason.TERMINATED_BY_USER);
    expect(g.terminationMessage).toBe("user stop");

    expect(byId.get(gpuTaskId)!.gpuIds).toEqual(["GPU-fake-1"]);
    expect(second.locks.held(gpuTaskId)).toEqual(["GPU-fake-1"]);
    expect(second.locks.free()).toEqual(["GPU-fake-0"]);

    // The restored running tasks are watched again: stopping them is reported, locks come back.
    const end = await second.terminate(long.taskId, { reason: JobTerminationReason.TERMINATED_BY_SERVER });
    expect(end.exitCode).toBe(137);
    expect((await events.state(long.taskId, TaskState.TERMINATED)).terminationReason).toBe(JobTerminationReason.TERMINATED_BY_SERVER);
    await second.terminate(gpuTaskId);
    expect(second.locks.free()).toEqual(["GPU-fake-0", "GPU-fake-1"]);

    // A container that exits by itself under the new executor is reported too.
    const third = task("exit 0");
    second.submit(third);
    expect((await events.state(third.taskId, TaskState.TERMINATED)).terminationReason).toBe(JobTerminationReason.DONE_BY_RUNNER);
    for (const t of second.list()) await second.remove(t.taskId);
    expect(await docker().listContainers({ all: true, filters: { label: [`dstack.shim.instance-id=${instanceId}`] } })).toEqual([]);
  });
});
