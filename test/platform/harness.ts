/**
 * A platform without HTTP for the platform's own tests: a real database (SQLite or PostgreSQL)
 * with the platform's migrations, the real keyring, the hash-chained audit, metrics and a clock
 * the test moves. `shareDatabaseOf` makes a second node of one fleet (same database, same master key).
 */
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { verifyAuditChain } from "../../src/platform/audit.ts";
import { authMigrations } from "../../src/platform/auth/store.ts";
import { loadConfig } from "../../src/platform/config.ts";
import { createPlatform } from "../../src/platform/compose.ts";
import type { Platform } from "../../src/platform/context.ts";
import { openDatabase } from "../../src/platform/db/database.ts";
import { combineMigrations, migrateToLatest } from "../../src/platform/db/migrate.ts";
import { platformMigrations } from "../../src/platform/db/migrations/index.ts";
import { createMetrics } from "../../src/platform/http/metrics.ts";
import { MASTER_KEY_FILE } from "../../src/platform/keyring.ts";
import { webhookMigrations } from "../../src/platform/notify/webhooks.ts";
import { replayMigrations } from "../../src/platform/replay.ts";
import { createTestDatabase, type DatabaseKind } from "../helpers/databases.ts";

export interface TestPlatform {
  platform: Platform;
  /** The test's clock: `now.ms` is what platform.clock() answers. */
  now: { ms: number };
  auditActions(): Promise<
    Array<{ action: string; outcome: string; subject: string | null; details: string }>
  >;
  auditOk(): Promise<boolean>;
  close(): Promise<void>;
}

export async function startTestPlatform(
  kind: DatabaseKind,
  options: { shareDatabaseOf?: TestPlatform; now?: { ms: number } } = {},
): Promise<TestPlatform> {
  const database = options.shareDatabaseOf
    ? { url: options.shareDatabaseOf.platform.config.databaseUrl, drop: async () => {} }
    : await createTestDatabase(kind);
  const dataDir = mkdtempSync(join(tmpdir(), "handsafe-platform-"));
  if (options.shareDatabaseOf)
    copyFileSync(
      join(options.shareDatabaseOf.platform.config.dataDir, MASTER_KEY_FILE),
      join(dataDir, MASTER_KEY_FILE),
    );
  const config = loadConfig({
    HANDSAFE_DATA_DIR: dataDir,
    HANDSAFE_DATABASE_URL: database.url,
    HANDSAFE_LOG_LEVEL: "silent",
  });
  const db = await openDatabase(database.url);
  await migrateToLatest(
    db,
    combineMigrations(platformMigrations, authMigrations, webhookMigrations, replayMigrations),
  );
  const now = options.now ?? options.shareDatabaseOf?.now ?? { ms: 1_800_000_000_000 };
  const clock = () => now.ms;
  const metrics = createMetrics();
  const platform = createPlatform({ config, database: db, clock: clock, metrics });

  return {
    platform,
    now,
    async auditActions() {
      return db.db
        .selectFrom("audit_log")
        .select(["action", "outcome", "subject", "details"])
        .orderBy("seq")
        .execute() as Promise<
        Array<{ action: string; outcome: string; subject: string | null; details: string }>
      >;
    },
    async auditOk() {
      return (await verifyAuditChain(db)).ok;
    },
    async close() {
      await db.close();
      await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
