import { readFile } from "node:fs/promises";
import { resolve, relative } from "node:path";
import type { Command } from "commander";
import { parseConfiguration } from "@dstack/proto";
import { CliError, readAll, type CliIO } from "../io.js";
import { formatConfigurationSummary } from "../format/configuration.js";

interface ApplyOptions {
  file?: string;
  yes?: boolean;
  detach?: boolean;
  force?: boolean;
  dryRun?: boolean;
  name?: string;
  env: string[];
}

const DEFAULT_FILE = ".dstack.yml";

export function registerApply(program: Command, io: CliIO): void {
  program
    .command("apply")
    .description("apply a configuration: a task, service, dev environment, fleet, volume or gateway")
    .option("-f, --file <path>", `the configuration file (default: ./${DEFAULT_FILE}; - reads standard input)`)
    .option("-y, --yes", "do not ask for confirmation")
    .option("-d, --detach", "exit after submitting instead of attaching")
    .option("--force", "re-apply even if nothing changed")
    .option("--dry-run", "validate the configuration and show the plan without submitting")
    .option("-n, --name <name>", "override the configuration's name")
    .option("-e, --env <KEY[=VALUE]>", "set an environment variable (repeatable)", collect, [])
    .action(async (options: ApplyOptions) => {
      await apply(options, io);
    });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

async function apply(options: ApplyOptions, io: CliIO): Promise<void> {
  const { text, displayName } = await loadConfigurationText(options.file, io);
  const configuration = parseConfiguration(text, displayName);
  if (options.name) configuration.name = options.name;
  io.stdout.write(formatConfigurationSummary(configuration, displayName));
  if (options.dryRun) {
    io.stdout.write("Configuration is valid (dry run: nothing submitted).\n");
    return;
  }
  throw new CliError(
    "This dstack build cannot submit yet: it has no server connection. Use --dry-run to validate a configuration.",
    2,
  );
}

async function loadConfigurationText(file: string | undefined, io: CliIO): Promise<{ text: string; displayName: string }> {
  if (file === "-") {
    return { text: await readAll(io.stdin), displayName: "<stdin>" };
  }
  const path = resolve(io.cwd, file ?? DEFAULT_FILE);
  // Name the file as the user would: relative below the working directory, absolute elsewhere.
  const rel = relative(io.cwd, path);
  const displayName = rel && !rel.startsWith("..") ? rel : path;
  try {
    return { text: await readFile(path, "utf8"), displayName };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      throw new CliError(
        file ? `${displayName}: no such file` : `No ${DEFAULT_FILE} in ${io.cwd}: pass the configuration with -f FILE`,
      );
    }
    if (code === "EISDIR") throw new CliError(`${displayName}: is a directory, not a configuration file`);
    throw new CliError(`${displayName}: cannot read (${code ?? String(error)})`);
  }
}
