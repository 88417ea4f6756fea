/**
 * The webhook outbox (migration 0012_webhooks): one row per call to make. Every state change is a
 * compare-and-set, so any number of nodes can dispatch from one database:
 *
 *   pending ──claim (CAS on attempts)──► sending ──2xx──► delivered
 *      ▲                                    │ ├──other / no answer, tries left──► pending (next_attempt_at later)
 *      └────── the lease ran out ───────────┘ └──other / no answer, last try────► failed
 *
 * A claim sets `next_attempt_at` to the end of its lease, so a node that died mid-call leaves a
 * row that falls due again by itself. The shared secret is sealed at rest (keyring, AAD
 * "notify/webhook-secret/<id>") and erased when the row is finished; the body is stored as the exact
 * JSON text that is sent and signed.
 */
import type { Kysely } from "kysely";
import { bytesType, timeType, toBytes } from "../db/columns.ts";
import type { MigrationRegistry } from "../db/migrate.ts";

export type WebhookState = "pending" | "sending" | "delivered" | "failed";

export interface WebhookTables {
  webhook_outbox: {
    id: string;
    kind: string;
    url: string;
    body: string;
    sealed_secret: Uint8Array;
    key_id: string;
    tag: string;
    state: string;
    /** Tries started so far (a claim counts one). */
    attempts: number;
    /** pending: when the next try is due; sending: when the lease ends. */
    next_attempt_at: number;
    /** The claim that holds the row while sending; null otherwise. */
    lease_token: string | null;
    last_status: number | null;
    last_error: string | null;
    created_at: number;
    updated_at: number;
    finished_at: number | null;
  };
}

type Db = Kysely<WebhookTables>;

/** The keyring AAD of a row's sealed secret: a sealed secret copied to another row does not open. */
export const webhookSecretAad = (id: string) => `notify/webhook-secret/${id}`;

