// Runs as `dstack ps` and `dstack apply` show them: status words ("retrying", "no fleets",
// "exited (1)", decided by the server in status_message), the runs table, and the final message
// after attaching.
import { JobStatus, JobTerminationReason, RunStatus, type Job, type JobSubmission, type Run } from "@dstack/proto/api";
import { isJobFinished, isRunFinished, latestSubmission } from "../client/client.js";
import { formatBackend, formatInstanceResources, formatPrice, prettyDate } from "./resources.js";
import { noColor, type Palette } from "./style.js";
import { renderTable, type Cell, type Column, type Row } from "./table.js";
import { timestampDate } from "@bufbuild/protobuf/wkt";

const lower = (e: Record<number, string>, v: number) => (e[v] ?? "unknown").toLowerCase();

/** dstack's job status words ("exited (1)", "no fleets", "stopped", …): the server decides them (status_message). */
export function jobStatusText(s: JobSubmission | undefined): string {
  if (!s) return "-";
  return s.statusMessage || lower(JobStatus, s.status);
}

/** dstack's run status words ("retrying", "pulling", the last job's words once finished): the server's status_message. */
export function runStatusText(run: Run): string {
  return run.statusMessage || lower(RunStatus, run.status);
}

export function runName(run: Run): string {
  return run.runSpec?.runName ?? "";
}

function statusStyle(p: Palette, finished: boolean, text: string, status: RunStatus | JobStatus, isJob: boolean) {
  if (text === "no capacity" || text === "interrupted" || text === "retrying") return p.yellow;
  if (text === "no fleets" || text === "error" || text.startsWith("exited (") && text !== "exited (0)") return p.red;
  if (finished) return p.dim;
  const running = isJob ? status === JobStatus.RUNNING || status === JobStatus.PULLING : status === RunStatus.RUNNING;
  return (s: string) => p.bold(running ? p.green(s) : p.blue(s));
}

export interface RunsTableOptions {
  verbose?: boolean;
  palette?: Palette;
  now?: Date;
}

/**
 * `dstack ps`: NAME, BACKEND, RESOURCES, PRICE, STATUS, SUBMITTED (+ INSTANCE TYPE and ERROR
 * with verbose). A single-job run is one row; multi-job runs get a row per job under the run.
 */
export function formatRunsTable(runs: Run[], opts: RunsTableOptions = {}): string {
  const { columns, rows, headerStyle } = runsTableRows(runs, opts);
  return renderTable(columns, rows, { headerStyle });
}

/**
 * The runs table as lines (`dstack ui`): the header, and each row with the index (in `runs`) of
 * the run it belongs to, so a viewer can select runs. Same text as formatRunsTable.
 */
export function formatRunsTableLines(runs: Run[], opts: RunsTableOptions = {}): { header: string; rows: { run: number; text: string }[] } {
  const { columns, rows, owners, headerStyle } = runsTableRows(runs, opts);
  const [header = "", ...lines] = renderTable(columns, rows, { headerStyle }).replace(/\n$/, "").split("\n");
  return { header, rows: lines.map((text, i) => ({ run: owners[i]!, text })) };
}

