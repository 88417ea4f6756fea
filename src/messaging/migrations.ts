/**
 * Messaging's schema (docs/protocols/messaging.md §Storage). Plaintext has no column: a message
 * waits as `sealed_envelope` (keyring, AAD messaging/message/<id>) and travels as HPKE ciphertexts,
 * one per handset; a reply is `sealed_body`; a webhook secret is sealed; API keys and codes are
 * stored as SHA-256 / HMAC only.
 */
import { sql } from "kysely";
import { bytesType, timeType } from "../platform/db/columns.ts";
import type { MigrationRegistry } from "../platform/db/migrate.ts";

export const messagingMigrations: MigrationRegistry = {
  "0014_messaging": {
    async up(db, dialect) {
      const bytes = bytesType(dialect);
      await db.schema
        .createTable("messaging_senders")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("api_key_hash", "text", (c) => c.notNull().unique())
        .addColumn("webhook_url", "text")
        .addColumn("sealed_webhook_secret", bytes, (c) => c.notNull())
        .addColumn("created_by", "text", (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("disabled_at", timeType)
        .execute();

      await db.schema
        .createTable("messaging_messages")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("sender_id", "text", (c) => c.notNull())
        .addColumn("to_number", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) =>
          c
            .notNull()
            .check(sql`status in ('waiting_registration', 'queued', 'delivered', 'read', 'expired')`),
        )
        .addColumn("sealed_envelope", bytes)
        .addColumn("reply_webhook", "text")
        .addColumn("idempotency_key", "text")
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("expires_at", timeType, (c) => c.notNull())
        .addColumn("delivered_at", timeType)
        .addColumn("read_at", timeType)
        .addColumn("envelope_erased_at", timeType)
        .addColumn("purged_at", timeType)
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .execute();
      // The same Idempotency-Key from the same sender is one message (NULLs do not collide).
      await db.schema
        .createIndex("messaging_messages_idempotency")
        .on("messaging_messages")
        .columns(["sender_id", "idempotency_key"])
        .unique()
        .execute();
      await db.schema
        .createIndex("messaging_messages_number")
        .on("messaging_messages")
        .columns(["to_number", "created_at"])
        .execute();
      await db.schema
        .createIndex("messaging_messages_expiry")
        .on("messaging_messages")
        .columns(["expires_at"])
        .execute();
      await db.schema
        .createIndex("messaging_messages_delivered")
        .on("messaging_messages")
        .columns(["delivered_at"])
        .execute();

      await db.schema
        .createTable("messaging_handsets")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("phone_number", "text", (c) => c.notNull())
        .addColumn("device_type", "text", (c) => c.notNull())
        .addColumn("encryption_key", bytes, (c) => c.notNull())
        .addColumn("auth_key", bytes, (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull().check(sql`state in ('active', 'replaced')`))
        .addColumn("replaced_by", "text")
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("messaging_handsets_number")
        .on("messaging_handsets")
        .columns(["phone_number", "state"])
        .execute();

      await db.schema
        .createTable("messaging_deliveries")
        .addColumn("message_id", "text", (c) => c.notNull())
        .addColumn("handset_id", "text", (c) => c.notNull())
        .addColumn("enc", bytes)
        .addColumn("ciphertext", bytes)
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .addColumn("delivered_at", timeType)
        .addColumn("read_at", timeType)
        .addPrimaryKeyConstraint("messaging_deliveries_pk", ["message_id", "handset_id"])
        .execute();
      await db.schema
        .createIndex("messaging_deliveries_handset")
        .on("messaging_deliveries")
        .columns(["handset_id", "state", "created_at"])
        .execute();

      await db.schema
        .createTable("messaging_registrations")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("variant", "text", (c) => c.notNull())
        .addColumn("phone_number", "text", (c) => c.notNull())
        .addColumn("device_type", "text", (c) => c.notNull())
        .addColumn("encryption_key", bytes, (c) => c.notNull())
        .addColumn("auth_key", bytes, (c) => c.notNull())
        .addColumn("handset_id", "text", (c) => c.notNull())
        .addColumn("replaces", "text")
        .addColumn("code_mac", bytes, (c) => c.notNull())
        .addColumn("tries", "integer", (c) => c.notNull())
        .addColumn("state", "text", (c) =>
          c.notNull().check(sql`state in ('pending', 'confirmed', 'expired', 'locked')`),
        )
        .addColumn("sms_id", "text")
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("expires_at", timeType, (c) => c.notNull())
        .addColumn("confirmed_at", timeType)
        .execute();
      await db.schema
        .createIndex("messaging_registrations_number")
        .on("messaging_registrations")
        .columns(["phone_number", "state"])
        .execute();

      await db.schema
        .createTable("messaging_inbound_codes")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("phone_number", "text", (c) => c.notNull())
        .addColumn("code_mac", bytes, (c) => c.notNull())
        .addColumn("tries", "integer", (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull().check(sql`state in ('live', 'used', 'locked')`))
        .addColumn("sms_id", "text", (c) => c.notNull())
        .addColumn("received_at", timeType, (c) => c.notNull())
        .addColumn("expires_at", timeType, (c) => c.notNull())
        .addColumn("used_at", timeType)
        .execute();
      await db.schema
        .createIndex("messaging_inbound_codes_number")
        .on("messaging_inbound_codes")
        .columns(["phone_number", "received_at"])
        .execute();

      await db.schema
        .createTable("messaging_replies")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("message_id", "text", (c) => c.notNull())
        .addColumn("sender_id", "text", (c) => c.notNull())
        .addColumn("handset_id", "text", (c) => c.notNull())
        .addColumn("sealed_body", bytes)
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("purged_at", timeType)
        .execute();
      await db.schema
        .createIndex("messaging_replies_message")
        .on("messaging_replies")
        .columns(["message_id", "created_at"])
        .execute();

      // One row per number: quota windows, the notice gate, and the row registrations lock to
      // serialise (the ≤ 10 handsets check).
      await db.schema
        .createTable("messaging_numbers")
        .addColumn("phone_number", "text", (c) => c.primaryKey())
        .addColumn("registrations_window", timeType, (c) => c.notNull())
        .addColumn("registrations_count", "integer", (c) => c.notNull())
        .addColumn("codes_window", timeType, (c) => c.notNull())
        .addColumn("codes_count", "integer", (c) => c.notNull())
        .addColumn("inbound_window", timeType, (c) => c.notNull())
        .addColumn("inbound_count", "integer", (c) => c.notNull())
        .addColumn("notice_at", timeType, (c) => c.notNull())
        .addColumn("touched_at", timeType, (c) => c.notNull())
        .execute();
    },
    async down(db) {
      for (const t of [
        "messaging_numbers",
        "messaging_replies",
        "messaging_inbound_codes",
        "messaging_registrations",
        "messaging_deliveries",
        "messaging_handsets",
        "messaging_messages",
        "messaging_senders",
      ])
        await db.schema.dropTable(t).execute();
    },
  },
};
