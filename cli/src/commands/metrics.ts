// `dstack metrics RUN`: a running job's live CPU, memory and GPU usage as a table (NAME, STATUS, CPU,
// MEMORY, GPU), as JSON (--json), or redrawn every 2 s (-w).
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import type { GetJobMetricsResponse, Run } from "@dstack/proto/api";
import { runStatusText } from "../format/runs.js";
import { renderTable } from "../format/table.js";
import type { CliIO } from "../io.js";
import { clientFor, parseCount, printJson, withProject, redrawUntilInterrupted, type ProjectOptions } from "./common.js";

interface MetricsOptions extends ProjectOptions {
  replica?: string;
  job?: string;
  watch?: boolean;
  json?: boolean;
}

const mb = (bytes: bigint | number) => `${Math.round(Number(bytes) / 1_000_000)}MB`;
const gb = (bytes: bigint | number) => `${(Number(bytes) / 1e9).toFixed(1).replace(/\.0$/, "")}GB`;

/** The newest sample as script-friendly JSON (byte counts as numbers). */
export function metricsJson(runName: string, replica: number, job: number, status: string, m: GetJobMetricsResponse): Record<string, unknown> {
  const s = m.samples[0];
  return {
    run_name: runName,
    replica_num: replica,
    job_num: job,
    status,
    timestamp: s?.timestamp ? timestampDate(s.timestamp).toISOString() : null,
    cpu_usage_percent: s?.cpuUsagePercent ?? null,
    memory_usage_bytes: s ? Number(s.memoryUsageBytes) : null,
    memory_working_set_bytes: s ? Number(s.memoryWorkingSetBytes) : null,
    memory_total_bytes: m.memoryTotalBytes > 0n ? Number(m.memoryTotalBytes) : null,
    gpus: (s?.gpus ?? []).map((g, i) => ({
      index: i,
      util_percent: g.utilPercent,
      memory_usage_bytes: Number(g.memoryUsageBytes),
      memory_total_bytes: m.gpuMemoryTotalBytes[i] !== undefined ? Number(m.gpuMemoryTotalBytes[i]) : null,
    })),
  };
}

/** dstack's metrics table: one row for the job. */
export function formatMetricsTable(name: string, status: string, m: GetJobMetricsResponse): string {
  const s = m.samples[0];
  const cpu = s ? `${Math.round(s.cpuUsagePercent)}%` : "-";
  const memory = s ? (m.memoryTotalBytes > 0n ? `${mb(s.memoryUsageBytes)}/${mb(m.memoryTotalBytes)}` : mb(s.memoryUsageBytes)) : "-";
  const gpu =
    s && s.gpus.length > 0
      ? s.gpus
          .map((g, i) => {
            const total = m.gpuMemoryTotalBytes[i];
            return `gpu=${i} mem=${gb(g.memoryUsageBytes)}${total !== undefined ? `/${gb(total)}` : ""} util=${Math.round(g.utilPercent)}%`;
          })
          .join(", ")
      : "-";
  return renderTable([{ header: "NAME" }, { header: "STATUS" }, { header: "CPU" }, { header: "MEMORY" }, { header: "GPU" }], [[name, status, cpu, memory, gpu]]);
}

export function registerMetrics(program: Command, io: CliIO): void {
  withProject(
    program
      .command("metrics")
      .description("show a running job's CPU, memory and GPU usage")
      .argument("<run>", "the run name")
      .option("--replica <n>", "the replica number (default 0)")
      .option("--job <n>", "the job number inside the replica (default 0)")
      .option("-w, --watch", "redraw every 2 seconds (Ctrl-C exits)")
      .option("--json", "output JSON"),
  ).action(async (runName: string, options: MetricsOptions) => {
    const replica = options.replica ? parseCount("--replica", options.replica) : 0;
    const job = options.job ? parseCount("--job", options.job) : 0;
    const client = clientFor(io, options);
    const show = async () => {
      // Unknown runs fail here with the usual message; the metrics call says when it is not running.
      const run: Run = await client.runs.get(runName);
      const m = await client.runs.metrics(runName, { replica, job });
      const status = runStatusText(run);
      const name = replica > 0 || job > 0 ? `${runName} replica=${replica} job=${job}` : runName;
      if (options.json) printJson(io, metricsJson(runName, replica, job, status, m));
      else io.stdout.write(formatMetricsTable(name, status, m));
    };
    if (!options.watch) return show();
    return redrawUntilInterrupted(io, show);
  });
}
