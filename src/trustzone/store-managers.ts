/** The trust-zone signing keys, service managers and their applications (tsm_signing_keys, tsm_managers, tsm_applications). Re-exported by store.ts. */
import { toBytes, toBytesOrNull } from "../platform/db/columns.ts";
import { changed, type Db, n, type TrustzoneTables } from "./store-tables.ts";

// --- signing keys ---------------------------------------------------------------------------------

export interface SigningKeyRow {
  kid: string;
  current: boolean;
  publicKey: Uint8Array;
  sealedSeed: Uint8Array;
  createdAt: number;
}

function toSigningKey(r: TrustzoneTables["tsm_signing_keys"]): SigningKeyRow {
  return {
    kid: r.kid,
    current: r.role === "current",
    publicKey: toBytes(r.public_key),
    sealedSeed: toBytes(r.sealed_seed),
    createdAt: n(r.created_at),
  };
}

/** Inserts the key as the current one unless another node already made one (then nothing). */
export async function insertCurrentSigningKeyIfNone(
  db: Db,
  k: { kid: string; publicKey: Uint8Array; sealedSeed: Uint8Array; createdAt: number },
): Promise<void> {
  await db
    .insertInto("tsm_signing_keys")
    .values({
      kid: k.kid,
      role: "current",
      public_key: k.publicKey,
      sealed_seed: k.sealedSeed,
      created_at: k.createdAt,
      retired_at: null,
    })
    .onConflict((oc) => oc.doNothing())
    .execute();
}

export async function currentSigningKey(db: Db): Promise<SigningKeyRow | undefined> {
  const r = await db
    .selectFrom("tsm_signing_keys")
    .selectAll()
    .where("role", "=", "current")
    .executeTakeFirst();
  return r ? toSigningKey(r) : undefined;
}

/** Every key a handset may pin (current first), the retired ones too until they are dropped. */
export async function listSigningKeys(db: Db): Promise<SigningKeyRow[]> {
  const rows = await db.selectFrom("tsm_signing_keys").selectAll().orderBy("created_at", "desc").execute();
  return rows.map(toSigningKey).sort((a, b) => Number(b.current) - Number(a.current));
}

// --- managers -------------------------------------------------------------------------------------

export type ManagerState = "pending" | "validated" | "rejected";

export interface ManagerRow {
  id: string;
  name: string;
  identificationCode: string;
  certification: unknown;
  memoryBytes: number;
  applications: Array<{ appId: string; sha256: string }>;
  x25519PublicKey: Uint8Array;
  apiKeyHash: string;
  webhookUrl: string | null;
  sealedWebhookSecret: Uint8Array | null;
  state: ManagerState;
  reason: string | null;
  reviewedBy: string | null;
  createdAt: number;
  updatedAt: number;
}

function toManager(r: TrustzoneTables["tsm_managers"]): ManagerRow {
  return {
    id: r.id,
    name: r.name,
    identificationCode: r.identification_code,
    certification: JSON.parse(r.certification),
    memoryBytes: n(r.memory_bytes),
    applications: JSON.parse(r.applications),
    x25519PublicKey: toBytes(r.x25519_public_key),
    apiKeyHash: r.api_key_hash,
    webhookUrl: r.webhook_url,
    sealedWebhookSecret: toBytesOrNull(r.sealed_webhook_secret),
    state: r.state as ManagerState,
    reason: r.reason,
    reviewedBy: r.reviewed_by,
    createdAt: n(r.created_at),
    updatedAt: n(r.updated_at),
  };
}

export async function insertManager(db: Db, m: ManagerRow): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx
      .insertInto("tsm_managers")
      .values({
        id: m.id,
        name: m.name,
        identification_code: m.identificationCode,
        certification: JSON.stringify(m.certification),
        memory_bytes: m.memoryBytes,
        applications: JSON.stringify(m.applications),
        x25519_public_key: m.x25519PublicKey,
        api_key_hash: m.apiKeyHash,
        webhook_url: m.webhookUrl,
        sealed_webhook_secret: m.sealedWebhookSecret,
        state: m.state,
        reason: m.reason,
        reviewed_by: m.reviewedBy,
        created_at: m.createdAt,
        updated_at: m.updatedAt,
      })
      .execute();
    if (m.applications.length > 0)
      await trx
        .insertInto("tsm_applications")
        .values(
          m.applications.map((a) => ({
            manager_id: m.id,
            app_id: a.appId,
            sha256: a.sha256,
            state: "pending",
            updated_at: m.createdAt,
          })),
        )
        .execute();
  });
}

/** Every manager, oldest first (a carrier's fleet of service managers is small: no paging). */
export async function listManagers(db: Db): Promise<ManagerRow[]> {
  const rows = await db.selectFrom("tsm_managers").selectAll().orderBy("created_at").orderBy("id").execute();
  return rows.map(toManager);
}

export async function findManager(db: Db, id: string): Promise<ManagerRow | undefined> {
  const r = await db.selectFrom("tsm_managers").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toManager(r) : undefined;
}

/** The lookup by hash is the comparison: no secret is compared in the application. */
export async function findManagerByKeyHash(db: Db, hash: string): Promise<ManagerRow | undefined> {
  const r = await db
    .selectFrom("tsm_managers")
    .selectAll()
    .where("api_key_hash", "=", hash)
    .executeTakeFirst();
  return r ? toManager(r) : undefined;
}

/** validate: pending|rejected → validated; reject: pending|validated → rejected. */
export async function setManagerState(
  db: Db,
  id: string,
  to: "validated" | "rejected",
  reason: string | null,
  by: string,
  now: number,
): Promise<boolean> {
  const r = await db
    .updateTable("tsm_managers")
    .set({ state: to, reason, reviewed_by: by, updated_at: now })
    .where("id", "=", id)
    .where("state", "!=", to)
    .executeTakeFirst();
  return changed(r) === 1;
}

export interface ApplicationRow {
  managerId: string;
  appId: string;
  sha256: string;
  state: ManagerState;
}

export async function applicationsOf(db: Db, managerId: string): Promise<ApplicationRow[]> {
  const rows = await db
    .selectFrom("tsm_applications")
    .selectAll()
    .where("manager_id", "=", managerId)
    .orderBy("app_id")
    .execute();
  return rows.map((r) => ({
    managerId: r.manager_id,
    appId: r.app_id,
    sha256: r.sha256,
    state: r.state as ManagerState,
  }));
}

export async function setApplicationState(
  db: Db,
  managerId: string,
  appId: string,
  state: "validated" | "rejected",
  now: number,
): Promise<boolean> {
  const r = await db
    .updateTable("tsm_applications")
    .set({ state, updated_at: now })
    .where("manager_id", "=", managerId)
    .where("app_id", "=", appId)
    .executeTakeFirst();
  return changed(r) === 1;
}
