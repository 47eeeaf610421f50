// Starts a REAL dstack server process (`node server/bin/dstack-server.js`) for integration
// tests: free ports, a temp server dir and a temp HOME (so ~/.dstack/config.yml is the test's
// own), SQLite by default or a fresh PostgreSQL database made here and dropped on cleanup.
// It waits for the banner line with the URL and hands back the URL and the admin token.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { FleetConfig } from "@dstack/proto";
import type { Fleet } from "@dstack/proto/api";
import type { Client } from "../../cli/src/index.js";
import { openDatabase, type Orm } from "../../server/src/db/database.js";
import type { Services } from "../../server/src/services/index.js";
import type { UserView } from "../../server/src/services/users.js";
import { loadSettings } from "../../server/src/settings.js";
import { createTestDatabase, type Dialect } from "../../server/src/testing/db.js";

export { DIALECTS, type Dialect } from "../../server/src/testing/db.js";

const REPO = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const BIN = join(REPO, "server", "bin", "dstack-server.js");

/** Where a server lives: survives restarts of the process, removed by cleanup(). */
export interface ServerEnv {
  dialect: Dialect;
  /** The temp HOME: the CLI config is `<home>/.dstack/config.yml`. */
  home: string;
  /** DSTACK_SERVER_DIR. */
  serverDir: string;
  /** Variables every start gets (DSTACK_SERVER_DIR, HOME, DSTACK_DATABASE_URL for PostgreSQL). */
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

export interface TestServer {
  url: string;
  port: number;
  /** The mutual-TLS agent port (enrollment and agent links). */
  agentPort: number;
  /** `https://127.0.0.1:<agentPort>`: where agents on this machine dial. */
  agentUrl: string;
  /** SHA-256 of the agent CA (lowercase hex), as the banner prints it: what agents pin. */
  caFingerprint: string;
  adminToken: string;
  process: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Sends `signal` (default SIGTERM) and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function createServerEnv(dialect: Dialect = "sqlite"): Promise<ServerEnv> {
  const home = mkdtempSync(join(tmpdir(), "dstack-home-"));
  const serverDir = join(home, ".dstack", "server");
  const env: Record<string, string> = { HOME: home, DSTACK_SERVER_DIR: serverDir };
  let drop = async () => {};
  if (dialect === "postgresql") {
    const made = await createTestDatabase("postgresql", home);
    if (made.db.dialect === "postgresql") env.DSTACK_DATABASE_URL = made.db.url;
    drop = made.drop;
  }
  return {
    dialect,
    home,
    serverDir,
    env,
    cleanup: async () => {
      await drop();
      rmSync(home, { recursive: true, force: true });
    },
  };
}

export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => ok(port));
    });
  });
}

const BANNER_URL = /The server is running at (\S+)/;
const BANNER_TOKEN = /The admin token is "([^"]+)"/;
const BANNER_CA = /\(CA SHA-256 ([0-9a-f]{64})\)/;

export interface StartOptions {
  args?: string[];
  env?: Record<string, string>;
  timeoutMs?: number;
  /**
   * Let the server register this machine as the `local` fleet and run its host agent (when
   * Docker answers). Default false: tests get a server with no fleet unless they ask.
   */
  localFleet?: boolean;
  /** The public API port; default a free one. A restart on the same home may reuse the last start's. */
  port?: number;
  /**
   * The agent port; default a free one. Agents (the local shim, runners in containers) keep the
   * agent URL they were given, so a restart that must keep them must reuse the last start's.
   */
  agentPort?: number;
}

