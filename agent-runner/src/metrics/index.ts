// GetMetrics: one sample of the container's CPU, memory and GPUs.
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { GetMetricsResultSchema, type GetMetricsResult } from "@dstack/proto/agent";
import { readCgroup } from "./cgroup.js";
import { sampleGpus } from "./gpu.js";

export { readCgroup, parseFlatKeyed, type CgroupSample } from "./cgroup.js";
export { parseNvidiaSmi, sampleGpus, type GpuSample } from "./gpu.js";

export async function collectMetrics(o: { cgroupRoot?: string; nvidiaSmi?: string } = {}): Promise<GetMetricsResult> {
  const cg = readCgroup(o.cgroupRoot);
  const gpus = await sampleGpus(o.nvidiaSmi);
  return create(GetMetricsResultSchema, {
    timestamp: timestampNow(),
    cpuUsageMicros: BigInt(cg.cpuUsageMicros),
    memoryUsageBytes: BigInt(cg.memoryUsageBytes),
    memoryWorkingSetBytes: BigInt(cg.memoryWorkingSetBytes),
    gpus: gpus.map((g) => ({ memoryUsageBytes: BigInt(g.memoryUsageBytes), utilPercent: g.utilPercent })),
  });
}
