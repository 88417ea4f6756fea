/**
 * Management's tables and queries (migrations 0007_management and 0010_management_push). Secrets
 * are sealed at rest by the caller (keyring): static keys under "management/static-key/<device id>",
 * dynamic keys under "management/dynamic-key/<key id>". Every state change is a compare-and-set.
 */
import { type Kysely, sql } from "kysely";
import { bytesType, jsonType, timeType, toBytes } from "../platform/db/columns.ts";
import type { MigrationRegistry } from "../platform/db/migrate.ts";
import type { DynamicKeyState, HardwareIdKind, KeySource } from "./protocol.ts";

export interface ManagementTables {
  provisioning_batches: {
    id: string;
    format: string;
    accepted: number;
    rejected: number;
    created_by: string;
    created_at: number;
  };
  devices: {
    id: string;
    model: string;
    hardware_id: string;
    hardware_id_kind: string;
    firmware_version: string;
    memory_layout: string;
    msisdn: string | null;
    owner: string | null;
    sealed_static_key: Uint8Array;
    key_source: string;
    batch_id: string;
    handset_id: string | null;
    created_at: number;
  };
  dynamic_keys: {
    id: string;
    device_id: string;
    sealed_key: Uint8Array;
    policy: string;
    counter: number;
    expires_at: number;
    max_uses: number;
    uses: number;
    state: string;
    created_at: number;
    updated_at: number;
  };
  signature_nonces: { device_id: string; nonce: string; expires_at: number };
  management_notifications: {
    device_id: string;
    counter: number;
    last_key_id: string | null;
    last_message_id: string | null;
    last_sent_at: number | null;
    /** "sms" or "push" (0010); null before the first notification. */
    last_channel: string | null;
  };
  /** Which node holds an open push stream of which device (PostgreSQL relay only; 0010). */
  management_push_presence: { device_id: string; node_id: string; connected_at: number };
}

