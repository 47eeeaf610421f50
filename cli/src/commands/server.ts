// `dstack server [args…]`: runs the dstack server in the foreground. The server is its own
// package (the CLI never imports it); this finds its entry point beside the CLI in the repo,
// or at DSTACK_SERVER_BIN, and runs it with this Node, passing arguments, stdio and signals
// through and exiting with its exit code.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { CliError, type CliIO } from "../io.js";

export function serverBin(env: NodeJS.ProcessEnv): string {
  if (env.DSTACK_SERVER_BIN) return env.DSTACK_SERVER_BIN;
  return fileURLToPath(new URL("../../../server/bin/dstack-server.js", import.meta.url));
}

export async function runServer(args: string[], io: CliIO): Promise<number> {
  const bin = serverBin(io.env);
  if (!existsSync(bin)) {
    throw new CliError(`The dstack server is not installed beside this CLI (no ${bin}). Set DSTACK_SERVER_BIN to its dstack-server.js.`);
  }
  const child = spawn(process.execPath, [bin, ...args], { stdio: "inherit", env: io.env, cwd: io.cwd });
  const forward = (signal: NodeJS.Signals) => () => {
    if (child.exitCode === null) child.kill(signal);
  };
  const onInt = forward("SIGINT");
  const onTerm = forward("SIGTERM");
  process.on("SIGINT", onInt);
  process.on("SIGTERM", onTerm);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once("error", (e) => reject(new CliError(`Cannot start the dstack server: ${e.message}`)));
      child.once("exit", (code, signal) => resolve(code ?? (signal ? 128 + (signalNumber(signal) ?? 0) : 1)));
    });
  } finally {
    process.off("SIGINT", onInt);
    process.off("SIGTERM", onTerm);
  }
}

function signalNumber(signal: NodeJS.Signals): number | undefined {
  return ({ SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[signal];
}
