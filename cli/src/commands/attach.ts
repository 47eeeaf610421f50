// `dstack attach RUN`, and the attached half of `dstack apply`: the job's output streams to
// this terminal (stdout to stdout, stderr to stderr) while the run's status is watched; status
// changes go to stderr when it is a terminal. Ctrl-C detaches — the run goes on — and says how
// to come back. The exit code mirrors how the run ended (exit-codes.ts).
//
// Once the run is running, `ssh <run>` is set up (a `Host` entry in ~/.dstack/ssh/config whose
// ProxyCommand tunnels through the server) and the configuration's ports (and `--port`) are
// forwarded to local ones while attached (ssh/connect.ts).
import type { Command } from "commander";
import { parsePort, type PortMapping } from "@dstack/proto";
import { RunStatus, type Run } from "@dstack/proto/api";
import type { Client } from "../client/client.js";
import { isRunFinished, isTransientError } from "../client/client.js";
import { abortableSleep } from "../client/logs.js";
import { resolveConfig } from "../client/config.js";
import { DstackError } from "../client/errors.js";
import { RunConnection, type RunConnectionOptions } from "../ssh/connect.js";
import { EXIT_OK, exitCodeForRun } from "../exit-codes.js";
import { formatFinishedMessage, runStatusText } from "../format/runs.js";
import type { CliIO } from "../io.js";
import { clientFor, collect, flagValue, parseCount, stderrPalette, withProject, type ProjectOptions } from "./common.js";

export interface AttachOptions {
  /** Called once Ctrl-C is caught, to say so: whoever reads it may press Ctrl-C from then on. */
  onAttached?: () => void;
  replica?: number;
  job?: number;
  since?: Date;
  /**
   * Set up `ssh <run>` and port forwards once the run is running (the tunnels' server, token and
   * project; `--port` overrides and the local address). Absent: logs and status only.
   */
  connect?: Omit<RunConnectionOptions, "io" | "replica" | "job">;
}

/** What `connect` needs for the project `options` selects (server URL and token from the config). */
export function connectOptionsFor(io: CliIO, options: ProjectOptions, extra: { ports?: PortMapping[]; host?: string } = {}): NonNullable<AttachOptions["connect"]> {
  const c = resolveConfig({ ...(options.project ? { project: options.project } : {}), env: io.env });
  return { server: { serverUrl: c.serverUrl, token: c.token }, project: c.project, ...extra };
}

