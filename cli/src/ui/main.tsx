// `dstack ui`'s program: run by cli/bin/dstack-ui.js in a process of its own (the `dstack`
// bundle cannot hold Ink, whose layout engine loads with a top-level await). It takes the
// terminal over (alternate screen, raw keys), and gives it back on q, Ctrl-C, SIGTERM, SIGHUP or SIGINT.
import { parseArgs } from "node:util";
import { render } from "ink";
import { Client } from "../client/client.js";
import { palette } from "../format/style.js";
import { exitCodeForError } from "../exit-codes.js";
import { App } from "./app.js";
import { Dashboard, type UiClient } from "./controller.js";
import { NOT_A_TERMINAL } from "../commands/ui.js";


export interface UiStreams {
  stdout: NodeJS.WriteStream;
  stdin: NodeJS.ReadStream;
  stderr: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
  /** Route console output through Ink (default true; vitest's console cannot be patched). */
  patchConsole?: boolean;
}

/** Runs the dashboard on a terminal until the user quits; resolves to the exit code. */
export async function runUi(client: UiClient, io: UiStreams): Promise<number> {
  if (!io.stdout.isTTY || !io.stdin.isTTY) {
    io.stderr.write(`${NOT_A_TERMINAL}\n`);
    return 2;
  }
  const dashboard = new Dashboard(client);
  io.stdout.write("\x1b[?1049h\x1b[H\x1b[2J"); // the alternate screen: the shell's screen comes back as it was
  const app = render(<App dashboard={dashboard} palette={palette(io.stdout, io.env)} />, {
    stdout: io.stdout,
    stdin: io.stdin,
    stderr: io.stderr,
    exitOnCtrlC: false,
    patchConsole: io.patchConsole ?? true,
  });
  const quit = () => app.unmount();
  // Ctrl-C is a key in raw mode; a SIGINT sent by someone else ends the dashboard as cleanly.
  const signals = ["SIGTERM", "SIGHUP", "SIGINT"] as const;
  for (const s of signals) process.on(s, quit);
  dashboard.start();
  try {
    await app.waitUntilExit();
  } finally {
    dashboard.close();
    for (const s of signals) process.off(s, quit);
    io.stdout.write("\x1b[?1049l");
  }
  return 0;
}

/** The program: `dstack-ui [--project P]`; resolves to the exit code. */
export async function uiMain(argv: string[]): Promise<number> {
  let project: string | undefined;
  try {
    ({
      values: { project },
    } = parseArgs({ args: argv, options: { project: { type: "string" } } }));
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  }
  let client: Client;
  try {
    client = Client.fromConfig({ ...(project ? { project } : {}), env: process.env });
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    return exitCodeForError(e);
  }
  return runUi(client, { stdout: process.stdout, stdin: process.stdin, stderr: process.stderr, env: process.env });
}
