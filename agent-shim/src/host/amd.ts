// AMD discovery: amd-smi's JSON (whose shape moved between ROCm releases), with
// rocm-smi's JSON as the fallback for hosts that only have the older tool.
import { GpuVendor } from "@dstack/proto/agent";
import type { HostDeps } from "./deps.js";
import { cleanField, MIB, normalizePciBusId, type DiscoveredGpu } from "./discovered.js";
import { GpuToolFailedError, GpuToolMissingError, GpuToolOutputError } from "./errors.js";
import { normalizeAmdName } from "./names.js";
import { renderNodeForPci } from "./render-node.js";
import { runTool } from "./run-tool.js";

export const AMD_SMI_ARGS = ["static", "--json"];
export const ROCM_SMI_ARGS = ["--showproductname", "--showmeminfo", "vram", "--showuniqueid", "--showbus", "--json"];

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Key lookup that ignores case: amd-smi renamed "VERSION" to "version" and back. */
function field(obj: unknown, ...keys: string[]): unknown {
  if (!isObject(obj)) return undefined;
  for (const key of keys) {
    const hit = Object.keys(obj).find((k) => k.toLowerCase() === key.toLowerCase());
    if (hit !== undefined && obj[hit] !== undefined && obj[hit] !== null) return obj[hit];
  }
  return undefined;
}

function text(v: unknown): string {
  return typeof v === "string" || typeof v === "number" ? cleanField(String(v)) : "";
}

function parseJson(tool: string, stdout: string): unknown {
  if (stdout.trim() === "") throw new GpuToolOutputError(tool, "empty output", stdout);
  // Some builds print warning lines before the document: try each line that could open it.
  const lines = stdout.split("\n");
  let lastError = "no JSON document";
  for (let i = 0; i < lines.length; i++) {
    if (!/^\s*[[{]/.test(lines[i]!)) continue;
    try {
      return JSON.parse(lines.slice(i).join("\n"));
    } catch (err) {
      lastError = `invalid JSON: ${(err as Error).message}`;
    }
  }
  throw new GpuToolOutputError(tool, lastError, stdout);
}

/** Bytes from amd-smi's VRAM size, which came as {value, unit}, a number or "N MB". */
function amdVramBytes(vram: unknown): bigint {
  const size = field(vram, "size", "vram_size_mb", "vram_size");
  let value: number;
  let unit = "MB";
  if (isObject(size)) {
    value = Number(text(field(size, "value")));
    unit = text(field(size, "unit")) || unit;
  } else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)?\s*$/i.exec(text(size));
    if (!m) return 0n;
    value = Number(m[1]);
    unit = m[2] ?? unit;
  }
  if (!Number.isFinite(value) || value < 0) return 0n;
  // amd-smi labels MiB as "MB" (196592 "MB" on an MI300X is 192 GiB).
  const scale: Record<string, bigint> = { KB: 1024n, MB: MIB, GB: 1024n * MIB, TB: 1024n * 1024n * MIB };
  const mult = scale[unit.toUpperCase().replace("IB", "B")] ?? MIB;
  return BigInt(Math.round(value)) * mult;
}

export interface AmdSmiEntry {
  index: number;
  name: string;
  memoryBytes: bigint;
  pciBusId: string;
  driverVersion: string;
  serial: string;
}

/**
 * Parses `amd-smi static --json`: a flat array on ROCm 6.x, {"gpu_data": [...]} on 7.x.
 */
export function parseAmdSmiStatic(stdout: string): AmdSmiEntry[] {
  const doc = parseJson("amd-smi", stdout);
  let list: unknown;
  if (Array.isArray(doc)) list = doc;
  else if (isObject(doc) && Array.isArray(field(doc, "gpu_data"))) list = field(doc, "gpu_data");
  else if (isObject(doc) && field(doc, "gpu") !== undefined) list = [doc];
  else throw new GpuToolOutputError("amd-smi", "neither a GPU array nor {gpu_data: [...]}", stdout);
  const entries = list as unknown[];
  if (entries.length === 0) throw new GpuToolOutputError("amd-smi", "no GPUs listed", stdout);
  return entries.map((e, pos) => {
    if (!isObject(e)) throw new GpuToolOutputError("amd-smi", `entry ${pos} is not an object`, stdout);
    const asic = field(e, "asic");
    const name = text(field(asic, "market_name")) || text(field(field(e, "board"), "product_name"));
    if (name === "") throw new GpuToolOutputError("amd-smi", `entry ${pos}: no market_name`, stdout);
    const idx = Number(text(field(e, "gpu")));
    const driver = field(e, "driver");
    return {
      index: Number.isInteger(idx) && idx >= 0 ? idx : pos,
      name,
      memoryBytes: amdVramBytes(field(e, "vram")),
      pciBusId: normalizePciBusId(text(field(field(e, "bus"), "bdf")) || text(field(e, "bdf"))),
      driverVersion: text(field(driver, "version")) || text(field(driver, "driver_version")),
      serial: text(field(asic, "asic_serial")),
    };
  });
}