/** Follows run `name` until it finishes (→ its exit code) or the user detaches (→ 0). */
export async function attachToRun(client: Client, name: string, io: CliIO, opts: AttachOptions = {}): Promise<number> {
  const p = stderrPalette(io);
  const tty = Boolean(io.stderr.isTTY);
  const ac = new AbortController();
  let detached = false;
  const stopListening = io.onInterrupt?.(() => {
    if (detached) return;
    detached = true;
    ac.abort();
  });
  opts.onAttached?.();

  let lastStatus = "";
  let urlShown = false;
  let latest: Run | undefined;
  let connection: Promise<RunConnection | null> | undefined;
  const connect = (run: Run) => {
    if (connection || !opts.connect) return;
    const replica = opts.replica ?? 0;
    const job = opts.job ?? 0;
    connection = RunConnection.open(run, { ...opts.connect, io, replica, job }).catch((e: unknown) => {
      io.stderr.write(`Could not set up ssh and port forwarding: ${e instanceof Error ? e.message : String(e)}\n`);
      return null;
    });
  };
  const watcher = (async () => {
    // Status lines are a courtesy: a broken watch is reopened; the log follower decides when attaching ends.
    while (!ac.signal.aborted) {
      try {
        for await (const u of client.runs.watch([name], { signal: ac.signal, includeJobs: true })) {
          if (!u.run) continue;
          latest = u.run;
          const status = runStatusText(u.run);
          // The end is told once, by the final message below.
          if (status !== lastStatus && !isRunFinished(u.run)) {
            lastStatus = status;
            if (tty) io.stderr.write(`${p.dim(`[${new Date().toLocaleTimeString()}]`)} ${p.bold(name)} ${status}\n`);
          }
          if (u.run.status === RunStatus.RUNNING && !ac.signal.aborted) connect(u.run);
          const url = u.run.service?.url;
          if (url && !urlShown && u.run.status === RunStatus.RUNNING) {
            urlShown = true;
            io.stderr.write(`Service is published at ${url}\n${u.run.service?.modelBaseUrl ? `Model ${u.run.service.modelName} is published at ${u.run.service.modelBaseUrl}\n` : ""}`);
          }
        }
      } catch (e) {
        if (!isTransientError(e)) return;
      }
      await abortableSleep(2000, ac.signal);
    }
  })();

  let ended = false;
  try {
    for await (const entry of client.runs.logs(name, { follow: true, signal: ac.signal, ...(opts.replica ? { replica: opts.replica } : {}), ...(opts.job ? { job: opts.job } : {}), ...(opts.since ? { since: opts.since } : {}) })) {
      (entry.source === "stderr" ? io.stderr : io.stdout).write(entry.message);
    }
    ended = !detached;
  } catch (e) {
    if (!detached) throw e;
  } finally {
    stopListening?.();
    ac.abort();
    await watcher;
    // Forwards end with the attach; the SSH entry only with the run (it works without us).
    await (await connection)?.close({ runEnded: ended }).catch(() => {});
  }

  if (detached) {
    io.stderr.write(
      `\nDetached from ${name}; the run goes on.\n` +
        `  dstack attach ${name}      to reattach\n` +
        `  dstack logs -f ${name}     to follow its logs\n` +
        `  dstack stop ${name}        to stop it\n`,
    );
    return EXIT_OK;
  }
  const final = latest && isRunFinished(latest) ? latest : await client.runs.get(name);
  const { text, ok } = formatFinishedMessage(final);
  const [headline, ...details] = text.trimEnd().split("\n");
  if (!ok || tty) io.stderr.write(`${ok ? p.green(headline!) : p.red(headline!)}\n${details.map((l) => `${l}\n`).join("")}`);
  return exitCodeForRun(final);
}

interface AttachCommandOptions extends ProjectOptions {
  replica?: string;
  job?: string;
  port: string[];
  host?: string;
}

/** `--port` values: `PORT`, `LOCAL:CONTAINER` or `*:CONTAINER` (any free local port). */
export function parsePortFlags(values: readonly string[]): PortMapping[] {
  return values.map((v) => flagValue("--port", v, parsePort));
}

export function registerAttach(program: Command, io: CliIO, setExit: (code: number) => void): void {
  withProject(
    program
      .command("attach")
      .description("attach to a run: stream its logs and follow its status until it finishes, set up `ssh RUN` and forward its ports (Ctrl-C detaches)")
      .argument("<run>", "the run name")
      .option("--replica <n>", "the replica number (default 0)")
      .option("--job <n>", "the job number inside the replica (default 0)")
      .option("-p, --port <[LOCAL:]CONTAINER>", "forward a container port to a local one, overriding the configuration's mapping of that port (repeatable; *:PORT = any free local port)", collect, [])
      .option("--host <address>", "the local address port forwards listen on (default 127.0.0.1)"),
  ).action(async (run: string, options: AttachCommandOptions) => {
    const client = clientFor(io, options);
    const ports = parsePortFlags(options.port);
    const found = await client.runs.get(run);
    if (isRunFinished(found)) {
      throw new DstackError("failed_precondition", `Run '${run}' has already finished (${runStatusText(found)}). See its logs with \`dstack logs ${run}\`.`);
    }
    setExit(
      await attachToRun(client, run, io, {
        onAttached: () => io.stderr.write(`Attaching to ${run} (Ctrl-C detaches; the run goes on)...\n`),
        ...(options.replica ? { replica: parseCount("--replica", options.replica) } : {}),
        ...(options.job ? { job: parseCount("--job", options.job) } : {}),
        connect: connectOptionsFor(io, options, { ports, ...(options.host ? { host: options.host } : {}) }),
      }),
    );
  });
}
