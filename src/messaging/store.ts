/**
 * Messaging's tables and queries: senders, messages, handsets here; deliveries, the inbox, replies
 * and retention in delivery-store.ts (re-exported); registrations, inbound codes and the per-number
 * row in registration-store.ts. Every state change is a compare-and-set (`where state in …`), so N
 * server nodes apply each change once.
 */
import { type Kysely, sql } from "kysely";
import { toBytes, toBytesOrNull } from "../platform/db/columns.ts";
import { prepareQuery } from "../platform/db/compiled.ts";
import { isUniqueViolation } from "../platform/db/database.ts";
import { ACKNOWLEDGED_STATES, type MessageEvent, type MessageStatus, messageTransition } from "./protocol.ts";
import type { RegistrationTables } from "./registration-store.ts";

export interface MessagingTables extends RegistrationTables {
  messaging_senders: {
    id: string;
    name: string;
    api_key_hash: string;
    webhook_url: string | null;
    sealed_webhook_secret: Uint8Array;
    created_by: string;
    created_at: number;
    disabled_at: number | null;
  };
  messaging_messages: {
    id: string;
    sender_id: string;
    to_number: string;
    status: string;
    sealed_envelope: Uint8Array | null;
    reply_webhook: string | null;
    idempotency_key: string | null;
    created_at: number;
    expires_at: number;
    delivered_at: number | null;
    read_at: number | null;
    envelope_erased_at: number | null;
    purged_at: number | null;
    updated_at: number;
  };
  messaging_handsets: {
    id: string;
    phone_number: string;
    device_type: string;
    encryption_key: Uint8Array;
    auth_key: Uint8Array;
    state: string;
    replaced_by: string | null;
    created_at: number;
    updated_at: number;
  };
  messaging_deliveries: {
    message_id: string;
    handset_id: string;
    enc: Uint8Array | null;
    ciphertext: Uint8Array | null;
    state: string;
    created_at: number;
    updated_at: number;
    delivered_at: number | null;
    read_at: number | null;
  };
  messaging_replies: {
    id: string;
    message_id: string;
    sender_id: string;
    handset_id: string;
    sealed_body: Uint8Array | null;
    created_at: number;
    purged_at: number | null;
  };
}

export type Db = Kysely<MessagingTables>;

// --- senders ---------------------------------------------------------------------------------------

export interface SenderRow {
  id: string;
  name: string;
  apiKeyHash: string;
  webhookUrl: string | null;
  sealedWebhookSecret: Uint8Array;
  createdBy: string;
  createdAt: number;
  disabledAt: number | null;
}

function toSender(r: MessagingTables["messaging_senders"]): SenderRow {
  return {
    id: r.id,
    name: r.name,
    apiKeyHash: r.api_key_hash,
    webhookUrl: r.webhook_url,
    sealedWebhookSecret: toBytes(r.sealed_webhook_secret),
    createdBy: r.created_by,
    createdAt: Number(r.created_at),
    disabledAt: r.disabled_at === null ? null : Number(r.disabled_at),
  };
}

export async function insertSender(db: Db, s: SenderRow): Promise<void> {
  await db
    .insertInto("messaging_senders")
    .values({
      id: s.id,
      name: s.name,
      api_key_hash: s.apiKeyHash,
      webhook_url: s.webhookUrl,
      sealed_webhook_secret: s.sealedWebhookSecret,
      created_by: s.createdBy,
      created_at: s.createdAt,
      disabled_at: s.disabledAt,
    })
    .execute();
}

// Every authenticated sender request runs this (prepareQuery: compiled once per engine).
const senderByKeyHash = prepareQuery(1, (db: Db, hash: string) =>
  db.selectFrom("messaging_senders").selectAll().where("api_key_hash", "=", hash),
);

/** The lookup by hash is the comparison: no secret is compared in the application. */
export async function findSenderByKeyHash(db: Db, hash: string): Promise<SenderRow | undefined> {
  const r = (await senderByKeyHash.execute(db, hash)).rows[0];
  return r ? toSender(r) : undefined;
}

export async function findSender(db: Db, id: string): Promise<SenderRow | undefined> {
  const r = await db.selectFrom("messaging_senders").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toSender(r) : undefined;
}