export interface RocmSmiEntry {
  index: number;
  /** rocm-smi's "cardN" key: its own device numbering, not DRM's card number. */
  card: string;
  name: string;
  memoryBytes: bigint;
  pciBusId: string;
  serial: string;
}

/** Parses rocm-smi's JSON: {"card0": {...}, "card1": {...}, "system": {...}}. */
export function parseRocmSmi(stdout: string): RocmSmiEntry[] {
  const doc = parseJson("rocm-smi", stdout);
  if (!isObject(doc)) throw new GpuToolOutputError("rocm-smi", "not a JSON object", stdout);
  const cards = Object.keys(doc)
    .filter((k) => /^card\d+$/.test(k))
    .sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
  if (cards.length === 0) throw new GpuToolOutputError("rocm-smi", "no cardN entries", stdout);
  return cards.map((card, pos) => {
    const c = doc[card];
    const name = text(field(c, "Card Series", "Market Name", "Card Model"));
    if (name === "") throw new GpuToolOutputError("rocm-smi", `${card}: no product name`, stdout);
    const mem = text(field(c, "VRAM Total Memory (B)"));
    return {
      index: pos,
      card,
      name,
      memoryBytes: /^\d+$/.test(mem) ? BigInt(mem) : 0n,
      pciBusId: normalizePciBusId(text(field(c, "PCI Bus"))),
      serial: text(field(c, "Unique ID")),
    };
  });
}

function amdGpu(e: { index: number; name: string; memoryBytes: bigint; pciBusId: string; serial: string }, renderNode: string, driverVersion: string): DiscoveredGpu {
  return {
    index: e.index,
    vendor: GpuVendor.AMD,
    name: e.name,
    shortName: normalizeAmdName(e.name),
    memoryBytes: e.memoryBytes,
    uuid: "",
    serial: e.serial,
    renderNode,
    driverVersion,
    pciBusId: e.pciBusId,
    computeCapability: "",
  };
}

/** The amdgpu kernel driver's version, which rocm-smi does not print. */
async function amdgpuModuleVersion(deps: HostDeps): Promise<string> {
  try {
    return cleanField(await deps.readFile("/sys/module/amdgpu/version"));
  } catch {
    return "";
  }
}

/**
 * amd-smi first; rocm-smi when amd-smi is absent, fails or prints something unreadable.
 * GPUs whose render node cannot be found are left out (a container could not use them).
 */
export async function discoverAmd(deps: HostDeps): Promise<DiscoveredGpu[]> {
  let amdSmiError: Error;
  try {
    const res = await runTool(deps, "amd-smi", "amd-smi", AMD_SMI_ARGS, 60_000);
    if (res.exitCode !== 0) throw new GpuToolFailedError("amd-smi", res.exitCode, res.stderr || res.stdout);
    const entries = parseAmdSmiStatic(res.stdout);
    const moduleVersion = await amdgpuModuleVersion(deps);
    const gpus: DiscoveredGpu[] = [];
    for (const e of entries) {
      const node = await renderNodeForPci(deps, e.pciBusId);
      if (node === "") {
        deps.warn(`amd-smi GPU ${e.index} (${e.name}, bus ${e.pciBusId || "?"}): no render node found; skipped`);
        continue;
      }
      gpus.push(amdGpu(e, node, e.driverVersion || moduleVersion));
    }
    return gpus;
  } catch (err) {
    if (!(err instanceof GpuToolMissingError || err instanceof GpuToolFailedError || err instanceof GpuToolOutputError)) throw err;
    amdSmiError = err;
  }
  let res;
  try {
    res = await runTool(deps, "rocm-smi", "rocm-smi", ROCM_SMI_ARGS, 60_000);
  } catch (err) {
    // Both tools missing: report the one operators are told to install.
    if (err instanceof GpuToolMissingError && amdSmiError instanceof GpuToolMissingError) throw amdSmiError;
    throw err;
  }
  if (!(amdSmiError instanceof GpuToolMissingError)) deps.warn(`${amdSmiError.message}; falling back to rocm-smi`);
  if (res.exitCode !== 0) throw new GpuToolFailedError("rocm-smi", res.exitCode, res.stderr || res.stdout);
  const entries = parseRocmSmi(res.stdout);
  const driverVersion = await amdgpuModuleVersion(deps);
  const gpus: DiscoveredGpu[] = [];
  for (const e of entries) {
    const node = await renderNodeForPci(deps, e.pciBusId);
    if (node === "") {
      deps.warn(`rocm-smi ${e.card} (${e.name}, bus ${e.pciBusId || "?"}): no render node found; skipped`);
      continue;
    }
    gpus.push(amdGpu(e, node, driverVersion));
  }
  return gpus;
}
