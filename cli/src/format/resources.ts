// Concrete resources, backends, prices and dates written the way dstack's CLI writes them.
import { BackendType, CpuArch, type Resources } from "@dstack/proto/api";

/** MiB → `32GB`, `0.5GB`: dstack shows memory and disk in GB. */
export function mibAsGb(mib: bigint | number): string {
  const gb = Number(mib) / 1024;
  return `${Number.isInteger(gb) ? gb : Number(gb.toFixed(1))}GB`;
}

/** `cpu=8 mem=32GB disk=200GB gpu=A100:80GB:2` (dstack's pretty_resources); `gpuOnly` gives `A100:80GB:2` or `-`. */
export function formatInstanceResources(r: Resources | undefined, opts: { gpuOnly?: boolean; spot?: boolean } = {}): string {
  if (!r) return "-";
  const gpu = r.gpus[0];
  const gpuText = gpu ? [gpu.name, ...(gpu.memoryMib > 0n ? [mibAsGb(gpu.memoryMib)] : []), String(r.gpus.length)].join(":") : "";
  const spot = opts.spot && r.spot ? " (spot)" : "";
  if (opts.gpuOnly) return gpu ? gpuText + spot : "-";
  const parts: string[] = [];
  if (r.cpus > 0) parts.push(`cpu=${r.cpuArch === CpuArch.ARM ? "arm:" : ""}${r.cpus}`);
  if (r.memoryMib > 0n) parts.push(`mem=${mibAsGb(r.memoryMib)}`);
  if (r.diskMib > 0n) parts.push(`disk=${mibAsGb(r.diskMib)}`);
  if (gpu) parts.push(`gpu=${gpuText}`);
  return (parts.join(" ") || "-") + spot;
}

/** `aws (us-east-1)`, `ssh`, `local`; `-` when unknown. */
export function formatBackend(backend: BackendType | undefined, region?: string): string {
  if (backend === undefined || backend === BackendType.UNSPECIFIED) return "-";
  const name = backend === BackendType.REMOTE ? "ssh" : (BackendType[backend] ?? "unknown").toLowerCase();
  return region ? `${name} (${region})` : name;
}

/** `$1.2`, `$0`, `$0.0041` (up to four decimals, no trailing zeros). */
export function formatPrice(price: number, spot = false): string {
  return `$${price.toFixed(4).replace(/\.?0+$/, "")}${spot ? " (spot)" : ""}`;
}

/** dstack's pretty_date: `now`, `12 sec ago`, `3 mins ago`, `yesterday`, `2 weeks ago`… */
export function prettyDate(d: Date | undefined, now: Date = new Date()): string {
  if (!d) return "-";
  const secs = Math.floor((now.getTime() - d.getTime()) / 1000);
  if (secs < 0) return "now";
  const days = Math.floor(secs / 86400);
  const s = secs % 86400;
  if (days === 0) {
    if (s < 10) return "now";
    if (s < 60) return `${s} sec ago`;
    if (s < 120) return "1 min ago";
    if (s < 3600) return `${Math.round(s / 60)} mins ago`;
    if (s < 7200) return "1 hour ago";
    return `${Math.round(s / 3600)} hours ago`;
  }
  if (days === 1) return "yesterday";
  if (days < 7) return `${days} days ago`;
  if (days < 31) {
    const w = Math.round(days / 7);
    return w === 1 ? "1 week ago" : `${w} weeks ago`;
  }
  if (days < 365) {
    const m = Math.round(days / 30);
    return m === 1 ? "1 month ago" : `${m} months ago`;
  }
  const y = Math.round(days / 365);
  return y === 1 ? "1 year ago" : `${y} years ago`;
}
