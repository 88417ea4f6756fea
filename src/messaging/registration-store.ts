/**
 * Registration's tables and queries: registrations, the handset codes that arrived by SMS, and one
 * row per number (quota windows, the notice gate, the lock registrations take). Tries and states
 * move by compare-and-set, so parallel guesses — on one node or many — never get more than
 * MAX_CODE_TRIES comparisons between them.
 */
import { type Kysely, sql } from "kysely";
import { toBytes } from "../platform/db/columns.ts";
import { prepareQuery } from "../platform/db/compiled.ts";
import {
  type InboundCodeState,
  MAX_CODE_TRIES,
  NOTICE_INTERVAL_MS,
  QUOTA_WINDOW_MS,
  type RegistrationState,
  type RegistrationVariant,
} from "./protocol.ts";
import type { MessagingTables } from "./store.ts";

export interface RegistrationTables {
  messaging_registrations: {
    id: string;
    variant: string;
    phone_number: string;
    device_type: string;
    encryption_key: Uint8Array;
    auth_key: Uint8Array;
    handset_id: string;
    replaces: string | null;
    code_mac: Uint8Array;
    tries: number;
    state: string;
    sms_id: string | null;
    created_at: number;
    expires_at: number;
    confirmed_at: number | null;
  };
  messaging_inbound_codes: {
    id: string;
    phone_number: string;
    code_mac: Uint8Array;
    tries: number;
    state: string;
    sms_id: string;
    received_at: number;
    expires_at: number;
    used_at: number | null;
  };
  messaging_numbers: {
    phone_number: string;
    registrations_window: number;
    registrations_count: number;
    codes_window: number;
    codes_count: number;
    inbound_window: number;
    inbound_count: number;
    notice_at: number;
    touched_at: number;
  };
  server_keys: {
    kid: string;
    purpose: string;
    created_at: number;
    public_key: Uint8Array | null;
    sealed_private: Uint8Array;
  };
}

/** The whole messaging table map (store.ts), so one transaction serves both files. */
type Db = Kysely<MessagingTables>;

export interface RegistrationRow {
  id: string;
  variant: RegistrationVariant;
  phoneNumber: string;
  deviceType: string;
  encryptionKey: Uint8Array;
  authKey: Uint8Array;
  handsetId: string;
  replaces: string | null;
  codeMac: Uint8Array;
  tries: number;
  state: RegistrationState;
  smsId: string | null;
  createdAt: number;
  expiresAt: number;
  confirmedAt: number | null;
}

function toRegistration(r: RegistrationTables["messaging_registrations"]): RegistrationRow {
  return {
    id: r.id,
    variant: r.variant as RegistrationVariant,
    phoneNumber: r.phone_number,
    deviceType: r.device_type,
    encryptionKey: toBytes(r.encryption_key),
    authKey: toBytes(r.auth_key),
    handsetId: r.handset_id,
    replaces: r.replaces,
    codeMac: toBytes(r.code_mac),
    tries: Number(r.tries),
    state: r.state as RegistrationState,
    smsId: r.sms_id,
    createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at),
    confirmedAt: r.confirmed_at === null ? null : Number(r.confirmed_at),
  };
}

export async function insertRegistration(db: Db, r: RegistrationRow): Promise<void> {
  await db
    .insertInto("messaging_registrations")
    .values({
      id: r.id,
      variant: r.variant,
      phone_number: r.phoneNumber,
      device_type: r.deviceType,
      encryption_key: r.encryptionKey,
      auth_key: r.authKey,
      handset_id: r.handsetId,
      replaces: r.replaces,
      code_mac: r.codeMac,
      tries: r.tries,
      state: r.state,
      sms_id: r.smsId,
      created_at: r.createdAt,
      expires_at: r.expiresAt,
      confirmed_at: r.confirmedAt,
    })
    .execute();
}

export async function findRegistration(db: Db, id: string): Promise<RegistrationRow | undefined> {
  const r = await db
    .selectFrom("messaging_registrations")
    .selectAll()
    .where("id", "=", id)
    .executeTakeFirst();
  return r ? toRegistration(r) : undefined;
}

/** Pending handset-code registrations of a number that have not expired: what an inbound text may complete. */
export async function pendingHandsetCodeRegistrations(
  db: Db,
  number: string,
  now: number,
): Promise<RegistrationRow[]> {
  const rows = await db
    .selectFrom("messaging_registrations")
    .selectAll()
    .where("phone_number", "=", number)
    .where("variant", "=", "handset_otp")
    .where("state", "=", "pending")
    .where("expires_at", ">", now)
    .orderBy("created_at")
    .execute();
  return rows.map(toRegistration);
}

