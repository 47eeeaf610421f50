// `dstack ui`: the terminal dashboard (runs, logs, fleets). The dashboard is an Ink app that runs
// in a child process (cli/bin/dstack-ui.js → cli/src/ui/main.tsx): Ink cannot live in the
// CommonJS bundle this command is part of. This command checks the terminal and the
// configuration, then hands the terminal to the child and returns its exit code.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { CliError, type CliIO } from "../io.js";
import { clientFor, withProject, type ProjectOptions } from "./common.js";

const UI_BIN = fileURLToPath(new URL("../../bin/dstack-ui.js", import.meta.url));

export const NOT_A_TERMINAL = "dstack ui needs a terminal; use dstack ps -w to watch runs, dstack logs -f RUN for logs, dstack fleet -w for fleets";

export function registerUi(program: Command, io: CliIO, setExit: (code: number) => void = () => {}): void {
  withProject(
    program
      .command("ui")
      .description("terminal dashboard: live runs, their logs, stop/abort, fleets (needs a terminal)"),
  ).action(async (options: ProjectOptions) => {
    if (!io.stdout.isTTY || !io.stdin.isTTY) throw new CliError(NOT_A_TERMINAL, 2);
    clientFor(io, options); // a configuration error ends here, as for every command
    setExit(await runChild(options.project ? ["--project", options.project] : [], io));
  });
}

function runChild(args: string[], io: CliIO): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [UI_BIN, ...args], { stdio: "inherit", cwd: io.cwd, env: io.env });
    // The child owns the terminal: Ctrl-C is a key to it. Signals sent to this process alone go on to it.
    const stopInterrupt = io.onInterrupt?.(() => {});
    const forward = (signal: NodeJS.Signals) => () => child.kill(signal);
    const onTerm = forward("SIGTERM");
    const onHup = forward("SIGHUP");
    process.on("SIGTERM", onTerm);
    process.on("SIGHUP", onHup);
    const done = () => {
      stopInterrupt?.();
      process.off("SIGTERM", onTerm);
      process.off("SIGHUP", onHup);
    };
    child.on("error", (e) => {
      done();
      reject(new CliError(`dstack ui: cannot start ${UI_BIN}: ${e.message}`));
    });
    child.on("exit", (code, signal) => {
      done();
      resolve(code ?? (signal ? 128 + (signal === "SIGINT" ? 2 : signal === "SIGHUP" ? 1 : 15) : 1));
    });
  });
}
