import type { GpuVendor } from "@dstack/proto/agent";

/** One accelerator as discovery sees it; a superset of the wire GpuInfo. */
export interface DiscoveredGpu {
  /** Index in the vendor tool's listing, 0-based. */
  index: number;
  vendor: GpuVendor;
  /** Model name exactly as the vendor tool printed it. */
  name: string;
  /** Catalog name ("H100", "MI300X"), see names.ts. */
  shortName: string;
  memoryBytes: bigint;
  /** NVIDIA "GPU-…" UUID; else "" (the wire contract keeps uuid for NVIDIA's form). */
  uuid: string;
  /** AMD ASIC serial (amd-smi asic_serial, rocm-smi Unique ID); else "". */
  serial: string;
  /** "/dev/dri/renderD<N>" for AMD; else "". */
  renderNode: string;
  driverVersion: string;
  /** PCI address in the sysfs form "0000:18:00.0"; "" when unknown. */
  pciBusId: string;
  /** NVIDIA compute capability, e.g. "9.0"; "" when unknown or not NVIDIA. */
  computeCapability: string;
}

export const MIB = 1024n * 1024n;

/** Tools print "N/A", "[Not Supported]" and the like for fields they cannot read. */
export function cleanField(value: string | undefined | null): string {
  const v = (value ?? "").trim();
  return /^\[?(n\/a|unknown|not supported|not available|insufficient permissions)\]?$/i.test(v) ? "" : v;
}

/**
 * PCI addresses come as "00000000:18:00.0" (nvidia-smi), "0000:0C:00.0" (rocm-smi) or
 * "0000:0c:00.0" (sysfs); sysfs's form (4-digit domain, lower case) is the one to compare.
 */
export function normalizePciBusId(raw: string): string {
  const m = /^(?:([0-9a-f]+):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})\.([0-7])$/i.exec(raw.trim());
  if (!m) return "";
  const domain = (m[1] ?? "0").slice(-4).padStart(4, "0");
  return `${domain}:${m[2]!.padStart(2, "0")}:${m[3]!.padStart(2, "0")}.${m[4]}`.toLowerCase();
}
