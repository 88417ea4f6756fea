/**
 * Updates' schema (migration 0008_updates): the packages, and the server's TUF repository — its
 * state record, its role keys (sealed at rest) and its write-once metadata files.
 */
import { bytesType, jsonType, timeType } from "../platform/db/columns.ts";
import type { MigrationRegistry } from "../platform/db/migrate.ts";

export const updatesMigrations: MigrationRegistry = {
  "0008_updates": {
    async up(db, dialect) {
      const bytes = bytesType(dialect);
      await db.schema
        .createTable("update_packages")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("version", "text", (c) => c.notNull())
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("from_version", "text")
        .addColumn("from_package_id", "text")
        .addColumn("base_package_id", "text")
        .addColumn("models", jsonType, (c) => c.notNull())
        .addColumn("version_range", jsonType)
        .addColumn("channel", "text", (c) => c.notNull())
        .addColumn("plaintext_length", "bigint", (c) => c.notNull())
        .addColumn("plaintext_sha256", "text", (c) => c.notNull())
        .addColumn("image_length", "bigint", (c) => c.notNull())
        .addColumn("image_sha256", "text", (c) => c.notNull())
        .addColumn("encrypted_length", "bigint", (c) => c.notNull())
        .addColumn("encrypted_sha256", "text", (c) => c.notNull())
        .addColumn("tuf_path", "text", (c) => c.notNull().unique())
        .addColumn("file_name", "text", (c) => c.notNull().unique())
        .addColumn("blob_key", "text", (c) => c.notNull())
        .addColumn("sealed_content_key", bytes, (c) => c.notNull())
        .addColumn("created_by", "text", (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("update_packages_created")
        .on("update_packages")
        .columns(["created_at", "id"])
        .execute();
      // One row: the TUF repository record (no private keys), a revision for compare-and-set
      // between server nodes, and the root version waiting for offline signatures, if any.
      await db.schema
        .createTable("tuf_repository")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("record", jsonType, (c) => c.notNull())
        .addColumn("revision", "bigint", (c) => c.notNull())
        .addColumn("pending_root", jsonType)
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("tuf_keys")
        .addColumn("keyid", "text", (c) => c.primaryKey())
        .addColumn("role", "text", (c) => c.notNull())
        .addColumn("public_key", "text", (c) => c.notNull())
        .addColumn("sealed_seed", bytes)
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .execute();
      // Versioned metadata files ("N.root.json", "N.targets.json", "N.snapshot.json"): write-once.
      await db.schema
        .createTable("tuf_files")
        .addColumn("name", "text", (c) => c.primaryKey())
        .addColumn("bytes", bytes, (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .execute();
    },
  },
};
