// `dstack delete RUN…` deletes finished runs; `dstack delete -f FILE` deletes what the
// configuration describes (its run or fleet, by name), as dstack's `delete` does.
import type { Command } from "commander";
import { parseConfiguration } from "@dstack/proto";
import { isRunFinished } from "../client/client.js";
import { DstackError } from "../client/errors.js";
import { runStatusText } from "../format/runs.js";
import { CliError, confirm, type CliIO } from "../io.js";
import { loadConfigurationText } from "./apply.js";
import { clientFor, withProject, type ProjectOptions } from "./common.js";

interface DeleteOptions extends ProjectOptions {
  file?: string;
  yes?: boolean;
}

export function registerDelete(program: Command, io: CliIO): void {
  withProject(
    program
      .command("delete")
      .alias("destroy")
      .description("delete finished runs, or the run or fleet a configuration file describes (-f)")
      .argument("[run...]", "the run names")
      .option("-f, --file <path>", "delete the resource this configuration describes")
      .option("-y, --yes", "do not ask for confirmation"),
  ).action(async (runs: string[], options: DeleteOptions) => {
    const client = clientFor(io, options);
    if (options.file) {
      if (runs.length > 0) throw new CliError("Pass run names or -f FILE, not both.", 2);
      const { text, displayName } = await loadConfigurationText(options.file, io);
      const config = parseConfiguration(text, displayName);
      if (!config.name) throw new CliError(`${displayName} names no ${config.type} to delete (it has no \`name\`).`, 2);
      if (config.type === "fleet") {
        await client.fleets.get(config.name);
        if (!(await confirm(io, `Delete the fleet ${config.name}?`, { yes: options.yes ?? false }))) return void io.stdout.write("\nExiting...\n");
        await client.fleets.delete(config.name);
        io.stdout.write(`Fleet ${config.name} deleted\n`);
        return;
      }
      if (config.type === "volume" || config.type === "gateway") {
        const api = config.type === "volume" ? client.volumes : client.gateways;
        await api.get(config.name);
        if (!(await confirm(io, `Delete the ${config.type} ${config.name}?`, { yes: options.yes ?? false }))) return void io.stdout.write("\nExiting...\n");
        await api.delete(config.name);
        io.stdout.write(`${config.type === "volume" ? "Volume" : "Gateway"} ${config.name} deleted\n`);
        return;
      }
      runs = [config.name];
    }
    if (runs.length === 0) throw new CliError("Name the runs to delete, or pass -f FILE.", 2);
    for (const r of runs) {
      const run = await client.runs.get(r);
      if (!isRunFinished(run)) throw new DstackError("failed_precondition", `Run '${r}' is ${runStatusText(run)}; only finished runs can be deleted. Stop it first with \`dstack stop ${r}\`.`);
    }
    const what = runs.length === 1 ? `the run ${runs[0]}` : `the runs ${runs.join(", ")}`;
    if (!(await confirm(io, `Delete ${what}?`, { yes: options.yes ?? false }))) return void io.stdout.write("\nExiting...\n");
    await client.runs.delete(runs);
    io.stdout.write(`${runs.length === 1 ? `Run ${runs[0]}` : `Runs ${runs.join(", ")}`} deleted\n`);
  });
}
