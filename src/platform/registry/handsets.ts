/**
 * The device registry every capability shares: one row per handset, bound to the account that
 * first signed in on it. A handset's id is derived from its identity key, so an id cannot be
 * claimed with another key.
 */
import type { Kysely } from "kysely";
import { HandsafeError } from "../../core/errors.ts";
import { handsetIdOf } from "../../core/handset-id.ts";
import { bytesType, toBytes } from "../db/columns.ts";
import type { MigrationRegistry } from "../db/migrate.ts";

export interface RegistryTables {
  handsets: {
    id: string;
    user_id: string;
    identity_key: Uint8Array;
    label: string | null;
    created_at: number;
    last_seen_at: number;
  };
}

export const registryMigrations: MigrationRegistry = {
  "0003_registry": {
    async up(db, dialect) {
      await db.schema
        .createTable("handsets")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("user_id", "text", (c) => c.notNull())
        .addColumn("identity_key", bytesType(dialect), (c) => c.notNull())
        .addColumn("label", "text")
        .addColumn("created_at", "bigint", (c) => c.notNull())
        .addColumn("last_seen_at", "bigint", (c) => c.notNull())
        .execute();
      await db.schema.createIndex("handsets_user").on("handsets").column("user_id").execute();
    },
  },
};

export interface Handset {
  id: string;
  userId: string;
  identityKey: Uint8Array;
  label: string | null;
  createdAt: number;
  lastSeenAt: number;
}

function toHandset(row: RegistryTables["handsets"]): Handset {
  return {
    id: row.id,
    userId: row.user_id,
    identityKey: toBytes(row.identity_key),
    label: row.label,
    createdAt: Number(row.created_at),
    lastSeenAt: Number(row.last_seen_at),
  };
}

export async function findHandset(db: Kysely<RegistryTables>, id: string): Promise<Handset | undefined> {
  const row = await db.selectFrom("handsets").selectAll().where("id", "=", id).executeTakeFirst();
  return row ? toHandset(row) : undefined;
}

/**
 * Records a handset the first time its user signs in on it, and refuses a second account on a
 * handset already bound to another (that takes a reset through an admin).
 */
export async function enrolHandset(
  db: Kysely<RegistryTables>,
  input: { userId: string; identityKey: Uint8Array; label?: string },
  now: number,
): Promise<Handset> {
  if (input.identityKey.length !== 32)
    throw new HandsafeError("handset.invalid_identity", "a handset identity key is 32 bytes (Ed25519)");
  const id = handsetIdOf(input.identityKey);
  const existing = await findHandset(db, id);
  if (existing) {
    if (existing.userId !== input.userId)
      throw new HandsafeError("handset.owned_by_other", "this handset belongs to another account", {
        status: 403,
      });
    await db.updateTable("handsets").set({ last_seen_at: now }).where("id", "=", id).execute();
    return { ...existing, lastSeenAt: now };
  }
  const row = {
    id,
    user_id: input.userId,
    identity_key: input.identityKey,
    label: input.label ?? null,
    created_at: now,
    last_seen_at: now,
  };
  await db.insertInto("handsets").values(row).execute();
  return toHandset(row);
}

export async function listHandsetsOfUser(db: Kysely<RegistryTables>, userId: string): Promise<Handset[]> {
  const rows = await db.selectFrom("handsets").selectAll().where("user_id", "=", userId).execute();
  return rows.map(toHandset);
}

/**
 * Inside a PostgreSQL transaction: locks the handset's row until commit, so per-handset steps
 * (issuing grants) run one at a time across server nodes. SQLite serialises writers already.
 */
export async function lockHandsetRow(
  trx: Kysely<RegistryTables>,
  handsetId: string,
  dialect: "sqlite" | "postgres",
): Promise<void> {
  if (dialect !== "postgres") return;
  await trx.selectFrom("handsets").select("id").where("id", "=", handsetId).forUpdate().execute();
}