export const managementMigrations: MigrationRegistry = {
  "0007_management": {
    async up(db, dialect) {
      const bytes = bytesType(dialect);
      await db.schema
        .createTable("provisioning_batches")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("format", "text", (c) => c.notNull())
        .addColumn("accepted", "integer", (c) => c.notNull())
        .addColumn("rejected", "integer", (c) => c.notNull())
        .addColumn("created_by", "text", (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("devices")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("model", "text", (c) => c.notNull())
        .addColumn("hardware_id", "text", (c) => c.notNull().unique())
        .addColumn("hardware_id_kind", "text", (c) => c.notNull())
        .addColumn("firmware_version", "text", (c) => c.notNull())
        .addColumn("memory_layout", jsonType, (c) => c.notNull())
        .addColumn("msisdn", "text")
        .addColumn("owner", "text")
        .addColumn("sealed_static_key", bytes, (c) => c.notNull())
        .addColumn("key_source", "text", (c) => c.notNull())
        .addColumn("batch_id", "text", (c) => c.notNull())
        .addColumn("handset_id", "text")
        .addColumn("created_at", timeType, (c) => c.notNull())
        .execute();
      await db.schema.createIndex("devices_model").on("devices").columns(["model", "id"]).execute();
      await db.schema.createIndex("devices_batch").on("devices").column("batch_id").execute();
      await db.schema
        .createTable("dynamic_keys")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("device_id", "text", (c) => c.notNull())
        .addColumn("sealed_key", bytes, (c) => c.notNull())
        .addColumn("policy", jsonType, (c) => c.notNull())
        .addColumn("counter", "bigint", (c) => c.notNull())
        .addColumn("expires_at", timeType, (c) => c.notNull())
        .addColumn("max_uses", "bigint", (c) => c.notNull())
        .addColumn("uses", "bigint", (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("dynamic_keys_device")
        .on("dynamic_keys")
        .columns(["device_id", "created_at"])
        .execute();
      // At most one active dynamic key per device: a partial unique index on both engines.
      await db.schema
        .createIndex("dynamic_keys_one_active")
        .on("dynamic_keys")
        .column("device_id")
        .unique()
        .where(sql.ref("state"), "=", "active")
        .execute();
      await db.schema
        .createTable("signature_nonces")
        .addColumn("device_id", "text", (c) => c.notNull())
        .addColumn("nonce", "text", (c) => c.notNull())
        .addColumn("expires_at", timeType, (c) => c.notNull())
        .addPrimaryKeyConstraint("signature_nonces_pk", ["device_id", "nonce"])
        .execute();
      await db.schema
        .createIndex("signature_nonces_expiry")
        .on("signature_nonces")
        .column("expires_at")
        .execute();
      await db.schema
        .createTable("management_notifications")
        .addColumn("device_id", "text", (c) => c.primaryKey())
        .addColumn("counter", "bigint", (c) => c.notNull())
        .addColumn("last_key_id", "text")
        .addColumn("last_message_id", "text")
        .addColumn("last_sent_at", timeType)
        .execute();
    },
  },
  "0010_management_push": {
    async up(db) {
      await db.schema.alterTable("management_notifications").addColumn("last_channel", "text").execute();
      await db.schema
        .createTable("management_push_presence")
        .addColumn("device_id", "text", (c) => c.notNull())
        .addColumn("node_id", "text", (c) => c.notNull())
        .addColumn("connected_at", timeType, (c) => c.notNull())
        .addPrimaryKeyConstraint("management_push_presence_pk", ["device_id", "node_id"])
        .execute();
      await db.schema
        .createIndex("management_push_presence_node")
        .on("management_push_presence")
        .column("node_id")
        .execute();
    },
  },
};

type Db = Kysely<ManagementTables>;

export interface DeviceRow {
  id: string;
  model: string;
  hardwareId: string;
  hardwareIdKind: HardwareIdKind;
  firmwareVersion: string;
  memoryLayout: string;
  msisdn: string | null;
  owner: string | null;
  sealedStaticKey: Uint8Array;
  keySource: KeySource;
  batchId: string;
  handsetId: string | null;
  createdAt: number;
}

function toDevice(r: ManagementTables["devices"]): DeviceRow {
  return {
    id: r.id,
    model: r.model,
    hardwareId: r.hardware_id,
    hardwareIdKind: r.hardware_id_kind as HardwareIdKind,
    firmwareVersion: r.firmware_version,
    memoryLayout: r.memory_layout,
    msisdn: r.msisdn,
    owner: r.owner,
    sealedStaticKey: toBytes(r.sealed_static_key),
    keySource: r.key_source as KeySource,
    batchId: r.batch_id,
    handsetId: r.handset_id,
    createdAt: Number(r.created_at),
  };
}

function deviceValues(d: DeviceRow): ManagementTables["devices"] {
  return {
    id: d.id,
    model: d.model,
    hardware_id: d.hardwareId,
    hardware_id_kind: d.hardwareIdKind,
    firmware_version: d.firmwareVersion,
    memory_layout: d.memoryLayout,
    msisdn: d.msisdn,
    owner: d.owner,
    sealed_static_key: d.sealedStaticKey,
    key_source: d.keySource,
    batch_id: d.batchId,
    handset_id: d.handsetId,
    created_at: d.createdAt,
  };
}

export async function insertBatch(
  db: Db,
  b: { id: string; format: string; accepted: number; rejected: number; createdBy: string; createdAt: number },
): Promise<void> {
  await db
    .insertInto("provisioning_batches")
    .values({
      id: b.id,
      format: b.format,
      accepted: b.accepted,
      rejected: b.rejected,
      created_by: b.createdBy,
      created_at: b.createdAt,
    })
    .execute();
}

/** Which of these hardware ids the registry already holds. */
export async function existingHardwareIds(db: Db, ids: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (let i = 0; i < ids.length; i += 500) {
    const chunk = ids.slice(i, i + 500);
    const rows = await db
      .selectFrom("devices")
      .select("hardware_id")
      .where("hardware_id", "in", chunk)
      .execute();
    for (const r of rows) found.add(r.hardware_id);
  }
  return found;
}

/**
 * Inserts devices (and their notification counters) in one transaction per chunk; a hardware id
 * that another import took in the meantime is skipped, not fatal. Returns the ids inserted.
 */
export async function insertDevices(db: Db, devices: DeviceRow[]): Promise<Set<string>> {
  const inserted = new Set<string>();
  for (let i = 0; i < devices.length; i += 200) {
    const chunk = devices.slice(i, i + 200);
    await db.transaction().execute(async (trx) => {
      const rows = await trx
        .insertInto("devices")
        .values(chunk.map(deviceValues))
        .onConflict((oc) => oc.column("hardware_id").doNothing())
        .returning("id")
        .execute();
      const ids = rows.map((r) => r.id);
      if (ids.length === 0) return;
      await trx
        .insertInto("management_notifications")
        .values(
          ids.map((id) => ({
            device_id: id,
            counter: 0,
            last_key_id: null,
            last_message_id: null,
            last_sent_at: null,
          })),
        )
        .execute();
      for (const id of ids) inserted.add(id);
    });
  }
  return inserted;
}

export async function findDevice(db: Db, id: string): Promise<DeviceRow | undefined> {
  const r = await db.selectFrom("devices").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toDevice(r) : undefined;
}

export async function listDevices(db: Db, page: { after?: string; limit: number; model?: string }) {
  let q = db.selectFrom("devices").selectAll().orderBy("id").limit(page.limit);
  if (page.after) q = q.where("id", ">", page.after);
  if (page.model) q = q.where("model", "=", page.model);
  return (await q.execute()).map(toDevice);
}

export interface DynamicKeyRow {
  id: string;
  deviceId: string;
  sealedKey: Uint8Array;
  policy: string;
  counter: number;
  expiresAt: number;
  maxUses: number;
  uses: number;
  state: DynamicKeyState;
  createdAt: number;
  updatedAt: number;
}

function toDynamicKey(r: ManagementTables["dynamic_keys"]): DynamicKeyRow {
  return {
    id: r.id,
    deviceId: r.device_id,
    sealedKey: toBytes(r.sealed_key),
    policy: r.policy,
    counter: Number(r.counter),
    expiresAt: Number(r.expires_at),
    maxUses: Number(r.max_uses),
    uses: Number(r.uses),
    state: r.state as DynamicKeyState,
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

/** The next notification counter of a device (1, 2, …): one atomic increment. */
export async function nextNotificationCounter(db: Db, deviceId: string): Promise<number> {
  const r = await db
    .updateTable("management_notifications")
    .set({ counter: sql`counter + 1` })
    .where("device_id", "=", deviceId)
    .returning("counter")
    .executeTakeFirst();
  if (!r) throw new Error(`no notification counter for ${deviceId}`);
  return Number(r.counter);
}

export async function recordNotificationSent(
  db: Db,
  deviceId: string,
  keyId: string,
  messageId: string,
  now: number,
  channel: "sms" | "push" = "sms",
): Promise<void> {
  await db
    .updateTable("management_notifications")
    .set({ last_key_id: keyId, last_message_id: messageId, last_sent_at: now, last_channel: channel })
    .where("device_id", "=", deviceId)
    .execute();
}

/** Stores a new active key, superseding the device's previous active one, in one transaction. */
export async function insertDynamicKey(db: Db, k: DynamicKeyRow): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx
      .updateTable("dynamic_keys")
      .set({ state: "superseded", updated_at: k.createdAt })
      .where("device_id", "=", k.deviceId)
      .where("state", "=", "active")
      .execute();
    await trx
      .insertInto("dynamic_keys")
      .values({
        id: k.id,
        device_id: k.deviceId,
        sealed_key: k.sealedKey,
        policy: k.policy,
        counter: k.counter,
        expires_at: k.expiresAt,
        max_uses: k.maxUses,
        uses: k.uses,
        state: k.state,
        created_at: k.createdAt,
        updated_at: k.updatedAt,
      })
      .execute();
  });
}

export async function findDynamicKey(db: Db, id: string): Promise<DynamicKeyRow | undefined> {
  const r = await db.selectFrom("dynamic_keys").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toDynamicKey(r) : undefined;
}

export async function findActiveDynamicKey(db: Db, deviceId: string): Promise<DynamicKeyRow | undefined> {
  const r = await db
    .selectFrom("dynamic_keys")
    .selectAll()
    .where("device_id", "=", deviceId)
    .where("state", "=", "active")
    .executeTakeFirst();
  return r ? toDynamicKey(r) : undefined;
}

export async function listDynamicKeys(db: Db, deviceId: string): Promise<DynamicKeyRow[]> {
  const rows = await db
    .selectFrom("dynamic_keys")
    .selectAll()
    .where("device_id", "=", deviceId)
    .orderBy("created_at")
    .orderBy("counter")
    .execute();
  return rows.map(toDynamicKey);
}

/**
 * Counts one use, atomically: only an active, unexpired key with uses left is incremented, so two
 * racing requests can never spend more than max_uses between them.
 */
export async function countDynamicKeyUse(db: Db, id: string, now: number): Promise<boolean> {
  const r = await db
    .updateTable("dynamic_keys")
    .set({ uses: sql`uses + 1`, updated_at: now })
    .where("id", "=", id)
    .where("state", "=", "active")
    .where("expires_at", ">", now)
    .where(sql<boolean>`uses < max_uses`)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Compare-and-set from active; returns whether this caller made the change. */
export async function retireDynamicKey(
  db: Db,
  id: string,
  to: "expired" | "exhausted",
  now: number,
): Promise<boolean> {
  const r = await db
    .updateTable("dynamic_keys")
    .set({ state: to, updated_at: now })
    .where("id", "=", id)
    .where("state", "=", "active")
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Records a nonce once; false when (device, nonce) was already seen (a replay). */
export async function insertNonce(
  db: Db,
  deviceId: string,
  nonce: string,
  expiresAt: number,
): Promise<boolean> {
  const r = await db
    .insertInto("signature_nonces")
    .values({ device_id: deviceId, nonce, expires_at: expiresAt })
    .onConflict((oc) => oc.columns(["device_id", "nonce"]).doNothing())
    .executeTakeFirst();
  return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
}

/** Nonces older than the signature window can no longer be replayed (created would be stale). */
export async function purgeExpiredNonces(db: Db, now: number): Promise<number> {
  const r = await db.deleteFrom("signature_nonces").where("expires_at", "<", now).executeTakeFirst();
  return Number(r.numDeletedRows);
}

// --- push presence (PostgreSQL relay) -------------------------------------------------------------

/** This node holds a push stream of the device (idempotent). */
export async function insertPushPresence(
  db: Db,
  deviceId: string,
  nodeId: string,
  now: number,
): Promise<void> {
  await db
    .insertInto("management_push_presence")
    .values({ device_id: deviceId, node_id: nodeId, connected_at: now })
    .onConflict((oc) => oc.columns(["device_id", "node_id"]).doNothing())
    .execute();
}

export async function deletePushPresence(db: Db, deviceId: string, nodeIds: string[]): Promise<void> {
  if (nodeIds.length === 0) return;
  await db
    .deleteFrom("management_push_presence")
    .where("device_id", "=", deviceId)
    .where("node_id", "in", nodeIds)
    .execute();
}

export async function deleteNodePushPresence(db: Db, nodeId: string): Promise<void> {
  await db.deleteFrom("management_push_presence").where("node_id", "=", nodeId).execute();
}

/** The other nodes that say they hold a push stream of the device. */
export async function pushPresenceElsewhere(db: Db, deviceId: string, nodeId: string): Promise<string[]> {
  const rows = await db
    .selectFrom("management_push_presence")
    .select("node_id")
    .where("device_id", "=", deviceId)
    .where("node_id", "<>", nodeId)
    .execute();
  return rows.map((r) => r.node_id);
}
