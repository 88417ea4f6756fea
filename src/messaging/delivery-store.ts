/**
 * Deliveries (one HPKE ciphertext per message and handset), the inbox, replies and the retention
 * queries of sweeper.ts. Part of store.ts (which re-exports it).
 */
import { sql } from "kysely";
import { toBytes, toBytesOrNull } from "../platform/db/columns.ts";
import { type DeliveryState, messageTransition } from "./protocol.ts";
import { type Db, type MessageRow, type MessagingTables, numOrNull, toMessage } from "./store.ts";

// --- deliveries ------------------------------------------------------------------------------------

export interface DeliveryRow {
  messageId: string;
  handsetId: string;
  enc: Uint8Array | null;
  ciphertext: Uint8Array | null;
  state: DeliveryState;
  createdAt: number;
  deliveredAt: number | null;
  readAt: number | null;
}

function toDelivery(r: MessagingTables["messaging_deliveries"]): DeliveryRow {
  return {
    messageId: r.message_id,
    handsetId: r.handset_id,
    enc: toBytesOrNull(r.enc),
    ciphertext: toBytesOrNull(r.ciphertext),
    state: r.state as DeliveryState,
    createdAt: Number(r.created_at),
    deliveredAt: numOrNull(r.delivered_at),
    readAt: numOrNull(r.read_at),
  };
}

/** New pending deliveries; one already there for (message, handset) is left as it is. Returns how many were new. */
export async function insertDeliveries(
  db: Db,
  rows: Array<{ messageId: string; handsetId: string; enc: Uint8Array; ciphertext: Uint8Array }>,
  now: number,
): Promise<number> {
  if (rows.length === 0) return 0;
  const r = await db
    .insertInto("messaging_deliveries")
    .values(
      rows.map((d) => ({
        message_id: d.messageId,
        handset_id: d.handsetId,
        enc: d.enc,
        ciphertext: d.ciphertext,
        state: "pending",
        created_at: now,
        updated_at: now,
        delivered_at: null,
        read_at: null,
      })),
    )
    .onConflict((oc) => oc.columns(["message_id", "handset_id"]).doNothing())
    .executeTakeFirst();
  return Number(r.numInsertedOrUpdatedRows ?? 0);
}

export async function findDelivery(
  db: Db,
  messageId: string,
  handsetId: string,
): Promise<DeliveryRow | undefined> {
  const r = await db
    .selectFrom("messaging_deliveries")
    .selectAll()
    .where("message_id", "=", messageId)
    .where("handset_id", "=", handsetId)
    .executeTakeFirst();
  return r ? toDelivery(r) : undefined;
}

export async function deliveriesOfHandset(db: Db, handsetId: string, states: DeliveryState[]) {
  const rows = await db
    .selectFrom("messaging_deliveries")
    .selectAll()
    .where("handset_id", "=", handsetId)
    .where("state", "in", states)
    .execute();
  return rows.map(toDelivery);
}

