/**
 * Activation's tables and queries. Every secret column holds bytes sealed at rest by the
 * platform keyring (AES-256-GCM envelope with the row's identity as associated data).
 */
import type { Kysely } from "kysely";
import { toBytes, toBytesOrNull } from "../platform/db/columns.ts";
import type { ActivationState } from "./protocol.ts";

export interface ActivationTables {
  services: {
    id: string;
    uid: string;
    name: string;
    key_id: string;
    public_key: Uint8Array;
    sealed_signing_key: Uint8Array;
    created_at: number;
  };
  activations: {
    id: string;
    service_id: string;
    user_id: string;
    handset_id: string;
    state: string;
    origin: string;
    sealed_prs: Uint8Array | null;
    ya: Uint8Array | null;
    yb: Uint8Array | null;
    sealed_keys: Uint8Array | null;
    created_at: number;
    expires_at: number;
    updated_at: number;
  };
  activation_secret_pool: {
    id: string;
    user_id: string;
    service_id: string;
    sealed_secret: Uint8Array;
    created_at: number;
    expires_at: number;
  };
  service_keys: {
    id: string;
    service_id: string;
    handset_id: string;
    user_id: string;
    activation_id: string;
    sealed_key: Uint8Array;
    fingerprint: string;
    state: string;
    created_at: number;
    revoked_at: number | null;
  };
  service_commands: {
    id: string;
    service_id: string;
    handset_id: string;
    service_key_id: string;
    seq: number;
    body: string;
    created_at: number;
  };
}

type Db = Kysely<ActivationTables>;

export interface ServiceRow {
  id: string;
  uid: string;
  name: string;
  keyId: string;
  publicKey: Uint8Array;
  sealedSigningKey: Uint8Array;
  createdAt: number;
}

function toService(r: ActivationTables["services"]): ServiceRow {
  return {
    id: r.id,
    uid: r.uid,
    name: r.name,
    keyId: r.key_id,
    publicKey: toBytes(r.public_key),
    sealedSigningKey: toBytes(r.sealed_signing_key),
    createdAt: Number(r.created_at),
  };
}

export async function insertService(db: Db, s: ServiceRow): Promise<void> {
  await db
    .insertInto("services")
    .values({
      id: s.id,
      uid: s.uid,
      name: s.name,
      key_id: s.keyId,
      public_key: s.publicKey,
      sealed_signing_key: s.sealedSigningKey,
      created_at: s.createdAt,
    })
    .execute();
}

export async function findServiceByUid(db: Db, uid: string): Promise<ServiceRow | undefined> {
  const r = await db.selectFrom("services").selectAll().where("uid", "=", uid).executeTakeFirst();
  return r ? toService(r) : undefined;
}

export async function findServiceById(db: Db, id: string): Promise<ServiceRow | undefined> {
  const r = await db.selectFrom("services").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toService(r) : undefined;
}

export async function listServices(db: Db): Promise<ServiceRow[]> {
  return (await db.selectFrom("services").selectAll().orderBy("uid").execute()).map(toService);
}

export interface ActivationRow {
  id: string;
  serviceId: string;
  userId: string;
  handsetId: string;
  state: ActivationState;
  origin: "login" | "on_behalf" | "pool";
  sealedPrs: Uint8Array | null;
  ya: Uint8Array | null;
  yb: Uint8Array | null;
  sealedKeys: Uint8Array | null;
  createdAt: number;
  expiresAt: number;
  updatedAt: number;
}

function toActivation(r: ActivationTables["activations"]): ActivationRow {
  return {
    id: r.id,
    serviceId: r.service_id,
    userId: r.user_id,
    handsetId: r.handset_id,
    state: r.state as ActivationState,
    origin: r.origin as ActivationRow["origin"],
    sealedPrs: toBytesOrNull(r.sealed_prs),
    ya: toBytesOrNull(r.ya),
    yb: toBytesOrNull(r.yb),
    sealedKeys: toBytesOrNull(r.sealed_keys),
    createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at),
    updatedAt: Number(r.updated_at),
  };
}

export async function insertActivation(db: Db, a: ActivationRow): Promise<void> {
  await db
    .insertInto("activations")
    .values({
      id: a.id,
      service_id: a.serviceId,
      user_id: a.userId,
      handset_id: a.handsetId,
      state: a.state,
      origin: a.origin,
      sealed_prs: a.sealedPrs,
      ya: a.ya,
      yb: a.yb,
      sealed_keys: a.sealedKeys,
      created_at: a.createdAt,
      expires_at: a.expiresAt,
      updated_at: a.updatedAt,
    })
    .execute();
}

