// Server settings: one typed object, read once from the environment at start.
// Every default is documented where it is defined; a bad value stops the server with an
// error that names the variable.
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { err } from "./errors.js";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal";
const LOG_LEVELS: readonly LogLevel[] = ["trace", "debug", "info", "warn", "error", "fatal"];

export type DatabaseSettings =
  | { dialect: "sqlite"; /** file path, or ":memory:" */ path: string }
  | { dialect: "postgresql"; url: string };

export interface Settings {
  /** `DSTACK_SERVER_DIR`; default `~/.dstack/server`. Holds the SQLite DB, key file, logs. */
  homeDir: string;
  /** `DSTACK_DATABASE_URL` (postgresql://…); default SQLite at `<home>/data/sqlite.db`. */
  database: DatabaseSettings;
  /** 32-byte AES key for secrets: `DSTACK_SERVER_ENCRYPTION_KEY` (base64), else `<home>/encryption.key`, created at first start. */
  encryptionKey: Buffer;
  /** Where the key came from, for the startup banner. */
  encryptionKeySource: "env" | "file";
  /** `DSTACK_SERVER_ADMIN_TOKEN`: preset admin token; default none (a random one is issued at first start). */
  adminToken: string | undefined;
  /** `DSTACK_SERVER_HOST`; default `127.0.0.1` (public API only on loopback unless asked). */
  host: string;
  /** `DSTACK_SERVER_PORT`; default 3000: the public API (Connect, gRPC, gRPC-Web). */
  port: number;
  /** `DSTACK_SERVER_AGENT_PORT`; default 3001: the mTLS port agents dial. */
  agentPort: number;
  /** `DSTACK_SERVER_LOG_LEVEL`; default `info`. */
  logLevel: LogLevel;
  /** `DSTACK_USER_PROJECT_DEFAULT_QUOTA`; default 10 projects owned per non-admin user (as in dstack). */
  userProjectQuota: number;
  /**
   * `DSTACK_SERVER_AGENT_URL`: the agent port as runners inside job containers dial it; default
   * `https://127.0.0.1:<agent port>` (the bind address when it is not a wildcard). Containers run
   * with host networking, so loopback reaches a server on the same machine.
   */
  agentUrl: string;
  /**
   * Register this machine as the `local` fleet of project `main` and run its host agent when a
   * Docker engine answers; default true. `--no-local-fleet` or `DSTACK_SERVER_NO_LOCAL_FLEET=1` turn it off.
   */
  localFleet: boolean;
  /** `DSTACK_SHIM_BIN`: the host agent's entry script for the local fleet; default `agent-shim/bin/dstack-shim.js` of this checkout. */
  shimBin: string | undefined;
  /**
   * `DSTACK_SERVER_JOB_DISCONNECTED_TIMEOUT` (seconds): how long a job keeps its status while
   * neither its host agent nor its runner is linked, before it fails as instance_unreachable;
   * default 120 (dstack's JOB_DISCONNECTED_RETRY_TIMEOUT).
   */
  jobDisconnectedTimeoutMs: number;
  /**
   * `DSTACK_SERVER_AUTOSCALE_INTERVAL` (seconds): how often services with `scaling` are measured
   * against their request rate; default 10 (dstack evaluates running services about as often).
   */
  autoscaleIntervalMs: number;
}

type Env = Record<string, string | undefined>;

function bad(variable: string, reason: string): never {
  throw err("DSTACK_BAD_SETTING", { variable, reason });
}

function readPort(env: Env, variable: string, fallback: number): number {
  const raw = env[variable];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw)) bad(variable, `'${raw}' is not a port number (1-65535).`);
  const n = Number(raw);
  if (n < 1 || n > 65535) bad(variable, `'${raw}' is not a port number (1-65535).`);
  return n;
}

function readInt(env: Env, variable: string, fallback: number, min: number): number {
  const raw = env[variable];
  if (raw === undefined || raw === "") return fallback;
  if (!/^-?\d+$/.test(raw) || Number(raw) < min) bad(variable, `'${raw}' must be an integer >= ${min}.`);
  return Number(raw);
}

function readFlag(env: Env, variable: string): boolean {
  const raw = (env[variable] ?? "").trim().toLowerCase();
  if (raw === "" || raw === "0" || raw === "false" || raw === "no") return false;
  if (raw === "1" || raw === "true" || raw === "yes") return true;
  return bad(variable, `'${raw}' is not a boolean (1/0, true/false).`);
}

/** Where agents on this machine dial: the bind address, or loopback for a wildcard bind. */
/** The URL users and the CLI dial: a wildcard bind address is reached via loopback. */
export function publicUrl(host: string, port: number): string {
  const h = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  return `http://${h.includes(":") ? `[${h}]` : h}:${port}/`;
}

export function loopbackAgentUrl(host: string, agentPort: number): string {
  const h = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  return `https://${h.includes(":") ? `[${h}]` : h}:${agentPort}`;
}

