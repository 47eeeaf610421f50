import { Command, CommanderError } from "commander";
import { ConfigurationError } from "@dstack/proto";
import { DstackError } from "./client/errors.js";
import { registerApply } from "./commands/apply.js";
import { registerAttach } from "./commands/attach.js";
import { registerDelete } from "./commands/delete.js";
import { registerFleet } from "./commands/fleet.js";
import { registerInit } from "./commands/init.js";
import { registerLogs } from "./commands/logs.js";
import { registerMetrics } from "./commands/metrics.js";
import { registerOffer } from "./commands/offer.js";
import { registerProject } from "./commands/project.js";
import { registerPs } from "./commands/ps.js";
import { registerSecret } from "./commands/secret.js";
import { runServer } from "./commands/server.js";
import { registerSshProxy } from "./commands/ssh-proxy-command.js";
import { registerStop } from "./commands/stop.js";
import { registerUi } from "./commands/ui.js";
import { EXIT_USAGE, exitCodeForError } from "./exit-codes.js";
import { CliError, processIO, type CliIO } from "./io.js";
import { cliVersion } from "./version.js";

/**
 * Builds the `dstack` command tree; every command writes through `io` so tests can drive it.
 * Commands that end with a code other than 0 (an attached run's result) report it through `setExit`.
 */
export function buildProgram(io: CliIO, setExit: (code: number) => void = () => {}): Command {
  const program = new Command("dstack")
    .description("dstack: run tasks, services and dev environments on your fleets")
    .version(cliVersion, "-v, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    })
    .exitOverride()
    // Program options only before the command: `-v` is --version there, --verbose after `ps`.
    .enablePositionalOptions()
    .addHelpText(
      "after",
      "\nExit codes: 0 ok; 1 error (server refused or unreachable, run stopped or failed); 2 usage or invalid configuration;\n" +
        "N an attached run's commands exited with status N. Environment: DSTACK_SERVER_URL, DSTACK_TOKEN, DSTACK_PROJECT.\n",
    );
  registerApply(program, io, setExit);
  registerAttach(program, io, setExit);
  registerPs(program, io);
  registerLogs(program, io);
  registerMetrics(program, io);
  registerStop(program, io);
  registerDelete(program, io);
  registerFleet(program, io);
  registerOffer(program, io);
  registerSecret(program, io);
  registerProject(program, io);
  registerInit(program, io);
  registerUi(program, io, setExit);
  registerSshProxy(program, io);
  // Listed for --help; `main` hands `dstack server …` to the server before commander parses it.
  program.command("server").description("run the dstack server in the foreground (dstack server --help for its options)").allowUnknownOption().allowExcessArguments();
  // Sub-commands parse with the same overrides as the program, so their errors come back here too.
  for (const cmd of allCommands(program)) cmd.exitOverride().configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
  return program;
}

function allCommands(c: Command): Command[] {
  return c.commands.flatMap((sub) => [sub, ...allCommands(sub)]);
}

/** Runs the CLI and resolves to the process exit code (see exit-codes.ts). */
export async function main(argv: string[], io: CliIO = processIO()): Promise<number> {
  if (argv[0] === "server") {
    try {
      return await runServer(argv.slice(1), io);
    } catch (error) {
      return report(error, io);
    }
  }
  let code = 0;
  const program = buildProgram(io, (c) => (code = c));
  if (argv.length === 0) {
    program.outputHelp();
    return 0;
  }
  try {
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (error) {
    return report(error, io);
  }
}

function report(error: unknown, io: CliIO): number {
  if (error instanceof CommanderError) {
    // --help and --version end through here with exit code 0; commander already printed the message.
    return error.exitCode === 0 ? 0 : EXIT_USAGE;
  }
  if (error instanceof ConfigurationError || error instanceof CliError || error instanceof DstackError) {
    io.stderr.write(`${error.message.replace(/\n+$/, "")}\n`);
    return exitCodeForError(error);
  }
  // A bug, not a user mistake: keep the stack.
  io.stderr.write(`Unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  return 1;
}
