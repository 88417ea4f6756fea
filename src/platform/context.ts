/**
 * What a capability's server side gets from the platform: storage, keys at rest, the audit log,
 * a clock, metrics and the auth guards. Capabilities receive this and nothing else.
 */
import type { Kysely } from "kysely";
import type { AuditEntry } from "./audit.ts";
import type { Guards } from "./auth/guard.ts";
import type { Config } from "./config.ts";
import type { Database } from "./db/database.ts";
import type { Metrics } from "./http/metrics.ts";
import type { Keyring } from "./keyring.ts";

export type { AuditEntry } from "./audit.ts";

export interface Platform {
  readonly config: Config;
  readonly database: Database;
  // biome-ignore lint/suspicious/noExplicitAny: each capability narrows this to its own tables.
  readonly db: Kysely<any>;
  readonly keyring: Keyring;
  /**
   * Appends to the hash-chained audit log and counts the decision in the metrics. With `within`, an
   * open transaction on `db`, the entry is written in it (appendAudit): last in it, please.
   */
  // biome-ignore lint/suspicious/noExplicitAny: any capability's transaction.
  audit(entry: AuditEntry, within?: Kysely<any>): Promise<void>;
  /** Epoch milliseconds; tests move time with their own clock. */
  clock(): number;
  readonly metrics: Metrics;
  readonly guards: Guards;
}