export const webhookMigrations: MigrationRegistry = {
  "0012_webhooks": {
    async up(db, dialect) {
      await db.schema
        .createTable("webhook_outbox")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("url", "text", (c) => c.notNull())
        .addColumn("body", "text", (c) => c.notNull())
        .addColumn("sealed_secret", bytesType(dialect), (c) => c.notNull())
        .addColumn("key_id", "text", (c) => c.notNull())
        .addColumn("tag", "text", (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("attempts", "integer", (c) => c.notNull())
        .addColumn("next_attempt_at", timeType, (c) => c.notNull())
        .addColumn("lease_token", "text")
        .addColumn("last_status", "integer")
        .addColumn("last_error", "text")
        .addColumn("created_at", timeType, (c) => c.notNull())
        .addColumn("updated_at", timeType, (c) => c.notNull())
        .addColumn("finished_at", timeType)
        .execute();
      await db.schema
        .createIndex("webhook_outbox_due")
        .on("webhook_outbox")
        .columns(["state", "next_attempt_at"])
        .execute();
    },
  },
};

export interface WebhookRow {
  id: string;
  kind: string;
  url: string;
  body: string;
  sealedSecret: Uint8Array;
  keyId: string;
  tag: string;
  state: WebhookState;
  attempts: number;
  nextAttemptAt: number;
  leaseToken: string | null;
  lastStatus: number | null;
  lastError: string | null;
  createdAt: number;
  updatedAt: number;
  finishedAt: number | null;
}

function rowOf(r: WebhookTables["webhook_outbox"]): WebhookRow {
  return {
    id: r.id,
    kind: r.kind,
    url: r.url,
    body: r.body,
    sealedSecret: toBytes(r.sealed_secret),
    keyId: r.key_id,
    tag: r.tag,
    state: r.state as WebhookState,
    attempts: Number(r.attempts),
    nextAttemptAt: Number(r.next_attempt_at),
    leaseToken: r.lease_token,
    lastStatus: r.last_status === null ? null : Number(r.last_status),
    lastError: r.last_error,
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
    finishedAt: r.finished_at === null ? null : Number(r.finished_at),
  };
}

export async function insertWebhook(
  db: Db,
  row: Pick<WebhookRow, "id" | "kind" | "url" | "body" | "sealedSecret" | "keyId" | "tag" | "nextAttemptAt">,
  now: number,
): Promise<void> {
  await db
    .insertInto("webhook_outbox")
    .values({
      id: row.id,
      kind: row.kind,
      url: row.url,
      body: row.body,
      sealed_secret: row.sealedSecret,
      key_id: row.keyId,
      tag: row.tag,
      state: "pending",
      attempts: 0,
      next_attempt_at: row.nextAttemptAt,
      lease_token: null,
      last_status: null,
      last_error: null,
      created_at: now,
      updated_at: now,
      finished_at: null,
    })
    .execute();
}

export async function findWebhook(db: Db, id: string): Promise<WebhookRow | undefined> {
  const r = await db.selectFrom("webhook_outbox").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? rowOf(r) : undefined;
}

/** Rows due now (pending, or sending with a lapsed lease), oldest due first. */
export async function dueWebhooks(
  db: Db,
  now: number,
  limit: number,
): Promise<Array<{ id: string; attempts: number }>> {
  const rows = await db
    .selectFrom("webhook_outbox")
    .select(["id", "attempts"])
    .where("state", "in", ["pending", "sending"])
    .where("next_attempt_at", "<=", now)
    .orderBy("next_attempt_at")
    .limit(limit)
    .execute();
  return rows.map((r) => ({ id: r.id, attempts: Number(r.attempts) }));
}

/**
 * Takes the row for one try, if it is still as it was read (same attempts, still due): the CAS
 * that keeps two nodes from sending one row at once. Returns the claimed row, or undefined when
 * another node was first.
 */
export async function claimWebhook(
  db: Db,
  id: string,
  seenAttempts: number,
  leaseToken: string,
  now: number,
  leaseUntil: number,
): Promise<WebhookRow | undefined> {
  const r = await db
    .updateTable("webhook_outbox")
    .set({
      state: "sending",
      attempts: seenAttempts + 1,
      lease_token: leaseToken,
      next_attempt_at: leaseUntil,
      updated_at: now,
    })
    .where("id", "=", id)
    .where("attempts", "=", seenAttempts)
    .where("state", "in", ["pending", "sending"])
    .where("next_attempt_at", "<=", now)
    .returningAll()
    .executeTakeFirst();
  return r ? rowOf(r) : undefined;
}

/**
 * Ends a try held under `leaseToken`; false when the lease was lost (another node took the row).
 * `delivered` and `failed` also erase the sealed secret.
 */
export async function finishWebhookTry(
  db: Db,
  id: string,
  leaseToken: string,
  outcome:
    | { state: "delivered" | "failed"; status: number | null; error: string | null }
    | { state: "pending"; status: number | null; error: string | null; nextAttemptAt: number },
  now: number,
): Promise<boolean> {
  const r = await db
    .updateTable("webhook_outbox")
    .set({
      state: outcome.state,
      lease_token: null,
      last_status: outcome.status,
      last_error: outcome.error,
      updated_at: now,
      // A finished row keeps no secret, not even sealed.
      ...(outcome.state === "pending"
        ? { next_attempt_at: outcome.nextAttemptAt }
        : { finished_at: now, next_attempt_at: now, sealed_secret: new Uint8Array(0) }),
    })
    .where("id", "=", id)
    .where("lease_token", "=", leaseToken)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Gives a claimed row back untried (this node is stopping): due at once, the try not counted. */
export async function releaseWebhook(db: Db, id: string, leaseToken: string, now: number): Promise<void> {
  await db
    .updateTable("webhook_outbox")
    .set((eb) => ({
      state: "pending",
      lease_token: null,
      attempts: eb("attempts", "-", 1),
      next_attempt_at: now,
      updated_at: now,
    }))
    .where("id", "=", id)
    .where("lease_token", "=", leaseToken)
    .execute();
}
