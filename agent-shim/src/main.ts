// The `dstack-shim` command: join (enroll, then run), run, systemd-unit.
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { createLogger, isLogLevel, LOG_LEVELS, type LogLevel } from "./log.js";
import { systemdUnit } from "./shim/systemd.js";
import { SHIM_VERSION } from "./shim/version.js";

export const HELP = `dstack-shim ${SHIM_VERSION} — the dstack host agent: runs job containers, dials home to the server.

Usage:
  dstack-shim join --server URL --token TOKEN --ca-sha256 FINGERPRINT [--home DIR]
      Enroll this host with a join token, then run.
  dstack-shim run [--home DIR]
      Run with the identity stored in DIR by an earlier join.
  dstack-shim systemd-unit [--home DIR]
      Print a systemd unit that keeps \`dstack-shim run\` going (Restart=always).

Options:
  --server URL          the server's agent port, e.g. https://dstack.example.com:3001 (join)
  --token TOKEN         a shim join token from the server (join)
  --ca-sha256 HEX       the server CA's SHA-256 fingerprint, as \`dstack server\` prints it (join)
  --servername NAME     TLS name to check when URL is an address the certificate does not list (join)
  --home DIR            identity, task folders and state; default $DSTACK_SHIM_HOME or ~/.dstack/shim
  --runner-bundle DIR   the portable runner; default $DSTACK_RUNNER_BUNDLE or <repo>/build/runner-bundle
  --ssh-port PORT       also serve the embedded SSH server on this host port (LAN access);
                        without it SSH reaches tasks only through the server's tunnels
  --log-level LEVEL     ${LOG_LEVELS.join("|")} (default info); logs are JSON lines on stderr
  -v, --version         print the version
  -h, --help            print this help

Stopping the shim (SIGTERM, SIGINT) leaves task containers running; the next run adopts them.
`;

export interface MainIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  env: NodeJS.ProcessEnv;
  /** Default: aborts on SIGTERM/SIGINT. */
  signal?: AbortSignal;
}

const defaultIo = (): MainIo => ({
  stdout: (s) => void process.stdout.write(s),
  stderr: (s) => void process.stderr.write(s),
  env: process.env,
});

class UsageError extends Error {}

function parse(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        server: { type: "string" },
        token: { type: "string" },
        "ca-sha256": { type: "string" },
        servername: { type: "string" },
        home: { type: "string" },
        "runner-bundle": { type: "string" },
        "ssh-port": { type: "string" },
        "log-level": { type: "string" },
        version: { type: "boolean", short: "v" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** Aborts on the first SIGTERM or SIGINT; the handlers go away with the returned cleanup. */
function signalsToAbort(): { signal: AbortSignal; dispose: () => void } {
  const ac = new AbortController();
  const on = (sig: NodeJS.Signals) => ac.abort(new Error(sig));
  process.once("SIGTERM", on);
  process.once("SIGINT", on);
  return { signal: ac.signal, dispose: () => (process.off("SIGTERM", on), process.off("SIGINT", on)) };
}

/** Runs the command line; resolves with the exit code. */
export async function main(argv: string[], io: MainIo = defaultIo()): Promise<number> {
  try {
    const { values, positionals } = parse(argv);
    if (values.help) return io.stdout(HELP), 0;
    if (values.version) return io.stdout(`${SHIM_VERSION}\n`), 0;
    const command = positionals[0];
    if (!command) throw new UsageError("a command is required: join, run or systemd-unit");
    if (positionals.length > 1) throw new UsageError(`unexpected argument: ${positionals[1]}`);
    const level = values["log-level"] ?? "info";
    if (!isLogLevel(level)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(", ")}, not ${level}`);
    const home = resolve(values.home ?? io.env.DSTACK_SHIM_HOME ?? join(homedir(), ".dstack", "shim"));

    if (command === "systemd-unit") {
      io.stdout(systemdUnit({ home, logLevel: values["log-level"] }));
      return 0;
    }
    if (command !== "join" && command !== "run") throw new UsageError(`unknown command: ${command}`);
    if (command === "join") {
      const missing = (["server", "token", "ca-sha256"] as const).filter((k) => !values[k]);
      if (missing.length > 0) throw new UsageError(`join needs ${missing.map((k) => `--${k}`).join(", ")}`);
    }
    return await runCommand(command, { ...values, home, level: level as LogLevel }, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`dstack-shim: ${e.message}\nRun \`dstack-shim --help\` for usage.\n`);
      return 2;
    }
    throw e;
  }
}

function sshPort(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`--ssh-port must be a port number, not ${v}`);
  return n;
}

async function runCommand(
  command: "join" | "run",
  v: { server?: string; token?: string; "ca-sha256"?: string; servername?: string; home: string; "runner-bundle"?: string; "ssh-port"?: string; level: LogLevel },
  io: MainIo,
): Promise<number> {
  const log = createLogger({ level: v.level, write: io.stderr });
  // Loaded here so --help and systemd-unit stay quick (the link, Docker and host code are large).
  const { joinServer, runShim } = await import("./shim/run.js");
  const { defaultExtensions } = await import("./shim/extensions.js");
  const sig = io.signal ? { signal: io.signal, dispose: () => {} } : signalsToAbort();
  try {
    if (command === "join") {
      const instanceId = await joinServer({ serverUrl: v.server!, token: v.token!, caSha256: v["ca-sha256"]!, home: v.home, servername: v.servername });
      log.info("enrolled", { instance: instanceId, server: v.server, home: v.home });
    }
    await runShim({
      home: v.home,
      log,
      signal: sig.signal,
      runnerBundleDir: v["runner-bundle"] ? resolve(v["runner-bundle"]) : undefined,
      extensions: defaultExtensions({ sshPort: sshPort(v["ssh-port"]) }),
    });
    return 0;
  } catch (e) {
    // Expected failures (no identity, bad token, fingerprint mismatch) get their message only.
    if (["ShimError", "EnrollError", "ConnectError"].includes((e as { name?: string })?.name ?? "")) {
      log.error(command === "join" ? "cannot join the server" : "cannot start", { error: e });
      return 1;
    }
    log.error("dstack-shim failed", { error: e, stack: (e as Error)?.stack });
    return 1;
  } finally {
    sig.dispose();
  }
}
