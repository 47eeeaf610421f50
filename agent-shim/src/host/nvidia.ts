// NVIDIA discovery through nvidia-smi's CSV query interface.
import { GpuVendor } from "@dstack/proto/agent";
import type { HostDeps } from "./deps.js";
import { cleanField, MIB, normalizePciBusId, type DiscoveredGpu } from "./discovered.js";
import { GpuToolFailedError, GpuToolOutputError } from "./errors.js";
import { normalizeNvidiaName } from "./names.js";
import { runTool } from "./run-tool.js";

export const NVIDIA_FIELDS = ["index", "name", "memory.total", "uuid", "driver_version", "pci.bus_id", "compute_cap"];
// Drivers before ~510 reject compute_cap as an unknown field and print nothing else.
export const NVIDIA_FIELDS_LEGACY = NVIDIA_FIELDS.filter((f) => f !== "compute_cap");

export function nvidiaSmiArgs(fields: readonly string[]): string[] {
  return [`--query-gpu=${fields.join(",")}`, "--format=csv,noheader,nounits"];
}

/** Parses `--format=csv,noheader,nounits` output for the given field list. */
export function parseNvidiaSmiCsv(stdout: string, fields: readonly string[] = NVIDIA_FIELDS): DiscoveredGpu[] {
  const lines = stdout.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  if (lines.length === 0) throw new GpuToolOutputError("nvidia-smi", "empty output", stdout);
  return lines.map((line, row) => {
    // Model names carry no commas, so a plain split is exact for this format.
    const cells = line.split(",").map((c) => c.trim());
    if (cells.length !== fields.length) {
      throw new GpuToolOutputError("nvidia-smi", `line ${row + 1}: ${cells.length} fields, expected ${fields.length}`, stdout);
    }
    const get = (f: string): string => cleanField(cells[fields.indexOf(f)]);
    const name = get("name");
    if (name === "") throw new GpuToolOutputError("nvidia-smi", `line ${row + 1}: no model name`, stdout);
    const indexText = get("index");
    const index = indexText === "" ? row : Number(indexText);
    if (!Number.isInteger(index) || index < 0) {
      throw new GpuToolOutputError("nvidia-smi", `line ${row + 1}: bad index ${JSON.stringify(indexText)}`, stdout);
    }
    const memText = get("memory.total");
    // Some virtualised GPUs report [N/A]; an unknown size is 0, not a failure.
    if (memText !== "" && !/^\d+$/.test(memText)) {
      throw new GpuToolOutputError("nvidia-smi", `line ${row + 1}: bad memory.total ${JSON.stringify(memText)}`, stdout);
    }
    return {
      index,
      vendor: GpuVendor.NVIDIA,
      name,
      shortName: normalizeNvidiaName(name),
      memoryBytes: memText === "" ? 0n : BigInt(memText) * MIB,
      uuid: get("uuid"),
      serial: "",
      renderNode: "",
      driverVersion: get("driver_version"),
      pciBusId: normalizePciBusId(get("pci.bus_id")),
      computeCapability: fields.includes("compute_cap") ? get("compute_cap") : "",
    };
  });
}

/** Whether nvidia-smi failed because it does not know the compute_cap field. */
export function rejectsComputeCap(output: string): boolean {
  return /compute_cap/i.test(output) && /not a valid field|invalid|unknown/i.test(output);
}

/**
 * Runs nvidia-smi and parses its listing; retries without compute_cap for old drivers.
 * `command` is the nvidia-smi to run (WSL keeps it outside PATH).
 */
export async function discoverNvidia(deps: HostDeps, command = "nvidia-smi"): Promise<DiscoveredGpu[]> {
  const res = await runTool(deps, "nvidia-smi", command, nvidiaSmiArgs(NVIDIA_FIELDS), 30_000);
  if (res.exitCode === 0) return parseNvidiaSmiCsv(res.stdout, NVIDIA_FIELDS);
  if (!rejectsComputeCap(res.stdout + res.stderr)) {
    throw new GpuToolFailedError("nvidia-smi", res.exitCode, res.stderr || res.stdout);
  }
  const legacy = await runTool(deps, "nvidia-smi", command, nvidiaSmiArgs(NVIDIA_FIELDS_LEGACY), 30_000);
  if (legacy.exitCode !== 0) throw new GpuToolFailedError("nvidia-smi", legacy.exitCode, legacy.stderr || legacy.stdout);
  return parseNvidiaSmiCsv(legacy.stdout, NVIDIA_FIELDS_LEGACY);
}