export async function findActivation(db: Db, id: string): Promise<ActivationRow | undefined> {
  const r = await db.selectFrom("activations").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toActivation(r) : undefined;
}

export async function findPendingActivations(
  db: Db,
  handsetId: string,
  now: number,
): Promise<ActivationRow[]> {
  const rows = await db
    .selectFrom("activations")
    .selectAll()
    .where("handset_id", "=", handsetId)
    .where("state", "=", "pending")
    .where("expires_at", ">", now)
    .execute();
  return rows.map(toActivation);
}

/**
 * Compare-and-set on the state column: the one atomic step that lets only one of two racing
 * requests move an activation on. Returns whether this caller won.
 */
export async function transitionActivation(
  db: Db,
  id: string,
  from: ActivationState,
  to: ActivationState,
  set: Partial<
    Pick<ActivationTables["activations"], "ya" | "yb" | "sealed_keys" | "sealed_prs" | "expires_at">
  >,
  now: number,
): Promise<boolean> {
  const result = await db
    .updateTable("activations")
    .set({ ...set, state: to, updated_at: now })
    .where("id", "=", id)
    .where("state", "=", from)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Expires every earlier unfinished grant of this handset for this service. */
export async function supersedeIssued(
  db: Db,
  serviceId: string,
  handsetId: string,
  now: number,
): Promise<void> {
  await db
    .updateTable("activations")
    .set({ state: "expired", sealed_prs: null, updated_at: now })
    .where("service_id", "=", serviceId)
    .where("handset_id", "=", handsetId)
    .where("state", "=", "issued")
    .execute();
}

export async function takePooledSecret(
  db: Db,
  userId: string,
  serviceId: string,
  now: number,
): Promise<{ id: string; sealedSecret: Uint8Array } | undefined> {
  for (;;) {
    const r = await db
      .selectFrom("activation_secret_pool")
      .select(["id", "sealed_secret"])
      .where("user_id", "=", userId)
      .where("service_id", "=", serviceId)
      .where("expires_at", ">", now)
      .orderBy("created_at")
      .limit(1)
      .executeTakeFirst();
    if (!r) return undefined;
    // Delete-to-claim: of two racing takers only one deletes the row and uses that secret.
    const del = await db.deleteFrom("activation_secret_pool").where("id", "=", r.id).executeTakeFirst();
    if (Number(del.numDeletedRows) === 1) return { id: r.id, sealedSecret: toBytes(r.sealed_secret) };
  }
}

export async function insertPooledSecret(
  db: Db,
  row: {
    id: string;
    userId: string;
    serviceId: string;
    sealedSecret: Uint8Array;
    createdAt: number;
    expiresAt: number;
  },
): Promise<void> {
  await db
    .insertInto("activation_secret_pool")
    .values({
      id: row.id,
      user_id: row.userId,
      service_id: row.serviceId,
      sealed_secret: row.sealedSecret,
      created_at: row.createdAt,
      expires_at: row.expiresAt,
    })
    .execute();
}

export async function countPooledSecrets(
  db: Db,
  userId: string,
  serviceId: string,
  now: number,
): Promise<number> {
  const r = await db
    .selectFrom("activation_secret_pool")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("user_id", "=", userId)
    .where("service_id", "=", serviceId)
    .where("expires_at", ">", now)
    .executeTakeFirst();
  return Number(r?.n ?? 0);
}

export interface ServiceKeyRow {
  id: string;
  serviceId: string;
  handsetId: string;
  userId: string;
  activationId: string;
  sealedKey: Uint8Array;
  fingerprint: string;
  state: "active" | "revoked";
  createdAt: number;
  revokedAt: number | null;
}

function toServiceKey(r: ActivationTables["service_keys"]): ServiceKeyRow {
  return {
    id: r.id,
    serviceId: r.service_id,
    handsetId: r.handset_id,
    userId: r.user_id,
    activationId: r.activation_id,
    sealedKey: toBytes(r.sealed_key),
    fingerprint: r.fingerprint,
    state: r.state as ServiceKeyRow["state"],
    createdAt: Number(r.created_at),
    revokedAt: r.revoked_at === null ? null : Number(r.revoked_at),
  };
}

/** Stores a newly agreed key, revoking the previous active key of the same pair (re-activation). */
export async function storeServiceKey(db: Db, k: ServiceKeyRow, now: number): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx
      .updateTable("service_keys")
      .set({ state: "revoked", revoked_at: now })
      .where("service_id", "=", k.serviceId)
      .where("handset_id", "=", k.handsetId)
      .where("state", "=", "active")
      .execute();
    await trx
      .insertInto("service_keys")
      .values({
        id: k.id,
        service_id: k.serviceId,
        handset_id: k.handsetId,
        user_id: k.userId,
        activation_id: k.activationId,
        sealed_key: k.sealedKey,
        fingerprint: k.fingerprint,
        state: k.state,
        created_at: k.createdAt,
        revoked_at: k.revokedAt,
      })
      .execute();
  });
}

