import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isDstackError } from "./errors.js";
import { loadSettings } from "./settings.js";

const dirs: string[] = [];
const home = () => {
  const d = mkdtempSync(join(tmpdir(), "dstack-settings-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const failure = (env: Record<string, string>) => {
  try {
    loadSettings({ DSTACK_SERVER_DIR: home(), ...env });
  } catch (e) {
    if (isDstackError(e, "DSTACK_BAD_SETTING")) return e.message;
    throw e;
  }
  throw new Error("expected a settings error");
};

describe("settings", () => {
  it("defaults: sqlite in the home, ports 3000/3001, info logs, a key file created 0600", () => {
    const dir = home();
    const s = loadSettings({ DSTACK_SERVER_DIR: dir });
    expect(s.database).toEqual({ dialect: "sqlite", path: join(dir, "data", "sqlite.db") });
    expect([s.host, s.port, s.agentPort, s.logLevel]).toEqual(["127.0.0.1", 3000, 3001, "info"]);
    expect(s.adminToken).toBeUndefined();
    expect(s.encryptionKey).toHaveLength(32);
    expect(s.encryptionKeySource).toBe("file");
    const file = join(dir, "encryption.key");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(Buffer.from(readFileSync(file, "utf8").trim(), "base64")).toEqual(s.encryptionKey);
    // second start reads the same key
    expect(loadSettings({ DSTACK_SERVER_DIR: dir }).encryptionKey).toEqual(s.encryptionKey);
  });

  it("defaults the home to ~/.dstack/server", () => {
    const fakeHome = home();
    const prev = process.env.HOME;
    process.env.HOME = fakeHome;
    try {
      expect(loadSettings({ HOME: fakeHome }).homeDir).toBe(join(fakeHome, ".dstack", "server"));
    } finally {
      process.env.HOME = prev;
    }
  });

  it("reads PostgreSQL, key, token, ports and log level from the environment", () => {
    const key = Buffer.alloc(32, 7).toString("base64");
    const s = loadSettings({
      DSTACK_SERVER_DIR: home(),
      DSTACK_DATABASE_URL: "postgresql://u:p@db:5432/dstack",
      DSTACK_SERVER_ENCRYPTION_KEY: key,
      DSTACK_SERVER_ADMIN_TOKEN: "my-admin-token",
      DSTACK_SERVER_HOST: "0.0.0.0",
      DSTACK_SERVER_PORT: "8080",
      DSTACK_SERVER_AGENT_PORT: "8081",
      DSTACK_SERVER_LOG_LEVEL: "DEBUG",
    });
    expect(s.database).toEqual({ dialect: "postgresql", url: "postgresql://u:p@db:5432/dstack" });
    expect(s.encryptionKey).toEqual(Buffer.alloc(32, 7));
    expect(s.encryptionKeySource).toBe("env");
    expect([s.adminToken, s.host, s.port, s.agentPort, s.logLevel]).toEqual(["my-admin-token", "0.0.0.0", 8080, 8081, "debug"]);
  });

  it("agents: the agent URL defaults to loopback on the agent port, the local fleet is on unless turned off", () => {
    const d = loadSettings({ DSTACK_SERVER_DIR: home(), DSTACK_SERVER_HOST: "0.0.0.0", DSTACK_SERVER_AGENT_PORT: "4001" });
    expect([d.agentUrl, d.localFleet, d.shimBin, d.jobDisconnectedTimeoutMs]).toEqual(["https://127.0.0.1:4001", true, undefined, 120_000]);
    expect(loadSettings({ DSTACK_SERVER_DIR: home(), DSTACK_SERVER_JOB_DISCONNECTED_TIMEOUT: "30" }).jobDisconnectedTimeoutMs).toBe(30_000);
    const s = loadSettings({ DSTACK_SERVER_DIR: home(), DSTACK_SERVER_AGENT_URL: "https://dstack.example.com:3001/", DSTACK_SERVER_NO_LOCAL_FLEET: "1", DSTACK_SHIM_BIN: "/opt/shim.js" });
    expect([s.agentUrl, s.localFleet, s.shimBin]).toEqual(["https://dstack.example.com:3001", false, "/opt/shim.js"]);
  });

  it.each([
    [{ DSTACK_SERVER_AGENT_URL: "http://x:3001" }, "DSTACK_SERVER_AGENT_URL"],
    [{ DSTACK_SERVER_NO_LOCAL_FLEET: "maybe" }, "DSTACK_SERVER_NO_LOCAL_FLEET"],
    [{ DSTACK_SERVER_PORT: "http" }, "DSTACK_SERVER_PORT"],
    [{ DSTACK_SERVER_PORT: "70000" }, "DSTACK_SERVER_PORT"],
    [{ DSTACK_SERVER_AGENT_PORT: "3000" }, "DSTACK_SERVER_AGENT_PORT"],
    [{ DSTACK_SERVER_LOG_LEVEL: "loud" }, "DSTACK_SERVER_LOG_LEVEL"],
    [{ DSTACK_DATABASE_URL: "mysql://x" }, "DSTACK_DATABASE_URL"],
    [{ DSTACK_SERVER_ENCRYPTION_KEY: "c2hvcnQ=" }, "DSTACK_SERVER_ENCRYPTION_KEY"],
    [{ DSTACK_SERVER_ENCRYPTION_KEY: "not base64!!" }, "DSTACK_SERVER_ENCRYPTION_KEY"],
    [{ DSTACK_SERVER_ADMIN_TOKEN: "abc" }, "DSTACK_SERVER_ADMIN_TOKEN"],
    [{ DSTACK_USER_PROJECT_DEFAULT_QUOTA: "-1" }, "DSTACK_USER_PROJECT_DEFAULT_QUOTA"],
  ])("rejects %o naming %s", (env, variable) => {
    expect(failure(env)).toContain(`Invalid ${variable}:`);
  });
});
