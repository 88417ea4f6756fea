/**
 * The built-in SMS centre's table: every text the outbox gateway sent (mt, mobile-terminated)
 * and every text a simulated handset sent to the service (mo, mobile-originated).
 *
 * Ids sort in creation order (`sms_` + 9 base-36 digits of epoch ms + 4 of a per-process counter
 * + 8 random), so `after=<id>` pages through a number's texts with a plain `id > after`. Across
 * server nodes, texts created in the same millisecond sort by their counter and random part.
 */
import { type Kysely, sql } from "kysely";
import { timePrefix } from "../../../core/codec/time-prefix.ts";
import { randomBytes } from "../../../core/crypto/random.ts";
import { prepareQuery } from "../../db/compiled.ts";
import type { MigrationRegistry } from "../../db/migrate.ts";
import type { SmsMessage } from "./types.ts";

export type SmsDirection = "mt" | "mo";

export interface SmsTables {
  sms_messages: {
    id: string;
    direction: SmsDirection;
    from_number: string;
    to_number: string;
    text: string;
    created_at: number;
    read_at: number | null;
  };
}

export const smsMigrations: MigrationRegistry = {
  "0006_sms": {
    async up(db, dialect) {
      await db.schema
        .createTable("sms_messages")
        // PostgreSQL: byte order, so `id > after` agrees with SQLite whatever the database locale.
        .addColumn("id", "text", (c) =>
          dialect === "postgres" ? c.primaryKey().modifyFront(sql`collate "C"`) : c.primaryKey(),
        )
        .addColumn("direction", "text", (c) => c.notNull().check(sql`direction in ('mt', 'mo')`))
        .addColumn("from_number", "text", (c) => c.notNull())
        .addColumn("to_number", "text", (c) => c.notNull())
        .addColumn("text", "text", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("read_at", "bigint")
        .execute();
      await db.schema
        .createIndex("sms_messages_to")
        .on("sms_messages")
        .columns(["to_number", "id"])
        .execute();
    },
    async down(db) {
      await db.schema.dropTable("sms_messages").execute();
    },
  },
};

export interface StoredSms extends SmsMessage {
  direction: SmsDirection;
  /** When the text was first listed through the API (the handset picked it up), or null. */
  readAt: number | null;
}

let lastMillis = 0;
let counter = 0;

/** A new text id that sorts after every id this process made before (see the module comment). */
export function newSmsId(now: number): string {
  if (now > lastMillis) {
    lastMillis = now;
    counter = 0;
  } else counter++;
  let random = "";
  for (const b of randomBytes(8)) random += (b % 36).toString(36);
  return `sms_${timePrefix(lastMillis)}${counter.toString(36).padStart(4, "0")}${random}`;
}

export const SMS_ID_PATTERN = "^sms_[0-9a-z]{21}$";

// Every text sent or received passes here (a message's notice, a registration code): compiled once.
const insertTextQuery = prepareQuery(
  6,
  (
    db: Kysely<SmsTables>,
    id: string,
    direction: SmsDirection,
    from: string,
    to: string,
    text: string,
    now: number,
  ) =>
    db.insertInto("sms_messages").values({
      id,
      direction,
      from_number: from,
      to_number: to,
      text,
      created_at: now,
      read_at: null,
    }),
);

export async function insertText(
  db: Kysely<SmsTables>,
  text: { direction: SmsDirection; from: string; to: string; text: string },
  now: number,
): Promise<StoredSms> {
  const id = newSmsId(now);
  await insertTextQuery.execute(db, id, text.direction, text.from, text.to, text.text, now);
  return {
    id,
    direction: text.direction,
    from: text.from,
    to: text.to,
    text: text.text,
    at: now,
    readAt: null,
  };
}

/** Texts addressed to `to`, oldest first, strictly after the id `after` when given. */
export async function listTexts(
  db: Kysely<SmsTables>,
  query: { to: string; after?: string; limit: number },
): Promise<StoredSms[]> {
  let q = db
    .selectFrom("sms_messages")
    .selectAll()
    .where("to_number", "=", query.to)
    .orderBy("id")
    .limit(Math.max(1, Math.min(query.limit, 1000)));
  if (query.after !== undefined) q = q.where("id", ">", query.after);
  const rows = await q.execute();
  return rows.map((r) => ({
    id: r.id,
    direction: r.direction,
    from: r.from_number,
    to: r.to_number,
    text: r.text,
    at: Number(r.created_at),
    readAt: r.read_at === null ? null : Number(r.read_at),
  }));
}

/** Sets read_at on those of `ids` not read before. */
export async function markTextsRead(
  db: Kysely<SmsTables>,
  ids: readonly string[],
  now: number,
): Promise<void> {
  if (ids.length === 0) return;
  await db
    .updateTable("sms_messages")
    .set({ read_at: now })
    .where("id", "in", [...ids])
    .where("read_at", "is", null)
    .execute();
}
