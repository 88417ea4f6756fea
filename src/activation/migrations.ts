/** Activation's schema: services, activations, the secret pool, agreed keys, commands. */
import { sql } from "kysely";
import { bytesType } from "../platform/db/columns.ts";
import type { MigrationRegistry } from "../platform/db/migrate.ts";

export const activationMigrations: MigrationRegistry = {
  "0005_activation": {
    async up(db, dialect) {
      const bytes = bytesType(dialect);
      await db.schema
        .createTable("services")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("uid", "text", (c) => c.notNull().unique())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("key_id", "text", (c) => c.notNull())
        .addColumn("public_key", bytes, (c) => c.notNull())
        .addColumn("sealed_signing_key", bytes, (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("activations")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("service_id", "text", (c) => c.notNull())
        .addColumn("user_id", "text", (c) => c.notNull())
        .addColumn("handset_id", "text", (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("origin", "text", (c) => c.notNull())
        .addColumn("sealed_prs", bytes)
        .addColumn("ya", bytes)
        .addColumn("yb", bytes)
        .addColumn("sealed_keys", bytes)
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("expires_at", "bigint", (c) => c.notNull())
        .addColumn("updated_at", "bigint", (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("activations_handset_service")
        .on("activations")
        .columns(["handset_id", "service_id", "state"])
        .execute();
      // Pending activations of a handset are looked up at every sign-in and grant.
      await db.schema
        .createIndex("activations_handset_state")
        .on("activations")
        .columns(["handset_id", "state"])
        .execute();
      await db.schema
        .createTable("activation_secret_pool")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("user_id", "text", (c) => c.notNull())
        .addColumn("service_id", "text", (c) => c.notNull())
        .addColumn("sealed_secret", bytes, (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("expires_at", "bigint", (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("activation_secret_pool_user_service")
        .on("activation_secret_pool")
        .columns(["user_id", "service_id", "created_at"])
        .execute();
      await db.schema
        .createTable("service_keys")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("service_id", "text", (c) => c.notNull())
        .addColumn("handset_id", "text", (c) => c.notNull())
        .addColumn("user_id", "text", (c) => c.notNull())
        .addColumn("activation_id", "text", (c) => c.notNull())
        .addColumn("sealed_key", bytes, (c) => c.notNull())
        .addColumn("fingerprint", "text", (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("revoked_at", "bigint")
        .execute();
      // At most one active key per (service, handset): a partial unique index on both engines.
      await db.schema
        .createIndex("service_keys_one_active")
        .on("service_keys")
        .columns(["service_id", "handset_id"])
        .unique()
        .where(sql.ref("state"), "=", "active")
        .execute();
      await db.schema
        .createTable("service_commands")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("service_id", "text", (c) => c.notNull())
        .addColumn("handset_id", "text", (c) => c.notNull())
        .addColumn("service_key_id", "text", (c) => c.notNull())
        .addColumn("seq", "bigint", (c) => c.notNull())
        .addColumn("body", "text", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addUniqueConstraint("service_commands_seq", ["service_id", "handset_id", "seq"])
        .execute();
      await db.schema
        .createIndex("service_commands_key_seq")
        .on("service_commands")
        .columns(["service_key_id", "seq"])
        .execute();
    },
  },
};
