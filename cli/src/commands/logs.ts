// `dstack logs RUN`: the job's stored output (stdout to stdout, stderr to stderr); with -f it
// keeps following until the run finishes, across retries and reconnects.
import type { Command } from "commander";
import { parseSince } from "../client/logs.js";
import type { CliIO } from "../io.js";
import { clientFor, parseCount, withProject, type ProjectOptions } from "./common.js";

interface LogsOptions extends ProjectOptions {
  follow?: boolean;
  since?: string;
  diagnose?: boolean;
  replica?: string;
  job?: string;
}

export function registerLogs(program: Command, io: CliIO): void {
  withProject(
    program
      .command("logs")
      .description("show a run's logs")
      .argument("<run>", "the run name")
      .option("-f, --follow", "keep streaming new output until the run finishes (Ctrl-C stops)")
      .option("--since <time>", "only logs newer than this: a duration (10s, 5m, 1d) or an RFC 3339 time")
      .option("-d, --diagnose", "show the runner's diagnostic logs instead of the job's output")
      .option("--replica <n>", "the replica number (default 0)")
      .option("--job <n>", "the job number inside the replica (default 0)"),
  ).action(async (run: string, options: LogsOptions) => {
    const since = options.since ? parseSince(options.since) : undefined;
    const client = clientFor(io, options);
    // Fail on an unknown run before waiting on a stream.
    await client.runs.get(run);
    const ac = new AbortController();
    const stop = io.onInterrupt?.(() => ac.abort());
    try {
      for await (const e of client.runs.logs(run, {
        follow: options.follow ?? false,
        diagnose: options.diagnose ?? false,
        signal: ac.signal,
        ...(since ? { since } : {}),
        ...(options.replica ? { replica: parseCount("--replica", options.replica) } : {}),
        ...(options.job ? { job: parseCount("--job", options.job) } : {}),
      })) {
        (e.source === "stderr" ? io.stderr : io.stdout).write(e.message);
      }
    } catch (e) {
      if (!ac.signal.aborted) throw e;
    } finally {
      stop?.();
    }
  });
}
