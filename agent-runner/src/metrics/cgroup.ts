// CPU and memory of the container from its cgroup: v2 (cpu.stat, memory.current, memory.stat)
// or, on older hosts, v1 (cpuacct.usage, memory.usage_in_bytes). Working set = usage minus
// inactive page cache, as docker stats and the kubelet compute it.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export interface CgroupSample {
  version: 1 | 2;
  cpuUsageMicros: number;
  memoryUsageBytes: number;
  memoryWorkingSetBytes: number;
}

/** `key value` lines (cpu.stat, memory.stat) into numbers. */
export function parseFlatKeyed(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && /^\d+$/.test(v)) out.set(k, Number(v));
  }
  return out;
}

const readNum = (path: string): number => {
  const t = readFileSync(path, "utf8").trim();
  if (!/^\d+$/.test(t)) throw new Error(`${path}: not a number: '${t.slice(0, 40)}'`);
  return Number(t);
};

const firstExisting = (paths: string[]): string | undefined => paths.find((p) => existsSync(p));

/** Reads the sample under `root` (default /sys/fs/cgroup); throws when neither layout is there. */
export function readCgroup(root = "/sys/fs/cgroup"): CgroupSample {
  if (existsSync(join(root, "cgroup.controllers")) || existsSync(join(root, "cpu.stat"))) {
    const cpu = parseFlatKeyed(readFileSync(join(root, "cpu.stat"), "utf8"));
    const usage = readNum(join(root, "memory.current"));
    const stat = parseFlatKeyed(readFileSync(join(root, "memory.stat"), "utf8"));
    const inactive = stat.get("inactive_file") ?? 0;
    return { version: 2, cpuUsageMicros: cpu.get("usage_usec") ?? 0, memoryUsageBytes: usage, memoryWorkingSetBytes: Math.max(0, usage - inactive) };
  }
  const cpuFile = firstExisting(["cpuacct/cpuacct.usage", "cpu,cpuacct/cpuacct.usage", "cpuacct,cpu/cpuacct.usage"].map((p) => join(root, p)));
  const memDir = join(root, "memory");
  if (!cpuFile || !existsSync(join(memDir, "memory.usage_in_bytes"))) throw new Error(`no cgroup v1 or v2 accounting files under ${root}`);
  const usage = readNum(join(memDir, "memory.usage_in_bytes"));
  const stat = parseFlatKeyed(readFileSync(join(memDir, "memory.stat"), "utf8"));
  const inactive = stat.get("total_inactive_file") ?? stat.get("inactive_file") ?? 0;
  return {
    version: 1,
    cpuUsageMicros: Math.floor(readNum(cpuFile) / 1000), // nanoseconds in v1
    memoryUsageBytes: usage,
    memoryWorkingSetBytes: Math.max(0, usage - inactive),
  };
}
