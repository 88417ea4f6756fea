import { type Kysely, sql } from "kysely";
import { bytesType, timeType } from "../columns.ts";
import type { DatabaseDialect } from "../database.ts";
import type { Migration } from "../migrate.ts";

/** The hex SHA-256 "previous hash" of the first audit record. */
export const AUDIT_GENESIS_HASH = "0".repeat(64);

/**
 * Platform tables:
 * - audit_log: the hash-chained audit log (src/platform/audit.ts). Append-only in the database
 *   itself: triggers reject UPDATE and DELETE (and TRUNCATE on PostgreSQL), so a bug or an
 *   injected statement in the application cannot rewrite history; only someone who drops the
 *   trigger can, and verifyAuditChain then finds it.
 * - audit_head: one row (id = 1) holding the newest seq and hash. Appenders lock it to serialise,
 *   and verification compares it with the last row to notice a truncated tail.
 * - server_keys: the server's signing keys, private halves sealed with the keyring.
 */
export const migration0001Platform: Migration = {
  // biome-ignore lint/suspicious/noExplicitAny: tables do not exist yet.
  async up(db: Kysely<any>, dialect: DatabaseDialect) {
    await db.schema
      .createTable("audit_log")
      .addColumn("seq", "bigint", (c) => c.primaryKey())
      .addColumn("at", timeType, (c) => c.notNull())
      .addColumn("actor", "text", (c) => c.notNull())
      .addColumn("action", "text", (c) => c.notNull())
      .addColumn("subject", "text")
      .addColumn("outcome", "text", (c) =>
        c.notNull().check(sql`outcome in ('allow', 'deny', 'error', 'info')`),
      )
      .addColumn("details", "text", (c) => c.notNull())
      .addColumn("prev_hash", "text", (c) => c.notNull())
      .addColumn("hash", "text", (c) => c.notNull())
      .execute();
    await db.schema.createIndex("audit_log_action_at").on("audit_log").columns(["action", "at"]).execute();

    await db.schema
      .createTable("audit_head")
      .addColumn("id", "integer", (c) => c.primaryKey().check(sql`id = 1`))
      .addColumn("seq", "bigint", (c) => c.notNull())
      .addColumn("hash", "text", (c) => c.notNull())
      .execute();
    await db.insertInto("audit_head").values({ id: 1, seq: 0, hash: AUDIT_GENESIS_HASH }).execute();

    if (dialect === "sqlite") {
      await sql`create trigger audit_log_no_update before update on audit_log
        begin select raise(abort, 'audit_log is append-only'); end`.execute(db);
      await sql`create trigger audit_log_no_delete before delete on audit_log
        begin select raise(abort, 'audit_log is append-only'); end`.execute(db);
    } else {
      await sql`create function handsafe_audit_log_append_only() returns trigger language plpgsql as $$
        begin
          raise exception 'audit_log is append-only (% refused)', tg_op using errcode = 'P0001';
        end
        $$`.execute(db);
      await sql`create trigger audit_log_no_update_delete before update or delete on audit_log
        for each row execute function handsafe_audit_log_append_only()`.execute(db);
      await sql`create trigger audit_log_no_truncate before truncate on audit_log
        for each statement execute function handsafe_audit_log_append_only()`.execute(db);
    }

    await db.schema
      .createTable("server_keys")
      .addColumn("kid", "text", (c) => c.primaryKey())
      .addColumn("purpose", "text", (c) => c.notNull())
      .addColumn("created_at", timeType, (c) => c.notNull())
      .addColumn("public_key", bytesType(dialect))
      .addColumn("sealed_private", bytesType(dialect), (c) => c.notNull())
      .execute();
    await db.schema
      .createIndex("server_keys_purpose")
      .on("server_keys")
      .columns(["purpose", "created_at"])
      .execute();
  },

  // biome-ignore lint/suspicious/noExplicitAny: as above.
  async down(db: Kysely<any>, dialect: DatabaseDialect) {
    await db.schema.dropTable("server_keys").execute();
    await db.schema.dropTable("audit_head").execute();
    await db.schema.dropTable("audit_log").execute();
    if (dialect === "postgres") await sql`drop function handsafe_audit_log_append_only()`.execute(db);
  },
};
