/**
 * Secure backup's schema (docs/protocols/backup.md §5). Nothing here opens a backup: accounts hold
 * public keys only, envelopes are the owner's signed XML (headers and names sealed to the
 * recipients), blobs are age payloads in the blob store, named here with their size, SHA-256 and
 * how many listed envelopes reference them.
 */
import { sql } from "kysely";
import { bytesType, timeType } from "../platform/db/columns.ts";
import type { MigrationRegistry } from "../platform/db/migrate.ts";

export const backupMigrations: MigrationRegistry = {
  "0015_backup": {
    async up(db, dialect) {
      const bytes = bytesType(dialect);
      await db.schema
        .createTable("backup_accounts")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("signing_key", bytes, (c) => c.notNull())
        .addColumn("recipient", "text", (c) => c.notNull())
        // The directory: NULLs do not collide, so accounts without a handle are fine.
        .addColumn("handle", "text", (c) => c.unique())
        .addColumn("created_at", timeType, (c) => c.notNull())
        // Completed blobs + listed envelopes' XML; the quota is checked against it by compare-and-set.
        .addColumn("bytes_used", "bigint", (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("backup_uploads")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("account_id", "text", (c) => c.notNull())
        .addColumn("size", "bigint", (c) => c.notNull())
        .addColumn("sha256", bytes, (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("state", "text", (c) =>
          c.notNull().check(sql`state in ('open', 'completing', 'complete', 'failed', 'expired')`),
        )
        .addColumn("blob_id", "text")
        .execute();
      await db.schema
        .createIndex("backup_uploads_account")
        .on("backup_uploads")
        .columns(["account_id", "state"])
        .execute();
      await db.schema
        .createIndex("backup_uploads_age")
        .on("backup_uploads")
        .columns(["state", "created_at"])
        .execute();

      await db.schema
        .createTable("backup_blobs")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("account_id", "text", (c) => c.notNull())
        .addColumn("size", "bigint", (c) => c.notNull())
        .addColumn("sha256", bytes, (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("refs", "integer", (c) => c.notNull().check(sql`refs >= 0`))
        .execute();
      await db.schema.createIndex("backup_blobs_account").on("backup_blobs").column("account_id").execute();

      await db.schema
        .createTable("backup_envelopes")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("account_id", "text", (c) => c.notNull())
        .addColumn("kind", "text", (c) => c.notNull().check(sql`kind in ('backup', 'share')`))
        .addColumn("parent", "text")
        // The envelope's own <Created>, as the owner signed it.
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("items", "integer", (c) => c.notNull())
        // The XML's length plus the sizes of the blobs it references.
        .addColumn("bytes", "bigint", (c) => c.notNull())
        .addColumn("xml", bytes, (c) => c.notNull())
        .addColumn("signature", bytes, (c) => c.notNull())
        .addColumn("listed_at", timeType, (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("backup_envelopes_account")
        .on("backup_envelopes")
        .columns(["account_id", "listed_at"])
        .execute();

      await db.schema
        .createTable("backup_envelope_blobs")
        .addColumn("envelope_id", "text", (c) => c.notNull())
        .addColumn("blob_id", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("backup_envelope_blobs_pk", ["envelope_id", "blob_id"])
        .execute();
      await db.schema
        .createIndex("backup_envelope_blobs_blob")
        .on("backup_envelope_blobs")
        .columns(["blob_id", "envelope_id"])
        .execute();

      await db.schema
        .createTable("backup_shares")
        .addColumn("envelope_id", "text", (c) => c.notNull())
        .addColumn("account_id", "text", (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("revoked_at", timeType)
        .addPrimaryKeyConstraint("backup_shares_pk", ["envelope_id", "account_id"])
        .execute();
      await db.schema
        .createIndex("backup_shares_account")
        .on("backup_shares")
        .columns(["account_id", "revoked_at"])
        .execute();
    },
    async down(db) {
      for (const t of [
        "backup_shares",
        "backup_envelope_blobs",
        "backup_envelopes",
        "backup_blobs",
        "backup_uploads",
        "backup_accounts",
      ])
        await db.schema.dropTable(t).execute();
    },
  },
  // §4 Parts: an envelope over one message's limits arrives as MsgID 1..n. The parts before the
  // last wait here (listed = 0, their XML counted in the quota) until the one with <Final/> lists
  // the whole backup; then part 1 is the envelope row's XML and parts 2..n stay here (listed = 1).
  "0017_backup_envelope_parts": {
    async up(db, dialect) {
      const bytes = bytesType(dialect);
      await db.schema
        .createTable("backup_envelope_parts")
        .addColumn("backup_id", "text", (c) => c.notNull())
        .addColumn("part", "integer", (c) => c.notNull())
        .addColumn("account_id", "text", (c) => c.notNull())
        // SHA-256 of the part's header fields (envelopeHeaderKey): every part must share it.
        .addColumn("header_key", "text", (c) => c.notNull())
        .addColumn("xml", bytes, (c) => c.notNull())
        .addColumn("signature", bytes, (c) => c.notNull())
        .addColumn("received_at", timeType, (c) => c.notNull())
        .addColumn("listed", "integer", (c) => c.notNull().check(sql`listed in (0, 1)`))
        .addPrimaryKeyConstraint("backup_envelope_parts_pk", ["backup_id", "part"])
        .execute();
      await db.schema
        .createIndex("backup_envelope_parts_staged")
        .on("backup_envelope_parts")
        .columns(["listed", "received_at"])
        .execute();
    },
    async down(db) {
      await db.schema.dropTable("backup_envelope_parts").execute();
    },
  },
};
