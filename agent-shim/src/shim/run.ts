// The running shim: the executor (which adopts containers a previous shim left), the link home with
// a full state report on every (re)connect, and every task change sent up as an event.
import { hostname } from "node:os";
import { readFileSync } from "node:fs";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { GpuVendor, TaskState, type HostInfo } from "@dstack/proto/agent";
import { connectLink, enroll, IdentityStore, type BackoffOptions, type CommandHandlers, type LinkClient, type StoredIdentity } from "@dstack/proto/link";
import { TaskExecutor, type TaskExecutorOptions } from "../docker/executor.js";
import type { ExecutorGpu } from "../docker/gpu-locks.js";
import { collectHostReport, type HostReport } from "../host/index.js";
import type { Logger } from "../log.js";
import { shimHandlers } from "./handlers.js";
import { SHIM_VERSION } from "./version.js";

export class ShimError extends Error {
  override name = "ShimError";
}

export interface JoinOptions {
  serverUrl: string;
  token: string;
  caSha256: string;
  home: string;
  servername?: string;
}

function machineId(): string {
  for (const f of ["/etc/machine-id", "/var/lib/dbus/machine-id"]) {
    try {
      const v = readFileSync(f, "utf8").trim();
      if (v) return v;
    } catch {
      /* next */
    }
  }
  return "";
}

/** Enrolls this host as a shim and stores the identity in `home`; returns the instance id. */
export async function joinServer(o: JoinOptions): Promise<string> {
  const id = await enroll({
    serverUrl: o.serverUrl,
    token: o.token,
    caSha256: o.caSha256,
    kind: "shim",
    home: o.home,
    servername: o.servername,
    identity: { hostname: hostname(), machineId: machineId(), agentVersion: SHIM_VERSION },
  });
  return id.agentId;
}

/** What a shim extension (SSH server, tunnels) gets to work with. */
export interface ShimContext {
  executor: TaskExecutor;
  identity: StoredIdentity;
  home: string;
  log: Logger;
}

/** Extra command handlers (e.g. openTunnel) and what to stop when the shim stops. */
export interface ShimExtension {
  handlers?: CommandHandlers<"shim">;
  close?: () => Promise<void> | void;
}

export interface RunShimOptions {
  home: string;
  log: Logger;
  /** Stops the shim (SIGTERM/SIGINT in main). Containers keep running. */
  signal: AbortSignal;
  runnerBundleDir?: string;
  /** Replaces host discovery's GPU list (tests). */
  gpus?: ExecutorGpu[];
  backoff?: Partial<BackoffOptions>;
  executor?: Partial<TaskExecutorOptions>;
  /** Started after the executor, before the link; their handlers join the built-in ones. */
  extensions?: ((ctx: ShimContext) => ShimExtension | Promise<ShimExtension>)[];
}

/** Host facts are gathered at most this often (GPU tools are slow); getHostInfo always refreshes. */
const HOST_INFO_TTL_MS = 30_000;

function executorGpus(r: HostReport): ExecutorGpu[] {
  return r.gpus.flatMap((g): ExecutorGpu[] => {
    if (g.vendor === GpuVendor.NVIDIA && g.uuid) return [{ id: g.uuid, vendor: "nvidia" }];
    if (g.vendor === GpuVendor.AMD && g.renderNode) return [{ id: g.renderNode, vendor: "amd" }];
    return [];
  });
}

/** The executor, or a message a person can act on when Docker does not answer. */
async function startExecutor(o: TaskExecutorOptions): Promise<TaskExecutor> {
  try {
    return await TaskExecutor.start(o);
  } catch (e) {
    const where = process.env.DOCKER_HOST ?? "unix:///var/run/docker.sock";
    throw new ShimError(`cannot list containers on the Docker engine at ${where} (${e instanceof Error ? e.message : String(e)}); is Docker running?`);
  }
}

/** Runs the shim until `signal` aborts or the server sends shutdown. */
export async function runShim(o: RunShimOptions): Promise<void> {
  const store = new IdentityStore(o.home);
  if (!store.exists()) {
    throw new ShimError(`no shim identity in ${o.home}; enroll first: dstack-shim join --server URL --token TOKEN --ca-sha256 FINGERPRINT --home ${o.home}`);
  }
  const identity = store.load();
  if (identity.kind !== "shim") throw new ShimError(`the identity in ${o.home} belongs to a ${identity.kind}, not a shim`);
  const log = o.log.child({ instance: identity.agentId });
  const startedAt = timestampNow();

  let report = await collectHostReport({ warn: (m, e) => log.warn(m, e === undefined ? {} : { error: e }) });
  let reportAt = Date.now();
  const hostInfo = async (fresh: boolean): Promise<HostInfo> => {
    if (fresh || Date.now() - reportAt > HOST_INFO_TTL_MS) {
      report = await collectHostReport({ warn: (m, e) => log.debug(m, e === undefined ? {} : { error: e }) });
      reportAt = Date.now();
    }
    return report.hostInfo;
  };
  log.info("host", { hostname: report.hostInfo.hostname, cpus: report.hostInfo.cpus, gpus: report.gpus.length, docker: report.hostInfo.dockerVersion });

  let link: LinkClient | null = null;
  const executor = await startExecutor({
    instanceId: identity.agentId,
    home: o.home,
    gpus: o.gpus ?? executorGpus(report),
    runnerBundleDir: o.runnerBundleDir,
    log,
    ...o.executor,
    onChange: (task) => {
      // While disconnected the event is dropped: the state report on reconnect carries it.
      link?.sendEvent({ event: { case: "taskStateChanged", value: { task } } });
    },
  });
  const adopted = executor.list();
  if (adopted.length > 0) log.info("adopted tasks from container labels", { tasks: adopted.map((t) => t.taskId) });

  const extensions: ShimExtension[] = [];
  for (const ext of o.extensions ?? []) extensions.push(await ext({ executor, identity, home: o.home, log }));

  const stop = new AbortController();
  const onSignal = () => stop.abort(o.signal.reason);
  if (o.signal.aborted) onSignal();
  o.signal.addEventListener("abort", onSignal, { once: true });

  link = connectLink({
    kind: "shim",
    home: o.home,
    backoff: o.backoff,
    stateReport: async () => ({ agentVersion: SHIM_VERSION, startedAt, hostInfo: await hostInfo(false), tasks: executor.list() }),
    handlers: Object.assign(
      shimHandlers({
        executor,
        hostInfo: () => hostInfo(true),
        shutdown: () => {
          log.info("shutdown requested by the server");
          stop.abort(new Error("shutdown command"));
        },
      }),
      ...extensions.map((e) => e.handlers ?? {}),
    ),
  });
  link.on("connected", (c) => log.info("link up", { server: identity.serverUrl, link: c.linkId, attempt: c.attempt }));
  link.on("disconnected", (e) => log.warn("link down", { error: e }));
  link.on("error", (e) => log.debug("link attempt failed", { error: e }));
  link.on("renewed", (notAfter) => log.info("certificate renewed", { notAfter }));
  log.info("dstack-shim running", { version: SHIM_VERSION, home: o.home, tasks: adopted.length });

  await new Promise<void>((resolve) => (stop.signal.aborted ? resolve() : stop.signal.addEventListener("abort", () => resolve(), { once: true })));
  o.signal.removeEventListener("abort", onSignal);
  log.info("stopping; task containers keep running", { tasks: executor.list().filter((t) => t.state !== TaskState.TERMINATED).length });
  await link.close();
  for (const e of extensions.reverse()) await Promise.resolve(e.close?.()).catch((err: unknown) => log.warn("an extension failed to stop", { error: err }));
  await executor.close();
}