function readAgentUrl(env: Env, host: string, agentPort: number): string {
  const raw = env.DSTACK_SERVER_AGENT_URL;
  if (raw === undefined || raw === "") return loopbackAgentUrl(host, agentPort);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return bad("DSTACK_SERVER_AGENT_URL", `'${raw}' is not a URL; expected https://host:port.`);
  }
  if (url.protocol !== "https:") bad("DSTACK_SERVER_AGENT_URL", `'${raw}' must use https:// (agents speak mutual TLS).`);
  return raw.replace(/\/+$/, "");
}

function readDatabase(env: Env, homeDir: string): DatabaseSettings {
  const url = env.DSTACK_DATABASE_URL;
  if (url === undefined || url === "") return { dialect: "sqlite", path: join(homeDir, "data", "sqlite.db") };
  if (/^postgres(ql)?:\/\//.test(url)) {
    try {
      new URL(url);
    } catch {
      bad("DSTACK_DATABASE_URL", "not a valid URL; expected postgresql://user:password@host:5432/dbname.");
    }
    return { dialect: "postgresql", url };
  }
  if (url.startsWith("sqlite://")) return { dialect: "sqlite", path: url.slice("sqlite://".length) };
  return bad("DSTACK_DATABASE_URL", `unsupported scheme in '${url.replace(/\/\/[^@]*@/, "//***@")}'; use postgresql://… or leave it unset for SQLite.`);
}

function decodeKey(variable: string, raw: string): Buffer {
  const trimmed = raw.trim();
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed)) bad(variable, "not base64; generate one with `openssl rand -base64 32`.");
  const key = Buffer.from(trimmed, "base64");
  if (key.length !== 32) bad(variable, `decodes to ${key.length} bytes, AES-256 needs exactly 32; generate one with \`openssl rand -base64 32\`.`);
  return key;
}

/** The key from the env, else from `<home>/encryption.key`, created (0600) when missing. */
function readEncryptionKey(env: Env, homeDir: string): { key: Buffer; source: "env" | "file" } {
  const raw = env.DSTACK_SERVER_ENCRYPTION_KEY;
  if (raw !== undefined && raw !== "") return { key: decodeKey("DSTACK_SERVER_ENCRYPTION_KEY", raw), source: "env" };
  const file = join(homeDir, "encryption.key");
  if (existsSync(file)) return { key: decodeKey(`key file ${file}`, readFileSync(file, "utf8")), source: "file" };
  mkdirSync(homeDir, { recursive: true, mode: 0o700 });
  // `wx`: never overwrite a key another process wrote a moment ago — losing it loses every secret.
  try {
    writeFileSync(file, randomBytes(32).toString("base64") + "\n", { mode: 0o600, flag: "wx" });
    chmodSync(file, 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  }
  return { key: decodeKey(`key file ${file}`, readFileSync(file, "utf8")), source: "file" };
}

/** Reads settings from `env` (default `process.env`). Creates the home dir and key file if needed. */
export function loadSettings(env: Env = process.env): Settings {
  const homeRaw = env.DSTACK_SERVER_DIR;
  const homeDir = resolve(homeRaw !== undefined && homeRaw !== "" ? homeRaw : join(homedir(), ".dstack", "server"));
  const logLevel = (env.DSTACK_SERVER_LOG_LEVEL ?? "info").toLowerCase();
  if (!LOG_LEVELS.includes(logLevel as LogLevel)) bad("DSTACK_SERVER_LOG_LEVEL", `'${logLevel}' is not one of ${LOG_LEVELS.join(", ")}.`);
  const adminToken = env.DSTACK_SERVER_ADMIN_TOKEN;
  if (adminToken !== undefined && adminToken !== "" && adminToken.length < 8) {
    bad("DSTACK_SERVER_ADMIN_TOKEN", "too short; use at least 8 characters (better: `openssl rand -hex 32`).");
  }
  const database = readDatabase(env, homeDir);
  const { key, source } = readEncryptionKey(env, homeDir);
  const port = readPort(env, "DSTACK_SERVER_PORT", 3000);
  const agentPort = readPort(env, "DSTACK_SERVER_AGENT_PORT", 3001);
  if (port === agentPort) bad("DSTACK_SERVER_AGENT_PORT", `equals DSTACK_SERVER_PORT (${port}); the API and the agent port must differ.`);
  const host = env.DSTACK_SERVER_HOST || "127.0.0.1";
  return {
    homeDir,
    database,
    encryptionKey: key,
    encryptionKeySource: source,
    adminToken: adminToken === "" ? undefined : adminToken,
    host,
    port,
    agentPort,
    logLevel: logLevel as LogLevel,
    userProjectQuota: readInt(env, "DSTACK_USER_PROJECT_DEFAULT_QUOTA", 10, 0),
    agentUrl: readAgentUrl(env, host, agentPort),
    localFleet: !readFlag(env, "DSTACK_SERVER_NO_LOCAL_FLEET"),
    shimBin: env.DSTACK_SHIM_BIN || undefined,
    jobDisconnectedTimeoutMs: readInt(env, "DSTACK_SERVER_JOB_DISCONNECTED_TIMEOUT", 120, 1) * 1000,
    autoscaleIntervalMs: readInt(env, "DSTACK_SERVER_AUTOSCALE_INTERVAL", 10, 1) * 1000,
  };
}
