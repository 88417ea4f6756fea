import { createHash } from "node:crypto";
import {
  type Kysely,
  type Migration as KyselyMigration,
  type MigrationProvider,
  type MigrationResult,
  Migrator,
  sql,
} from "kysely";
import { HandsafeError } from "../../core/errors.ts";
import type { Database, DatabaseDialect } from "./database.ts";

/**
 * One schema step. Migrations receive the dialect so a single file can choose `bytesType(dialect)`
 * or write a trigger per engine. Names sort in the order they run: "0001_platform",
 * "0002_activation", … — each capability owns its numbers and exports its own registry.
 */
export interface Migration {
  // biome-ignore lint/suspicious/noExplicitAny: migrations speak of tables before they exist.
  up(db: Kysely<any>, dialect: DatabaseDialect): Promise<void>;
  // biome-ignore lint/suspicious/noExplicitAny: as above.
  down?(db: Kysely<any>, dialect: DatabaseDialect): Promise<void>;
}

export type MigrationRegistry = Readonly<Record<string, Migration>>;

const NAME = /^[0-9]{4}_[a-z0-9_]+$/;

/** Merges capability registries; two capabilities claiming one name is a programming error. */
export function combineMigrations(...registries: MigrationRegistry[]): MigrationRegistry {
  const out: Record<string, Migration> = {};
  for (const registry of registries) {
    for (const [name, migration] of Object.entries(registry)) {
      if (name in out)
        throw new HandsafeError("storage.migration_invalid", `migration ${name} is defined twice`, {
          status: 500,
        });
      out[name] = migration;
    }
  }
  return Object.freeze(out);
}

// A fixed 64-bit advisory-lock key, derived from a label so it cannot collide by accident with
// another application's key on a shared PostgreSQL.
const PG_MIGRATION_LOCK_KEY = createHash("sha256")
  .update("handsafe/v1/migration-lock")
  .digest()
  .readBigInt64BE(0)
  .toString();

/**
 * Brings the schema to the newest migration; returns the names applied now (empty when already
 * current). Safe to call from several server nodes at once:
 * - PostgreSQL: the whole run (including the creation of Kysely's bookkeeping tables, which
 *   races on a fresh database) holds a session advisory lock on one connection; DDL is
 *   transactional, so a failed run leaves the schema as it was.
 * - SQLite: the run is one BEGIN IMMEDIATE transaction, which also excludes other processes.
 */
export async function migrateToLatest(database: Database, migrations: MigrationRegistry): Promise<string[]> {
  for (const name of Object.keys(migrations)) {
    if (!NAME.test(name))
      throw new HandsafeError(
        "storage.migration_invalid",
        `migration name ${JSON.stringify(name)} must look like 0001_name (four digits, lower-case words)`,
        { status: 500 },
      );
  }
  const provider: MigrationProvider = {
    async getMigrations() {
      const out: Record<string, KyselyMigration> = {};
      for (const [name, m] of Object.entries(migrations)) {
        const down = m.down;
        out[name] = {
          up: (db) => m.up(db, database.dialect),
          ...(down ? { down: (db: Kysely<unknown>) => down(db, database.dialect) } : {}),
        };
      }
      return out;
    },
  };

  const results = await database.db.connection().execute(async (conn) => {
    const migrator = new Migrator({ db: conn, provider });
    if (database.dialect === "postgres") {
      await sql`select pg_advisory_lock(${sql.lit(PG_MIGRATION_LOCK_KEY)}::bigint)`.execute(conn);
      try {
        return await migrator.migrateToLatest();
      } finally {
        await sql`select pg_advisory_unlock(${sql.lit(PG_MIGRATION_LOCK_KEY)}::bigint)`.execute(conn);
      }
    }
    await sql`begin immediate`.execute(conn);
    let outcome: Awaited<ReturnType<Migrator["migrateToLatest"]>>;
    try {
      outcome = await migrator.migrateToLatest();
    } catch (e) {
      await sql`rollback`.execute(conn);
      throw e;
    }
    await sql.raw(outcome.error === undefined ? "commit" : "rollback").execute(conn);
    return outcome;
  });

  if (results.error !== undefined) {
    const failed = results.results?.find((r: MigrationResult) => r.status === "Error");
    throw new HandsafeError(
      "storage.migration_failed",
      `database migration ${failed ? failed.migrationName : "bookkeeping"} failed: ${
        results.error instanceof Error ? results.error.message : String(results.error)
      }`,
      { status: 500, cause: results.error },
    );
  }
  return (results.results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
}
