// GetMetrics: one sample of the container's CPU, memory and GPUs (NVIDIA or AMD).
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { GetMetricsResultSchema, type GetMetricsResult } from "@dstack/proto/agent";
import { readCgroup } from "./cgroup.js";
import { sampleGpus, type GpuTools } from "./gpu.js";

export { readCgroup, parseFlatKeyed, type CgroupSample } from "./cgroup.js";
export { parseAmdSmiMetric, parseNvidiaSmi, parseRocmSmi, sampleGpus, type GpuSample, type GpuTools } from "./gpu.js";

export async function collectMetrics(o: { cgroupRoot?: string; gpuTools?: GpuTools } = {}): Promise<GetMetricsResult> {
  const cg = readCgroup(o.cgroupRoot);
  const gpus = await sampleGpus(o.gpuTools);
  return create(GetMetricsResultSchema, {
    timestamp: timestampNow(),
    cpuUsageMicros: BigInt(cg.cpuUsageMicros),
    memoryUsageBytes: BigInt(cg.memoryUsageBytes),
    memoryWorkingSetBytes: BigInt(cg.memoryWorkingSetBytes),
    gpus: gpus.map((g) => ({ memoryUsageBytes: BigInt(g.memoryUsageBytes), utilPercent: g.utilPercent })),
  });
}
