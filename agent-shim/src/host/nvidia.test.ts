import { GpuVendor } from "@dstack/proto/agent";
import { describe, expect, it } from "vitest";
import { normalizePciBusId } from "./discovered.js";
import { GpuToolFailedError, GpuToolMissingError, GpuToolOutputError } from "./errors.js";
import { fail, fakeDeps, fixture, ok } from "./fake-deps.js";
import { discoverNvidia, NVIDIA_FIELDS, NVIDIA_FIELDS_LEGACY, nvidiaSmiArgs, parseNvidiaSmiCsv } from "./nvidia.js";

const GIB = 1024n ** 3n;
const MIB = 1024n ** 2n;
const FULL = ["nvidia-smi", ...nvidiaSmiArgs(NVIDIA_FIELDS)].join(" ");
const LEGACY = ["nvidia-smi", ...nvidiaSmiArgs(NVIDIA_FIELDS_LEGACY)].join(" ");

describe("parseNvidiaSmiCsv", () => {
  it("1× H100", () => {
    const [g, ...rest] = parseNvidiaSmiCsv(fixture("nvidia-smi-h100x1.csv"));
    expect(rest).toHaveLength(0);
    expect(g).toEqual({
      index: 0,
      vendor: GpuVendor.NVIDIA,
      name: "NVIDIA H100 80GB HBM3",
      shortName: "H100",
      memoryBytes: 81559n * MIB,
      uuid: "GPU-6f2c1e0a-9b41-4c8e-a3d2-7e5b90c41a18",
      serial: "",
      renderNode: "",
      driverVersion: "550.54.15",
      pciBusId: "0000:18:00.0",
      computeCapability: "9.0",
    });
  });

  it("8× H100: indices, distinct UUIDs and bus ids in order", () => {
    const gpus = parseNvidiaSmiCsv(fixture("nvidia-smi-h100x8.csv"));
    expect(gpus.map((g) => g.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(new Set(gpus.map((g) => g.uuid)).size).toBe(8);
    expect(gpus.every((g) => g.uuid.startsWith("GPU-") && g.shortName === "H100" && g.memoryBytes === 81559n * MIB)).toBe(true);
    expect(gpus[7]!.pciBusId).toBe("0000:db:00.0");
    expect(gpus[0]!.driverVersion).toBe("535.183.01");
  });

  it("A100 80GB (SXM4) and RTX 4090", () => {
    const a100 = parseNvidiaSmiCsv(fixture("nvidia-smi-a100-80gb.csv"));
    expect(a100.map((g) => [g.shortName, g.memoryBytes, g.computeCapability])).toEqual([
      ["A100", 80n * GIB, "8.0"],
      ["A100", 80n * GIB, "8.0"],
    ]);
    expect(a100[1]!.uuid).toBe("GPU-92b5f0c8-1e7d-4a36-b4c9-3f80a2e6d151");
    const [rtx] = parseNvidiaSmiCsv(fixture("nvidia-smi-rtx4090.csv"));
    expect(rtx).toMatchObject({ name: "NVIDIA GeForce RTX 4090", shortName: "RTX4090", memoryBytes: 24564n * MIB, computeCapability: "8.9" });
  });

  it("legacy field list (no compute_cap)", () => {
    const [t4] = parseNvidiaSmiCsv(fixture("nvidia-smi-old-driver-t4.csv"), NVIDIA_FIELDS_LEGACY);
    expect(t4).toMatchObject({ shortName: "T4", memoryBytes: 15109n * MIB, driverVersion: "470.82.01", pciBusId: "0000:00:1e.0", computeCapability: "" });
  });

  it("placeholders become empty or zero, not failures", () => {
    const [g] = parseNvidiaSmiCsv("0, NVIDIA H100 80GB HBM3, [N/A], GPU-1, [N/A], 00000000:18:00.0, [N/A]\n");
    expect(g).toMatchObject({ memoryBytes: 0n, driverVersion: "", computeCapability: "" });
  });

  it.each([
    ["empty.txt", /empty output/],
    ["nvidia-smi-garbled.txt", /fields, expected 7/],
    ["nvidia-smi-bad-memory.csv", /bad memory.total/],
    ["nvidia-smi-no-driver.txt", /fields, expected 7/],
  ])("%s → GpuToolOutputError", (file, reason) => {
    expect(() => parseNvidiaSmiCsv(fixture(file))).toThrow(GpuToolOutputError);
    expect(() => parseNvidiaSmiCsv(fixture(file))).toThrow(reason);
  });
});

describe("discoverNvidia", () => {
  it("asks for compute_cap first", async () => {
    const deps = fakeDeps({ commands: { [FULL]: ok(fixture("nvidia-smi-h100x8.csv")) } });
    expect(await discoverNvidia(deps)).toHaveLength(8);
    expect(deps.calls).toEqual([FULL]);
  });

  it("falls back without compute_cap when an old driver rejects the field", async () => {
    const deps = fakeDeps({
      commands: {
        [FULL]: fail(2, fixture("nvidia-smi-old-driver-compute-cap-rejected.txt")),
        [LEGACY]: ok(fixture("nvidia-smi-old-driver-t4.csv")),
      },
    });
    const gpus = await discoverNvidia(deps);
    expect(gpus.map((g) => g.shortName)).toEqual(["T4"]);
    expect(deps.calls).toEqual([FULL, LEGACY]);
  });

  it("typed errors: missing tool, driver not loaded", async () => {
    await expect(discoverNvidia(fakeDeps({ commands: { [FULL]: "missing" } }))).rejects.toBeInstanceOf(GpuToolMissingError);
    const noDriver = fakeDeps({ commands: { [FULL]: fail(9, fixture("nvidia-smi-no-driver.txt")) } });
    const err = await discoverNvidia(noDriver).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GpuToolFailedError);
    expect((err as GpuToolFailedError).exitCode).toBe(9);
    expect((err as Error).message).toMatch(/couldn't communicate with the NVIDIA driver/);
    expect(noDriver.calls).toHaveLength(1);
  });

  it("runs the given binary (WSL keeps nvidia-smi off PATH)", async () => {
    const wsl = ["/usr/lib/wsl/lib/nvidia-smi", ...nvidiaSmiArgs(NVIDIA_FIELDS)].join(" ");
    const deps = fakeDeps({ commands: { [wsl]: ok(fixture("nvidia-smi-rtx4090.csv")) } });
    expect(await discoverNvidia(deps, "/usr/lib/wsl/lib/nvidia-smi")).toHaveLength(1);
  });
});

describe("normalizePciBusId", () => {
  it.each([
    ["00000000:18:00.0", "0000:18:00.0"],
    ["0000:0C:00.0", "0000:0c:00.0"],
    ["00000001:DB:00.0", "0001:db:00.0"],
    ["18:00.0", "0000:18:00.0"],
    ["garbage", ""],
  ])("%s → %s", (raw, want) => {
    expect(normalizePciBusId(raw)).toBe(want);
  });
});