function runsTableRows(runs: Run[], opts: RunsTableOptions): { columns: Column[]; rows: Row[]; owners: number[]; headerStyle: (s: string) => string } {
  const p = opts.palette ?? noColor;
  const verbose = opts.verbose ?? false;
  const columns: Column[] = [
    { header: "NAME" },
    { header: "BACKEND" },
    { header: "RESOURCES" },
    ...(verbose ? [{ header: "INSTANCE TYPE" }] : []),
    { header: "PRICE" },
    { header: "STATUS" },
    { header: "SUBMITTED" },
    ...(verbose ? [{ header: "ERROR" }] : []),
  ];
  const rows: Row[] = [];
  const date = (t: Parameters<typeof timestampDate>[0] | undefined) => prettyDate(t ? timestampDate(t) : undefined, opts.now);
  const owners: number[] = [];
  for (const [index, run] of runs.entries()) {
    const before = rows.length;
    const finished = isRunFinished(run);
    const runStatus = runStatusText(run);
    const runRow: Record<string, Cell> = {
      NAME: { text: runName(run), style: p.bold },
      BACKEND: { text: "-" },
      RESOURCES: { text: "-" },
      "INSTANCE TYPE": { text: "-" },
      PRICE: { text: "-" },
      STATUS: { text: runStatus, style: statusStyle(p, finished, runStatus, run.status, false) },
      SUBMITTED: { text: date(run.submittedAt), style: p.dim },
      ERROR: { text: run.error },
    };
    const jobs = run.jobs.length > 0 ? run.jobs : run.latestJobSubmission ? [{ jobSpec: undefined, jobSubmissions: [run.latestJobSubmission] } as unknown as Job] : [];
    const merge = jobs.length <= 1;
    if (!merge) rows.push(columns.map((c) => runRow[c.header] ?? { text: "" }));
    const showReplica = new Set(jobs.map((j) => j.jobSpec?.replicaNum ?? 0)).size > 1;
    for (const job of jobs) {
      const sub = job.jobSubmissions[job.jobSubmissions.length - 1];
      const pd = sub?.jobProvisioningData;
      const r = pd?.instanceType?.resources;
      const jobStatus = jobStatusText(sub);
      const nameParts = [showReplica ? `replica=${job.jobSpec?.replicaNum ?? 0}` : "", `job=${job.jobSpec?.jobNum ?? 0}`].filter(Boolean);
      const row: Record<string, Cell> = {
        NAME: { text: `   ${nameParts.join(" ")}` },
        BACKEND: { text: pd ? formatBackend(pd.backend, pd.region) : "-", style: p.dim },
        RESOURCES: { text: pd ? formatInstanceResources(r) : "-", style: p.dim },
        "INSTANCE TYPE": { text: pd?.instanceType?.name || pd?.instanceName || "-", style: p.dim },
        PRICE: { text: pd ? formatPrice(pd.price, r?.spot) : "-", style: p.dim },
        STATUS: { text: jobStatus, style: sub ? statusStyle(p, isJobFinished(sub.status), jobStatus, sub.status, true) : p.dim },
        SUBMITTED: { text: date(sub?.submittedAt), style: p.dim },
        ERROR: { text: sub ? sub.error || (sub.terminationReason ? lower(JobTerminationReason, sub.terminationReason) : "") : "" },
      };
      if (merge) {
        row.NAME = runRow.NAME!;
        row.SUBMITTED = runRow.SUBMITTED!;
        row.STATUS = runRow.STATUS!;
        if (run.error) row.ERROR = runRow.ERROR!;
      }
      rows.push(columns.map((c) => row[c.header] ?? { text: "" }));
    }
    if (jobs.length === 0) rows.push(columns.map((c) => runRow[c.header] ?? { text: "" }));
    for (let i = before; i < rows.length; i++) owners.push(index);
  }
  return { columns, rows, owners, headerStyle: p.bold };
}

/**
 * The line `dstack apply` prints when an attached run ends, e.g. "Exited (0)" or
 * "Failed: exited (3)", plus the termination details and where to look next.
 */
export function formatFinishedMessage(run: Run): { text: string; ok: boolean } {
  const sub = run.latestJobSubmission ?? latestSubmission(run);
  const status = runStatusText(run);
  const cap = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);
  if (run.status === RunStatus.DONE) return { text: `${cap(status)}\n`, ok: true };
  let text = `${cap(status)}`;
  const error = sub?.error || run.error;
  if (error) text += ` (${error})`;
  text += "\n";
  if (run.status !== RunStatus.FAILED) return { text, ok: false };
  if (sub?.terminationReasonMessage) text += `${sub.terminationReasonMessage}\n`;
  if (sub?.terminationReason && sub.terminationReason !== JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY) {
    text += `Check \`dstack logs -d ${runName(run)}\` for more details.\n`;
  }
  return { text, ok: false };
}
