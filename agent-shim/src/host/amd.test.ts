import { GpuVendor } from "@dstack/proto/agent";
import { describe, expect, it } from "vitest";
import { AMD_SMI_ARGS, discoverAmd, parseAmdSmiStatic, parseRocmSmi, ROCM_SMI_ARGS } from "./amd.js";
import { GpuToolFailedError, GpuToolMissingError, GpuToolOutputError } from "./errors.js";
import { drmWorld, fail, fakeDeps, fixture, ok } from "./fake-deps.js";

const MIB = 1024n ** 2n;
const MI300X_BDFS = ["0000:05:00.0", "0000:26:00.0", "0000:46:00.0", "0000:65:00.0", "0000:85:00.0", "0000:a6:00.0", "0000:c6:00.0", "0000:e5:00.0"];
const MI210_BDFS = ["0000:03:00.0", "0000:83:00.0"];
const AMD_SMI = ["amd-smi", ...AMD_SMI_ARGS].join(" ");
const ROCM_SMI = ["rocm-smi", ...ROCM_SMI_ARGS].join(" ");

describe("parseAmdSmiStatic", () => {
  it.each([
    ["amd-smi-static-mi300x-8-rocm6.json", "AMD Instinct MI300X", "6.7.0"],
    ["amd-smi-static-mi300x-8-rocm7.json", "MI300X-O", "6.12.12"],
  ])("%s: 8 GPUs with name, VRAM, bus and driver", (file, name, driver) => {
    const gpus = parseAmdSmiStatic(fixture(file));
    expect(gpus).toHaveLength(8);
    expect(gpus.map((g) => g.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(gpus.map((g) => g.pciBusId)).toEqual(MI300X_BDFS);
    for (const g of gpus) expect(g).toMatchObject({ name, memoryBytes: 196592n * MIB, driverVersion: driver });
    expect(gpus[0]!.serial).toBe("0x5C8A3E71B09D4F20");
  });

  it("older amd-smi shapes: vram_size_mb, size as text, a lone object", () => {
    const flat = parseAmdSmiStatic('[{"gpu": 0, "asic": {"market_name": "AMD Instinct MI250X"}, "vram": {"vram_size_mb": 65520}, "bus": {"bdf": "0000:c1:00.0"}}]');
    expect(flat[0]).toMatchObject({ name: "AMD Instinct MI250X", memoryBytes: 65520n * MIB, pciBusId: "0000:c1:00.0", driverVersion: "" });
    const textual = parseAmdSmiStatic('{"gpu": 3, "asic": {"market_name": "MI300X-O"}, "vram": {"size": "196592 MB"}, "bus": {"bdf": "0000:05:00.0"}, "driver": {"driver_version": "6.8.5"}}');
    expect(textual[0]).toMatchObject({ index: 3, memoryBytes: 196592n * MIB, driverVersion: "6.8.5" });
    const gb = parseAmdSmiStatic('{"gpu_data": [{"gpu": 0, "asic": {"market_name": "N/A"}, "board": {"product_name": "AMD Instinct MI308X"}, "vram": {"size": {"value": 192, "unit": "GB"}}, "bus": {"bdf": "0000:05:00.0"}}]}');
    expect(gb[0]).toMatchObject({ name: "AMD Instinct MI308X", memoryBytes: 192n * 1024n * MIB });
  });

  it("tolerates warning lines before the document", () => {
    expect(parseAmdSmiStatic(`WARNING: something\n${fixture("amd-smi-static-mi300x-8-rocm7.json")}`)).toHaveLength(8);
  });

  it.each([
    ["empty.txt", /empty output/],
    ["amd-smi-garbled.txt", /invalid JSON/],
    ["nvidia-smi-h100x1.csv", /no JSON document/],
  ])("%s → GpuToolOutputError", (file, reason) => {
    expect(() => parseAmdSmiStatic(fixture(file))).toThrow(GpuToolOutputError);
    expect(() => parseAmdSmiStatic(fixture(file))).toThrow(reason);
  });

  it("rejects JSON of the wrong shape", () => {
    expect(() => parseAmdSmiStatic('{"version": 1}')).toThrow(/neither a GPU array/);
    expect(() => parseAmdSmiStatic("[]")).toThrow(/no GPUs listed/);
    expect(() => parseAmdSmiStatic('[{"gpu": 0}]')).toThrow(/no market_name/);
  });
});

describe("parseRocmSmi", () => {
  it("2× MI210 with bytes, bus and unique id", () => {
    const gpus = parseRocmSmi(fixture("rocm-smi-mi210-2.json"));
    expect(gpus).toEqual([
      { index: 0, card: "card0", name: "AMD Instinct MI210", memoryBytes: 68702699520n, pciBusId: "0000:03:00.0", serial: "0x3f9a12c47e8b05d1" },
      { index: 1, card: "card1", name: "AMD Instinct MI210", memoryBytes: 68702699520n, pciBusId: "0000:83:00.0", serial: "0x3f9a12c47e8b05d2" },
    ]);
  });

  it("typed errors for empty, garbled and card-less output", () => {
    expect(() => parseRocmSmi("")).toThrow(GpuToolOutputError);
    expect(() => parseRocmSmi(fixture("amd-smi-garbled.txt"))).toThrow(GpuToolOutputError);
    expect(() => parseRocmSmi('{"system": {"Driver version": "6.7.0"}}')).toThrow(/no cardN entries/);
  });
});

describe("discoverAmd", () => {
  it.each(["amd-smi-static-mi300x-8-rocm6.json", "amd-smi-static-mi300x-8-rocm7.json"])(
    "%s: render nodes from the PCI bus via /sys/class/drm",
    async (file) => {
      const deps = fakeDeps({ commands: { [AMD_SMI]: ok(fixture(file)) }, ...drmWorld(MI300X_BDFS) });
      const gpus = await discoverAmd(deps);
      expect(gpus.map((g) => g.renderNode)).toEqual([128, 136, 144, 152, 160, 168, 176, 184].map((n) => `/dev/dri/renderD${n}`));
      for (const g of gpus) expect(g).toMatchObject({ vendor: GpuVendor.AMD, shortName: "MI300X", memoryBytes: 196592n * MIB, uuid: "" });
      expect(deps.calls).toEqual([AMD_SMI]);
      expect(deps.warnings).toEqual([]);
    },
  );

  it("leaves out a GPU with no render node, with a warning", async () => {
    const deps = fakeDeps({ commands: { [AMD_SMI]: ok(fixture("amd-smi-static-mi300x-8-rocm6.json")) }, ...drmWorld(MI300X_BDFS.slice(0, 7)) });
    expect(await discoverAmd(deps)).toHaveLength(7);
    expect(deps.warnings.join("\n")).toMatch(/GPU 7 .*0000:e5:00.0.*no render node/);
  });

  it("falls back to udev's by-path link when sysfs has no match", async () => {
    const deps = fakeDeps({
      commands: { [AMD_SMI]: ok('[{"gpu": 0, "asic": {"market_name": "AMD Instinct MI300X"}, "vram": {"size": {"value": 196592, "unit": "MB"}}, "bus": {"bdf": "0000:05:00.0"}}]') },
      links: { "/dev/dri/by-path/pci-0000:05:00.0-render": "/dev/dri/renderD128" },
    });
    expect((await discoverAmd(deps))[0]!.renderNode).toBe("/dev/dri/renderD128");
  });

  it("uses rocm-smi when amd-smi is not installed; driver from the amdgpu module", async () => {
    const deps = fakeDeps({
      commands: { [AMD_SMI]: "missing", [ROCM_SMI]: ok(fixture("rocm-smi-mi210-2.json")) },
      files: { "/sys/module/amdgpu/version": "6.7.0\n" },
      ...drmWorld(MI210_BDFS, 1),
    });
    const gpus = await discoverAmd(deps);
    expect(gpus.map((g) => [g.shortName, g.memoryBytes, g.renderNode, g.driverVersion, g.serial])).toEqual([
      ["MI210", 68702699520n, "/dev/dri/renderD128", "6.7.0", "0x3f9a12c47e8b05d1"],
      ["MI210", 68702699520n, "/dev/dri/renderD129", "6.7.0", "0x3f9a12c47e8b05d2"],
    ]);
    expect(deps.warnings).toEqual([]);
  });

  it("uses rocm-smi when amd-smi prints garbage or fails, and says so", async () => {
    for (const amdSmi of [ok(fixture("amd-smi-garbled.txt")), fail(1, "", "amd-smi: unrecognized arguments")]) {
      const deps = fakeDeps({ commands: { [AMD_SMI]: amdSmi, [ROCM_SMI]: ok(fixture("rocm-smi-mi210-2.json")) }, ...drmWorld(MI210_BDFS, 1) });
      expect(await discoverAmd(deps)).toHaveLength(2);
      expect(deps.warnings.join("\n")).toMatch(/amd-smi .*falling back to rocm-smi/);
    }
  });

  it("typed errors when neither tool helps", async () => {
    await expect(discoverAmd(fakeDeps({ commands: { [AMD_SMI]: "missing", [ROCM_SMI]: "missing" } }))).rejects.toThrow(GpuToolMissingError);
    await expect(discoverAmd(fakeDeps({ commands: { [AMD_SMI]: "missing", [ROCM_SMI]: fail(2, "", "boom") } }))).rejects.toThrow(GpuToolFailedError);
    await expect(discoverAmd(fakeDeps({ commands: { [AMD_SMI]: "missing", [ROCM_SMI]: ok("") } }))).rejects.toThrow(GpuToolOutputError);
  });
});
