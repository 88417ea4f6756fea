/**
 * The zone server's schema (docs/protocols/trustzone.md §3–§5, §7). Secrets have no clear column:
 * a zone's ZMK and user info wait sealed by the keyring (AAD trustzone/zmk/<zone>, …/user-info/<zone>),
 * the token-signing seed likewise; managers' API keys are stored as SHA-256 only. Sub-keys and
 * container keys are never stored: they are derived for one call and wiped.
 */
import { sql } from "kysely";
import { bytesType, jsonType, timeType } from "../platform/db/columns.ts";
import type { MigrationRegistry } from "../platform/db/migrate.ts";

export const trustzoneMigrations: MigrationRegistry = {
  "0016_trustzone": {
    async up(db, dialect) {
      const bytes = bytesType(dialect);

      // The trust-zone token signing keys (Ed25519). `role` = 'current' on exactly one row (unique;
      // retired keys have NULL, which never collides), so N nodes starting at once agree on one key.
      await db.schema
        .createTable("tsm_signing_keys")
        .addColumn("kid", "text", (c) => c.primaryKey())
        .addColumn("role", "text", (c) => c.unique())
        .addColumn("public_key", bytes, (c) => c.notNull())
        .addColumn("sealed_seed", bytes, (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("retired_at", timeType)
        .execute();

      await db.schema
        .createTable("tsm_managers")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("identification_code", "text", (c) => c.notNull())
        .addColumn("certification", jsonType, (c) => c.notNull())
        .addColumn("memory_bytes", "integer", (c) => c.notNull())
        .addColumn("applications", jsonType, (c) => c.notNull())
        .addColumn("x25519_public_key", bytes, (c) => c.notNull())
        .addColumn("api_key_hash", "text", (c) => c.notNull().unique())
        .addColumn("webhook_url", "text")
        .addColumn("sealed_webhook_secret", bytes)
        .addColumn("state", "text", (c) =>
          c.notNull().check(sql`state in ('pending', 'validated', 'rejected')`),
        )
        .addColumn("reason", "text")
        .addColumn("reviewed_by", "text")
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("tsm_applications")
        .addColumn("manager_id", "text", (c) => c.notNull())
        .addColumn("app_id", "text", (c) => c.notNull())
        .addColumn("sha256", "text", (c) => c.notNull())
        .addColumn("state", "text", (c) =>
          c.notNull().check(sql`state in ('pending', 'validated', 'rejected')`),
        )
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .addPrimaryKeyConstraint("tsm_applications_pk", ["manager_id", "app_id"])
        .execute();

      await db.schema
        .createTable("tsm_zones")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("handset_id", "text")
        .addColumn("epoch", "integer", (c) => c.notNull())
        .addColumn("state", "text", (c) =>
          c.notNull().check(sql`state in ('personalised', 'resetting', 'reset')`),
        )
        .addColumn("user_info_hash", "text")
        .addColumn("sealed_user_info", bytes)
        .addColumn("sealed_zmk", bytes, (c) => c.notNull())
        .addColumn("containers", "integer", (c) => c.notNull())
        // The last signal seq handed out (signals are numbered per zone, across epochs).
        .addColumn("signal_seq", "integer", (c) => c.notNull())
        .addColumn("personalised_at", timeType)
        .addColumn("reset_at", timeType)
        .addColumn("reset_acknowledged_at", timeType)
        .addColumn("created_by", "text", (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("tsm_zones_handset").on("tsm_zones").column("handset_id").execute();

      await db.schema
        .createTable("tsm_containers")
        .addColumn("zone_id", "text", (c) => c.notNull())
        .addColumn("idx", "integer", (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull().check(sql`state in ('free', 'bound', 'locked')`))
        .addColumn("manager_id", "text")
        .addColumn("jti", "text")
        .addColumn("not_after", timeType)
        .addColumn("max_attempts", "integer")
        .addColumn("bytes", "integer", (c) => c.notNull())
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .addPrimaryKeyConstraint("tsm_containers_pk", ["zone_id", "idx"])
        .execute();
      await db.schema
        .createIndex("tsm_containers_expiry")
        .on("tsm_containers")
        .columns(["state", "not_after"])
        .execute();
      await db.schema
        .createIndex("tsm_containers_manager")
        .on("tsm_containers")
        .columns(["manager_id", "zone_id"])
        .execute();

      await db.schema
        .createTable("tsm_tokens")
        .addColumn("jti", "text", (c) => c.primaryKey())
        .addColumn("manager_id", "text", (c) => c.notNull())
        .addColumn("zone_id", "text", (c) => c.notNull())
        .addColumn("epoch", "integer", (c) => c.notNull())
        .addColumn("containers", jsonType, (c) => c.notNull())
        .addColumn("limits", jsonType, (c) => c.notNull())
        .addColumn("max_uses", "integer", (c) => c.notNull())
        .addColumn("uses", "integer", (c) => c.notNull())
        .addColumn("exp", timeType, (c) => c.notNull())
        .addColumn("issued_by", "text", (c) => c.notNull())
        .addColumn("issued_at", timeType, (c) => c.notNull())
        .addColumn("last_used_at", timeType)
        .addColumn("revoked_at", timeType)
        .execute();
      await db.schema
        .createIndex("tsm_tokens_zone")
        .on("tsm_tokens")
        .columns(["zone_id", "issued_at"])
        .execute();

      await db.schema
        .createTable("tsm_signals")
        .addColumn("zone_id", "text", (c) => c.notNull())
        .addColumn("seq", "integer", (c) => c.notNull())
        .addColumn("epoch", "integer", (c) => c.notNull())
        .addColumn("type", "text", (c) => c.notNull())
        .addColumn("body", jsonType, (c) => c.notNull())
        .addColumn("mac", "text", (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("applied_at", timeType)
        .addPrimaryKeyConstraint("tsm_signals_pk", ["zone_id", "seq"])
        .execute();

      // A manager's package operation waiting for the zone, then its answer. Packages arrive
      // already sealed under CK_i by the manager (§6): this table never holds a plaintext.
      await db.schema
        .createTable("tsm_relay")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("zone_id", "text", (c) => c.notNull())
        .addColumn("epoch", "integer", (c) => c.notNull())
        .addColumn("manager_id", "text", (c) => c.notNull())
        .addColumn("idx", "integer", (c) => c.notNull())
        .addColumn("op", "text", (c) => c.notNull().check(sql`op in ('put', 'get', 'delete', 'list')`))
        .addColumn("name", "text")
        .addColumn("command", jsonType, (c) => c.notNull())
        .addColumn("package", bytes)
        .addColumn("proof", "text", (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull().check(sql`state in ('queued', 'done', 'failed')`))
        .addColumn("result", jsonType)
        .addColumn("result_package", bytes)
        .addColumn("error_code", "text")
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("tsm_relay_zone")
        .on("tsm_relay")
        .columns(["zone_id", "state", "created_at"])
        .execute();
    },
    async down(db) {
      for (const t of [
        "tsm_relay",
        "tsm_signals",
        "tsm_tokens",
        "tsm_containers",
        "tsm_zones",
        "tsm_applications",
        "tsm_managers",
        "tsm_signing_keys",
      ])
        await db.schema.dropTable(t).execute();
    },
  },
};
