// GPU usage per GPU from the vendor tool the container has: nvidia-smi (mounted by the NVIDIA
// container toolkit), else amd-smi (ROCm 6+; dstack's choice for AMD), else rocm-smi (older ROCm).
import { execFile } from "node:child_process";

export interface GpuSample {
  memoryUsageBytes: number;
  utilPercent: number;
}

export const NVIDIA_SMI_ARGS = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"];
/** Busy percent of the graphics engine and used VRAM, per GPU, as JSON. */
export const AMD_SMI_ARGS = ["metric", "--usage", "--mem-usage", "--json"];
export const ROCM_SMI_ARGS = ["--showuse", "--showmeminfo", "vram", "--json"];

const MIB = 1024 * 1024;

/** Lines of `util, MiB used`; lines that are not two numbers (e.g. "[N/A]") count as 0. */
export function parseNvidiaSmi(csv: string): GpuSample[] {
  return csv
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const [util, mem] = l.split(",").map((x) => Number(x.trim()));
      return { utilPercent: Number.isFinite(util) ? util! : 0, memoryUsageBytes: Number.isFinite(mem) ? Math.round(mem! * MIB) : 0 };
    });
}

/** The JSON document in a tool's output, which may start with warning lines ("WARNING: …"). */
function jsonIn(text: string): unknown {
  const start = text.search(/^[[{]/m);
  if (start < 0) throw new Error("no JSON in the output");
  return JSON.parse(text.slice(start));
}

const UNIT_BYTES: Record<string, number> = { B: 1, KB: 1024, KIB: 1024, MB: MIB, MIB: MIB, GB: 1024 * MIB, GIB: 1024 * MIB };

/** amd-smi's `{"value": 283, "unit": "MB"}` (or a bare number); "N/A" and the like give null. */
function measure(v: unknown, defaultUnit: string): { value: number; unit: string } | null {
  const o = v && typeof v === "object" && !Array.isArray(v) ? (v as { value?: unknown; unit?: unknown }) : { value: v };
  const n = typeof o.value === "number" ? o.value : typeof o.value === "string" && o.value.trim() !== "" ? Number(o.value) : NaN;
  if (!Number.isFinite(n)) return null;
  return { value: n, unit: typeof o.unit === "string" ? o.unit : defaultUnit };
}

/**
 * `amd-smi metric --usage --mem-usage --json`: ROCm 6 prints an array of GPUs, ROCm 7 wraps it in
 * `{"gpu_data": [...]}`. Utilisation is `usage.gfx_activity` (%), memory `mem_usage.used_vram`
 * (MB, which amd-smi means as MiB, as dstack reads it). A reading of "N/A" counts as 0. Throws when
 * the output is not that document (a garbled or truncated output, an error text).
 */
export function parseAmdSmiMetric(text: string): GpuSample[] {
  const doc = jsonIn(text);
  const list = Array.isArray(doc) ? doc : doc && typeof doc === "object" && Array.isArray((doc as { gpu_data?: unknown }).gpu_data) ? (doc as { gpu_data: unknown[] }).gpu_data : null;
  if (!list) throw new Error("amd-smi printed neither a GPU list nor {gpu_data: [...]}");
  const gpus = list.filter((g): g is Record<string, unknown> => Boolean(g) && typeof g === "object");
  gpus.sort((a, b) => Number(a.gpu ?? 0) - Number(b.gpu ?? 0));
  return gpus.map((g) => {
    const usage = (g.usage ?? {}) as Record<string, unknown>;
    const mem = (g.mem_usage ?? {}) as Record<string, unknown>;
    const util = measure(usage.gfx_activity, "%");
    const used = measure(mem.used_vram, "MB");
    return {
      utilPercent: util ? util.value : 0,
      memoryUsageBytes: used ? Math.round(used.value * (UNIT_BYTES[used.unit.toUpperCase()] ?? MIB)) : 0,
    };
  });
}

/** `rocm-smi --showuse --showmeminfo vram --json`: `cardN` objects ("GPU use (%)", "VRAM Total Used Memory (B)"). */
export function parseRocmSmi(text: string): GpuSample[] {
  const doc = jsonIn(text) as Record<string, Record<string, unknown>>;
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw new Error("rocm-smi printed no card object");
  return Object.keys(doc)
    .filter((k) => /^card\d+$/.test(k))
    .sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)))
    .map((k) => {
      const card = doc[k] ?? {};
      const util = measure(card["GPU use (%)"], "%");
      const used = measure(card["VRAM Total Used Memory (B)"], "B");
      return { utilPercent: util ? util.value : 0, memoryUsageBytes: used ? Math.round(used.value) : 0 };
    });
}

export interface GpuTools {
  nvidiaSmi?: string;
  amdSmi?: string;
  rocmSmi?: string;
}

/** Tools that were not there (ENOENT): not tried again on every GetMetrics. */
const absent = new Set<string>();

function run(bin: string, args: string[], timeoutMs: number): Promise<string | null> {
  if (absent.has(bin)) return Promise.resolve(null);
  return new Promise((resolve) => {
    execFile(bin, args, { timeout: timeoutMs, maxBuffer: 16 * MIB }, (err, stdout) => {
      if ((err as NodeJS.ErrnoException | null)?.code === "ENOENT") absent.add(bin);
      resolve(err ? null : stdout);
    });
  });
}

/** Samples every GPU with the first tool that answers; [] when none is there or all fail. */
export async function sampleGpus(tools: GpuTools | string = {}, timeoutMs = 5_000): Promise<GpuSample[]> {
  const t = typeof tools === "string" ? { nvidiaSmi: tools } : tools;
  const sources: [string, string[], (text: string) => GpuSample[]][] = [
    [t.nvidiaSmi ?? "nvidia-smi", NVIDIA_SMI_ARGS, parseNvidiaSmi],
    [t.amdSmi ?? "amd-smi", AMD_SMI_ARGS, parseAmdSmiMetric],
    [t.rocmSmi ?? "rocm-smi", ROCM_SMI_ARGS, parseRocmSmi],
  ];
  for (const [bin, args, parse] of sources) {
    const out = await run(bin, args, timeoutMs);
    if (out === null) continue;
    try {
      return parse(out);
    } catch {
      /* an unreadable output: try the next tool */
    }
  }
  return [];
}
