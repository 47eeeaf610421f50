// Runs the real `dstack` binary (cli/bin/dstack.js) as a child process, the way a user's
// shell would: its own HOME (where ~/.dstack/config.yml lives), stdin a pipe (not a TTY), no
// colour, and no DSTACK_* variables leaking in from the test's environment.
import { spawn, type ChildProcess } from "node:child_process";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const REPO = resolve(fileURLToPath(new URL("../..", import.meta.url)));
export const DSTACK_BIN = join(REPO, "cli", "bin", "dstack.js");

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliRun {
  home: string;
  cwd?: string;
  env?: Record<string, string>;
  /** Written to stdin, which is then closed. */
  input?: string;
}

function childEnv(opts: CliRun): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("DSTACK_") && k !== "FORCE_COLOR") env[k] = v;
  return { ...env, HOME: opts.home, NO_COLOR: "1", ...opts.env };
}

/** Starts `dstack ARGS…`; the caller drives it (signals) and awaits `done`. */
export function startCli(args: string[], opts: CliRun): { child: ChildProcess; done: Promise<CliResult>; stdout(): string; stderr(): string } {
  const child = spawn(process.execPath, [DSTACK_BIN, ...args], { cwd: opts.cwd ?? REPO, env: childEnv(opts), stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  child.stdin!.end(opts.input ?? "");
  const done = new Promise<CliResult>((ok) => child.once("close", (code) => ok({ code, stdout, stderr })));
  return { child, done, stdout: () => stdout, stderr: () => stderr };
}

/** Runs `dstack ARGS…` to completion. */
export function dstack(args: string[], opts: CliRun): Promise<CliResult> {
  return startCli(args, opts).done;
}

/** Resolves once `predicate(output so far)` holds, or rejects when the process exits first. */
export function waitForOutput(run: ReturnType<typeof startCli>, predicate: (stdout: string, stderr: string) => boolean): Promise<void> {
  return new Promise((ok, fail) => {
    const check = () => {
      if (predicate(run.stdout(), run.stderr())) {
        run.child.stdout!.off("data", check);
        run.child.stderr!.off("data", check);
        ok();
      }
    };
    run.child.stdout!.on("data", check);
    run.child.stderr!.on("data", check);
    void run.done.then((r) => fail(new Error(`dstack exited with ${r.code} before the expected output.\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`)));
    check();
  });
}
