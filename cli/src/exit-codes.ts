// The `dstack` command's exit codes, kept in one place so scripts can rely on them:
//
//   0    success (for an attached run: the run finished DONE, or you detached with Ctrl-C)
//   1    an error: the server refused (not found, unauthorized, conflict…), could not be
//        reached, or an attached run ended terminated/aborted/failed without an exit status
//   2    usage: bad flags or arguments, an invalid configuration file, a missing `-y` where
//        nothing can be asked (stdin is not a terminal)
//   N    an attached run failed because its commands exited with status N (1–255)
//   130  interrupted (Ctrl-C) while asking for confirmation
import { RunStatus, type Run } from "@dstack/proto/api";
import { ConfigurationError } from "@dstack/proto";
import { CommanderError } from "commander";
import { latestSubmission } from "./client/client.js";
import { DstackError } from "./client/errors.js";
import { CliError } from "./io.js";

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

/** The exit code for an error that ended a command. */
export function exitCodeForError(e: unknown): number {
  if (e instanceof CliError) return e.exitCode;
  if (e instanceof ConfigurationError) return EXIT_USAGE;
  if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  if (e instanceof DstackError) return e.kind === "usage" || e.kind === "invalid_argument" ? EXIT_USAGE : EXIT_ERROR;
  return EXIT_ERROR;
}

/** The exit code mirroring how an attached run ended. */
export function exitCodeForRun(run: Run): number {
  if (run.status === RunStatus.DONE) return EXIT_OK;
  const sub = run.latestJobSubmission ?? latestSubmission(run);
  if (run.status === RunStatus.FAILED && sub?.exitStatus !== undefined && sub.exitStatus > 0 && sub.exitStatus < 256) return sub.exitStatus;
  return EXIT_ERROR;
}