export async function setRegistrationSms(db: Db, id: string, smsId: string): Promise<void> {
  await db.updateTable("messaging_registrations").set({ sms_id: smsId }).where("id", "=", id).execute();
}

/**
 * Counts one attempt on a pending registration, atomically and only while tries are left; returns
 * the tries after it, or undefined when none was left (or it is no longer pending).
 */
export async function claimRegistrationTry(db: Db, id: string, now: number): Promise<number | undefined> {
  const r = await db
    .updateTable("messaging_registrations")
    .set({ tries: sql`tries + 1` })
    .where("id", "=", id)
    .where("state", "=", "pending")
    .where("expires_at", ">", now)
    .where("tries", "<", MAX_CODE_TRIES)
    .returning("tries")
    .executeTakeFirst();
  return r ? Number(r.tries) : undefined;
}

/** Compare-and-set of a registration's state from pending. */
export async function moveRegistration(
  db: Db,
  id: string,
  to: "confirmed" | "locked" | "expired",
  now: number,
): Promise<boolean> {
  const r = await db
    .updateTable("messaging_registrations")
    .set({ state: to, ...(to === "confirmed" ? { confirmed_at: now } : {}) })
    .where("id", "=", id)
    .where("state", "=", "pending")
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export async function expireLapsedRegistrations(db: Db, now: number): Promise<number> {
  const r = await db
    .updateTable("messaging_registrations")
    .set({ state: "expired" })
    .where("state", "=", "pending")
    .where("expires_at", "<=", now)
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

// --- inbound handset codes -------------------------------------------------------------------------

export interface InboundCodeRow {
  id: string;
  phoneNumber: string;
  codeMac: Uint8Array;
  tries: number;
  state: InboundCodeState;
  smsId: string;
  receivedAt: number;
  expiresAt: number;
}

export async function insertInboundCode(db: Db, c: InboundCodeRow): Promise<void> {
  await db
    .insertInto("messaging_inbound_codes")
    .values({
      id: c.id,
      phone_number: c.phoneNumber,
      code_mac: c.codeMac,
      tries: c.tries,
      state: c.state,
      sms_id: c.smsId,
      received_at: c.receivedAt,
      expires_at: c.expiresAt,
      used_at: null,
    })
    .execute();
}

/** The codes texted from a number within the last `sinceMs` (every state, so reuse is recognised). */
export async function recentInboundCodes(db: Db, number: string, since: number): Promise<InboundCodeRow[]> {
  const rows = await db
    .selectFrom("messaging_inbound_codes")
    .selectAll()
    .where("phone_number", "=", number)
    .where("received_at", ">", since)
    .orderBy("received_at")
    .execute();
  return rows.map((r) => ({
    id: r.id,
    phoneNumber: r.phone_number,
    codeMac: toBytes(r.code_mac),
    tries: Number(r.tries),
    state: r.state as InboundCodeState,
    smsId: r.sms_id,
    receivedAt: Number(r.received_at),
    expiresAt: Number(r.expires_at),
  }));
}

/** Uses a live, unexpired inbound code once. */
export async function useInboundCode(db: Db, id: string, now: number): Promise<boolean> {
  const r = await db
    .updateTable("messaging_inbound_codes")
    .set({ state: "used", used_at: now })
    .where("id", "=", id)
    .where("state", "=", "live")
    .where("expires_at", ">", now)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/**
 * A registration named this number with a code that matched none of its live codes: one try
 * counted on each of them, and those without tries left are locked.
 */
export async function countMissOnInboundCodes(db: Db, number: string, now: number): Promise<void> {
  await db
    .updateTable("messaging_inbound_codes")
    .set({ tries: sql`tries + 1` })
    .where("phone_number", "=", number)
    .where("state", "=", "live")
    .where("expires_at", ">", now)
    .execute();
  await db
    .updateTable("messaging_inbound_codes")
    .set({ state: "locked" })
    .where("phone_number", "=", number)
    .where("state", "=", "live")
    .where("tries", ">=", MAX_CODE_TRIES)
    .execute();
}

export async function deleteOldInboundCodes(db: Db, before: number): Promise<number> {
  const r = await db
    .deleteFrom("messaging_inbound_codes")
    .where("expires_at", "<", before)
    .executeTakeFirst();
  return Number(r.numDeletedRows);
}

// --- the per-number row ----------------------------------------------------------------------------

const NEW_NUMBER = {
  registrations_window: 0,
  registrations_count: 0,
  codes_window: 0,
  codes_count: 0,
  inbound_window: 0,
  inbound_count: 0,
  notice_at: 0,
  touched_at: 0,
} as const;

async function ensureNumber(db: Db, number: string): Promise<void> {
  await db
    .insertInto("messaging_numbers")
    .values({ phone_number: number, ...NEW_NUMBER })
    .onConflict((oc) => oc.column("phone_number").doNothing())
    .execute();
}

export type Quota = "registrations" | "codes" | "inbound";

/**
 * Takes one unit of a per-number quota in a fixed window of QUOTA_WINDOW_MS that starts with its
 * first use: one atomic UPDATE (every SET reads the old row), so concurrent callers on any node
 * never take more than `limit` between them. False when the quota is used up.
 */
export async function takeQuota(db: Db, number: string, quota: Quota, limit: number, now: number) {
  await ensureNumber(db, number);
  const windowColumn = `${quota}_window` as const;
  const countColumn = `${quota}_count` as const;
  const w = sql.ref(windowColumn);
  const c = sql.ref(countColumn);
  const stale = sql<boolean>`${w} <= ${now - QUOTA_WINDOW_MS}`;
  const r = await db
    .updateTable("messaging_numbers")
    .set({
      [windowColumn]: sql<number>`case when ${stale} then ${now} else ${w} end`,
      [countColumn]: sql<number>`case when ${stale} then 1 else ${c} + 1 end`,
    })
    .where("phone_number", "=", number)
    .where(sql<boolean>`(${stale} or ${c} < ${limit})`)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

// Every accepted message runs this (prepareQuery: compiled once per engine).
const noticeSlotQuery = prepareQuery(
  4,
  (db: Db, number: string, newNoticeAt: number, now: number, dueBefore: number) =>
    db
      .insertInto("messaging_numbers")
      .values({ phone_number: number, ...NEW_NUMBER, notice_at: newNoticeAt })
      .onConflict((oc) =>
        oc
          .column("phone_number")
          .doUpdateSet({ notice_at: now })
          .where("messaging_numbers.notice_at", "<=", dueBefore),
      ),
);

/**
 * The "a message waits" gate: true for at most one caller per number per NOTICE_INTERVAL_MS. One
 * statement: a new number's row is created with the slot taken, an existing one takes it when its
 * last notice is old enough. It also holds the number's row (PostgreSQL locks a conflicting row
 * even when the WHERE is false; SQLite holds the write lock) to the end of the caller's
 * transaction, like lockNumber.
 */
export async function takeNoticeSlot(db: Db, number: string, now: number): Promise<boolean> {
  // With a clock earlier than one interval (tests), a new row's notice_at 0 is not old enough.
  const due = now >= NOTICE_INTERVAL_MS;
  const r = await noticeSlotQuery.execute(db, number, due ? now : 0, now, now - NOTICE_INTERVAL_MS);
  return due && Number(r.numAffectedRows ?? 0) === 1;
}

/**
 * Inside a transaction: writes the number's row first, which holds its row lock on PostgreSQL (and
 * the write lock on SQLite) to the end of the transaction — registrations of one number run one at
 * a time from here, so the handset count they check stays true.
 */
export async function lockNumber(trx: Db, number: string, now: number): Promise<void> {
  await ensureNumber(trx, number);
  await trx
    .updateTable("messaging_numbers")
    .set({ touched_at: now })
    .where("phone_number", "=", number)
    .execute();
}

// --- the server's code MAC key ---------------------------------------------------------------------

export const OTP_KEY_KID = "messaging-otp-mac";

export async function findServerKey(db: Db, kid: string): Promise<Uint8Array | undefined> {
  const r = await db
    .selectFrom("server_keys")
    .select("sealed_private")
    .where("kid", "=", kid)
    .executeTakeFirst();
  return r ? toBytes(r.sealed_private) : undefined;
}

/** Stores the key unless another node stored one first; either way returns the one that is stored. */
export async function insertServerKeyOnce(
  db: Db,
  kid: string,
  purpose: string,
  sealed: Uint8Array,
  now: number,
): Promise<Uint8Array> {
  await db
    .insertInto("server_keys")
    .values({ kid, purpose, created_at: now, public_key: null, sealed_private: sealed })
    .onConflict((oc) => oc.column("kid").doNothing())
    .execute();
  return (await findServerKey(db, kid))!;
}
