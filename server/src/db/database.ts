// Opening the database: SQLite in the server dir by default, PostgreSQL when configured.
// Pending migrations run at every start, so an upgraded server brings its schema along.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { MikroORM, type MigrationObject, type Options } from "@mikro-orm/core";
import { Migrator } from "@mikro-orm/migrations";
import { PostgreSqlDriver } from "@mikro-orm/postgresql";
import { SqliteDriver, type AbstractSqlDriver, type EntityManager } from "@mikro-orm/sqlite";
import { err } from "../errors.js";
import type { DatabaseSettings } from "../settings.js";
import { ENTITY_SCHEMAS } from "./entities.js";
import { migrations as postgresqlMigrations } from "./migrations/postgresql/index.js";
import { migrations as sqliteMigrations } from "./migrations/sqlite/index.js";

export type Orm = MikroORM<AbstractSqlDriver>;
export type Em = EntityManager;

export const MIGRATIONS_TABLE = "mikro_orm_migrations";

export function migrationsFor(dialect: DatabaseSettings["dialect"]): MigrationObject[] {
  return dialect === "sqlite" ? sqliteMigrations : postgresqlMigrations;
}

/** ORM options for a database; `migrationsPath` is only needed when generating migrations. */
export function ormOptions(db: DatabaseSettings, migrationsPath?: string): Options {
  const common = {
    entities: ENTITY_SCHEMAS,
    extensions: [Migrator],
    // Every request forks its own EntityManager; a shared global one would leak state.
    allowGlobalContext: false,
    // Schemas are explicit; no TS metadata reflection (tsx/esbuild emit none anyway).
    discovery: { disableDynamicFileAccess: true },
    forceUtcTimezone: true,
    migrations: {
      tableName: MIGRATIONS_TABLE,
      migrationsList: migrationsPath ? undefined : migrationsFor(db.dialect),
      path: migrationsPath,
      emit: "ts" as const,
      snapshot: false,
      transactional: true,
      allOrNothing: true,
      disableForeignKeys: false,
      silent: true,
    },
  };
  if (db.dialect === "sqlite") return { ...common, driver: SqliteDriver, dbName: db.path } as Options;
  return { ...common, driver: PostgreSqlDriver, clientUrl: db.url, pool: { min: 0, max: 20 } } as Options;
}

function redact(db: DatabaseSettings): string {
  return db.dialect === "sqlite" ? db.path : db.url.replace(/\/\/([^:@/]*)(:[^@]*)?@/, "//$1:***@");
}

/** Connects, applies pending migrations, and returns the ORM. */
export async function openDatabase(db: DatabaseSettings): Promise<Orm> {
  if (db.dialect === "sqlite" && db.path !== ":memory:") mkdirSync(dirname(db.path), { recursive: true, mode: 0o700 });
  let orm: Orm;
  try {
    orm = (await MikroORM.init(ormOptions(db))) as Orm;
    if (!(await orm.isConnected())) {
      const check = await orm.checkConnection();
      throw new Error(check.ok ? "not connected" : check.reason);
    }
  } catch (e) {
    throw err("DSTACK_DATABASE_UNAVAILABLE", { url: redact(db), reason: e instanceof Error ? e.message : String(e) }, e);
  }
  try {
    if (db.dialect === "sqlite") {
      // WAL lets readers proceed while the scheduler writes; FKs are off by default in SQLite.
      await orm.em.getConnection().execute("pragma journal_mode = wal");
      // In WAL mode NORMAL syncs at checkpoints, not at every commit: the database stays
      // consistent after a crash, and a power cut can lose only the last commits (SQLite's own advice for WAL).
      await orm.em.getConnection().execute("pragma synchronous = normal");
      await orm.em.getConnection().execute("pragma foreign_keys = on");
      await orm.em.getConnection().execute("pragma busy_timeout = 5000");
    }
    await orm.getMigrator().up();
  } catch (e) {
    await orm.close(true);
    throw e;
  }
  return orm;
}

/** Runs `fn` in one transaction on a fresh EntityManager; flushes and commits when it returns. */
export function withTransaction<T>(orm: Orm, fn: (em: Em) => Promise<T>): Promise<T> {
  return orm.em.fork().transactional((em) => fn(em as Em));
}
