// What the command handlers share: the --project option, building the Client from the CLI's
// environment, resource flags, and turning grammar errors into usage errors.
import { Option, type Command } from "commander";
import {
  DEFAULT_RESOURCES,
  GrammarError,
  parseCpuSpec,
  parseDiskSpec,
  parseDuration,
  parseGpuSpec,
  parseMemoryRange,
  type ResourceRequirements,
} from "@dstack/proto";
import { Client } from "../client/client.js";
import { CliError, type CliIO } from "../io.js";
import { palette, type Palette } from "../format/style.js";

export interface ProjectOptions {
  project?: string;
}

export function withProject(cmd: Command): Command {
  return cmd.addOption(new Option("--project <name>", "the project to use (default: $DSTACK_PROJECT, else the default project in ~/.dstack/config.yml)"));
}

export function clientFor(io: CliIO, opts: ProjectOptions): Client {
  return Client.fromConfig({ ...(opts.project ? { project: opts.project } : {}), env: io.env });
}

export function stdoutPalette(io: CliIO): Palette {
  return palette(io.stdout, io.env);
}

export function stderrPalette(io: CliIO): Palette {
  return palette(io.stderr, io.env);
}

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Parses a flag value with the configuration grammar; a bad value is a usage error naming the flag. */
export function flagValue<T>(flag: string, value: string, parse: (v: string) => T): T {
  try {
    return parse(value);
  } catch (e) {
    if (e instanceof GrammarError || e instanceof Error) throw new CliError(`Invalid ${flag} '${value}': ${e.message}`, 2);
    throw e;
  }
}

export function parseCount(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new CliError(`Invalid ${flag} '${value}': expected a non-negative integer`, 2);
  return n;
}

export interface ResourceFlags {
  cpu?: string;
  gpu?: string;
  memory?: string;
  disk?: string;
}

export function addResourceFlags(cmd: Command): Command {
  return cmd
    .option("--cpu <spec>", "CPU requirement, e.g. 4, 4.., x86:8..16")
    .option("--gpu <spec>", "GPU requirement, e.g. A100, 24GB.., H100:8, nvidia:1..2")
    .option("--memory <range>", "memory requirement, e.g. 32GB..")
    .option("--disk <range>", "disk requirement, e.g. 100GB..");
}

/** The resources with the flags' overrides applied (a copy). */
export function applyResourceFlags(base: ResourceRequirements | undefined, flags: ResourceFlags): ResourceRequirements {
  const r: ResourceRequirements = structuredClone(base ?? DEFAULT_RESOURCES);
  if (flags.cpu) r.cpu = flagValue("--cpu", flags.cpu, parseCpuSpec);
  if (flags.gpu) r.gpu = flagValue("--gpu", flags.gpu, parseGpuSpec);
  if (flags.memory) r.memory = flagValue("--memory", flags.memory, parseMemoryRange);
  if (flags.disk) r.disk = flagValue("--disk", flags.disk, parseDiskSpec);
  return r;
}

export const hasResourceFlags = (f: ResourceFlags) => Boolean(f.cpu || f.gpu || f.memory || f.disk);

export function parseDurationFlag(flag: string, value: string): number {
  return flagValue(flag, value, parseDuration);
}

/** Writes JSON for scripts: one document, newline-terminated. */
export function printJson(io: CliIO, value: unknown): void {
  io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** `-w`: clears the screen (on a terminal) and redraws every 2 s until Ctrl-C. */
export async function redrawUntilInterrupted(io: CliIO, show: () => Promise<void>, everyMs = 2000): Promise<void> {
  const ac = new AbortController();
  const stop = io.onInterrupt?.(() => ac.abort());
  try {
    while (!ac.signal.aborted) {
      if (io.stdout.isTTY) io.stdout.write("\x1b[H\x1b[2J");
      await show();
      await new Promise((r) => {
        const t = setTimeout(r, everyMs);
        ac.signal.addEventListener("abort", () => (clearTimeout(t), r(undefined)), { once: true });
      });
    }
  } finally {
    stop?.();
  }
}
