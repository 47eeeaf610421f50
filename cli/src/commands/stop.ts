// `dstack stop RUN…`: a graceful stop (the job gets its stop_duration), or -x/--abort at once.
// Stopping is asynchronous: `dstack ps` shows terminating, then terminated.
import type { Command } from "commander";
import type { CliIO } from "../io.js";
import { confirm } from "../io.js";
import { clientFor, withProject, type ProjectOptions } from "./common.js";

interface StopOptions extends ProjectOptions {
  abort?: boolean;
  yes?: boolean;
}

export function registerStop(program: Command, io: CliIO): void {
  withProject(
    program
      .command("stop")
      .description("stop runs")
      .argument("<run...>", "the run names")
      .option("-x, --abort", "abort: kill at once instead of stopping gracefully")
      .option("-y, --yes", "do not ask for confirmation"),
  ).action(async (runs: string[], options: StopOptions) => {
    const client = clientFor(io, options);
    // Unknown names fail before anything is asked. With -y nothing is asked, and StopRuns
    // itself refuses the whole call (stopping none) when a name is unknown: one round trip less.
    if (!options.yes) for (const r of runs) await client.runs.get(r);
    const what = runs.length === 1 ? `the run ${runs[0]}` : `the runs ${runs.join(", ")}`;
    if (!(await confirm(io, `${options.abort ? "Abort" : "Stop"} ${what}?`, { yes: options.yes ?? false }))) {
      io.stdout.write("\nExiting...\n");
      return;
    }
    await client.runs.stop(runs, options.abort ?? false);
    io.stdout.write(options.abort ? "Aborted\n" : "Stopped\n");
  });
}
