/**
 * Campaigns' schema (migration 0009_campaigns): the campaigns, each enrolled device's state in
 * one, and the release channel and groups of a device (absent row = channel "stable", no groups).
 */
import { jsonType, timeType } from "../../platform/db/columns.ts";
import type { MigrationRegistry } from "../../platform/db/migrate.ts";

export const campaignMigrations: MigrationRegistry = {
  "0009_campaigns": {
    async up(db) {
      await db.schema
        .createTable("campaigns")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("package_id", "text", (c) => c.notNull())
        // The package facts targeting and assignments need, copied once (packages are immutable).
        .addColumn("package", jsonType, (c) => c.notNull())
        .addColumn("target", jsonType, (c) => c.notNull())
        .addColumn("channel", "text", (c) => c.notNull())
        .addColumn("stages", jsonType, (c) => c.notNull())
        .addColumn("error_threshold", "double precision", (c) => c.notNull())
        .addColumn("maintenance_window", jsonType)
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("current_stage", "integer", (c) => c.notNull())
        .addColumn("pause_reason", jsonType)
        .addColumn("created_by", "text", (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("started_at", timeType)
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("campaigns_state")
        .on("campaigns")
        .columns(["state", "created_at"])
        .execute();
      await db.schema
        .createTable("campaign_devices")
        .addColumn("campaign_id", "text", (c) => c.notNull())
        .addColumn("device_id", "text", (c) => c.notNull())
        .addColumn("bucket", "integer", (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("percent", "integer")
        .addColumn("reason", "text")
        .addColumn("installed_version", "text")
        .addColumn("enrolled_at", timeType, (c) => c.notNull())
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .addPrimaryKeyConstraint("campaign_devices_pk", ["campaign_id", "device_id"])
        .execute();
      await db.schema
        .createIndex("campaign_devices_state")
        .on("campaign_devices")
        .columns(["campaign_id", "state", "bucket"])
        .execute();
      await db.schema
        .createIndex("campaign_devices_device")
        .on("campaign_devices")
        .column("device_id")
        .execute();
      await db.schema
        .createTable("device_channels")
        .addColumn("device_id", "text", (c) => c.primaryKey())
        .addColumn("channel", "text", (c) => c.notNull())
        .addColumn("groups", jsonType, (c) => c.notNull())
        // The version the device last reported installed; targeting prefers it to the provisioned one.
        .addColumn("reported_version", "text")
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .execute();
    },
  },
};
