import { describe, expect, it } from "vitest";
import {
  GrammarError,
  parseCpuSpec,
  parseDiskSpec,
  parseDuration,
  parseEnv,
  parseFileMapping,
  parseGpuSpec,
  parseIdleDuration,
  parseMemory,
  parseMemoryRange,
  parseOffDuration,
  parsePort,
  parseRange,
  parseRepoSpec,
  parseVolumeMount,
  validateCron,
} from "./grammar.js";

describe("ranges", () => {
  it("reads N, A..B, A.., ..B and {min, max}", () => {
    expect(parseRange(4)).toEqual({ min: 4, max: 4 });
    expect(parseRange("2..8")).toEqual({ min: 2, max: 8 });
    expect(parseRange("2 .. 8")).toEqual({ min: 2, max: 8 });
    expect(parseRange("2..")).toEqual({ min: 2 });
    expect(parseRange("..8")).toEqual({ max: 8 });
    expect(parseRange({ min: 1 })).toEqual({ min: 1 });
  });
  it("rejects an empty range, reversed bounds and junk", () => {
    expect(() => parseRange("..")).toThrow("Invalid empty range");
    expect(() => parseRange("8..2")).toThrow("Invalid range order: 8..2");
    expect(() => parseRange("1..2..3")).toThrow(GrammarError);
    expect(() => parseRange("x")).toThrow("Invalid count");
    expect(() => parseRange(2.5)).toThrow("Invalid count");
  });
});

describe("memory", () => {
  it("converts MB, GB and TB to GB, case-insensitively; bare numbers are GB", () => {
    expect(parseMemory("512MB")).toBe(0.5);
    expect(parseMemory("16GB")).toBe(16);
    expect(parseMemory("1tb")).toBe(1024);
    expect(parseMemory(24)).toBe(24);
    expect(parseMemory("1.5GB")).toBe(1.5);
    expect(parseMemoryRange("24GB..80GB")).toEqual({ min: 24, max: 80 });
  });
  it("rejects unknown units", () => {
    expect(() => parseMemory("16GiB")).toThrow("Invalid memory size");
    expect(() => parseMemory("lots")).toThrow("Invalid memory size");
  });
});

describe("gpu spec", () => {
  it("reads name:memory:count in any order", () => {
    expect(parseGpuSpec("A100:80GB:2")).toEqual({ names: ["A100"], memory: { min: 80, max: 80 }, count: { min: 2, max: 2 } });
    expect(parseGpuSpec("2:A100")).toEqual({ names: ["A100"], count: { min: 2, max: 2 } });
  });
  it("reads vendor, memory ranges and count ranges", () => {
    expect(parseGpuSpec("nvidia:24GB..:1..2")).toEqual({ vendor: "nvidia", memory: { min: 24 }, count: { min: 1, max: 2 } });
    expect(parseGpuSpec("amd:MI300X:8")).toEqual({ vendor: "amd", names: ["MI300X"], count: { min: 8, max: 8 } });
    expect(parseGpuSpec("tpu:v5e-8")).toEqual({ vendor: "google", names: ["v5e-8"], count: { min: 1 } });
    expect(parseGpuSpec("tt")).toEqual({ vendor: "tenstorrent", count: { min: 1 } });
  });
  it("reads name alternatives and a bare count", () => {
    expect(parseGpuSpec("A10G,A100")).toEqual({ names: ["A10G", "A100"], count: { min: 1 } });
    expect(parseGpuSpec(2)).toEqual({ count: { min: 2, max: 2 } });
    expect(parseGpuSpec("24GB")).toEqual({ memory: { min: 24, max: 24 }, count: { min: 1 } });
  });
  it("drops the deprecated tpu- prefix and implies google", () => {
    expect(parseGpuSpec("tpu-v5e-8")).toEqual({ vendor: "google", names: ["v5e-8"], count: { min: 1 } });
  });
  it("rejects duplicate token kinds and empty tokens", () => {
    expect(() => parseGpuSpec("A100:H100")).toThrow("name conflict");
    expect(() => parseGpuSpec("1:2")).toThrow("count conflict");
    expect(() => parseGpuSpec("nvidia:amd")).toThrow("vendor conflict");
    expect(() => parseGpuSpec("24GB:80GB")).toThrow("memory conflict");
    expect(() => parseGpuSpec("A100::2")).toThrow("empty token");
    expect(() => parseGpuSpec("A100,")).toThrow("empty");
  });
});

describe("cpu spec", () => {
  it("reads counts, ranges and arch tokens", () => {
    expect(parseCpuSpec(8)).toEqual({ count: { min: 8, max: 8 } });
    expect(parseCpuSpec("2..8")).toEqual({ count: { min: 2, max: 8 } });
    expect(parseCpuSpec("x86:16")).toEqual({ arch: "x86", count: { min: 16, max: 16 } });
    expect(parseCpuSpec("8..:arm")).toEqual({ arch: "arm", count: { min: 8 } });
    expect(parseCpuSpec("arm")).toEqual({ arch: "arm", count: { min: 2 } });
    expect(parseCpuSpec({ min: 4 })).toEqual({ count: { min: 4 } });
    expect(parseCpuSpec({ arch: "arm", count: "4.." })).toEqual({ arch: "arm", count: { min: 4 } });
  });
  it("rejects unknown arches and conflicts", () => {
    expect(() => parseCpuSpec("risc:4")).toThrow("Invalid CPU architecture");
    expect(() => parseCpuSpec("4:8")).toThrow("count conflict");
    expect(() => parseCpuSpec("x86:arm")).toThrow("arch conflict");
  });
});

