// `dstack-server`: opens (and migrates) the database, bootstraps the admin and the `main`
// project, serves the public API, runs the scheduler, and writes the CLI config so `dstack`
// on the same machine works at once. Banner lines go to stdout in dstack's wording; logs go to
// stderr. SIGTERM/SIGINT stop it gracefully and it exits 0.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline/promises";
import { parseArgs } from "node:util";
import { createApp, type App } from "./app.js";
import { cliConfigPath, readCliProjects, upsertCliProject } from "./cli-config.js";
import { openDatabase, type Orm } from "./db/database.js";
import { isDstackError } from "./errors.js";
import { createReplicaBridge, createScheduler, type ReplicaBridge, type Scheduler } from "./scheduler/index.js";
import { createMeshServer, meshDataHooks, type MeshServer } from "./mesh/index.js";
import { createDispatcher, describeHost, dockerAnswers, startLocalFleet, type Dispatcher, type LocalFleet } from "./agents/index.js";
import { bootstrap, createServices } from "./services/index.js";
import { DEFAULT_PROJECT_NAME } from "./services/projects.js";
import { ADMIN_TOKEN_FILE } from "./services/users.js";
import { SshFleetProvisioner } from "./backends/ssh/provisioner.js";
import { loadSettings, loopbackAgentUrl, publicUrl, type Settings } from "./settings.js";

const USAGE = `Usage: dstack-server [options]

Starts the dstack server: the public API (Connect, gRPC, gRPC-Web) on --port and the agent port.

Options:
  --host HOST          address to listen on (default 127.0.0.1, or DSTACK_SERVER_HOST)
  -p, --port PORT      public API port (default 3000, or DSTACK_SERVER_PORT)
  --agent-port PORT    port agents dial (default 3001, or DSTACK_SERVER_AGENT_PORT)
  -l, --log-level LVL  trace, debug, info, warn, error, fatal (default info, or DSTACK_SERVER_LOG_LEVEL)
  -d, --debug          same as --log-level debug
  -y, --yes            update the CLI config (~/.dstack/config.yml) without asking
  -n, --no             do not touch the CLI config
  --token TOKEN        admin token (default DSTACK_SERVER_ADMIN_TOKEN, else generated at first start)
  --agent-url URL      the agent port as job containers dial it (default https://127.0.0.1:<agent port>,
                       or DSTACK_SERVER_AGENT_URL)
  --no-local-fleet     do not register this machine as the 'local' fleet (or DSTACK_SERVER_NO_LOCAL_FLEET=1)
  -h, --help           show this help

Environment: DSTACK_SERVER_DIR (default ~/.dstack/server), DSTACK_DATABASE_URL (postgresql://…;
default SQLite in the server dir), DSTACK_SERVER_ENCRYPTION_KEY, DSTACK_USER_PROJECT_DEFAULT_QUOTA,
DSTACK_SHIM_BIN (the local fleet's host agent), DOCKER_HOST.
`;

/** In-flight requests get this long after SIGTERM before their connections are cut. */
const SHUTDOWN_GRACE_MS = 10_000;

interface Cli {
  env: Record<string, string | undefined>;
  configMode: "ask" | "yes" | "no";
}

function parseCli(argv: string[]): Cli | "help" {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      host: { type: "string" },
      port: { type: "string", short: "p" },
      "agent-port": { type: "string" },
      "log-level": { type: "string", short: "l" },
      debug: { type: "boolean", short: "d" },
      yes: { type: "boolean", short: "y" },
      no: { type: "boolean", short: "n" },
      token: { type: "string" },
      "agent-url": { type: "string" },
      "no-local-fleet": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help";
  if (values.yes && values.no) throw new Error("-y/--yes and -n/--no cannot be used together.");
  // Flags win over the environment; settings.ts validates both the same way.
  const env: Record<string, string | undefined> = { ...process.env };
  if (values.host !== undefined) env.DSTACK_SERVER_HOST = values.host;
  if (values.port !== undefined) env.DSTACK_SERVER_PORT = values.port;
  if (values["agent-port"] !== undefined) env.DSTACK_SERVER_AGENT_PORT = values["agent-port"];
  if (values.debug) env.DSTACK_SERVER_LOG_LEVEL = "debug";
  if (values["log-level"] !== undefined) env.DSTACK_SERVER_LOG_LEVEL = values["log-level"];
  if (values.token !== undefined) env.DSTACK_SERVER_ADMIN_TOKEN = values.token;
  if (values["agent-url"] !== undefined) env.DSTACK_SERVER_AGENT_URL = values["agent-url"];
  if (values["no-local-fleet"]) env.DSTACK_SERVER_NO_LOCAL_FLEET = "1";
  return { env, configMode: values.yes ? "yes" : values.no ? "no" : "ask" };
}

