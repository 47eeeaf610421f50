// `dstack metrics`: a running job's CPU, memory and GPU usage, read live from its runner over the
// runner's link (the runner samples cgroups and nvidia-smi). CPU percent needs two readings of the
// cumulative CPU counter, so each request takes two samples ~200 ms apart and answers one sample.
// The runner links are handed in once the agent port is up (`useRunners`), so this service does not
// depend on the mesh module; the job lookup and its authorization are the tunnels service's.
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { GetMetricsCommandSchema, type GetMetricsCommand, type GetMetricsResult } from "@dstack/proto/agent";
import { err } from "../errors.js";
import type { TunnelsService } from "./tunnels.js";
import type { Principal } from "./users.js";

/** The runner links (the mesh's `Links` satisfies it). */
export interface RunnerLinks {
  runner(jobSubmissionId: string): {
    readonly connected: boolean;
    call(command: { case: "getMetrics"; value: GetMetricsCommand }, opts: { deadlineMs: number }): Promise<GetMetricsResult>;
  };
}

export interface JobMetricsRequest {
  projectName: string;
  runName: string;
  replicaNum: number;
  jobNum: number;
}

export interface MetricsSampleView {
  timestamp: Date;
  /** Percent of one CPU (200 = two CPUs busy). */
  cpuUsagePercent: number;
  memoryUsageBytes: bigint;
  memoryWorkingSetBytes: bigint;
  gpus: { utilPercent: number; memoryUsageBytes: bigint }[];
}

export interface JobMetricsView {
  runName: string;
  jobSubmissionId: string;
  /** Newest first (one live sample). */
  samples: MetricsSampleView[];
}

/** Each runner call's time budget. */
export const METRICS_CALL_DEADLINE_MS = 5_000;
/** Time between the two CPU readings. */
export const CPU_SAMPLE_GAP_MS = 200;

export class MetricsService {
  private links: RunnerLinks | null = null;

  constructor(private readonly tunnels: TunnelsService) {}

  /** Sets how runners are reached (the agent port's links). Until then, reading fails with Unavailable. */
  useRunners(links: RunnerLinks): void {
    this.links = links;
  }

  /** Authorizes (project member), finds the running job, and samples it twice for a CPU percentage. */
  async jobMetrics(actor: Principal, r: JobMetricsRequest): Promise<JobMetricsView> {
    const job = await this.tunnels.resolve(actor, r, { operation: "runs.list", need: "metrics need" });
    const fail = (reason: string) => err("DSTACK_RUNNER_UNREACHABLE", { run: job.runName, reason });
    if (!this.links) throw fail("this server has no agent port");
    const link = this.links.runner(job.jobSubmissionId);
    if (!link.connected) throw fail("the job's runner is not connected to the server");
    const sample = async (): Promise<GetMetricsResult> => {
      try {
        return await link.call({ case: "getMetrics", value: create(GetMetricsCommandSchema) }, { deadlineMs: METRICS_CALL_DEADLINE_MS });
      } catch (e) {
        throw fail(e instanceof Error ? e.message : String(e));
      }
    };
    const first = await sample();
    await new Promise((resolve) => setTimeout(resolve, CPU_SAMPLE_GAP_MS));
    const second = await sample();
    const t1 = first.timestamp ? timestampMs(first.timestamp) : 0;
    const t2 = second.timestamp ? timestampMs(second.timestamp) : 0;
    const elapsedMicros = (t2 - t1) * 1000;
    const cpuMicros = Number(second.cpuUsageMicros - first.cpuUsageMicros);
    const cpuUsagePercent = elapsedMicros > 0 && cpuMicros >= 0 ? Math.round((cpuMicros / elapsedMicros) * 10_000) / 100 : 0;
    return {
      runName: job.runName,
      jobSubmissionId: job.jobSubmissionId,
      samples: [
        {
          timestamp: t2 > 0 ? new Date(t2) : new Date(),
          cpuUsagePercent,
          memoryUsageBytes: second.memoryUsageBytes,
          memoryWorkingSetBytes: second.memoryWorkingSetBytes,
          gpus: second.gpus.map((g) => ({ utilPercent: g.utilPercent, memoryUsageBytes: g.memoryUsageBytes })),
        },
      ],
    };
  }
}
