// The shim's Docker task executor against the real engine: exits and their reasons, graceful and
// forced stops, pull failures, bridge ports, idempotent submit, removal, GPU locks, the runner mount.
import { existsSync, readFileSync, statSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobTerminationReason } from "@dstack/proto/api";
import { TaskNetworkMode, TaskState } from "@dstack/proto/agent";
import { TaskExecutor, type TaskExecutorOptions } from "../../agent-shim/src/docker/index.js";
import { docker } from "../helpers/docker.js";
import { eventually, fakeRunnerBundle, removeInstanceContainers, requireScriptImage, SCRIPT_IMAGE, TaskEvents, tempHome, uniq } from "./helpers.js";

const instances: string[] = [];
const executors: TaskExecutor[] = [];

async function startExecutor(o: Partial<TaskExecutorOptions> = {}): Promise<{ ex: TaskExecutor; events: TaskEvents; home: string; instanceId: string }> {
  const events = new TaskEvents();
  const instanceId = uniq("shimtest-inst");
  instances.push(instanceId);
  const home = tempHome();
  const ex = await TaskExecutor.start({ instanceId, home, gpus: [], onChange: events.onChange, ...o });
  executors.push(ex);
  return { ex, events, home, instanceId };
}

const task = (script: string, extra: Record<string, unknown> = {}) => {
  const id = uniq("t");
  return { taskId: id, containerName: uniq("shimtest"), imageName: SCRIPT_IMAGE, env: { SCRIPT: script }, ...extra };
};