export async function listSenders(db: Db): Promise<SenderRow[]> {
  return (await db.selectFrom("messaging_senders").selectAll().orderBy("created_at").execute()).map(toSender);
}

export async function disableSender(db: Db, id: string, now: number): Promise<boolean> {
  const r = await db
    .updateTable("messaging_senders")
    .set({ disabled_at: now })
    .where("id", "=", id)
    .where("disabled_at", "is", null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

// --- messages --------------------------------------------------------------------------------------

export interface MessageRow {
  id: string;
  senderId: string;
  toNumber: string;
  status: MessageStatus;
  sealedEnvelope: Uint8Array | null;
  replyWebhook: string | null;
  idempotencyKey: string | null;
  createdAt: number;
  expiresAt: number;
  deliveredAt: number | null;
  readAt: number | null;
  envelopeErasedAt: number | null;
  purgedAt: number | null;
}

export function numOrNull(v: number | null): number | null {
  return v === null ? null : Number(v);
}

export function toMessage(r: MessagingTables["messaging_messages"]): MessageRow {
  return {
    id: r.id,
    senderId: r.sender_id,
    toNumber: r.to_number,
    status: r.status as MessageStatus,
    sealedEnvelope: toBytesOrNull(r.sealed_envelope),
    replyWebhook: r.reply_webhook,
    idempotencyKey: r.idempotency_key,
    createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at),
    deliveredAt: numOrNull(r.delivered_at),
    readAt: numOrNull(r.read_at),
    envelopeErasedAt: numOrNull(r.envelope_erased_at),
    purgedAt: numOrNull(r.purged_at),
  };
}

// Every accepted message runs this (prepareQuery: compiled once per engine).
const insertMessageQuery = prepareQuery(
  14,
  (
    db: Db,
    id: string,
    senderId: string,
    toNumber: string,
    status: string,
    sealedEnvelope: Uint8Array | null,
    replyWebhook: string | null,
    idempotencyKey: string | null,
    createdAt: number,
    expiresAt: number,
    deliveredAt: number | null,
    readAt: number | null,
    envelopeErasedAt: number | null,
    purgedAt: number | null,
    updatedAt: number,
  ) =>
    db.insertInto("messaging_messages").values({
      id,
      sender_id: senderId,
      to_number: toNumber,
      status,
      sealed_envelope: sealedEnvelope,
      reply_webhook: replyWebhook,
      idempotency_key: idempotencyKey,
      created_at: createdAt,
      expires_at: expiresAt,
      delivered_at: deliveredAt,
      read_at: readAt,
      envelope_erased_at: envelopeErasedAt,
      purged_at: purgedAt,
      updated_at: updatedAt,
    }),
);

/** False when the sender already used this idempotency key (the unique index decided). */
export async function insertMessage(db: Db, m: MessageRow): Promise<boolean> {
  try {
    await insertMessageQuery.execute(
      db,
      m.id,
      m.senderId,
      m.toNumber,
      m.status,
      m.sealedEnvelope,
      m.replyWebhook,
      m.idempotencyKey,
      m.createdAt,
      m.expiresAt,
      m.deliveredAt,
      m.readAt,
      m.envelopeErasedAt,
      m.purgedAt,
      m.createdAt,
    );
    return true;
  } catch (e) {
    if (m.idempotencyKey !== null && isUniqueViolation(e)) return false;
    throw e;
  }
}

export async function findMessage(db: Db, id: string): Promise<MessageRow | undefined> {
  const r = await db.selectFrom("messaging_messages").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toMessage(r) : undefined;
}

export async function findMessageByIdempotencyKey(
  db: Db,
  senderId: string,
  key: string,
): Promise<MessageRow | undefined> {
  const r = await db
    .selectFrom("messaging_messages")
    .selectAll()
    .where("sender_id", "=", senderId)
    .where("idempotency_key", "=", key)
    .executeTakeFirst();
  return r ? toMessage(r) : undefined;
}

/** Messages of a number that still hold their envelope and have not expired: what a new key gets. */
export async function messagesWithEnvelope(db: Db, number: string, now: number): Promise<MessageRow[]> {
  const rows = await db
    .selectFrom("messaging_messages")
    .selectAll()
    .where("to_number", "=", number)
    .where("sealed_envelope", "is not", null)
    .where("expires_at", ">", now)
    .where("status", "<>", "expired")
    .orderBy("created_at")
    .execute();
  return rows.map(toMessage);
}

/** Applies one status event as a compare-and-set; true when this caller moved the message. */
export async function transitionMessage(
  db: Db,
  id: string,
  event: MessageEvent,
  now: number,
): Promise<boolean> {
  const { from, to } = messageTransition(event);
  const times =
    event === "acked"
      ? { delivered_at: sql<number>`coalesce(delivered_at, ${now})` }
      : event === "read"
        ? { delivered_at: sql<number>`coalesce(delivered_at, ${now})`, read_at: now }
        : {};
  const r = await db
    .updateTable("messaging_messages")
    .set({ status: to, updated_at: now, ...times })
    .where("id", "=", id)
    .where("status", "in", from)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Drops the envelope once (compare-and-set on its presence). */
export async function eraseEnvelope(db: Db, id: string, now: number): Promise<boolean> {
  const r = await db
    .updateTable("messaging_messages")
    .set({ sealed_envelope: null, envelope_erased_at: now, updated_at: now })
    .where("id", "=", id)
    .where("sealed_envelope", "is not", null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** How many active handsets of the message's number have not acknowledged it (no delivery counts as not). */
export async function unacknowledgedHandsets(db: Db, messageId: string, number: string): Promise<number> {
  const r = await db
    .selectFrom("messaging_handsets as h")
    .leftJoin("messaging_deliveries as d", (j) =>
      j.onRef("d.handset_id", "=", "h.id").on("d.message_id", "=", messageId),
    )
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("h.phone_number", "=", number)
    .where("h.state", "=", "active")
    .where((eb) => eb.or([eb("d.state", "is", null), eb("d.state", "not in", [...ACKNOWLEDGED_STATES])]))
    .executeTakeFirst();
  return Number(r?.n ?? 0);
}

// --- handsets --------------------------------------------------------------------------------------

export interface HandsetRow {
  id: string;
  phoneNumber: string;
  deviceType: string;
  encryptionKey: Uint8Array;
  authKey: Uint8Array;
  state: "active" | "replaced";
  replacedBy: string | null;
  createdAt: number;
  updatedAt: number;
}

function toHandset(r: MessagingTables["messaging_handsets"]): HandsetRow {
  return {
    id: r.id,
    phoneNumber: r.phone_number,
    deviceType: r.device_type,
    encryptionKey: toBytes(r.encryption_key),
    authKey: toBytes(r.auth_key),
    state: r.state as HandsetRow["state"],
    replacedBy: r.replaced_by,
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

export async function findHandset(db: Db, id: string): Promise<HandsetRow | undefined> {
  const r = await db.selectFrom("messaging_handsets").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toHandset(r) : undefined;
}

// Every accepted message runs this (prepareQuery: compiled once per engine).
const activeHandsetsQuery = prepareQuery(1, (db: Db, number: string) =>
  db
    .selectFrom("messaging_handsets")
    .selectAll()
    .where("phone_number", "=", number)
    .where("state", "=", "active")
    .orderBy("created_at"),
);

export async function activeHandsetsOf(db: Db, number: string): Promise<HandsetRow[]> {
  return (await activeHandsetsQuery.execute(db, number)).rows.map(toHandset);
}

/** Creates the handset, or (same derived id) replaces its keys and makes it active again. */
export async function upsertHandset(db: Db, h: HandsetRow): Promise<void> {
  await db
    .insertInto("messaging_handsets")
    .values({
      id: h.id,
      phone_number: h.phoneNumber,
      device_type: h.deviceType,
      encryption_key: h.encryptionKey,
      auth_key: h.authKey,
      state: "active",
      replaced_by: null,
      created_at: h.createdAt,
      updated_at: h.updatedAt,
    })
    .onConflict((oc) =>
      oc.column("id").doUpdateSet({
        device_type: h.deviceType,
        encryption_key: h.encryptionKey,
        state: "active",
        replaced_by: null,
        updated_at: h.updatedAt,
      }),
    )
    .execute();
}

export async function markHandsetReplaced(db: Db, id: string, by: string, now: number): Promise<boolean> {
  const r = await db
    .updateTable("messaging_handsets")
    .set({ state: "replaced", replaced_by: by, updated_at: now })
    .where("id", "=", id)
    .where("state", "=", "active")
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export * from "./delivery-store.ts";
