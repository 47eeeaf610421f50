// `dstack attach RUN`, and the attached half of `dstack apply`: the job's output streams to
// this terminal (stdout to stdout, stderr to stderr) while the run's status is watched; status
// changes go to stderr when it is a terminal. Ctrl-C detaches — the run goes on — and says how
// to come back. The exit code mirrors how the run ended (exit-codes.ts).
// Port forwarding and SSH come with the tunnel work (issue 7, attach/ssh part).
import type { Command } from "commander";
import { RunStatus, type Run } from "@dstack/proto/api";
import type { Client } from "../client/client.js";
import { isRunFinished, isTransientError } from "../client/client.js";
import { abortableSleep } from "../client/logs.js";
import { DstackError } from "../client/errors.js";
import { EXIT_OK, exitCodeForRun } from "../exit-codes.js";
import { formatFinishedMessage, runStatusText } from "../format/runs.js";
import type { CliIO } from "../io.js";
import { clientFor, parseCount, stderrPalette, withProject, type ProjectOptions } from "./common.js";

export interface AttachOptions {
  /** Called once Ctrl-C is caught, to say so: whoever reads it may press Ctrl-C from then on. */
  onAttached?: () => void;
  replica?: number;
  job?: number;
  since?: Date;
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

  try {
    for await (const entry of client.runs.logs(name, { follow: true, signal: ac.signal, ...(opts.replica ? { replica: opts.replica } : {}), ...(opts.job ? { job: opts.job } : {}), ...(opts.since ? { since: opts.since } : {}) })) {
      (entry.source === "stderr" ? io.stderr : io.stdout).write(entry.message);
    }
  } catch (e) {
    if (!detached) throw e;
  } finally {
    stopListening?.();
    ac.abort();
    await watcher;
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
}

export function registerAttach(program: Command, io: CliIO, setExit: (code: number) => void): void {
  withProject(
    program
      .command("attach")
      .description("attach to a run: stream its logs and follow its status until it finishes (Ctrl-C detaches)")
      .argument("<run>", "the run name")
      .option("--replica <n>", "the replica number (default 0)")
      .option("--job <n>", "the job number inside the replica (default 0)"),
  ).action(async (run: string, options: AttachCommandOptions) => {
    const client = clientFor(io, options);
    const found = await client.runs.get(run);
    if (isRunFinished(found)) {
      throw new DstackError("failed_precondition", `Run '${run}' has already finished (${runStatusText(found)}). See its logs with \`dstack logs ${run}\`.`);
    }
    setExit(
      await attachToRun(client, run, io, {
        onAttached: () => io.stderr.write(`Attaching to ${run} (Ctrl-C detaches; the run goes on)...\n`),
        ...(options.replica ? { replica: parseCount("--replica", options.replica) } : {}),
        ...(options.job ? { job: parseCount("--job", options.job) } : {}),
      }),
    );
  });
}