/** Replaces a pending delivery's ciphertext (the handset's key changed). */
export async function resealDelivery(
  db: Db,
  d: { messageId: string; handsetId: string; enc: Uint8Array; ciphertext: Uint8Array },
  now: number,
): Promise<boolean> {
  const r = await db
    .updateTable("messaging_deliveries")
    .set({ enc: d.enc, ciphertext: d.ciphertext, updated_at: now })
    .where("message_id", "=", d.messageId)
    .where("handset_id", "=", d.handsetId)
    .where("state", "=", "pending")
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/**
 * Moves one delivery from any of `from` to `to` (compare-and-set); `drop` clears its ciphertext.
 * delivered/read set their times once.
 */
export async function moveDelivery(
  db: Db,
  key: { messageId: string; handsetId: string },
  from: readonly DeliveryState[],
  to: DeliveryState,
  now: number,
  drop = false,
): Promise<boolean> {
  const times =
    to === "delivered"
      ? { delivered_at: sql<number>`coalesce(delivered_at, ${now})` }
      : to === "read"
        ? { delivered_at: sql<number>`coalesce(delivered_at, ${now})`, read_at: now }
        : {};
  const r = await db
    .updateTable("messaging_deliveries")
    .set({ state: to, updated_at: now, ...times, ...(drop ? { enc: null, ciphertext: null } : {}) })
    .where("message_id", "=", key.messageId)
    .where("handset_id", "=", key.handsetId)
    .where("state", "in", [...from])
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export interface InboxRow {
  messageId: string;
  senderId: string;
  senderName: string;
  state: DeliveryState;
  enc: Uint8Array;
  ciphertext: Uint8Array;
  createdAt: number;
  expiresAt: number;
}

/** A handset's deliveries that still hold a ciphertext, of messages not expired, oldest first. */
export async function inboxOf(
  db: Db,
  handsetId: string,
  states: readonly DeliveryState[],
  now: number,
  limit: number,
): Promise<InboxRow[]> {
  const rows = await db
    .selectFrom("messaging_deliveries as d")
    .innerJoin("messaging_messages as m", "m.id", "d.message_id")
    .innerJoin("messaging_senders as s", "s.id", "m.sender_id")
    .select([
      "d.message_id",
      "d.state",
      "d.enc",
      "d.ciphertext",
      "m.sender_id",
      "s.name",
      "m.created_at",
      "m.expires_at",
    ])
    .where("d.handset_id", "=", handsetId)
    .where("d.state", "in", [...states])
    .where("d.ciphertext", "is not", null)
    .where("m.expires_at", ">", now)
    .where("m.status", "<>", "expired")
    .orderBy("m.created_at")
    .orderBy("d.message_id")
    .limit(limit)
    .execute();
  return rows.map((r) => ({
    messageId: r.message_id,
    senderId: r.sender_id,
    senderName: r.name,
    state: r.state as DeliveryState,
    enc: toBytes(r.enc),
    ciphertext: toBytes(r.ciphertext),
    createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at),
  }));
}

export interface DeliveryStatusRow {
  handsetId: string;
  deviceType: string;
  state: DeliveryState;
  deliveredAt: number | null;
  readAt: number | null;
}

export async function deliveryStatusOf(db: Db, messageId: string): Promise<DeliveryStatusRow[]> {
  const rows = await db
    .selectFrom("messaging_deliveries as d")
    .innerJoin("messaging_handsets as h", "h.id", "d.handset_id")
    .select(["d.handset_id", "h.device_type", "d.state", "d.delivered_at", "d.read_at"])
    .where("d.message_id", "=", messageId)
    .orderBy("d.created_at")
    .orderBy("d.handset_id")
    .execute();
  return rows.map((r) => ({
    handsetId: r.handset_id,
    deviceType: r.device_type,
    state: r.state as DeliveryState,
    deliveredAt: numOrNull(r.delivered_at),
    readAt: numOrNull(r.read_at),
  }));
}

// --- replies ---------------------------------------------------------------------------------------

export interface ReplyRow {
  id: string;
  messageId: string;
  senderId: string;
  handsetId: string;
  sealedBody: Uint8Array | null;
  createdAt: number;
}

export async function insertReply(db: Db, r: ReplyRow): Promise<void> {
  await db
    .insertInto("messaging_replies")
    .values({
      id: r.id,
      message_id: r.messageId,
      sender_id: r.senderId,
      handset_id: r.handsetId,
      sealed_body: r.sealedBody,
      created_at: r.createdAt,
      purged_at: null,
    })
    .execute();
}

export async function repliesOf(db: Db, messageId: string): Promise<ReplyRow[]> {
  const rows = await db
    .selectFrom("messaging_replies")
    .selectAll()
    .where("message_id", "=", messageId)
    .orderBy("created_at")
    .orderBy("id")
    .execute();
  return rows.map((r) => ({
    id: r.id,
    messageId: r.message_id,
    senderId: r.sender_id,
    handsetId: r.handset_id,
    sealedBody: toBytesOrNull(r.sealed_body),
    createdAt: Number(r.created_at),
  }));
}

export async function countReplies(db: Db, messageId: string): Promise<number> {
  const r = await db
    .selectFrom("messaging_replies")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("message_id", "=", messageId)
    .executeTakeFirst();
  return Number(r?.n ?? 0);
}

// --- retention (sweeper.ts) ------------------------------------------------------------------------

/** Messages past expiry that are still waiting or queued: each becomes `expired` once. */
export async function lapsedUndelivered(db: Db, now: number, limit: number): Promise<MessageRow[]> {
  const rows = await db
    .selectFrom("messaging_messages")
    .selectAll()
    .where("status", "in", ["waiting_registration", "queued"])
    .where("expires_at", "<=", now)
    .limit(limit)
    .execute();
  return rows.map(toMessage);
}

/** Delivered or read messages past expiry that still hold their envelope (some handset never acked). */
export async function lapsedEnvelopes(db: Db, now: number, limit: number): Promise<string[]> {
  const rows = await db
    .selectFrom("messaging_messages")
    .select("id")
    .where("sealed_envelope", "is not", null)
    .where("expires_at", "<=", now)
    .limit(limit)
    .execute();
  return rows.map((r) => r.id);
}

/** Delivered (or read) messages whose retention ran out and whose ciphertexts are still kept. */
export async function pastRetention(db: Db, cutoff: number, limit: number): Promise<string[]> {
  const rows = await db
    .selectFrom("messaging_messages")
    .select("id")
    .where("delivered_at", "is not", null)
    .where("delivered_at", "<=", cutoff)
    .where("purged_at", "is", null)
    .limit(limit)
    .execute();
  return rows.map((r) => r.id);
}

/** Marks a message purged, once; the caller then drops its ciphertexts. */
export async function claimPurge(
  db: Db,
  id: string,
  now: number,
  expire: boolean,
): Promise<{ claimed: boolean }> {
  let q = db
    .updateTable("messaging_messages")
    .set({
      purged_at: now,
      sealed_envelope: null,
      envelope_erased_at: sql<number>`coalesce(envelope_erased_at, ${now})`,
      updated_at: now,
      ...(expire ? { status: "expired" } : {}),
    })
    .where("id", "=", id)
    .where("purged_at", "is", null);
  if (expire) q = q.where("status", "in", messageTransition("expired").from);
  const r = await q.executeTakeFirst();
  return { claimed: Number(r.numUpdatedRows) === 1 };
}

/** Drops every ciphertext of a message; pending ones become `expired` when the message expired. */
export async function dropCiphertexts(db: Db, messageId: string, now: number, expired: boolean) {
  if (expired)
    await db
      .updateTable("messaging_deliveries")
      .set({ state: "expired", updated_at: now })
      .where("message_id", "=", messageId)
      .where("state", "=", "pending")
      .execute();
  await db
    .updateTable("messaging_deliveries")
    .set({ enc: null, ciphertext: null, updated_at: now })
    .where("message_id", "=", messageId)
    .where("ciphertext", "is not", null)
    .execute();
}

/** At expiry: the copies no handset acknowledged are `expired` and their ciphertexts dropped. */
export async function expirePendingDeliveries(db: Db, messageId: string, now: number): Promise<number> {
  const r = await db
    .updateTable("messaging_deliveries")
    .set({ state: "expired", enc: null, ciphertext: null, updated_at: now })
    .where("message_id", "=", messageId)
    .where("state", "=", "pending")
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

export async function purgeReplies(db: Db, cutoff: number, now: number): Promise<number> {
  const r = await db
    .updateTable("messaging_replies")
    .set({ sealed_body: null, purged_at: now })
    .where("created_at", "<=", cutoff)
    .where("purged_at", "is", null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}
