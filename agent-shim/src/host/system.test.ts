// collectHostInfo on the machine running the tests, checked against independent readings.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, statfsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { collectHostReport } from "./collect.js";

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "";
  }
}

const dockerVersion = sh("docker", ["version", "--format", "{{.Server.Version}}"]);
const hasGpuDevice = ["/dev/nvidiactl", "/dev/dxg", "/dev/kfd", "/dev/accel", "/dev/tenstorrent"].some((p) => existsSync(p));

describe("collectHostInfo on this machine", () => {
  it("matches nproc, /proc/meminfo, df, ip and docker", async () => {
    const report = await collectHostReport({ warn: () => {} });
    const info = report.hostInfo;

    expect(info.cpus).toBe(Number(sh("nproc", ["--all"])));
    const memKib = /^MemTotal:\s+(\d+) kB/m.exec(readFileSync("/proc/meminfo", "utf8"))?.[1];
    expect(info.memoryBytes).toBe(BigInt(memKib!) * 1024n);
    expect(info.kernelVersion).toBe(sh("uname", ["-r"]));
    expect(info.arch).toBe({ x86_64: "amd64", aarch64: "arm64" }[sh("uname", ["-m"])] ?? sh("uname", ["-m"]));
    expect(info.hostname).toBe(sh("hostname", []));
    expect(info.cpuModel).not.toBe("");

    const osRelease = readFileSync("/etc/os-release", "utf8");
    expect(info.osName).toBe(/^NAME="?([^"\n]*)"?$/m.exec(osRelease)?.[1]);
    expect(info.osVersion).toBe(/^VERSION_ID="?([^"\n]*)"?$/m.exec(osRelease)?.[1] ?? "");

    // Docker's data root when Docker answers, else "/"; free space moves, so allow slack.
    expect(info.dockerVersion).toBe(dockerVersion);
    const root = dockerVersion ? sh("docker", ["info", "--format", "{{.DockerRootDir}}"]) : "/";
    const fs = statfsSync(root, { bigint: true });
    expect(info.diskTotalBytes).toBe(fs.blocks * fs.bsize);
    const free = fs.bavail * fs.bsize;
    expect(info.diskFreeBytes > free - 2n ** 30n && info.diskFreeBytes < free + 2n ** 30n).toBe(true);

    // Global-scope addresses as `ip` lists them (interfaces that are up).
    const ipOut = sh("ip", ["-o", "addr", "show", "scope", "global", "up"]);
    if (ipOut !== "") {
      const expected = ipOut
        .split("\n")
        .map((l) => /^\d+:\s+(\S+)\s+inet6?\s+([^/\s]+)\/(\d+)/.exec(l))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => `${m[1]} ${m[2]}/${m[3]}`);
      const got = info.addresses.map((a) => `${a.interface} ${a.ip}/${a.prefixLength}`);
      for (const g of got) expect(expected).toContain(g);
      expect(got.length).toBeGreaterThan(0);
    }
    expect(info.addresses.some((a) => a.ip === "127.0.0.1" || a.ip === "::1")).toBe(false);

    if (!hasGpuDevice) {
      expect(info.gpus).toEqual([]);
      expect(info.gpuRuntimeAvailable).toBe(false);
    } else if (existsSync("/dev/nvidiactl")) {
      // On a lent GPU machine: the same GPUs nvidia-smi -L lists, with their UUIDs.
      const listed = sh("nvidia-smi", ["-L"]).split("\n").filter((l) => l.startsWith("GPU "));
      expect(info.gpus.map((g) => g.uuid)).toEqual(listed.map((l) => /\(UUID: (GPU-[^)]+)\)/.exec(l)?.[1]));
      expect(info.gpus.every((g) => g.memoryBytes > 0n && g.name !== "")).toBe(true);
    }
  });
});
