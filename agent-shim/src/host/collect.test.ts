import { GpuVendor } from "@dstack/proto/agent";
import { describe, expect, it } from "vitest";
import { AMD_SMI_ARGS } from "./amd.js";
import { collectHostInfo, collectHostReport, goArch, isPrivateAddress, networkAddresses, parseOsRelease } from "./collect.js";
import { drmWorld, fail, fakeDeps, fixture, ok } from "./fake-deps.js";
import { NVIDIA_FIELDS, nvidiaSmiArgs } from "./nvidia.js";

const MIB = 1024n ** 2n;
const NVIDIA_SMI = ["nvidia-smi", ...nvidiaSmiArgs(NVIDIA_FIELDS)].join(" ");
const AMD_SMI = ["amd-smi", ...AMD_SMI_ARGS].join(" ");
const UBUNTU = 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\n';
const IFACES = {
  lo: [{ address: "127.0.0.1", family: "IPv4" as const, internal: true, cidr: "127.0.0.1/8" }],
  eth0: [
    { address: "10.0.0.5", family: "IPv4" as const, internal: false, cidr: "10.0.0.5/24" },
    { address: "fe80::1", family: "IPv6" as const, internal: false, cidr: "fe80::1/64", scopeid: 2 },
  ],
  eth1: [
    { address: "203.0.113.7", family: "IPv4" as const, internal: false, cidr: "203.0.113.7/28" },
    { address: "fd12::7", family: "IPv6" as const, internal: false, cidr: "fd12::7/64" },
  ],
};

