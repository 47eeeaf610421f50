import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { collectMetrics } from "./index.js";
import { parseFlatKeyed, readCgroup } from "./cgroup.js";
import { parseNvidiaSmi, sampleGpus } from "./gpu.js";

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), "cgroup-"));
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(join(root, p, ".."), { recursive: true });
    writeFileSync(join(root, p), text);
  }
  return root;
}

// Samples as the kernel writes them (cgroup v2 from a 6.x kernel, v1 from a 5.x docker host).
const V2 = {
  "cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
  "cpu.stat": "usage_usec 8123456\nuser_usec 6000000\nsystem_usec 2123456\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
  "memory.current": "209715200\n",
  "memory.stat": "anon 104857600\nfile 94371840\nkernel 5242880\nactive_file 31457280\ninactive_file 62914560\nslab 4194304\n",
};
const V1 = {
  "cpuacct/cpuacct.usage": "5123456789\n",
  "memory/memory.usage_in_bytes": "157286400\n",
  "memory/memory.stat": "cache 52428800\nrss 104857600\ninactive_file 1048576\ntotal_cache 52428800\ntotal_rss 104857600\ntotal_inactive_file 41943040\ntotal_active_file 10485760\n",
};

describe("cgroup metrics", () => {
  it("reads cgroup v2: usage_usec, memory.current, working set = current - inactive_file", () => {
    expect(readCgroup(tree(V2))).toEqual({ version: 2, cpuUsageMicros: 8123456, memoryUsageBytes: 209715200, memoryWorkingSetBytes: 209715200 - 62914560 });
  });

  it("falls back to cgroup v1: cpuacct.usage in ns, usage_in_bytes, total_inactive_file", () => {
    expect(readCgroup(tree(V1))).toEqual({ version: 1, cpuUsageMicros: 5123456, memoryUsageBytes: 157286400, memoryWorkingSetBytes: 157286400 - 41943040 });
  });

  it("finds v1 cpuacct under the combined cpu,cpuacct hierarchy", () => {
    const v1 = { ...V1, "cpu,cpuacct/cpuacct.usage": V1["cpuacct/cpuacct.usage"] } as Record<string, string>;
    delete v1["cpuacct/cpuacct.usage"];
    expect(readCgroup(tree(v1)).cpuUsageMicros).toBe(5123456);
  });

  it("never reports a negative working set", () => {
    expect(readCgroup(tree({ ...V2, "memory.stat": "inactive_file 999999999999\n" })).memoryWorkingSetBytes).toBe(0);
  });

  it("says so when there are no accounting files", () => {
    expect(() => readCgroup(tree({ "unrelated": "" }))).toThrow(/no cgroup v1 or v2 accounting files/);
  });

  it("parses flat keyed files, ignoring what is not a number", () => {
    expect([...parseFlatKeyed("a 1\nb x\n\nc 3 extra\n")]).toEqual([["a", 1], ["c", 3]]);
  });

  it("builds a GetMetrics result from the cgroup and no GPUs when nvidia-smi is absent", async () => {
    const m = await collectMetrics({ cgroupRoot: tree(V2), nvidiaSmi: "/no/such/nvidia-smi" });
    expect(m.cpuUsageMicros).toBe(8123456n);
    expect(m.memoryUsageBytes).toBe(209715200n);
    expect(m.gpus).toEqual([]);
    expect(m.timestamp).toBeDefined();
  });
});

describe("GPU metrics", () => {
  it("parses nvidia-smi csv (utilization %, memory MiB) per GPU", () => {
    expect(parseNvidiaSmi("45, 1024\n0, 0\n[N/A], 80\n")).toEqual([
      { utilPercent: 45, memoryUsageBytes: 1024 * 1048576 },
      { utilPercent: 0, memoryUsageBytes: 0 },
      { utilPercent: 0, memoryUsageBytes: 80 * 1048576 },
    ]);
  });

  it("runs the tool with the query dstack uses", async () => {
    const dir = mkdtempSync(join(tmpdir(), "smi-"));
    const fake = join(dir, "nvidia-smi");
    // A stand-in executable that echoes its arguments back as one GPU line when they match.
    writeFileSync(fake, '#!/bin/sh\n[ "$1" = "--query-gpu=utilization.gpu,memory.used" ] && [ "$2" = "--format=csv,noheader,nounits" ] && echo "77, 2048"\n', { mode: 0o755 });
    expect(await sampleGpus(fake)).toEqual([{ utilPercent: 77, memoryUsageBytes: 2048 * 1048576 }]);
  });
});
