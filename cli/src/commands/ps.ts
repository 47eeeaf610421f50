// `dstack ps`: the project's runs (active ones, or the last finished when none is active; -a
// for all), as a table, as JSON (--json), or live (-w, redrawn on every change).
import { toJson } from "@bufbuild/protobuf";
import type { Command } from "commander";
import { RunSchema, type Run } from "@dstack/proto/api";
import type { Client } from "../client/client.js";
import { formatRunsTable } from "../format/runs.js";
import { CliError, type CliIO } from "../io.js";
import { clientFor, parseCount, printJson, stdoutPalette, withProject, type ProjectOptions } from "./common.js";

interface PsOptions extends ProjectOptions {
  all?: boolean;
  verbose?: boolean;
  watch?: boolean;
  last?: string;
  json?: boolean;
  format?: string;
}

export function runsJson(project: string, runs: Run[]): unknown {
  return { project, runs: runs.map((r) => toJson(RunSchema, r)) };
}

export function registerPs(program: Command, io: CliIO): void {
  withProject(
    program
      .command("ps")
      .description("list runs: active ones, or the last finished one when none is active")
      .option("-a, --all", "show all runs")
      .option("-v, --verbose", "show more information: instance types, errors")
      .option("-w, --watch", "watch the runs' statuses live (Ctrl-C exits)")
      .option("-n, --last <n>", "show only the last N runs (implies --all)")
      .option("--format <format>", "output format: plain or json", "plain")
      .option("--json", "output JSON (same as --format json)"),
  ).action(async (options: PsOptions) => {
    const json = options.json || options.format === "json";
    if (options.format !== "plain" && options.format !== "json") throw new CliError(`Invalid --format '${options.format}': expected plain or json`, 2);
    if (json && options.watch) throw new CliError("--json cannot be combined with --watch", 2);
    const client = clientFor(io, options);
    const listOpts = { all: options.all ?? false, ...(options.last ? { limit: parseCount("--last", options.last) } : {}) };
    if (options.watch) return watch(client, io, listOpts, options.verbose ?? false);
    const runs = await client.runs.list(listOpts);
    if (json) printJson(io, runsJson(client.project, runs));
    else io.stdout.write(formatRunsTable(runs, { verbose: options.verbose ?? false, palette: stdoutPalette(io) }));
  });
}

/** Redraws the table whenever a run of the project changes, until Ctrl-C. */
async function watch(client: Client, io: CliIO, listOpts: { all: boolean; limit?: number }, verbose: boolean): Promise<void> {
  const ac = new AbortController();
  const stop = io.onInterrupt?.(() => ac.abort());
  const tty = Boolean(io.stdout.isTTY);
  let last = "";
  const draw = async () => {
    const table = formatRunsTable(await client.runs.list(listOpts), { verbose, palette: stdoutPalette(io) });
    if (table === last) return;
    last = table;
    // A terminal gets the table redrawn in place; a pipe gets each new table after a blank line.
    io.stdout.write(tty ? `\x1b[H\x1b[2J${table}` : `${table}\n`);
  };
  try {
    await draw();
    let live = false;
    let pending: Promise<void> | undefined;
    let again = false;
    for await (const u of client.runs.watch([], { signal: ac.signal, includeJobs: false })) {
      // The stream starts with the current state, which the first draw already shows.
      if (!live) {
        live = u.initialStateSent;
        continue;
      }
      // Coalesce bursts: one redraw at a time, one more if changes came in meanwhile.
      if (pending) {
        again = true;
        continue;
      }
      pending = (async () => {
        do {
          again = false;
          await draw();
        } while (again);
        pending = undefined;
      })().catch(() => {
        pending = undefined;
      });
    }
  } catch (e) {
    if (!ac.signal.aborted) throw e;
  } finally {
    stop?.();
  }
}