/** Starts the server process in `where`; rejects with its stderr if it exits or stalls. */
export async function startServer(where: ServerEnv, opts: StartOptions = {}): Promise<TestServer> {
  const port = opts.port ?? (await freePort());
  let agentPort = opts.agentPort ?? (await freePort());
  while (opts.agentPort === undefined && agentPort === port) agentPort = await freePort();
  const child = spawn(process.execPath, [BIN, "--port", String(port), "--agent-port", String(agentPort), "--log-level", "warn", ...(opts.args ?? [])], {
    cwd: REPO,
    env: { ...process.env, DSTACK_SERVER_ADMIN_TOKEN: "", DSTACK_SERVER_NO_LOCAL_FLEET: opts.localFleet ? "" : "1", ...where.env, ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
  const exited = new Promise<number | null>((ok) => child.once("exit", (code) => ok(code)));

  const url = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      fail(new Error(`dstack-server printed no URL within ${opts.timeoutMs ?? 30_000} ms.\nstdout:\n${out}\nstderr:\n${err}`));
    }, opts.timeoutMs ?? 30_000);
    const check = () => {
      const m = BANNER_URL.exec(out);
      if (m) {
        clearTimeout(timer);
        child.stdout.off("data", check);
        ok(m[1]!.replace(/\/$/, ""));
      }
    };
    child.stdout.on("data", check);
    void exited.then((code) => {
      clearTimeout(timer);
      fail(new Error(`dstack-server exited with ${code} before it was ready.\nstdout:\n${out}\nstderr:\n${err}`));
    });
  });
  const token = BANNER_TOKEN.exec(out)?.[1];
  if (!token) throw new Error(`dstack-server printed no admin token:\n${out}`);
  const ca = BANNER_CA.exec(out)?.[1];
  if (!ca) throw new Error(`dstack-server printed no agent CA fingerprint:\n${out}`);
  return {
    url,
    port,
    agentPort,
    agentUrl: `https://127.0.0.1:${agentPort}`,
    caFingerprint: ca,
    adminToken: token,
    process: child,
    stdout: () => out,
    stderr: () => err,
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** One server in its own env; stop() also removes the env (and drops the PG database). */
export async function startTestServer(dialect: Dialect = "sqlite", opts: Parameters<typeof startServer>[1] = {}): Promise<TestServer & { where: ServerEnv }> {
  const where = await createServerEnv(dialect);
  let server: TestServer;
  try {
    server = await startServer(where, opts);
  } catch (e) {
    await where.cleanup();
    throw e;
  }
  return {
    ...server,
    where,
    stop: async (signal) => {
      const code = await server.stop(signal);
      await where.cleanup();
      return code;
    },
  };
}

/** Polls a fleet through the API until `done` holds for it; fails at once if the server exits. */
export async function waitFleet(client: Client, server: TestServer, name: string, done: (f: Fleet) => boolean, pollMs = 500): Promise<Fleet> {
  for (;;) {
    const f = await client.fleets.get(name);
    if (done(f)) return f;
    if (server.process.exitCode !== null) throw new Error(`the server exited:\n${server.stderr()}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Resolves once the server says its local fleet (this machine's host agent) reported in. */
export function localFleetReady(s: TestServer): Promise<void> {
  return new Promise<void>((ok, fail) => {
    const check = () => {
      if (s.stdout().includes("The local fleet is ready")) ok();
    };
    s.process.stdout!.on("data", check);
    s.process.once("exit", () => fail(new Error(`the server exited:\n${s.stderr()}`)));
    check();
  });
}

/** What `seedServer`'s callback gets: the services on the env's database, acting as the admin. */
export interface ServerSeed {
  svc: Services;
  admin: UserView;
  orm: Orm;
  /** Applies a fleet configuration (YAML) in project `main`. */
  applyFleet(yaml: string): ReturnType<Services["fleets"]["apply"]>;
  /** A new one-time join token for a shim into this fleet of project `main`. */
  shimToken(fleetId: string): Promise<string>;
}

/**
 * Prepares a server env before its real start: one start and stop (the server migrates the
 * database and bootstraps the admin and project `main`), then `seed` writes through the services
 * on the same database as the admin, as an admin would through the API (fleets, simulated hosts,
 * secrets, join tokens). Resolves with seed's result and the admin token the env keeps.
 */
export async function seedServer<T>(where: ServerEnv, seed: (s: ServerSeed) => Promise<T>): Promise<{ seeded: T; adminToken: string }> {
  const first = await startServer(where);
  const code = await first.stop();
  if (code !== 0) throw new Error(`the server's first start exited with ${code}:\n${first.stderr()}`);
  // Loaded here, not at the top: most tests that start servers never seed one.
  const [{ parseConfiguration }, { createServices }, { JoinTokens }, { Project }] = await Promise.all([
    import("@dstack/proto"),
    import("../../server/src/services/index.js"),
    import("../../server/src/mesh/join-tokens.js"),
    import("../../server/src/db/entities.js"),
  ]);
  const settings = loadSettings({ ...process.env, DSTACK_SERVER_ADMIN_TOKEN: "", ...where.env });
  const orm = await openDatabase(settings.database);
  try {
    const svc = createServices(orm, settings);
    const admin = await svc.users.authenticate(first.adminToken);
    const seeded = await seed({
      svc,
      admin,
      orm,
      applyFleet: (yaml) => svc.fleets.apply(admin, "main", parseConfiguration(yaml, "fleet.dstack.yml") as FleetConfig),
      shimToken: async (fleetId) => {
        const project = await orm.em.fork().findOneOrFail(Project, { name: "main" });
        return (await new JoinTokens(orm).create({ projectId: project.id, fleetId, kind: "shim" })).token;
      },
    });
    return { seeded, adminToken: first.adminToken };
  } finally {
    await orm.close(true);
  }
}
