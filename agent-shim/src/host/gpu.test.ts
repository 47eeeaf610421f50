import { GpuVendor } from "@dstack/proto/agent";
import { describe, expect, it } from "vitest";
import { fakeDeps, fixture, ok } from "./fake-deps.js";
import { detectGpuVendor, discoverGpus, gpuRuntimeAvailable } from "./gpu.js";
import { NVIDIA_FIELDS, nvidiaSmiArgs } from "./nvidia.js";

describe("detectGpuVendor", () => {
  it.each([
    [[], GpuVendor.UNSPECIFIED],
    [["/dev/nvidiactl"], GpuVendor.NVIDIA],
    [["/dev/dxg", "/usr/lib/wsl/lib/nvidia-smi"], GpuVendor.NVIDIA],
    [["/dev/dxg"], GpuVendor.UNSPECIFIED],
    [["/dev/kfd"], GpuVendor.AMD],
    [["/dev/accel"], GpuVendor.INTEL],
    [["/dev/tenstorrent"], GpuVendor.TENSTORRENT],
    [["/dev/nvidiactl", "/dev/kfd"], GpuVendor.NVIDIA],
  ])("%j → %s", async (paths, vendor) => {
    expect(await detectGpuVendor(fakeDeps({ paths }))).toBe(vendor);
  });
});

describe("discoverGpus", () => {
  it("WSL runs the WSL nvidia-smi", async () => {
    const wsl = ["/usr/lib/wsl/lib/nvidia-smi", ...nvidiaSmiArgs(NVIDIA_FIELDS)].join(" ");
    const deps = fakeDeps({ paths: ["/dev/dxg", "/usr/lib/wsl/lib/nvidia-smi"], commands: { [wsl]: ok(fixture("nvidia-smi-rtx4090.csv")) } });
    const found = await discoverGpus(deps);
    expect(found.vendor).toBe(GpuVendor.NVIDIA);
    expect(found.gpus.map((g) => g.shortName)).toEqual(["RTX4090"]);
  });

  it("Intel and Tenstorrent: vendor known, no listing yet, a warning", async () => {
    const deps = fakeDeps({ paths: ["/dev/accel"] });
    expect(await discoverGpus(deps)).toEqual({ vendor: GpuVendor.INTEL, gpus: [] });
    expect(deps.warnings.join()).toMatch(/not implemented/);
  });
});

describe("gpuRuntimeAvailable", () => {
  it("NVIDIA: Docker runtime or CDI spec", async () => {
    expect(await gpuRuntimeAvailable(fakeDeps(), GpuVendor.NVIDIA, { runc: {}, nvidia: {} })).toBe(true);
    expect(await gpuRuntimeAvailable(fakeDeps({ paths: ["/etc/cdi/nvidia.yaml"] }), GpuVendor.NVIDIA, { runc: {} })).toBe(true);
    expect(await gpuRuntimeAvailable(fakeDeps(), GpuVendor.NVIDIA, { runc: {} })).toBe(false);
  });

  it("others", async () => {
    expect(await gpuRuntimeAvailable(fakeDeps({ paths: ["/dev/kfd"] }), GpuVendor.AMD, undefined)).toBe(true);
    expect(await gpuRuntimeAvailable(fakeDeps(), GpuVendor.INTEL, { habana: {} })).toBe(true);
    expect(await gpuRuntimeAvailable(fakeDeps(), GpuVendor.UNSPECIFIED, { nvidia: {} })).toBe(false);
  });
});