describe("collectHostInfo with recorded outputs", () => {
  it("a host with 8× H100 and the NVIDIA runtime", async () => {
    const deps = fakeDeps(
      {
        paths: ["/dev/nvidiactl"],
        files: { "/etc/os-release": UBUNTU, "/etc/machine-id": "0123abcd\n" },
        commands: { [NVIDIA_SMI]: ok(fixture("nvidia-smi-h100x8.csv")) },
      },
      {
        networkInterfaces: () => IFACES,
        docker: { version: async () => ({ Version: "28.2.2" }), info: async () => ({ DockerRootDir: "/data/docker", Runtimes: { runc: {}, nvidia: {} } }) },
      },
    );
    const statfsPaths: string[] = [];
    deps.statfs = async (p) => (statfsPaths.push(p), { bsize: 4096n, blocks: 1_000_000n, bavail: 250_000n });
    const info = await collectHostInfo(deps);
    expect(info).toMatchObject({
      hostname: "gpu-node-1",
      osName: "Ubuntu",
      osVersion: "24.04",
      kernelVersion: "6.8.0-45-generic",
      arch: "amd64",
      cpus: 8,
      cpuModel: "Intel(R) Xeon(R) Platinum 8480+",
      memoryBytes: 64n * 1024n ** 3n,
      diskTotalBytes: 4_096_000_000n,
      diskFreeBytes: 1_024_000_000n,
      dockerVersion: "28.2.2",
      machineId: "0123abcd",
      gpuRuntimeAvailable: true,
    });
    expect(statfsPaths).toEqual(["/data/docker"]);
    expect(info.addresses.map((a) => [a.interface, a.ip, a.prefixLength, a.private])).toEqual([
      ["eth0", "10.0.0.5", 24, true],
      ["eth1", "203.0.113.7", 28, false],
      ["eth1", "fd12::7", 64, true],
    ]);
    expect(info.gpus).toHaveLength(8);
    expect(info.gpus[3]).toMatchObject({
      index: 3,
      vendor: GpuVendor.NVIDIA,
      name: "NVIDIA H100 80GB HBM3",
      memoryBytes: 81559n * MIB,
      uuid: "GPU-e05d3b8a-2f6c-49d1-a7b4-8c1e6f3a0d92",
      renderNode: "",
      driverVersion: "535.183.01",
      shortName: "H100",
      computeCapability: "9.0",
    });
    expect(info.gpus[3]!.pciBusId).toMatch(/^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i);
    expect(deps.warnings).toEqual([]);
  });

  it("a host with 8× MI300X: render nodes on the wire", async () => {
    const deps = fakeDeps({
      paths: ["/dev/kfd"],
      commands: { [AMD_SMI]: ok(fixture("amd-smi-static-mi300x-8-rocm7.json")) },
      ...drmWorld(["0000:05:00.0", "0000:26:00.0", "0000:46:00.0", "0000:65:00.0", "0000:85:00.0", "0000:a6:00.0", "0000:c6:00.0", "0000:e5:00.0"]),
    });
    const report = await collectHostReport(deps);
    expect(report.vendor).toBe(GpuVendor.AMD);
    expect(report.hostInfo.gpuRuntimeAvailable).toBe(true);
    expect(report.hostInfo.gpus.map((g) => g.renderNode)).toEqual([128, 136, 144, 152, 160, 168, 176, 184].map((n) => `/dev/dri/renderD${n}`));
    expect(report.hostInfo.gpus.every((g) => g.vendor === GpuVendor.AMD && g.name === "MI300X-O" && g.memoryBytes === 196592n * MIB)).toBe(true);
    expect(report.hostInfo.gpus.every((g) => g.shortName === "MI300X" && g.serial !== "")).toBe(true);
    expect(report.gpus.every((g) => g.shortName === "MI300X")).toBe(true);
  });

  it("garbled nvidia-smi: no GPUs, a warning, everything else reported", async () => {
    const deps = fakeDeps({ paths: ["/dev/nvidiactl"], commands: { [NVIDIA_SMI]: ok(fixture("nvidia-smi-garbled.txt")) } });
    const report = await collectHostReport(deps);
    expect(report.hostInfo.gpus).toEqual([]);
    expect(report.hostInfo.cpus).toBe(8);
    expect(report.hostInfo.dockerVersion).toBe("28.2.2");
    expect(report.vendor).toBe(GpuVendor.NVIDIA);
    expect(report.warnings.join("\n")).toMatch(/GPU discovery failed.*nvidia-smi output not understood/);
    expect(deps.warnings).toEqual(report.warnings);
  });

  it("missing nvidia-smi and no runtime: warnings, no crash", async () => {
    const deps = fakeDeps({ paths: ["/dev/nvidiactl"], commands: { [NVIDIA_SMI]: "missing" } });
    const report = await collectHostReport(deps);
    expect(report.hostInfo.gpus).toEqual([]);
    expect(report.hostInfo.gpuRuntimeAvailable).toBe(false);
    expect(report.warnings.join("\n")).toMatch(/nvidia-smi not found/);
  });

  it("driver not loaded (nvidia-smi exit 9)", async () => {
    const deps = fakeDeps({ paths: ["/dev/nvidiactl"], commands: { [NVIDIA_SMI]: fail(9, fixture("nvidia-smi-no-driver.txt")) } });
    const report = await collectHostReport(deps);
    expect(report.hostInfo.gpus).toEqual([]);
    expect(report.warnings.join("\n")).toMatch(/nvidia-smi failed \(exit 9\)/);
  });

  it("no accelerator: no GPU tool is run", async () => {
    const deps = fakeDeps();
    const info = await collectHostInfo(deps);
    expect(info.gpus).toEqual([]);
    expect(info.gpuRuntimeAvailable).toBe(false);
    expect(deps.calls).toEqual([]);
  });

  it("Docker unreachable: empty version, disk measured at /", async () => {
    const statfsPaths: string[] = [];
    const deps = fakeDeps(
      {},
      {
        docker: { version: async () => Promise.reject(new Error("connect ENOENT /var/run/docker.sock")), info: async () => ({}) },
        statfs: async (p) => (statfsPaths.push(p), { bsize: 512n, blocks: 10n, bavail: 5n }),
      },
    );
    const report = await collectHostReport(deps);
    expect(report.hostInfo.dockerVersion).toBe("");
    expect(report.hostInfo.diskTotalBytes).toBe(5120n);
    expect(statfsPaths).toEqual(["/"]);
    expect(report.warnings.join("\n")).toMatch(/Docker unreachable: connect ENOENT/);
  });

  it("an unreadable disk path is measured at its nearest readable ancestor", async () => {
    const tried: string[] = [];
    const deps = fakeDeps(
      {},
      {
        statfs: async (p) => {
          tried.push(p);
          if (p !== "/var/lib") throw Object.assign(new Error("EACCES"), { code: "EACCES" });
          return { bsize: 4096n, blocks: 2n, bavail: 1n };
        },
      },
    );
    const info = await collectHostInfo(deps, { diskPath: "/var/lib/docker/" });
    expect(tried).toEqual(["/var/lib/docker/", "/var/lib"]);
    expect(info.diskTotalBytes).toBe(8192n);
  });
});

describe("helpers", () => {
  it("parseOsRelease", () => {
    expect(parseOsRelease('NAME="Debian GNU/Linux"\nVERSION_ID="12"\n# comment\nID=debian\nX=\'a b\'')).toEqual({
      NAME: "Debian GNU/Linux",
      VERSION_ID: "12",
      ID: "debian",
      X: "a b",
    });
  });

  it("goArch", () => {
    expect(goArch("x64")).toBe("amd64");
    expect(goArch("arm64")).toBe("arm64");
  });

  it("isPrivateAddress", () => {
    for (const ip of ["10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "fd00::2", "fc00::1"]) expect(isPrivateAddress(ip)).toBe(true);
    for (const ip of ["172.32.0.1", "8.8.8.8", "192.0.2.2", "2001:db8::1"]) expect(isPrivateAddress(ip)).toBe(false);
  });

  it("networkAddresses skips loopback and IPv6 link-local", () => {
    expect(networkAddresses(IFACES).map((a) => a.ip)).toEqual(["10.0.0.5", "203.0.113.7", "fd12::7"]);
  });
});
