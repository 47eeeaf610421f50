// Host facts as a shim reports them (agent HostInfo) → the shape offers and placement read.
import { GpuVendor as AgentGpuVendor, type HostInfo as AgentHostInfo } from "@dstack/proto/agent";
import type { GpuVendor } from "@dstack/proto";
import type { HostInfo } from "../services/offers.js";

const GIB = 2 ** 30;

const VENDORS: Partial<Record<AgentGpuVendor, GpuVendor>> = {
  [AgentGpuVendor.NVIDIA]: "nvidia",
  [AgentGpuVendor.AMD]: "amd",
  [AgentGpuVendor.INTEL]: "intel",
  [AgentGpuVendor.TENSTORRENT]: "tenstorrent",
  [AgentGpuVendor.GOOGLE]: "google",
};

/** Null until the shim knows the basics (CPUs and memory): such a host cannot take jobs yet. */
export function toHostInfo(h: AgentHostInfo | undefined): HostInfo | null {
  if (!h || h.cpus < 1 || h.memoryBytes <= 0n) return null;
  const ip = h.addresses.find((a) => a.private && !a.ip.includes(":")) ?? h.addresses.find((a) => !a.ip.includes(":")) ?? h.addresses[0];
  return {
    cpus: h.cpus,
    cpuArch: h.arch === "arm64" ? "arm" : "x86",
    memoryGb: Math.round((Number(h.memoryBytes) / GIB) * 100) / 100,
    diskGb: Math.floor(Number(h.diskTotalBytes) / GIB),
    // GPU memory to the whole GB: nvidia-smi's 81559 MiB is the catalog's "80GB".
    gpus: h.gpus.map((g) => ({ vendor: VENDORS[g.vendor] ?? "nvidia", name: g.shortName || g.name, memoryGb: Math.round(Number(g.memoryBytes) / GIB) })),
    ...(h.hostname ? { hostname: h.hostname } : {}),
    ...(ip ? { internalIp: ip.ip } : {}),
  };
}

/** "8 CPUs, 31 GB memory, GPUs: 2x A100 (80 GB)" — for the local fleet's banner. */
export function describeHost(h: HostInfo): string {
  const groups = new Map<string, number>();
  for (const g of h.gpus) groups.set(`${g.name} (${g.memoryGb} GB)`, (groups.get(`${g.name} (${g.memoryGb} GB)`) ?? 0) + 1);
  const gpus = groups.size ? [...groups].map(([name, n]) => `${n}x ${name}`).join(", ") : "none";
  return `${h.cpus} CPUs, ${Math.floor(h.memoryGb)} GB memory, GPUs: ${gpus}`;
}
