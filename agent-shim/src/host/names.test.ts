import { GpuVendor } from "@dstack/proto/agent";
import { describe, expect, it } from "vitest";
import { normalizeAmdName, normalizeGpuName, normalizeIntelName, normalizeNvidiaName } from "./names.js";

describe("normalizeNvidiaName", () => {
  it.each([
    ["NVIDIA A100-SXM4-80GB", "A100"],
    ["NVIDIA A100 80GB PCIe", "A100"],
    ["NVIDIA H100 80GB HBM3", "H100"],
    ["NVIDIA H100 NVL", "H100NVL"],
    ["NVIDIA GH200 480GB", "GH200"],
    ["NVIDIA GeForce RTX 4090", "RTX4090"],
    ["NVIDIA GeForce RTX 3060 Ti", "RTX3060Ti"],
    ["NVIDIA GeForce RTX 4080 SUPER", "RTX4080SUPER"],
    ["NVIDIA GeForce RTX 2080 Super", "RTX2080SUPER"],
    ["NVIDIA RTX 6000 Ada Generation", "RTX6000Ada"],
    ["NVIDIA RTX A6000", "A6000"],
    ["NVIDIA L40S", "L40S"],
    ["NVIDIA A10G", "A10G"],
    ["Tesla T4", "T4"],
    ["Tesla V100-SXM2-16GB", "V100"],
    ["Quadro RTX 8000", "RTX8000"],
    ["NVIDIA B200", "B200"],
  ])("%s → %s", (raw, short) => {
    expect(normalizeNvidiaName(raw)).toBe(short);
  });
});

describe("normalizeAmdName", () => {
  it.each([
    ["AMD Instinct MI300X", "MI300X"],
    ["MI300X-O", "MI300X"],
    ["AMD Instinct MI300X OAM", "MI300X"],
    ["Instinct MI210", "MI210"],
    ["AMD INSTINCT MI250 (MCM) OAM AC MBA", "MI250"],
    ["AMD Instinct MI325X", "MI325X"],
    ["AMD Radeon PRO W7900", "AMD Radeon PRO W7900"],
  ])("%s → %s", (raw, short) => {
    expect(normalizeAmdName(raw)).toBe(short);
  });
});

describe("normalizeIntelName / normalizeGpuName", () => {
  it("maps Gaudi model numbers and dispatches by vendor", () => {
    expect(normalizeIntelName("HL-225")).toBe("Gaudi2");
    expect(normalizeIntelName("HL-325L")).toBe("Gaudi3");
    expect(normalizeIntelName("HL-1000")).toBe("HL-1000");
    expect(normalizeGpuName(GpuVendor.NVIDIA, "NVIDIA H100 80GB HBM3")).toBe("H100");
    expect(normalizeGpuName(GpuVendor.AMD, "AMD Instinct MI300X")).toBe("MI300X");
    expect(normalizeGpuName(GpuVendor.TENSTORRENT, " n150 ")).toBe("n150");
  });
});
