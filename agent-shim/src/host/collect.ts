// Assembles the HostInfo the shim reports to the server on link and on change.
import { create } from "@bufbuild/protobuf";
import { GpuInfoSchema, GpuVendor, HostInfoSchema, NetworkAddressSchema, type HostInfo, type NetworkAddress } from "@dstack/proto/agent";
import type { HostDeps } from "./deps.js";
import type { DiscoveredGpu } from "./discovered.js";
import { detectGpuVendor, gpuRuntimeAvailable, listGpus } from "./gpu.js";
import { systemDeps } from "./system.js";

export interface CollectOptions {
  /** Where to measure the disk; default: Docker's data root, else "/". */
  diskPath?: string;
}

export interface HostReport {
  hostInfo: HostInfo;
  /** Every GPU with the fields the wire message lacks (short name, PCI id, compute capability). */
  gpus: DiscoveredGpu[];
  vendor: GpuVendor;
  /** Problems met on the way; each also went to deps.warn. */
  warnings: string[];
}

/** Node's arch names → Go's, which dstack uses ("x64" → "amd64"). */
export function goArch(nodeArch: string): string {
  return ({ x64: "amd64", ia32: "386", arm: "arm" } as Record<string, string>)[nodeArch] ?? nodeArch;
}

/** /etc/os-release's KEY=value lines, quotes removed. */
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Z0-9_]+)=(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2]!.trim();
    if (/^(["']).*\1$/.test(v)) v = v.slice(1, -1).replace(/\\(["'$`\\])/g, "$1");
    out[m[1]!] = v;
  }
  return out;
}

/** RFC 1918 IPv4 ranges and IPv6 unique local addresses (fc00::/7). */
export function isPrivateAddress(ip: string): boolean {
  if (ip.includes(":")) return /^f[cd][0-9a-f]{0,2}:/i.test(ip);
  const [a, b] = ip.split(".").map(Number);
  return a === 10 || (a === 172 && b !== undefined && b >= 16 && b <= 31) || (a === 192 && b === 168);
}

export function networkAddresses(ifaces: ReturnType<HostDeps["networkInterfaces"]>): NetworkAddress[] {
  const out: NetworkAddress[] = [];
  for (const [name, addrs] of Object.entries(ifaces)) {
    for (const a of addrs ?? []) {
      if (a.internal) continue;
      // IPv6 link-local needs a zone to be dialled; no peer can use it as an address.
      if (a.family === "IPv6" && /^fe[89ab][0-9a-f]:/i.test(a.address)) continue;
      const prefix = Number(a.cidr?.split("/")[1] ?? (a.family === "IPv4" ? 32 : 128));
      out.push(create(NetworkAddressSchema, { ip: a.address, prefixLength: prefix, interface: name, private: isPrivateAddress(a.address) }));
    }
  }
  return out;
}

async function diskUsage(deps: HostDeps, path: string): Promise<{ total: bigint; free: bigint }> {
  // The data root may be unreadable to a non-root user; its nearest readable ancestor is on the same disk or close.
  let p = path;
  for (;;) {
    try {
      const s = await deps.statfs(p);
      return { total: s.blocks * s.bsize, free: s.bavail * s.bsize };
    } catch (err) {
      if (p === "/" || p === "") throw err;
      p = p.replace(/\/[^/]*\/?$/, "") || "/";
    }
  }
}

async function readTrimmed(deps: HostDeps, path: string): Promise<string> {
  try {
    return (await deps.readFile(path)).trim();
  } catch {
    return "";
  }
}

/** Collects everything, never throwing for one missing fact: gaps become warnings. */
export async function collectHostReport(deps: Partial<HostDeps> = {}, options: CollectOptions = {}): Promise<HostReport> {
  const warnings: string[] = [];
  const base = systemDeps(deps);
  const d: HostDeps = {
    ...base,
    warn: (message, err) => {
      warnings.push(err === undefined ? message : `${message}: ${err instanceof Error ? err.message : String(err)}`);
      base.warn(message, err);
    },
  };

  const info = create(HostInfoSchema, {
    hostname: d.hostname(),
    kernelVersion: d.kernelRelease(),
    arch: goArch(d.arch()),
  });

  const cpus = d.cpus();
  info.cpus = cpus.length;
  info.cpuModel = cpus[0]?.model.trim() ?? "";
  info.memoryBytes = BigInt(d.totalMemory());
  info.addresses = networkAddresses(d.networkInterfaces());
  info.machineId = (await readTrimmed(d, "/etc/machine-id")) || (await readTrimmed(d, "/var/lib/dbus/machine-id"));

  const osText = (await readTrimmed(d, "/etc/os-release")) || (await readTrimmed(d, "/usr/lib/os-release"));
  if (osText === "") d.warn("no /etc/os-release; OS name unknown");
  const osRelease = parseOsRelease(osText);
  info.osName = osRelease.NAME ?? osRelease.ID ?? "";
  info.osVersion = osRelease.VERSION_ID ?? "";

  let dockerRoot: string | undefined;
  let runtimes: Record<string, unknown> | undefined;
  if (d.docker) {
    try {
      info.dockerVersion = (await d.docker.version()).Version ?? "";
      const dockerInfo = await d.docker.info();
      dockerRoot = dockerInfo.DockerRootDir;
      runtimes = dockerInfo.Runtimes;
    } catch (err) {
      d.warn("Docker unreachable", err);
    }
  }

  const diskPath = options.diskPath ?? dockerRoot ?? "/";
  try {
    const disk = await diskUsage(d, diskPath);
    info.diskTotalBytes = disk.total;
    info.diskFreeBytes = disk.free;
  } catch (err) {
    d.warn(`cannot measure disk at ${diskPath}`, err);
  }

  // The vendor comes from device nodes, so it is known even when its tool fails.
  const vendor = await detectGpuVendor(d);
  let gpus: DiscoveredGpu[] = [];
  try {
    gpus = await listGpus(d, vendor);
  } catch (err) {
    d.warn("GPU discovery failed; reporting no GPUs", err);
  }
  info.gpus = gpus.map((g) =>
    create(GpuInfoSchema, {
      index: g.index,
      vendor: g.vendor,
      name: g.name,
      memoryBytes: g.memoryBytes,
      uuid: g.uuid,
      renderNode: g.renderNode,
      driverVersion: g.driverVersion,
      shortName: g.shortName,
      pciBusId: g.pciBusId,
      computeCapability: g.computeCapability,
      serial: g.serial,
    }),
  );
  info.gpuRuntimeAvailable = vendor !== GpuVendor.UNSPECIFIED && (await gpuRuntimeAvailable(d, vendor, runtimes));
  if (vendor === GpuVendor.NVIDIA && gpus.length > 0 && !info.gpuRuntimeAvailable) {
    d.warn("NVIDIA GPUs found but no NVIDIA container runtime (nvidia-container-toolkit) is configured in Docker");
  }
  return { hostInfo: info, gpus, vendor, warnings };
}

/** The HostInfo message for this host; `deps` replaces parts of the real system (tests). */
export async function collectHostInfo(deps: Partial<HostDeps> = {}, options: CollectOptions = {}): Promise<HostInfo> {
  return (await collectHostReport(deps, options)).hostInfo;
}
