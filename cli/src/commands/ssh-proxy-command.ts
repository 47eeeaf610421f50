// `dstack ssh-proxy RUN`: the command line over sshProxy (ssh-proxy.ts), for ssh's
// ProxyCommand (`ProxyCommand dstack ssh-proxy %n`). Hidden from --help: people run `ssh RUN`.
import type { Command } from "commander";
import { resolveConfig } from "../client/config.js";
import { toDstackError } from "../client/errors.js";
import type { CliIO } from "../io.js";
import { parseCount } from "./common.js";
import { sshProxy } from "./ssh-proxy.js";

interface Options {
  project?: string;
  replica?: string;
  job?: string;
  port?: string;
}

export function registerSshProxy(program: Command, io: CliIO): void {
  program
    .command("ssh-proxy", { hidden: true })
    .description("relay stdin/stdout to a run's SSH server (or a container port) through the dstack server")
    .argument("<run>", "the run name")
    .option("--project <name>", "the project")
    .option("--replica <n>", "the replica number (default 0)")
    .option("--job <n>", "the job number (default 0)")
    .option("--port <port>", "a TCP port of the container instead of its SSH server")
    .action(async (run: string, options: Options) => {
      const c = resolveConfig({ ...(options.project ? { project: options.project } : {}), env: io.env });
      try {
        await sshProxy({
          serverUrl: c.serverUrl,
          token: c.token,
          project: c.project,
          run,
          stdin: io.stdin,
          stdout: io.stdout,
          ...(options.replica ? { replica: parseCount("--replica", options.replica) } : {}),
          ...(options.job ? { job: parseCount("--job", options.job) } : {}),
          ...(options.port ? { target: "port" as const, port: parseCount("--port", options.port) } : {}),
        });
      } catch (e) {
        throw toDstackError(e, c.serverUrl, "OpenRunTunnel");
      }
    });
}