/** The admin token: just issued or preset, else the one saved at first start. */
function knownAdminToken(settings: Settings, fromBootstrap: string | null): string | null {
  if (fromBootstrap !== null) return fromBootstrap;
  const file = join(settings.homeDir, ADMIN_TOKEN_FILE);
  return existsSync(file) ? readFileSync(file, "utf8").trim() || null : null;
}

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/n] `)).trim());
  } finally {
    rl.close();
  }
}

/** Writes the `main` project into the CLI config; asks first only when it would change an entry. */
async function writeCliConfig(mode: Cli["configMode"], url: string, token: string, log: App["log"]): Promise<void> {
  if (mode === "no") return;
  const path = cliConfigPath();
  const existing = readCliProjects(path).find((p) => p.name === DEFAULT_PROJECT_NAME);
  const differs = existing !== undefined && (existing.url !== url || existing.token !== token);
  if (differs && mode === "ask" && process.stdin.isTTY && !(await confirm(`Update the '${DEFAULT_PROJECT_NAME}' project in ${path} to ${url}?`))) return;
  const outcome = upsertCliProject(path, { name: DEFAULT_PROJECT_NAME, url, token });
  log.info({ path, outcome }, "CLI config");
}

export async function main(argv: string[]): Promise<number> {
  let cli: Cli | "help";
  try {
    cli = parseCli(argv);
  } catch (e) {
    process.stderr.write(`dstack-server: ${e instanceof Error ? e.message : String(e)}\n\n${USAGE}`);
    return 2;
  }
  if (cli === "help") {
    process.stdout.write(USAGE);
    return 0;
  }

  // Signals are caught from the start: one that arrives during start-up (or just after the
  // banner) must still shut down cleanly instead of killing the process mid-write.
  const signalled = new Promise<NodeJS.Signals>((resolve) => {
    process.on("SIGTERM", resolve);
    process.on("SIGINT", resolve);
  });
  let orm: Orm | undefined;
  let app: App | undefined;
  let scheduler: Scheduler | undefined;
  let replicas: ReplicaBridge | undefined;
  let mesh: MeshServer | undefined;
  let dispatcher: Dispatcher | undefined;
  let localFleet: LocalFleet | undefined;
  let sshFleets: SshFleetProvisioner | undefined;
  try {
    const settings = loadSettings(cli.env);
    orm = await openDatabase(settings.database);
    const services = createServices(orm, settings);
    const { adminToken } = await bootstrap(services);
    // The agent port (mutual TLS) comes up first so the API can publish the CA fingerprint agents pin.
    // Runners push logs and fetch code through the mesh's data hooks, backed by the services.
    // The certificate also names the agent URL's host, so hosts joining with the URL that
    // `dstack fleet join-token` prints verify it without --servername.
    const agentHost = new URL(settings.agentUrl).hostname.replace(/^\[(.*)\]$/, "$1");
    mesh = await createMeshServer({ settings, orm, data: meshDataHooks(orm, services), serverNames: [agentHost] });
    await mesh.listen(settings.agentPort, settings.host);
    services.tunnels.useOpener(mesh.tunnels); // `ssh <run>` and port forwards ride tunnels the shims dial in
    services.metrics.useRunners(mesh.links); // `dstack metrics` asks runners over their links
    app = await createApp({ settings, orm, services, shutdownTimeoutMs: SHUTDOWN_GRACE_MS, caFingerprintSha256: mesh.caFingerprint });
    app.log.info({ home: settings.homeDir, database: settings.database.dialect, encryptionKey: settings.encryptionKeySource }, "dstack server starting");
    await app.listen({ host: settings.host, port: settings.port });
    const port = (app.server.address() as { port: number }).port;
    const url = publicUrl(settings.host, port);

    // The dispatcher listens before the scheduler starts, so no placement goes unheard.
    const agentLog = app.log.child({ component: "agents" });
    let localReady = false;
    dispatcher = createDispatcher({
      services,
      links: mesh.links,
      joinTokens: mesh.joinTokens,
      caCertificatePem: mesh.ca.certPem,
      agentUrl: settings.agentUrl,
      issueRunnerIdentity: (jobSubmissionId) => mesh!.issueRunnerIdentity(jobSubmissionId),
      disconnectedJobTimeoutMs: settings.jobDisconnectedTimeoutMs,
      log: agentLog,
      linkedElsewhere: (instanceId) => replicas?.linkedElsewhere(instanceId) ?? false,
      onHostReport: (instanceId, host) => {
        if (localReady || instanceId !== localFleet?.instanceId) return;
        localReady = true;
        process.stdout.write(`The local fleet is ready (${describeHost(host)})\n`);
      },
    });
    dispatcher.start();
    scheduler = createScheduler({ orm, services, settings, onError: (e, kind, id) => app?.log.error({ err: e, kind, id }, "scheduler reconcile failed") });
    // On PostgreSQL several replicas may share the database: events cross between them over
    // LISTEN/NOTIFY, so the replica holding an agent's link acts on changes made through any other.
    if (settings.database.dialect === "postgresql") {
      const sched = scheduler;
      replicas = createReplicaBridge({ orm, bus: services.bus, url: settings.database.url, links: mesh.links, log: app.log.child({ component: "replicas" }), onResync: () => sched.resync() });
      await replicas.start();
    }
    await scheduler.start();
    services.autoscaler.start(settings.autoscaleIntervalMs, (e) => app?.log.error({ err: e }, "autoscaling failed"));
    void signalled.then(() => services.autoscaler.stop());

    // SSH fleets: hosts are set up over SSH and their shims dial the agent URL.
    sshFleets = new SshFleetProvisioner({
      sshFleets: services.sshFleets,
      bus: services.bus,
      joinTokens: mesh.joinTokens,
      revoke: (id) => mesh!.revoke("shim", id),
      agentUrl: settings.agentUrl,
      caFingerprint: mesh.caFingerprint,
      log: agentLog,
    });
    await sshFleets.start();

    if (settings.localFleet && (await dockerAnswers(cli.env))) {
      localFleet = await startLocalFleet({
        fleets: services.fleets,
        joinTokens: mesh.joinTokens,
        serverUrl: loopbackAgentUrl(settings.host, settings.agentPort),
        caFingerprint: mesh.caFingerprint,
        serverHome: settings.homeDir,
        shimBin: settings.shimBin,
        log: agentLog,
      });
    } else if (settings.localFleet) {
      app.log.info("no Docker engine answers here: no local fleet (start one and restart the server, or add hosts with an SSH fleet)");
    }

    const token = knownAdminToken(settings, adminToken);
    if (token !== null) {
      process.stdout.write(`The admin token is "${token}"\n`);
      await writeCliConfig(cli.configMode, url, token, app.log);
    } else {
      process.stdout.write(`The admin token was issued at first start and is not stored here; an admin can issue a new one with UserService.RefreshToken.\n`);
    }
    process.stdout.write(`Agents join at https://${settings.host}:${settings.agentPort} (CA SHA-256 ${mesh.caFingerprint})\n`);
    process.stdout.write(`The server is running at ${url}\n`);
  } catch (e) {
    const message = isDstackError(e) ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e);
    process.stderr.write(`dstack-server: ${message}\n`);
    await localFleet?.stop().catch(() => {});
    await sshFleets?.stop().catch(() => {});
    await dispatcher?.stop().catch(() => {});
    await scheduler?.stop().catch(() => {});
    await replicas?.stop().catch(() => {});
    await app?.close().catch(() => {});
    await mesh?.close().catch(() => {});
    await orm?.close(true).catch(() => {});
    return 1;
  }

  return shutdownOn(signalled, app, scheduler, mesh, orm, dispatcher!, localFleet, sshFleets, replicas);
}

