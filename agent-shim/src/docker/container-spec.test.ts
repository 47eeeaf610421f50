import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { SubmitTaskCommandSchema, TaskNetworkMode } from "@dstack/proto/agent";
import { containerSpec, NVIDIA_CAPABILITIES } from "./container-spec.js";
import { RUNNER_ENTRYPOINT } from "./runner-bundle.js";

const cmd = (o: Parameters<typeof create<typeof SubmitTaskCommandSchema>>[1] = {}) =>
  create(SubmitTaskCommandSchema, { taskId: "t1", containerName: "c1", imageName: "img:1", ...o });
const base = { labels: { a: "b" }, gpu: { vendor: null, ids: [] }, runner: null };

describe("container spec", () => {
  it("host networking, no limits and the image's own entrypoint by default", () => {
    const s = containerSpec({ ...base, cmd: cmd() });
    expect(s.HostConfig?.NetworkMode).toBe("host");
    expect(s.HostConfig?.NanoCpus).toBeUndefined();
    expect(s.HostConfig?.Memory).toBeUndefined();
    expect(s.HostConfig?.Privileged).toBeUndefined();
    expect(s.Entrypoint).toBeUndefined();
    expect(s.Cmd).toBeUndefined();
    expect(s.Labels).toEqual({ a: "b" });
    expect(s.name).toBe("c1");
  });

  it("limits, shm, user, privileged, env and instance mounts", () => {
    const s = containerSpec({
      ...base,
      cmd: cmd({
        cpu: 1.5,
        memoryBytes: 512n * 1024n * 1024n,
        shmSizeBytes: 1n << 30n,
        containerUser: "1000:1000",
        privileged: true,
        env: { A: "1", B: "x=y" },
        instanceMounts: [{ instancePath: "/data", path: "/mnt/data" }],
        gpuDevices: [{ pathOnHost: "/dev/foo", pathInContainer: "" }],
      }),
    });
    expect(s.HostConfig).toMatchObject({ NanoCpus: 1_500_000_000, Memory: 536870912, ShmSize: 1073741824, Privileged: true, Binds: ["/data:/mnt/data"] });
    expect(s.HostConfig?.Devices).toEqual([{ PathOnHost: "/dev/foo", PathInContainer: "/dev/foo", CgroupPermissions: "rwm" }]);
    expect(s.User).toBe("1000:1000");
    expect(s.Env).toEqual(["A=1", "B=x=y"]);
  });

  it("bridge mode publishes ports on loopback ephemeral host ports", () => {
    const s = containerSpec({ ...base, cmd: cmd({ networkMode: TaskNetworkMode.BRIDGE, ports: [80, 8080] }) });
    expect(s.HostConfig?.NetworkMode).toBe("bridge");
    expect(s.ExposedPorts).toEqual({ "80/tcp": {}, "8080/tcp": {} });
    expect(s.HostConfig?.PortBindings).toEqual({ "80/tcp": [{ HostIp: "127.0.0.1", HostPort: "" }], "8080/tcp": [{ HostIp: "127.0.0.1", HostPort: "" }] });
  });

  it("NVIDIA GPUs by device request with every capability; AMD by /dev/kfd and render nodes", () => {
    const n = containerSpec({ ...base, cmd: cmd({ gpu: 2 }), gpu: { vendor: "nvidia", ids: ["GPU-a", "GPU-b"] } });
    expect(n.HostConfig?.DeviceRequests).toEqual([{ Driver: "nvidia", DeviceIDs: ["GPU-a", "GPU-b"], Capabilities: [NVIDIA_CAPABILITIES] }]);
    expect(NVIDIA_CAPABILITIES).toEqual(["gpu", "utility", "compute", "graphics", "video", "display", "compat32"]);
    const retry = containerSpec({ ...base, cmd: cmd({ gpu: 1 }), gpu: { vendor: "nvidia", ids: ["GPU-a"] }, noDisplayCapability: true });
    expect(retry.HostConfig?.DeviceRequests?.[0]?.Capabilities?.[0]).not.toContain("display");
    const a = containerSpec({ ...base, cmd: cmd({ gpu: 1 }), gpu: { vendor: "amd", ids: ["/dev/dri/renderD129"] } });
    expect(a.HostConfig?.Devices?.map((d: { PathOnHost: string }) => d.PathOnHost)).toEqual(["/dev/kfd", "/dev/dri/renderD129"]);
    expect(a.HostConfig?.GroupAdd).toEqual(["video", "render"]);
    expect(a.HostConfig?.DeviceRequests).toBeUndefined();
  });

  it("the runner bundle is the entrypoint, mounted read-only, with the task folder read-write", () => {
    const s = containerSpec({ ...base, cmd: cmd({ networkMode: TaskNetworkMode.BRIDGE }), runner: { bundleDir: "/b", taskDir: "/h/tasks/t1" } });
    expect(s.Entrypoint).toEqual(RUNNER_ENTRYPOINT);
    expect(s.Cmd).toEqual([]);
    expect(s.HostConfig?.Binds).toEqual(["/b:/dstack/runner:ro", "/h/tasks/t1:/dstack/task:rw"]);
    expect(s.HostConfig?.ExtraHosts).toEqual(["host.docker.internal:host-gateway"]);
    expect(containerSpec({ ...base, cmd: cmd(), runner: { bundleDir: "/b", taskDir: "/t" } }).HostConfig?.ExtraHosts).toBeUndefined();
  });
});