describe("shim: Docker task executor", () => {
  beforeAll(async () => {
    await requireScriptImage();
  });
  afterAll(async () => {
    for (const ex of executors) await ex.close();
    await removeInstanceContainers(...instances);
  });

  it("a task that exits 0 is done by runner; one that exits 3 failed with its code and last log lines", async () => {
    const { ex, events } = await startExecutor();
    const ok = task("echo fine");
    const bad = task("echo line-one; echo line-two >&2; exit 3");
    const accepted = ex.submit(ok);
    expect(accepted.state).toBe(TaskState.PENDING);
    ex.submit(bad);
    const done = await events.state(ok.taskId, TaskState.TERMINATED);
    expect(done.exitCode).toBe(0);
    expect(done.terminationReason).toBe(JobTerminationReason.DONE_BY_RUNNER);
    expect(done.containerId).not.toBe("");
    expect(done.updatedAt).toBeDefined();
    // The image is present with a fixed tag: no pull.
    expect(events.states(ok.taskId)).toEqual(["PENDING", "PREPARING", "CREATING", "RUNNING", "TERMINATED"]);
    const failed = await events.state(bad.taskId, TaskState.TERMINATED);
    expect(failed.exitCode).toBe(3);
    expect(failed.terminationReason).toBe(JobTerminationReason.CONTAINER_EXITED_WITH_ERROR);
    expect(failed.terminationMessage).toMatch(/exited with code 3/);
    expect(failed.terminationMessage).toContain("line-one");
    expect(failed.terminationMessage).toContain("line-two");
    expect(ex.get(bad.taskId).state).toBe(TaskState.TERMINATED);
  });

  it("terminate with a grace period: the process exits by its SIGTERM handler and the reason is the one asked", async () => {
    const { ex, events } = await startExecutor();
    const t = task('trap "exit 0" TERM; while true; do sleep 0.1; done');
    ex.submit(t);
    await events.state(t.taskId, TaskState.RUNNING);
    const end = await ex.terminate(t.taskId, { reason: JobTerminationReason.TERMINATED_BY_USER, message: "stopped by alice", timeoutMs: 20_000 });
    expect(end.state).toBe(TaskState.TERMINATED);
    expect(end.exitCode).toBe(0); // the trap ran; a SIGKILL would give 137
    expect(end.terminationReason).toBe(JobTerminationReason.TERMINATED_BY_USER);
    expect(end.terminationMessage).toBe("stopped by alice");
    // A second terminate is a no-op.
    expect((await ex.terminate(t.taskId, { reason: JobTerminationReason.ABORTED_BY_USER })).terminationReason).toBe(JobTerminationReason.TERMINATED_BY_USER);
  });

  it("a process that ignores SIGTERM is killed after the grace period", async () => {
    const { ex, events } = await startExecutor();
    // sh as PID 1 without a trap ignores SIGTERM.
    const t = task("while true; do sleep 0.1; done");
    ex.submit(t);
    await events.state(t.taskId, TaskState.RUNNING);
    const end = await ex.terminate(t.taskId, { reason: JobTerminationReason.TERMINATED_BY_SERVER, timeoutMs: 1000 });
    expect(end.exitCode).toBe(137);
    expect(end.terminationReason).toBe(JobTerminationReason.TERMINATED_BY_SERVER);
  });

  it("a missing image with no reachable registry fails at once, naming the image", async () => {
    const { ex, events } = await startExecutor();
    const image = `dstack-test/${uniq("no-such-image")}:1`;
    const t = { taskId: uniq("t"), containerName: uniq("shimtest"), imageName: image };
    ex.submit(t);
    const end = await events.state(t.taskId, TaskState.TERMINATED);
    expect(end.terminationReason).toBe(JobTerminationReason.CREATING_CONTAINER_ERROR);
    expect(end.terminationMessage).toContain(`cannot pull image ${image}`);
    expect(events.states(t.taskId)).toEqual(["PENDING", "PREPARING", "PULLING", "TERMINATED"]);
  });

  it("a registry that never answers: the pull times out with a clear message", async () => {
    // Accepts TCP connections and says nothing, like a registry behind a black-holing firewall.
    const held: net.Socket[] = [];
    const silent = net.createServer((s) => held.push(s.on("error", () => {})));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const port = (silent.address() as net.AddressInfo).port;
    try {
      const { ex, events } = await startExecutor({ pullTimeoutMs: 1500 });
      const t = { taskId: uniq("t"), containerName: uniq("shimtest"), imageName: `127.0.0.1:${port}/stuck/image:1` };
      ex.submit(t);
      const end = await events.state(t.taskId, TaskState.TERMINATED);
      expect(end.terminationReason).toBe(JobTerminationReason.CREATING_CONTAINER_ERROR);
      expect(end.terminationMessage).toBe(`cannot pull image 127.0.0.1:${port}/stuck/image:1: timed out after 1.5 s (the shim's pull timeout)`);
    } finally {
      held.forEach((s) => s.destroy());
      silent.close();
    }
  });

  it("bridge mode publishes a container port on a loopback host port the test can reach", async () => {
    const { ex, events } = await startExecutor();
    const t = task("mkdir -p /www && echo hello-from-task > /www/index.html && exec httpd -f -p 8080 -h /www", {
      networkMode: TaskNetworkMode.BRIDGE,
      ports: [8080],
    });
    ex.submit(t);
    const running = await events.state(t.taskId, TaskState.RUNNING);
    expect(running.ports).toHaveLength(1);
    expect(running.ports[0]!.containerPort).toBe(8080);
    const hostPort = running.ports[0]!.hostPort;
    expect(hostPort).toBeGreaterThan(0);
    const body = await eventually(async () => {
      const r = await fetch(`http://127.0.0.1:${hostPort}/index.html`);
      return r.ok ? await r.text() : undefined;
    });
    expect(body.trim()).toBe("hello-from-task");
    const inspect = await docker().getContainer(running.containerId).inspect();
    expect(inspect.HostConfig.NetworkMode).toBe("bridge");
    await ex.terminate(t.taskId, { timeoutMs: 0 });
  });

  it("container settings: host network, limits, env, user, mounts and labels reach the engine", async () => {
    const { ex, events, instanceId, home } = await startExecutor();
    const mountDir = join(home, "instance-mount");
    const t = task("echo written > /mnt/inst/out.txt", {
      cpu: 0.5,
      memoryBytes: 64n * 1024n * 1024n,
      shmSizeBytes: 32n * 1024n * 1024n,
      containerUser: "0:0",
      instanceMounts: [{ instancePath: mountDir, path: "/mnt/inst" }],
    });
    ex.submit(t);
    const end = await events.state(t.taskId, TaskState.TERMINATED);
    expect(end.terminationReason).toBe(JobTerminationReason.DONE_BY_RUNNER);
    expect(readFileSync(join(mountDir, "out.txt"), "utf8").trim()).toBe("written");
    const i = await docker().getContainer(end.containerId).inspect();
    expect(i.HostConfig.NetworkMode).toBe("host");
    expect(i.HostConfig.NanoCpus).toBe(500_000_000);
    expect(i.HostConfig.Memory).toBe(64 * 1024 * 1024);
    expect(i.HostConfig.ShmSize).toBe(32 * 1024 * 1024);
    expect(i.Config.User).toBe("0:0");
    expect(i.Config.Labels["dstack.shim.instance-id"]).toBe(instanceId);
    expect(i.Config.Labels["dstack.task.id"]).toBe(t.taskId);
    expect(JSON.parse(i.Config.Labels["dstack.shim.task"]!)).toMatchObject({ containerName: t.containerName, networkMode: "host", gpuIds: [] });
    expect(i.Name).toBe(`/${t.containerName}`);
  });

  it("submit is idempotent by task id; a different image under the same id is refused", async () => {
    const { ex, events, instanceId } = await startExecutor();
    const t = task("sleep 30");
    const a = ex.submit(t);
    const b = ex.submit(t);
    expect(b.taskId).toBe(a.taskId);
    await events.state(t.taskId, TaskState.RUNNING);
    expect(ex.submit(t).state).toBe(TaskState.RUNNING);
    expect(() => ex.submit({ ...t, imageName: "other:1" })).toThrow(/already exists/);
    const containers = await docker().listContainers({ all: true, filters: { label: [`dstack.shim.instance-id=${instanceId}`, `dstack.task.id=${t.taskId}`] } });
    expect(containers).toHaveLength(1);
    expect(ex.list().map((x) => x.taskId)).toEqual([t.taskId]);
    await ex.terminate(t.taskId);
  });

  it("remove deletes the container and the task's files; only terminated tasks may be removed", async () => {
    const bundle = fakeRunnerBundle();
    const { ex, events, home } = await startExecutor({ runnerBundleDir: bundle });
    const t = task("sleep 30", { runner: { joinToken: "jt", agentUrl: "https://127.0.0.1:3001", caCertificatePem: "PEM" } });
    // The fake runner exits at once; a real one would run. Remove must also work after that.
    ex.submit(t);
    const end = await events.state(t.taskId, TaskState.TERMINATED);
    expect(existsSync(join(home, "tasks", t.taskId, "bootstrap.json"))).toBe(true);
    const sleeper = task("sleep 30");
    ex.submit(sleeper);
    await events.state(sleeper.taskId, TaskState.RUNNING);
    await expect(ex.remove(sleeper.taskId)).rejects.toThrow(/terminate it before removing/);
    await ex.remove(t.taskId);
    await expect(docker().getContainer(end.containerId).inspect()).rejects.toMatchObject({ statusCode: 404 });
    expect(existsSync(join(home, "tasks", t.taskId))).toBe(false);
    expect(() => ex.get(t.taskId)).toThrow(/no task/);
    await expect(ex.remove(t.taskId)).rejects.toThrow(/no task/);
    await ex.terminate(sleeper.taskId);
    await ex.remove(sleeper.taskId);
  });

  it("the runner bundle is the entrypoint: mounted read-only, bootstrap.json in the read-write task folder", async () => {
    const bundle = fakeRunnerBundle();
    const { ex, events, home } = await startExecutor({ runnerBundleDir: bundle });
    const t = task("unused", {
      networkMode: TaskNetworkMode.BRIDGE,
      // Not root: the task folder is handed to this uid so the runner can keep its identity there.
      containerUser: "1000:1000",
      runner: { joinToken: "join-123", agentUrl: "https://127.0.0.1:3001", caCertificatePem: "-----BEGIN CERTIFICATE-----" },
    });
    ex.submit(t);
    const end = await events.state(t.taskId, TaskState.TERMINATED);
    expect(end.terminationReason).toBe(JobTerminationReason.DONE_BY_RUNNER);
    const c = docker().getContainer(end.containerId);
    const logs = (await c.logs({ stdout: true, stderr: true })).toString("utf8");
    expect(logs).toContain("args: --library-path /dstack/runner/lib /dstack/runner/bin/node /dstack/runner/runner.js --home /dstack/task");
    expect(logs).toContain('"joinToken": "join-123"');
    expect(logs).toContain('"agentUrl": "https://host.docker.internal:3001"');
    expect(logs).toContain('"serverName": "127.0.0.1"'); // the runner checks the certificate against the original name
    // The task folder is writable from inside (the runner keeps its identity there).
    expect(existsSync(join(home, "tasks", t.taskId, "written-by-runner"))).toBe(true);
    expect(statSync(join(home, "tasks", t.taskId)).uid).toBe(1000);
    const i = await c.inspect();
    expect(i.Config.Entrypoint).toEqual(["/dstack/runner/lib/ld-linux-x86-64.so.2", "--library-path", "/dstack/runner/lib", "/dstack/runner/bin/node", "/dstack/runner/runner.js", "--home", "/dstack/task"]);
    expect(i.HostConfig.ExtraHosts).toEqual(["host.docker.internal:host-gateway"]);
    const mounts = Object.fromEntries(i.Mounts.map((m) => [m.Destination, m.RW]));
    expect(mounts).toEqual({ "/dstack/runner": false, "/dstack/task": true });
  });

  it("a missing runner bundle fails the task at once, naming the folder and the build command", async () => {
    const { ex, events } = await startExecutor({ runnerBundleDir: "/nonexistent/runner-bundle" });
    const t = task("unused", { runner: { joinToken: "j", agentUrl: "https://127.0.0.1:3001", caCertificatePem: "x" } });
    ex.submit(t);
    const end = await events.state(t.taskId, TaskState.TERMINATED);
    expect(end.terminationReason).toBe(JobTerminationReason.CREATING_CONTAINER_ERROR);
    expect(end.terminationMessage).toContain("/nonexistent/runner-bundle");
    expect(end.terminationMessage).toContain("npm run build:runner");
  });

  it("GPU locks: too few free GPUs ends the task with a clear message; locks come back on every exit path", async () => {
    const gpus = [
      { id: "GPU-fake-0000", vendor: "nvidia" as const },
      { id: "GPU-fake-1111", vendor: "nvidia" as const },
    ];
    const { ex, events } = await startExecutor({ gpus });
    const tooMany = task("true", { gpu: 3 });
    ex.submit(tooMany);
    const refused = await events.state(tooMany.taskId, TaskState.TERMINATED);
    expect(refused.terminationReason).toBe(JobTerminationReason.EXECUTOR_ERROR);
    expect(refused.terminationMessage).toMatch(/asks for 3 GPU\(s\) but only 2 of 2 are free/);
    // Two fake NVIDIA GPUs: the engine here has no NVIDIA runtime, so the start fails after
    // the locks were taken; the device request still shows what the container was given.
    const both = task("true", { gpu: -1 });
    ex.submit(both);
    const failed = await events.state(both.taskId, TaskState.TERMINATED);
    expect(failed.gpuIds).toEqual(["GPU-fake-0000", "GPU-fake-1111"]);
    expect(failed.terminationReason).toBe(JobTerminationReason.CREATING_CONTAINER_ERROR);
    expect(ex.locks.free()).toEqual(["GPU-fake-0000", "GPU-fake-1111"]);
    const i = await docker().getContainer(failed.containerId).inspect();
    expect(i.HostConfig.DeviceRequests).toEqual([
      { Driver: "nvidia", Count: 0, DeviceIDs: ["GPU-fake-0000", "GPU-fake-1111"], Capabilities: [["gpu", "utility", "compute", "graphics", "video", "display", "compat32"]], Options: null },
    ]);
    // A task without GPUs is not affected by the locks.
    const plain = task("true", { gpu: 0 });
    ex.submit(plain);
    expect((await events.state(plain.taskId, TaskState.TERMINATED)).terminationReason).toBe(JobTerminationReason.DONE_BY_RUNNER);
  });

  it("terminate during a pull cancels it", async () => {
    const held: net.Socket[] = [];
    const silent = net.createServer((s) => held.push(s.on("error", () => {})));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const port = (silent.address() as net.AddressInfo).port;
    try {
      const { ex, events } = await startExecutor();
      const t = { taskId: uniq("t"), containerName: uniq("shimtest"), imageName: `127.0.0.1:${port}/stuck/image:1` };
      ex.submit(t);
      await events.state(t.taskId, TaskState.PULLING);
      const end = await ex.terminate(t.taskId, { reason: JobTerminationReason.ABORTED_BY_USER, message: "aborted" });
      expect(end.terminationReason).toBe(JobTerminationReason.ABORTED_BY_USER);
      expect(end.terminationMessage).toBe("aborted");
      expect(end.containerId).toBe("");
    } finally {
      held.forEach((s) => s.destroy());
      silent.close();
    }
  });
});