export async function findActiveServiceKey(
  db: Db,
  serviceId: string,
  handsetId: string,
): Promise<ServiceKeyRow | undefined> {
  const r = await db
    .selectFrom("service_keys")
    .selectAll()
    .where("service_id", "=", serviceId)
    .where("handset_id", "=", handsetId)
    .where("state", "=", "active")
    .executeTakeFirst();
  return r ? toServiceKey(r) : undefined;
}

export async function listServiceKeysOfHandset(
  db: Db,
  handsetId: string,
): Promise<Array<ServiceKeyRow & { serviceUid: string }>> {
  const rows = await db
    .selectFrom("service_keys")
    .innerJoin("services", "services.id", "service_keys.service_id")
    .selectAll("service_keys")
    .select("services.uid as service_uid")
    .where("service_keys.handset_id", "=", handsetId)
    .orderBy("service_keys.created_at")
    .execute();
  return rows.map((r) => ({ ...toServiceKey(r), serviceUid: r.service_uid }));
}

export async function revokeServiceKey(
  db: Db,
  serviceId: string,
  handsetId: string,
  now: number,
): Promise<boolean> {
  const r = await db
    .updateTable("service_keys")
    .set({ state: "revoked", revoked_at: now })
    .where("service_id", "=", serviceId)
    .where("handset_id", "=", handsetId)
    .where("state", "=", "active")
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

export async function nextCommandSeq(db: Db, serviceId: string, handsetId: string): Promise<number> {
  const r = await db
    .selectFrom("service_commands")
    .select((eb) => eb.fn.max("seq").as("seq"))
    .where("service_id", "=", serviceId)
    .where("handset_id", "=", handsetId)
    .executeTakeFirst();
  return Number(r?.seq ?? 0) + 1;
}

export async function insertCommand(
  db: Db,
  row: {
    id: string;
    serviceId: string;
    handsetId: string;
    serviceKeyId: string;
    seq: number;
    body: string;
    createdAt: number;
  },
): Promise<void> {
  await db
    .insertInto("service_commands")
    .values({
      id: row.id,
      service_id: row.serviceId,
      handset_id: row.handsetId,
      service_key_id: row.serviceKeyId,
      seq: row.seq,
      body: row.body,
      created_at: row.createdAt,
    })
    .execute();
}

export async function listCommandsAfter(
  db: Db,
  serviceKeyId: string,
  afterSeq: number,
  limit = 100,
): Promise<string[]> {
  const rows = await db
    .selectFrom("service_commands")
    .select("body")
    .where("service_key_id", "=", serviceKeyId)
    .where("seq", ">", afterSeq)
    .orderBy("seq")
    .limit(limit)
    .execute();
  return rows.map((r) => r.body);
}

/**
 * Lapsed activations become `expired` and lose their sealed material (the PRS, pending keys);
 * lapsed pre-generated secrets are deleted. Run periodically by the server.
 */
export async function expireLapsed(db: Db, now: number): Promise<{ activations: number; pooled: number }> {
  const a = await db
    .updateTable("activations")
    .set({ state: "expired", sealed_prs: null, sealed_keys: null, updated_at: now })
    .where("state", "in", ["issued", "exchanging", "pending"])
    .where("expires_at", "<=", now)
    .executeTakeFirst();
  const p = await db.deleteFrom("activation_secret_pool").where("expires_at", "<=", now).executeTakeFirst();
  return { activations: Number(a.numUpdatedRows), pooled: Number(p.numDeletedRows) };
}
