// The embedded local fleet: on a machine with a Docker engine the server registers the machine
// itself as fleet `local` of project `main` and runs its host agent (dstack-shim) as a child
// process that enrolls with a join token bound to the local instance and dials home over
// loopback like any other shim. The shim is restarted with backoff if it dies, and gets SIGTERM
// when the server stops (its containers keep running; it recovers them from their labels).
import { spawn, type ChildProcess } from "node:child_process";
import { request } from "node:http";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { IdentityStore } from "@dstack/proto/link";
import type { JoinTokens } from "../mesh/index.js";
import type { FleetsService } from "../services/fleets.js";
import type { AgentLogger } from "./dispatcher.js";

/** The shim entry script of this checkout. */
export const DEFAULT_SHIM_BIN = fileURLToPath(new URL("../../../agent-shim/bin/dstack-shim.js", import.meta.url));

/**
 * Whether a Docker engine answers `GET /_ping` within `timeoutMs`: at DOCKER_HOST (unix:// or
 * tcp://, plain HTTP), else at /var/run/docker.sock.
 */
export function dockerAnswers(env: Record<string, string | undefined> = process.env, timeoutMs = 2_000): Promise<boolean> {
  const host = env.DOCKER_HOST ?? "";
  let target: { socketPath: string } | { host: string; port: number };
  if (host === "") target = { socketPath: "/var/run/docker.sock" };
  else if (host.startsWith("unix://")) target = { socketPath: host.slice("unix://".length) };
  else if (host.startsWith("tcp://") || host.startsWith("http://")) {
    const u = new URL(host.replace(/^tcp:/, "http:"));
    target = { host: u.hostname, port: Number(u.port || 2375) };
  } else return Promise.resolve(false); // ssh:// and TLS engines are not probed
  return new Promise((resolve) => {
    const req = request({ ...target, path: "/_ping", method: "GET", timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(false));
    req.end();
  });
}

export interface LocalFleetOptions {
  fleets: Pick<FleetsService, "ensureLocalFleet">;
  joinTokens: Pick<JoinTokens, "create">;
  /** Where the shim dials, e.g. https://127.0.0.1:3001. */
  serverUrl: string;
  caFingerprint: string;
  /** The server's home: the shim keeps its identity and state in `<home>/local-shim`. */
  serverHome: string;
  /** The shim's entry script; default DEFAULT_SHIM_BIN. */
  shimBin?: string;
  log: AgentLogger;
  /** First restart delay; doubles up to 30 s, reset after a minute of uptime. Default 1 s. */
  restartDelayMs?: number;
}

export interface LocalFleet {
  instanceId: string;
  fleetId: string;
  projectId: string;
  /** The shim process now running, if any. */
  readonly child: ChildProcess | null;
  /** SIGTERM to the shim, and wait (SIGKILL after `timeoutMs`). */
  stop(timeoutMs?: number): Promise<void>;
}

/** Ensures the `local` fleet and its instance, and starts the shim for it. */
export async function startLocalFleet(o: LocalFleetOptions): Promise<LocalFleet> {
  const { projectId, fleetId, instanceId } = await o.fleets.ensureLocalFleet();
  const home = join(o.serverHome, "local-shim");
  const bin = o.shimBin ?? DEFAULT_SHIM_BIN;
  const firstDelay = o.restartDelayMs ?? 1_000;
  let child: ChildProcess | null = null;
  let stopping = false;
  let delay = firstDelay;
  let timer: NodeJS.Timeout | null = null;
  let exited: Promise<void> = Promise.resolve();

  /**
   * `run` when the home holds this instance's identity under this CA and for this agent URL; else
   * `join` with a fresh token (a server restarted with another `--agent-port` must not leave its
   * own host agent dialing the old one).
   */
  const args = async (): Promise<string[]> => {
    const store = new IdentityStore(home);
    if (store.exists()) {
      try {
        const id = store.load();
        if (id.agentId === instanceId && id.caSha256 === o.caFingerprint && id.serverUrl === o.serverUrl) return ["run", "--home", home];
      } catch {
        // unreadable identity: enroll again
      }
    }
    const { token } = await o.joinTokens.create({ projectId, fleetId, kind: "shim", boundId: instanceId });
    return ["join", "--server", o.serverUrl, "--token", token, "--ca-sha256", o.caFingerprint, "--home", home];
  };

  const spawnShim = async (): Promise<void> => {
    timer = null;
    if (stopping) return;
    const argv = await args();
    if (stopping) return;
    const started = Date.now();
    const p = spawn(process.execPath, [bin, ...argv], { stdio: ["ignore", "pipe", "pipe"], env: process.env });
    child = p;
    o.log.info({ pid: p.pid, bin, command: argv[0] }, "local fleet: host agent started");
    for (const stream of [p.stdout, p.stderr]) createInterface({ input: stream! }).on("line", (line) => o.log.debug({ shim: line }, "local shim"));
    exited = new Promise<void>((resolve) => {
      p.once("error", (e) => {
        o.log.error({ err: e, bin }, "local fleet: cannot start the host agent");
      });
      p.once("close", (code, signal) => {
        if (child === p) child = null;
        resolve();
        if (stopping) return;
        if (Date.now() - started > 60_000) delay = firstDelay;
        o.log.warn({ code, signal, restartInMs: delay }, "local fleet: host agent exited; restarting");
        timer = setTimeout(() => void spawnShim().catch((e: unknown) => o.log.error({ err: e }, "local fleet: restart failed")), delay);
        timer.unref();
        delay = Math.min(delay * 2, 30_000);
      });
    });
  };

  await spawnShim();
  return {
    instanceId,
    fleetId,
    projectId,
    get child() {
      return child;
    },
    async stop(timeoutMs = 10_000) {
      stopping = true;
      if (timer) clearTimeout(timer);
      const p = child;
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      p.kill("SIGTERM");
      const kill = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
      await exited;
      clearTimeout(kill);
    },
  };
}
