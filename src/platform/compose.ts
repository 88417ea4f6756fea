/**
 * The one way a Platform is put together from a configuration and an open database: the server's
 * composition root and every test harness use it, so what capabilities see in tests is what they
 * see in production (the audit within a caller's transaction, the security-event metric, …).
 */
import type { Kysely } from "kysely";
import { appendAudit, deferAudit } from "./audit.ts";
import { createGuards } from "./auth/guard.ts";
import type { AuthTables } from "./auth/store.ts";
import type { Config } from "./config.ts";
import type { Platform } from "./context.ts";
import type { Database } from "./db/database.ts";
import { collectedGauge, createMetrics, type Metrics } from "./http/metrics.ts";
import { keyringFromConfig } from "./keyring.ts";

export function createPlatform(input: {
  config: Config;
  database: Database;
  /** Epoch ms; tests pass their own. Default Date.now. */
  clock?: () => number;
  metrics?: Metrics;
}): Platform {
  const { config, database } = input;
  const clock = input.clock ?? Date.now;
  const metrics = input.metrics ?? createMetrics();
  const walRestarts = database.walRestarts;
  if (walRestarts !== undefined)
    collectedGauge(
      metrics.registry,
      "handsafe_sqlite_wal_restarts",
      "WAL restarts the SQLite checkpoint worker forced since the server started (commits that never paused)",
      {},
      walRestarts,
    );
  return {
    config,
    database,
    db: database.db,
    keyring: keyringFromConfig(config),
    clock,
    metrics,
    guards: createGuards(database.db as Kysely<AuthTables>, clock),
    async audit(entry, within) {
      metrics.securityEvents.inc({ action: entry.action, outcome: entry.outcome });
      // In a group commit's batch the record joins the batch's single append (audit.ts deferAudit).
      if (within !== undefined && deferAudit(within, entry)) return;
      await appendAudit(database, entry, within);
    },
  };
}