/** Resolves with the exit code once a signal has stopped everything. */
async function shutdownOn(
  signalled: Promise<NodeJS.Signals>,
  app: App,
  scheduler: Scheduler,
  mesh: MeshServer,
  orm: Orm,
  dispatcher: Dispatcher,
  localFleet: LocalFleet | undefined,
  sshFleets?: SshFleetProvisioner,
  replicas?: ReplicaBridge,
): Promise<number> {
  const signal = await signalled;
  // A second signal: the user does not want to wait.
  const again = (s: NodeJS.Signals) => {
    app.log.warn({ signal: s }, "second signal, exiting now");
    process.exit(1);
  };
  process.removeAllListeners("SIGTERM").removeAllListeners("SIGINT");
  process.on("SIGTERM", again);
  process.on("SIGINT", again);
  app.log.info({ signal }, "shutting down: no new requests, letting in-flight ones finish");
  // Cuts connections that outlive the grace period, so close() cannot hang forever.
  const force = setTimeout(() => {
    app.server.destroyHttp2Sessions();
    app.server.closeAllConnections();
  }, SHUTDOWN_GRACE_MS + 2_000);
  force.unref();
  let code = 0;
  for (const [what, step] of [
    // The local shim goes first and cleanly: its containers keep running and are recovered at its next start.
    ["local fleet's host agent", () => localFleet?.stop() ?? Promise.resolve()],
    ["SSH fleet provisioner", () => sshFleets?.stop() ?? Promise.resolve()],
    ["API", () => app.close()],
    ["agent dispatcher", () => dispatcher.stop()],
    ["scheduler", () => scheduler.stop()],
    ["replica bridge", () => replicas?.stop() ?? Promise.resolve()],
    ["agent port", () => mesh.close()],
    ["database", () => orm.close()],
  ] as const) {
    try {
      await step();
    } catch (e) {
      code = 1;
      app.log.error({ err: e }, `shutdown: closing the ${what} failed`);
    }
  }
  clearTimeout(force);
  app.log.info("stopped");
  // A handle some library forgot to close must not keep a stopped server alive.
  setTimeout(() => process.exit(code), 1_000).unref();
  return code;
}