describe("disk", () => {
  it("reads a bare size or {size}", () => {
    expect(parseDiskSpec("100GB..")).toEqual({ size: { min: 100 } });
    expect(parseDiskSpec({ size: "1TB" })).toEqual({ size: { min: 1024, max: 1024 } });
    expect(() => parseDiskSpec({ sise: 1 })).toThrow("Unknown disk field");
  });
});

describe("durations", () => {
  it("reads seconds and unit suffixes", () => {
    expect(parseDuration(90)).toBe(90);
    expect(parseDuration("90")).toBe(90);
    expect(parseDuration("30s")).toBe(30);
    expect(parseDuration("5m")).toBe(300);
    expect(parseDuration("2h")).toBe(7200);
    expect(parseDuration("1d")).toBe(86400);
    expect(parseDuration("1w")).toBe(604800);
    expect(() => parseDuration("2 hours")).toThrow("Cannot parse the duration");
  });
  it("handles off", () => {
    expect(parseOffDuration("off")).toBe("off");
    expect(parseOffDuration(false)).toBe("off");
    expect(parseOffDuration(true)).toBeUndefined();
    expect(() => parseOffDuration(-5)).toThrow("negative");
    expect(parseIdleDuration(-1)).toBe("off");
    expect(parseIdleDuration("3d")).toBe(259200);
  });
});

describe("ports", () => {
  it("reads every form", () => {
    expect(parsePort(8080)).toEqual({ localPort: 8080, containerPort: 8080 });
    expect(parsePort("8080")).toEqual({ localPort: 8080, containerPort: 8080 });
    expect(parsePort("3000:8080")).toEqual({ localPort: 3000, containerPort: 8080 });
    expect(parsePort("*:8080")).toEqual({ containerPort: 8080 });
    expect(parsePort({ container_port: 80 })).toEqual({ containerPort: 80 });
    expect(parsePort({ local_port: 1, container_port: 80 })).toEqual({ localPort: 1, containerPort: 80 });
  });
  it("rejects bad ports", () => {
    expect(() => parsePort(0)).toThrow("1..65535");
    expect(() => parsePort("70000")).toThrow("1..65535");
    expect(() => parsePort("a:b")).toThrow("Invalid port mapping");
  });
});

describe("volume mounts", () => {
  it("tells network volumes from instance paths", () => {
    expect(parseVolumeMount("my-vol:/data")).toEqual({ kind: "network", names: ["my-vol"], path: "/data" });
    expect(parseVolumeMount("/mnt/cache:/root/.cache/")).toEqual({ kind: "instance", instancePath: "/mnt/cache", path: "/root/.cache", optional: false });
    expect(parseVolumeMount({ name: ["a", "b"], path: "/x" })).toEqual({ kind: "network", names: ["a", "b"], path: "/x" });
    expect(parseVolumeMount({ instance_path: "/a", path: "/b", optional: true })).toEqual({ kind: "instance", instancePath: "/a", path: "/b", optional: true });
    expect(parseVolumeMount("vol-${{ dstack.node_rank }}:/data")).toMatchObject({ names: ["vol-${{ dstack.node_rank }}"] });
  });
  it("requires absolute paths without ..", () => {
    expect(() => parseVolumeMount("vol:data")).toThrow("must be absolute");
    expect(() => parseVolumeMount("vol:/a/../b")).toThrow(".. is not allowed");
    expect(() => parseVolumeMount("a:b:c")).toThrow("SOURCE:PATH");
  });
});

describe("files, repos and env", () => {
  it("reads file mappings, including Windows drives", () => {
    expect(parseFileMapping("src")).toEqual({ localPath: "src", path: "src" });
    expect(parseFileMapping("../data:/data")).toEqual({ localPath: "../data", path: "/data" });
    expect(parseFileMapping("C:\\work\\x:/x")).toEqual({ localPath: "C:\\work\\x", path: "/x" });
    expect(() => parseFileMapping("a:C:\\x")).toThrow();
  });
  it("reads repos as paths or URLs with an optional container path", () => {
    expect(parseRepoSpec(".")).toEqual({ localPath: ".", path: ".", ifExists: "error" });
    expect(parseRepoSpec("..:/repo")).toEqual({ localPath: "..", path: "/repo", ifExists: "error" });
    expect(parseRepoSpec("https://github.com/dstackai/dstack")).toEqual({ url: "https://github.com/dstackai/dstack", path: ".", ifExists: "error" });
    expect(parseRepoSpec("git@github.com:dstackai/dstack.git:/src")).toEqual({ url: "git@github.com:dstackai/dstack.git", path: "/src", ifExists: "error" });
  });
  it("reads env lists and maps; bare keys come from the CLI", () => {
    expect(parseEnv(["A=1", "B", "C="])).toEqual({ values: { A: "1", C: "" }, fromCli: ["B"] });
    expect(parseEnv({ PORT: 8080, DEBUG: true, TOKEN: "${{ secrets.t }}" })).toEqual({ values: { PORT: "8080", DEBUG: "true", TOKEN: "${{ secrets.t }}" }, fromCli: [] });
    expect(() => parseEnv(["A=1", "A=2"])).toThrow("Duplicate environment variable");
    expect(() => parseEnv(["1A=x"])).toThrow("Invalid environment variable name");
  });
  it("validates cron expressions", () => {
    expect(() => validateCron("0 8 * * mon-fri")).not.toThrow();
    expect(() => validateCron("*/15 0-6 1,15 jan *")).not.toThrow();
    expect(() => validateCron("0 8 * *")).toThrow("5 fields");
    expect(() => validateCron("61 * * * *")).toThrow("out of range");
  });
});
