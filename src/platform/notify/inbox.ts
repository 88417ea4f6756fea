/**
 * The handset inbox: notifications the server leaves for a handset ("finish activating service
 * X", later "a dynamic key", "a message waits"). The handset reads them when its client runs;
 * the SMS and push channels (later) only say that something waits here.
 */
import type { Kysely } from "kysely";
import { randomToken } from "../../core/crypto/random.ts";
import type { MigrationRegistry } from "../db/migrate.ts";

export interface InboxTables {
  handset_notifications: {
    id: string;
    handset_id: string;
    kind: string;
    body: string;
    created_at: number;
    read_at: number | null;
  };
}

export const inboxMigrations: MigrationRegistry = {
  "0004_notify": {
    async up(db) {
      await db.schema
        .createTable("handset_notifications")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("handset_id", "text", (c) => c.notNull())
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("body", "text", (c) => c.notNull())
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("read_at", "bigint")
        .execute();
      await db.schema
        .createIndex("handset_notifications_handset")
        .on("handset_notifications")
        .columns(["handset_id", "created_at"])
        .execute();
    },
  },
};

export interface Notification {
  id: string;
  kind: string;
  body: Record<string, unknown>;
  createdAt: number;
}

export async function notifyHandset(
  db: Kysely<InboxTables>,
  handsetId: string,
  kind: string,
  body: Record<string, unknown>,
  now: number,
): Promise<string> {
  const id = `ntf_${randomToken(12)}`;
  await db
    .insertInto("handset_notifications")
    .values({ id, handset_id: handsetId, kind, body: JSON.stringify(body), created_at: now, read_at: null })
    .execute();
  return id;
}

/** Unread notifications, oldest first; reading marks them read. */
export async function takeNotifications(
  db: Kysely<InboxTables>,
  handsetId: string,
  now: number,
  limit = 100,
): Promise<Notification[]> {
  const rows = await db
    .selectFrom("handset_notifications")
    .selectAll()
    .where("handset_id", "=", handsetId)
    .where("read_at", "is", null)
    .orderBy("created_at")
    .limit(limit)
    .execute();
  if (rows.length > 0)
    await db
      .updateTable("handset_notifications")
      .set({ read_at: now })
      .where(
        "id",
        "in",
        rows.map((r) => r.id),
      )
      .execute();
  return rows.map((r) => ({
    id: r.id,
    kind: r.kind,
    body: JSON.parse(r.body) as Record<string, unknown>,
    createdAt: Number(r.created_at),
  }));
}
