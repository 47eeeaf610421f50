// SubmitTaskCommand → Docker's create options. Pure, so every mapping can be checked without an
// engine; the executor only adds what it learns at run time (locked GPUs, the task folder).
import type { ContainerCreateOptions, HostConfig } from "dockerode";
import { TaskNetworkMode, type SubmitTaskCommand } from "@dstack/proto/agent";
import type { GpuVendorName } from "./gpu-locks.js";
import { RUNNER_ENTRYPOINT, RUNNER_MOUNT, TASK_MOUNT } from "./runner-bundle.js";

/** Everything NVIDIA's container toolkit can expose; "display" is dropped on a retry where unsupported. */
export const NVIDIA_CAPABILITIES = ["gpu", "utility", "compute", "graphics", "video", "display", "compat32"];

export interface SpecInputs {
  cmd: SubmitTaskCommand;
  labels: Record<string, string>;
  gpu: { vendor: GpuVendorName | null; ids: string[] };
  /** Present when the runner bundle is the entrypoint. */
  runner: { bundleDir: string; taskDir: string } | null;
  /** Leave out the NVIDIA "display" capability (the retry after a driver refused it). */
  noDisplayCapability?: boolean;
}

export function isBridge(cmd: Pick<SubmitTaskCommand, "networkMode">): boolean {
  return cmd.networkMode === TaskNetworkMode.BRIDGE;
}

export function containerSpec(i: SpecInputs): ContainerCreateOptions {
  const { cmd } = i;
  const bridge = isBridge(cmd);
  const host: HostConfig = {
    NetworkMode: bridge ? "bridge" : "host",
    Binds: cmd.instanceMounts.map((m) => `${m.instancePath}:${m.path}`),
    // The engine keeps the container after it exits: the shim reads its exit code and logs.
    AutoRemove: false,
  };
  const create: ContainerCreateOptions = {
    name: cmd.containerName,
    Image: cmd.imageName,
    Labels: i.labels,
    Env: Object.entries(cmd.env).map(([k, v]) => `${k}=${v}`),
    Tty: false,
    AttachStdin: false,
    OpenStdin: false,
    HostConfig: host,
  };
  if (cmd.containerUser) create.User = cmd.containerUser;
  if (cmd.privileged) host.Privileged = true;
  if (cmd.cpu > 0) host.NanoCpus = Math.round(cmd.cpu * 1e9);
  if (cmd.memoryBytes > 0n) host.Memory = Number(cmd.memoryBytes);
  if (cmd.shmSizeBytes > 0n) host.ShmSize = Number(cmd.shmSizeBytes);

  if (bridge && cmd.ports.length > 0) {
    create.ExposedPorts = {};
    host.PortBindings = {};
    for (const p of cmd.ports) {
      create.ExposedPorts[`${p}/tcp`] = {};
      // Ephemeral ports on loopback only: traffic reaches them through the shim's tunnels.
      host.PortBindings[`${p}/tcp`] = [{ HostIp: "127.0.0.1", HostPort: "" }];
    }
  }

  const devices = cmd.gpuDevices.map((d) => ({ PathOnHost: d.pathOnHost, PathInContainer: d.pathInContainer || d.pathOnHost, CgroupPermissions: "rwm" }));
  if (i.gpu.ids.length > 0 && i.gpu.vendor === "nvidia") {
    host.DeviceRequests = [
      {
        Driver: "nvidia",
        DeviceIDs: i.gpu.ids,
        Capabilities: [i.noDisplayCapability ? NVIDIA_CAPABILITIES.filter((c) => c !== "display") : NVIDIA_CAPABILITIES],
      },
    ];
  } else if (i.gpu.ids.length > 0 && i.gpu.vendor === "amd") {
    // ROCm needs the kernel fusion driver plus the render node of each GPU, and the groups that own them.
    devices.push({ PathOnHost: "/dev/kfd", PathInContainer: "/dev/kfd", CgroupPermissions: "rwm" });
    for (const node of i.gpu.ids) devices.push({ PathOnHost: node, PathInContainer: node, CgroupPermissions: "rwm" });
    host.GroupAdd = ["video", "render"];
  }
  if (devices.length > 0) host.Devices = devices;

  if (i.runner) {
    create.Entrypoint = RUNNER_ENTRYPOINT;
    create.Cmd = [];
    host.Binds!.push(`${i.runner.bundleDir}:${RUNNER_MOUNT}:ro`, `${i.runner.taskDir}:${TASK_MOUNT}:rw`);
    if (bridge) host.ExtraHosts = ["host.docker.internal:host-gateway"];
  }
  return create;
}
