// Test helpers: a server home in a temp dir and a fresh database of either dialect.
// PostgreSQL gets a new database per call (created through DSTACK_TEST_DATABASE_URL, default
// postgresql://dstack:dstack@127.0.0.1:5432/dstack_test), so parallel test files never share
// tables. If that server is unreachable the tests fail — they never skip silently.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MikroORM } from "@mikro-orm/core";
import { ormOptions, type Orm } from "../db/database.js";
import { loadSettings, type DatabaseSettings, type Settings } from "../settings.js";

export const DIALECTS = ["sqlite", "postgresql"] as const;
export type Dialect = (typeof DIALECTS)[number];

export const TEST_PG_URL = process.env.DSTACK_TEST_DATABASE_URL ?? "postgresql://dstack:dstack@127.0.0.1:5432/dstack_test";

export interface TestEnv {
  settings: Settings;
  /** Drops the database (PG) and removes the temp home. */
  cleanup(): Promise<void>;
}

/** Runs `fn` on a connection to the test server's maintenance database (`url`). */
export async function withAdminConnection<T>(fn: (orm: Orm) => Promise<T>, url = TEST_PG_URL): Promise<T> {
  let orm: Orm;
  try {
    orm = (await MikroORM.init({ ...ormOptions({ dialect: "postgresql", url }), pool: { min: 0, max: 1 } })) as Orm;
    const check = await orm.checkConnection();
    if (!check.ok) {
      await orm.close(true);
      throw new Error(check.reason);
    }
  } catch (e) {
    const safe = url.replace(/\/\/([^:@/]*)(:[^@]*)?@/, "//$1:***@");
    throw new Error(
      `PostgreSQL for tests is unreachable at ${safe} (${e instanceof Error ? e.message : String(e)}). ` +
        "Run `bash scripts/setup.sh` to install and start it, or point DSTACK_TEST_DATABASE_URL at a server whose role may CREATE DATABASE.",
    );
  }
  try {
    return await fn(orm);
  } finally {
    await orm.close(true);
  }
}

/**
 * Drops a test database, ending what is connected to it. An autovacuum worker may be there; a
 * role without pg_signal_backend (setup.sh grants it) cannot end one, so a refusal is retried
 * while the worker finishes.
 */
async function dropDatabase(name: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await withAdminConnection((orm) => orm.em.getConnection().execute(`drop database if exists "${name}" with (force)`));
      return;
    } catch (e) {
      if (attempt >= 10 || !/pg_signal_backend|being accessed by other users/.test(e instanceof Error ? e.message : String(e))) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/** A fresh database (not yet migrated) of the given dialect. */
export async function createTestDatabase(dialect: Dialect, dir: string): Promise<{ db: DatabaseSettings; drop(): Promise<void> }> {
  if (dialect === "sqlite") return { db: { dialect, path: join(dir, "data", "sqlite.db") }, drop: async () => {} };
  const name = `dstack_t_${process.pid}_${randomBytes(4).toString("hex")}`;
  await withAdminConnection((orm) => orm.em.getConnection().execute(`create database "${name}"`));
  const url = new URL(TEST_PG_URL);
  url.pathname = `/${name}`;
  return {
    db: { dialect, url: url.toString() },
    drop: () => dropDatabase(name),
  };
}

/** Settings for a server living in a temp dir, on a fresh database. `env` adds/overrides variables. */
export async function createTestEnv(dialect: Dialect, env: Record<string, string> = {}): Promise<TestEnv> {
  const home = mkdtempSync(join(tmpdir(), "dstack-test-"));
  const { db, drop } = await createTestDatabase(dialect, home);
  const base = loadSettings({ DSTACK_SERVER_DIR: home, ...env });
  return {
    settings: { ...base, database: db },
    cleanup: async () => {
      await drop();
      rmSync(home, { recursive: true, force: true });
    },
  };
}
