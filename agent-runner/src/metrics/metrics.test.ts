import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { collectMetrics } from "./index.js";
import { parseFlatKeyed, readCgroup } from "./cgroup.js";
import { parseAmdSmiMetric, parseNvidiaSmi, parseRocmSmi, sampleGpus } from "./gpu.js";

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "fixtures");

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

  it("builds a GetMetrics result from the cgroup and no GPUs when no GPU tool is there", async () => {
    const m = await collectMetrics({ cgroupRoot: tree(V2), gpuTools: { nvidiaSmi: "/no/such/nvidia-smi", amdSmi: "/no/such/amd-smi", rocmSmi: "/no/such/rocm-smi" } });
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

  describe("AMD (recorded outputs in fixtures/)", () => {
    const fixture = (name: string) => readFileSync(join(FIXTURES, name), "utf8");
    const MB = 1048576;

    it("amd-smi metric --json of ROCm 6 (a top-level array): gfx_activity % and used_vram MiB per GPU", () => {
      expect(parseAmdSmiMetric(fixture("amd-smi-metric-mi300x-8-rocm6.json"))).toEqual([
        { utilPercent: 100, memoryUsageBytes: 181730 * MB },
        { utilPercent: 99, memoryUsageBytes: 181730 * MB },
        { utilPercent: 100, memoryUsageBytes: 181728 * MB },
        { utilPercent: 98, memoryUsageBytes: 181730 * MB },
        ...Array.from({ length: 4 }, () => ({ utilPercent: 0, memoryUsageBytes: 283 * MB })),
      ]);
    });

    it("amd-smi metric --json of ROCm 7 (wrapped in gpu_data); an N/A reading counts as 0", () => {
      const g = parseAmdSmiMetric(fixture("amd-smi-metric-mi300x-8-rocm7.json"));
      expect(g).toHaveLength(8);
      expect(g.slice(0, 4)).toEqual([
        { utilPercent: 87, memoryUsageBytes: 150022 * MB },
        { utilPercent: 91, memoryUsageBytes: 150022 * MB },
        { utilPercent: 0, memoryUsageBytes: 283 * MB },
        { utilPercent: 0, memoryUsageBytes: 283 * MB },
      ]);
    });

    it("skips warning lines before the JSON and rejects a truncated document", () => {
      expect(parseAmdSmiMetric("WARNING: User is missing the following required groups: render\n" + fixture("amd-smi-metric-mi300x-8-rocm6.json"))).toHaveLength(8);
      expect(() => parseAmdSmiMetric(fixture("amd-smi-garbled.txt"))).toThrow();
      expect(() => parseAmdSmiMetric('{"error": "no GPUs"}')).toThrow("amd-smi printed neither a GPU list nor {gpu_data: [...]}");
    });

    it("rocm-smi --showuse --showmeminfo vram --json: GPU use % and used VRAM bytes per card", () => {
      expect(parseRocmSmi(fixture("rocm-smi-use-vram-mi210-2.json"))).toEqual([
        { utilPercent: 63, memoryUsageBytes: 34359738368 },
        { utilPercent: 0, memoryUsageBytes: 11452416 },
      ]);
      // The shim's static recording: used VRAM there, no "GPU use (%)", the "system" entry skipped.
      expect(parseRocmSmi(fixture("rocm-smi-static-mi210-2.json"))).toEqual([
        { utilPercent: 0, memoryUsageBytes: 11452416 },
        { utilPercent: 0, memoryUsageBytes: 11452416 },
      ]);
    });

    it("without nvidia-smi, runs amd-smi with its metric query; a failing amd-smi falls back to rocm-smi", async () => {
      const dir = mkdtempSync(join(tmpdir(), "amd-"));
      const amd = join(dir, "amd-smi");
      writeFileSync(amd, `#!/bin/sh\n[ "$*" = "metric --usage --mem-usage --json" ] && cat ${join(FIXTURES, "amd-smi-metric-mi300x-8-rocm7.json")}\n`, { mode: 0o755 });
      const rocm = join(dir, "rocm-smi");
      writeFileSync(rocm, `#!/bin/sh\n[ "$*" = "--showuse --showmeminfo vram --json" ] && cat ${join(FIXTURES, "rocm-smi-use-vram-mi210-2.json")}\n`, { mode: 0o755 });
      const g = await sampleGpus({ nvidiaSmi: join(dir, "nvidia-smi"), amdSmi: amd, rocmSmi: rocm });
      expect(g[0]).toEqual({ utilPercent: 87, memoryUsageBytes: 150022 * MB });
      const broken = join(dir, "amd-smi-broken");
      writeFileSync(broken, "#!/bin/sh\necho 'AMD SMI is not initialized' >&2; exit 1\n", { mode: 0o755 });
      expect(await sampleGpus({ nvidiaSmi: join(dir, "nvidia-smi"), amdSmi: broken, rocmSmi: rocm })).toEqual([
        { utilPercent: 63, memoryUsageBytes: 34359738368 },
        { utilPercent: 0, memoryUsageBytes: 11452416 },
      ]);
    });
  });
});
