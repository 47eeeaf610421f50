// GPU usage from nvidia-smi, when the container has it (the NVIDIA container toolkit mounts it).
import { execFile } from "node:child_process";

export interface GpuSample {
  memoryUsageBytes: number;
  utilPercent: number;
}

export const NVIDIA_SMI_ARGS = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"];

/** Lines of `util, MiB used`; lines that are not two numbers (e.g. "[N/A]") count as 0. */
export function parseNvidiaSmi(csv: string): GpuSample[] {
  return csv
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const [util, mem] = l.split(",").map((x) => Number(x.trim()));
      return { utilPercent: Number.isFinite(util) ? util! : 0, memoryUsageBytes: Number.isFinite(mem) ? Math.round(mem! * 1024 * 1024) : 0 };
    });
}

/** Samples every GPU; [] when there is no nvidia-smi or it fails. */
export function sampleGpus(bin = "nvidia-smi", timeoutMs = 5_000): Promise<GpuSample[]> {
  return new Promise((resolve) => {
    execFile(bin, NVIDIA_SMI_ARGS, { timeout: timeoutMs }, (err, stdout) => resolve(err ? [] : parseNvidiaSmi(stdout)));
  });
}
