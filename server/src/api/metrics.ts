// MetricsService → services.metrics: a running job's live CPU, memory and GPU usage.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { MetricsService } from "@dstack/proto/api";
import { caller } from "./context.js";
import type { HandlerDeps } from "./deps.js";
import { requireText } from "./validate.js";

export function metricsHandlers({ services }: HandlerDeps): Partial<ServiceImpl<typeof MetricsService>> {
  return {
    async getJobMetrics(req, ctx) {
      requireText("project_name", req.projectName);
      requireText("run_name", req.runName);
      const view = await services.metrics.jobMetrics(caller(ctx), { projectName: req.projectName, runName: req.runName, replicaNum: req.replicaNum, jobNum: req.jobNum });
      return {
        samples: view.samples.map((s) => ({
          timestamp: timestampFromDate(s.timestamp),
          cpuUsagePercent: s.cpuUsagePercent,
          memoryUsageBytes: s.memoryUsageBytes,
          memoryWorkingSetBytes: s.memoryWorkingSetBytes,
          gpus: s.gpus,
        })),
        memoryTotalBytes: 0n,
        gpuMemoryTotalBytes: [],
      };
    },
  };
}
