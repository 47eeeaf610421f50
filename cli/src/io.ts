import type { Readable, Writable } from "node:stream";

/** Where a command reads and writes; tests pass their own, the binary passes the process's. */
export interface CliIO {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean };
  stdin: Readable & { isTTY?: boolean };
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** Calls `handler` on Ctrl-C (SIGINT) until the returned function is called; absent = Ctrl-C is not caught. */
  onInterrupt?: (handler: () => void) => () => void;
}

export function processIO(): CliIO {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    cwd: process.cwd(),
    env: process.env,
    onInterrupt: (handler) => {
      process.on("SIGINT", handler);
      return () => process.off("SIGINT", handler);
    },
  };
}

/** An error meant for the user: printed without a stack trace, with a meaningful exit code (see exit-codes.ts). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = "CliError";
  }
}

export function readAll(stream: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer | string) => chunks.push(typeof c === "string" ? Buffer.from(c) : c));
    stream.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    stream.on("error", reject);
  });
}

/** One line from stdin (without the newline); null at end of input. */
function readLine(stream: Readable): Promise<string | null> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const onData = (c: Buffer | string) => {
      buf += c.toString();
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        cleanup();
        // Whatever followed the newline is not ours; put it back for the next reader.
        const rest = buf.slice(nl + 1);
        if (rest) stream.unshift(Buffer.from(rest));
        resolve(buf.slice(0, nl).replace(/\r$/, ""));
      }
    };
    const onEnd = () => {
      cleanup();
      resolve(buf.length > 0 ? buf : null);
    };
    const onError = (e: Error) => {
      cleanup();
      reject(e);
    };
    const cleanup = () => {
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.off("error", onError);
      stream.pause();
    };
    stream.on("data", onData);
    stream.once("end", onEnd);
    stream.once("error", onError);
    stream.resume();
  });
}

/**
 * Asks a yes/no question on a terminal. Where nobody can answer (stdin is not a TTY) it fails
 * with a usage error telling the user to pass `-y`, instead of hanging or guessing.
 */
export async function confirm(io: CliIO, question: string, opts: { yes?: boolean } = {}): Promise<boolean> {
  if (opts.yes) return true;
  if (!io.stdin.isTTY) {
    throw new CliError(`${question.replace(/\?$/, "")}: confirmation needed, but standard input is not a terminal. Pass -y to go ahead without asking.`, 2);
  }
  io.stdout.write(`${question} [y/n]: `);
  const answer = await readLine(io.stdin);
  if (answer === null) throw new CliError("\nCancelled (no answer).", 130);
  return /^y(es)?$/i.test(answer.trim());
}
