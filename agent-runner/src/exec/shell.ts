// What the job's commands run in: one shell for all of them, chosen from what the image has.
import { existsSync } from "node:fs";
import { isAbsolute } from "node:path";

/** Where bash may live; the first that exists wins over /bin/sh. */
export const BASH_CANDIDATES = ["/bin/bash", "/usr/bin/bash"] as const;
export const SH = "/bin/sh";

/**
 * The shell for the commands. A requested shell is used as dstack does (a bare name means
 * `/bin/<name>`); otherwise bash when the image has it, else sh (busybox, alpine, distroless+sh).
 */
export function selectShell(requested: string | undefined, exists: (path: string) => boolean = existsSync): string {
  const want = requested?.trim();
  if (want) return isAbsolute(want) ? want : `/bin/${want}`;
  return BASH_CANDIDATES.find((p) => exists(p)) ?? SH;
}

/**
 * Joins commands as dstack's server does (`_join_shell_commands`): each trimmed, a command that
 * ends with `&` wrapped in `{ … }` so it backgrounds itself and not the chain, then ` && `. The
 * first failing command ends the script with its status, like `set -e`, but without changing the
 * semantics of `||`, `if` and pipelines inside a user's line.
 */
export function joinCommands(commands: readonly string[]): string {
  return commands
    .map((c) => c.trim())
    .filter((c) => c.length > 0)
    .map((c) => (c.endsWith("&") && !c.endsWith("&&") ? `{ ${c} }` : c))
    .join(" && ");
}

export interface JobCommand {
  commands: readonly string[];
  entrypoint: readonly string[];
  shell?: string;
}

/**
 * The argv to execute. With an entrypoint the commands are its arguments (Docker's exec form);
 * otherwise `[shell, "-c", joined]`. dstack adds `-i` because it runs under a PTY; over plain pipes
 * an interactive shell prints job-control warnings and ignores SIGTERM, so it is left out.
 */
export function jobArgv(cmd: JobCommand, exists?: (path: string) => boolean): string[] {
  if (cmd.entrypoint.length > 0) return [...cmd.entrypoint, ...cmd.commands];
  const script = joinCommands(cmd.commands);
  if (!script) throw new Error("the job has neither commands nor an entrypoint");
  return [selectShell(cmd.shell, exists), "-c", script];
}
