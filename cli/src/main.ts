import { Command, CommanderError } from "commander";
import { ConfigurationError } from "@dstack/proto";
import { registerApply } from "./commands/apply.js";
import { CliError, processIO, type CliIO } from "./io.js";
import { cliVersion } from "./version.js";

/** Builds the `dstack` command tree; every command writes through `io` so tests can drive it. */
export function buildProgram(io: CliIO): Command {
  const program = new Command("dstack")
    .description("dstack: run tasks, services and dev environments on your fleets")
    .version(cliVersion, "-v, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    })
    .exitOverride();
  registerApply(program, io);
  return program;
}

/** Runs the CLI and resolves to the process exit code. */
export async function main(argv: string[], io: CliIO = processIO()): Promise<number> {
  const program = buildProgram(io);
  if (argv.length === 0) {
    program.outputHelp();
    return 0;
  }
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version end through here with exit code 0.
      return error.exitCode;
    }
    if (error instanceof ConfigurationError) {
      io.stderr.write(`${error.message}\n`);
      return 1;
    }
    if (error instanceof CliError) {
      io.stderr.write(`${error.message}\n`);
      return error.exitCode;
    }
    throw error;
  }
}
