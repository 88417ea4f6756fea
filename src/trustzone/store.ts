/**
 * The zone server's tables and queries (migrations.ts). Every state change that races is one
 * compare-and-set statement (`where state = …`, `uses < max_uses`), so N nodes, or two concurrent
 * requests, apply it once — on SQLite and PostgreSQL alike.
 */
import type { Kysely } from "kysely";
import { toBytes, toBytesOrNull } from "../platform/db/columns.ts";

export interface TrustzoneTables {
  tsm_signing_keys: {
    kid: string;
    role: string | null;
    public_key: Uint8Array;
    sealed_seed: Uint8Array;
    created_at: number;
    retired_at: number | null;
  };
  tsm_managers: {
    id: string;
    name: string;
    identification_code: string;
    certification: string;
    memory_bytes: number;
    applications: string;
    x25519_public_key: Uint8Array;
    api_key_hash: string;
    webhook_url: string | null;
    sealed_webhook_secret: Uint8Array | null;
    state: string;
    reason: string | null;
    reviewed_by: string | null;
    created_at: number;
    updated_at: number;
  };
  tsm_applications: { manager_id: string; app_id: string; sha256: string; state: string; updated_at: number };
  tsm_zones: {
    id: string;
    handset_id: string | null;
    epoch: number;
    state: string;
    user_info_hash: string | null;
    sealed_user_info: Uint8Array | null;
    sealed_zmk: Uint8Array;
    containers: number;
    signal_seq: number;
    personalised_at: number | null;
    reset_at: number | null;
    reset_acknowledged_at: number | null;
    created_by: string;
    created_at: number;
    updated_at: number;
  };
  tsm_containers: {
    zone_id: string;
    idx: number;
    state: string;
    manager_id: string | null;
    jti: string | null;
    not_after: number | null;
    max_attempts: number | null;
    bytes: number;
    updated_at: number;
  };
  tsm_tokens: {
    jti: string;
    manager_id: string;
    zone_id: string;
    epoch: number;
    containers: string;
    limits: string;
    max_uses: number;
    uses: number;
    exp: number;
    issued_by: string;
    issued_at: number;
    last_used_at: number | null;
    revoked_at: number | null;
  };
  tsm_signals: {
    zone_id: string;
    seq: number;
    epoch: number;
    type: string;
    body: string;
    mac: string;
    created_at: number;
    applied_at: number | null;
  };
  tsm_relay: {
    id: string;
    zone_id: string;
    epoch: number;
    manager_id: string;
    idx: number;
    op: string;
    name: string | null;
    command: string;
    package: Uint8Array | null;
    proof: string;
    state: string;
    result: string | null;
    result_package: Uint8Array | null;
    error_code: string | null;
    created_at: number;
    updated_at: number;
  };
  audit_log: {
    seq: number;
    at: number;
    actor: string;
    action: string;
    subject: string | null;
    outcome: string;
    details: string;
  };
}

export type Db = Kysely<TrustzoneTables>;

const n = (v: unknown): number => Number(v);
const nOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const changed = (r: { numUpdatedRows: bigint }) => Number(r.numUpdatedRows);

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

// --- zones ----------------------------------------------------------------------------------------

export type ZoneState = "personalised" | "resetting" | "reset";

export interface ZoneRow {
  id: string;
  handsetId: string | null;
  epoch: number;
  state: ZoneState;
  userInfoHash: string | null;
  sealedUserInfo: Uint8Array | null;
  sealedZmk: Uint8Array;
  containers: number;
  signalSeq: number;
  personalisedAt: number | null;
  resetAt: number | null;
  resetAcknowledgedAt: number | null;
  createdBy: string;
  createdAt: number;
}

function toZone(r: TrustzoneTables["tsm_zones"]): ZoneRow {
  return {
    id: r.id,
    handsetId: r.handset_id,
    epoch: n(r.epoch),
    state: r.state as ZoneState,
    userInfoHash: r.user_info_hash,
    sealedUserInfo: toBytesOrNull(r.sealed_user_info),
    sealedZmk: toBytes(r.sealed_zmk),
    containers: n(r.containers),
    signalSeq: n(r.signal_seq),
    personalisedAt: nOrNull(r.personalised_at),
    resetAt: nOrNull(r.reset_at),
    resetAcknowledgedAt: nOrNull(r.reset_acknowledged_at),
    createdBy: r.created_by,
    createdAt: n(r.created_at),
  };
}

/** The zone and its `containers` free container rows, in one transaction. */
export async function insertZone(db: Db, z: Omit<ZoneRow, "signalSeq">): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx
      .insertInto("tsm_zones")
      .values({
        id: z.id,
        handset_id: z.handsetId,
        epoch: z.epoch,
        state: z.state,
        user_info_hash: z.userInfoHash,
        sealed_user_info: z.sealedUserInfo,
        sealed_zmk: z.sealedZmk,
        containers: z.containers,
        signal_seq: 0,
        personalised_at: z.personalisedAt,
        reset_at: z.resetAt,
        reset_acknowledged_at: z.resetAcknowledgedAt,
        created_by: z.createdBy,
        created_at: z.createdAt,
        updated_at: z.createdAt,
      })
      .execute();
    await trx
      .insertInto("tsm_containers")
      .values(
        Array.from({ length: z.containers }, (_, idx) => ({
          zone_id: z.id,
          idx,
          state: "free",
          manager_id: null,
          jti: null,
          not_after: null,
          max_attempts: null,
          bytes: 0,
          updated_at: z.createdAt,
        })),
      )
      .execute();
  });
}

export async function findZone(db: Db, id: string): Promise<ZoneRow | undefined> {
  const r = await db.selectFrom("tsm_zones").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toZone(r) : undefined;
}

/**
 * The next signal number of a zone: one UPDATE … RETURNING, so two concurrent signals never share a
 * seq (inside the caller's transaction, the zone row stays locked until its commit).
 */
export async function takeSignalSeq(db: Db, zoneId: string, now: number): Promise<number> {
  const r = await db
    .updateTable("tsm_zones")
    .set((eb) => ({ signal_seq: eb("signal_seq", "+", 1), updated_at: now }))
    .where("id", "=", zoneId)
    .returning("signal_seq")
    .executeTakeFirstOrThrow();
  return n(r.signal_seq);
}

/** Factory reset: epoch + 1, state resetting; compare-and-set on the epoch the caller saw. */
export async function beginZoneReset(
  db: Db,
  zoneId: string,
  fromEpoch: number,
  now: number,
): Promise<boolean> {
  const r = await db
    .updateTable("tsm_zones")
    .set({
      epoch: fromEpoch + 1,
      state: "resetting",
      reset_at: now,
      reset_acknowledged_at: null,
      updated_at: now,
    })
    .where("id", "=", zoneId)
    .where("epoch", "=", fromEpoch)
    .where("state", "in", ["personalised", "resetting", "reset"])
    .executeTakeFirst();
  return changed(r) === 1;
}

export async function acknowledgeZoneReset(
  db: Db,
  zoneId: string,
  epoch: number,
  now: number,
): Promise<boolean> {
  const r = await db
    .updateTable("tsm_zones")
    .set({ state: "reset", reset_acknowledged_at: now, updated_at: now })
    .where("id", "=", zoneId)
    .where("epoch", "=", epoch)
    .where("state", "=", "resetting")
    .executeTakeFirst();
  return changed(r) === 1;
}

/** Re-personalisation after a reset: the new user's info (and ZMK), at the zone's current epoch. */
export async function repersonaliseZone(
  db: Db,
  zoneId: string,
  epoch: number,
  z: { userInfoHash: string; sealedUserInfo: Uint8Array; sealedZmk: Uint8Array; handsetId: string | null },
  now: number,
): Promise<boolean> {
  const r = await db
    .updateTable("tsm_zones")
    .set({
      state: "personalised",
      user_info_hash: z.userInfoHash,
      sealed_user_info: z.sealedUserInfo,
      sealed_zmk: z.sealedZmk,
      handset_id: z.handsetId,
      personalised_at: now,
      updated_at: now,
    })
    .where("id", "=", zoneId)
    .where("epoch", "=", epoch)
    .where("state", "in", ["resetting", "reset"])
    .executeTakeFirst();
  return changed(r) === 1;
}

// --- containers -----------------------------------------------------------------------------------

export type ContainerState = "free" | "bound" | "locked";

export interface ContainerRow {
  zoneId: string;
  idx: number;
  state: ContainerState;
  managerId: string | null;
  jti: string | null;
  notAfter: number | null;
  maxAttempts: number | null;
  bytes: number;
  updatedAt: number;
}

function toContainer(r: TrustzoneTables["tsm_containers"]): ContainerRow {
  return {
    zoneId: r.zone_id,
    idx: n(r.idx),
    state: r.state as ContainerState,
    managerId: r.manager_id,
    jti: r.jti,
    notAfter: nOrNull(r.not_after),
    maxAttempts: nOrNull(r.max_attempts),
    bytes: n(r.bytes),
    updatedAt: n(r.updated_at),
  };
}

export async function containersOf(db: Db, zoneId: string): Promise<ContainerRow[]> {
  const rows = await db
    .selectFrom("tsm_containers")
    .selectAll()
    .where("zone_id", "=", zoneId)
    .orderBy("idx")
    .execute();
  return rows.map(toContainer);
}

export async function findContainer(db: Db, zoneId: string, idx: number): Promise<ContainerRow | undefined> {
  const r = await db
    .selectFrom("tsm_containers")
    .selectAll()
    .where("zone_id", "=", zoneId)
    .where("idx", "=", idx)
    .executeTakeFirst();
  return r ? toContainer(r) : undefined;
}

/**
 * Binds the containers to the manager and token, each only if it is free or already this manager's
 * (a renewal): compare-and-set per row. Returns how many rows moved; the caller's transaction rolls
 * back when that is fewer than asked.
 */
export async function bindContainers(
  db: Db,
  zoneId: string,
  idxs: readonly number[],
  b: { managerId: string; jti: string; notAfter: number; maxAttempts: number },
  now: number,
): Promise<number> {
  if (idxs.length === 0) return 0;
  const r = await db
    .updateTable("tsm_containers")
    .set({
      state: "bound",
      manager_id: b.managerId,
      jti: b.jti,
      not_after: b.notAfter,
      max_attempts: b.maxAttempts,
      updated_at: now,
    })
    .where("zone_id", "=", zoneId)
    .where("idx", "in", [...idxs])
    .where((eb) =>
      eb.or([
        eb("state", "=", "free"),
        eb.and([eb("state", "=", "bound"), eb("manager_id", "=", b.managerId)]),
      ]),
    )
    .executeTakeFirst();
  return changed(r);
}

/**
 * Frees the containers (all of the zone's when `idxs` is undefined, only a manager's with
 * `onlyIf.managerId`); returns each one that moved, as it was before. Each row is freed by a
 * compare-and-set on the occupancy read (state, manager, token), so a row that changed in between
 * is left alone and not reported.
 */
export async function freeContainers(
  db: Db,
  zoneId: string,
  idxs: readonly number[] | undefined,
  now: number,
  onlyIf: { managerId?: string } = {},
): Promise<ContainerRow[]> {
  if (idxs !== undefined && idxs.length === 0) return [];
  let s = db
    .selectFrom("tsm_containers")
    .selectAll()
    .where("zone_id", "=", zoneId)
    .where("state", "!=", "free");
  if (idxs !== undefined) s = s.where("idx", "in", [...idxs]);
  if (onlyIf.managerId !== undefined) s = s.where("manager_id", "=", onlyIf.managerId);
  const freed: ContainerRow[] = [];
  for (const row of (await s.orderBy("idx").execute()).map(toContainer)) {
    let q = db
      .updateTable("tsm_containers")
      .set({
        state: "free",
        manager_id: null,
        jti: null,
        not_after: null,
        max_attempts: null,
        bytes: 0,
        updated_at: now,
      })
      .where("zone_id", "=", zoneId)
      .where("idx", "=", row.idx)
      .where("state", "=", row.state);
    q =
      row.managerId === null ? q.where("manager_id", "is", null) : q.where("manager_id", "=", row.managerId);
    q = row.jti === null ? q.where("jti", "is", null) : q.where("jti", "=", row.jti);
    if (changed(await q.executeTakeFirst()) === 1) freed.push(row);
  }
  return freed;
}

/** Bound containers past their limit (across zones), oldest first. */
export async function lapsedContainers(db: Db, now: number, limit: number): Promise<ContainerRow[]> {
  const rows = await db
    .selectFrom("tsm_containers")
    .selectAll()
    .where("state", "in", ["bound", "locked"])
    .where("not_after", "<=", now)
    .orderBy("not_after")
    .limit(limit)
    .execute();
  return rows.map(toContainer);
}

/** A container the zone reported locked (its attempts spent). */
export async function lockContainer(db: Db, zoneId: string, idx: number, now: number): Promise<boolean> {
  const r = await db
    .updateTable("tsm_containers")
    .set({ state: "locked", updated_at: now })
    .where("zone_id", "=", zoneId)
    .where("idx", "=", idx)
    .where("state", "=", "bound")
    .executeTakeFirst();
  return changed(r) === 1;
}

export async function setContainerBytes(
  db: Db,
  zoneId: string,
  idx: number,
  bytes: number,
  now: number,
): Promise<void> {
  await db
    .updateTable("tsm_containers")
    .set({ bytes, updated_at: now })
    .where("zone_id", "=", zoneId)
    .where("idx", "=", idx)
    .where("state", "!=", "free")
    .execute();
}

// --- tokens ---------------------------------------------------------------------------------------

export interface TokenLimits {
  containerSeconds: number;
  maxAttempts: number;
}

export interface TokenRow {
  jti: string;
  managerId: string;
  zoneId: string;
  epoch: number;
  containers: number[];
  limits: TokenLimits;
  maxUses: number;
  uses: number;
  /** Epoch ms. */
  exp: number;
  issuedBy: string;
  issuedAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
}

function toToken(r: TrustzoneTables["tsm_tokens"]): TokenRow {
  return {
    jti: r.jti,
    managerId: r.manager_id,
    zoneId: r.zone_id,
    epoch: n(r.epoch),
    containers: JSON.parse(r.containers),
    limits: JSON.parse(r.limits),
    maxUses: n(r.max_uses),
    uses: n(r.uses),
    exp: n(r.exp),
    issuedBy: r.issued_by,
    issuedAt: n(r.issued_at),
    lastUsedAt: nOrNull(r.last_used_at),
    revokedAt: nOrNull(r.revoked_at),
  };
}

export async function insertToken(db: Db, t: TokenRow): Promise<void> {
  await db
    .insertInto("tsm_tokens")
    .values({
      jti: t.jti,
      manager_id: t.managerId,
      zone_id: t.zoneId,
      epoch: t.epoch,
      containers: JSON.stringify(t.containers),
      limits: JSON.stringify(t.limits),
      max_uses: t.maxUses,
      uses: t.uses,
      exp: t.exp,
      issued_by: t.issuedBy,
      issued_at: t.issuedAt,
      last_used_at: t.lastUsedAt,
      revoked_at: t.revokedAt,
    })
    .execute();
}

export async function findToken(db: Db, jti: string): Promise<TokenRow | undefined> {
  const r = await db.selectFrom("tsm_tokens").selectAll().where("jti", "=", jti).executeTakeFirst();
  return r ? toToken(r) : undefined;
}

export async function tokensOfZone(db: Db, zoneId: string): Promise<TokenRow[]> {
  const rows = await db
    .selectFrom("tsm_tokens")
    .selectAll()
    .where("zone_id", "=", zoneId)
    .orderBy("issued_at")
    .execute();
  return rows.map(toToken);
}

/**
 * Spends one use: a single UPDATE whose WHERE is the whole rule (not revoked, not expired, uses
 * left), so of N concurrent redeems of a maxUses-1 token exactly one moves the row — on SQLite (one
 * writer) and on PostgreSQL (the row lock makes the second re-check `uses < max_uses`).
 */
export async function redeemToken(db: Db, jti: string, now: number): Promise<boolean> {
  const r = await db
    .updateTable("tsm_tokens")
    .set((eb) => ({ uses: eb("uses", "+", 1), last_used_at: now }))
    .where("jti", "=", jti)
    .where((eb) => eb("uses", "<", eb.ref("max_uses")))
    .where("revoked_at", "is", null)
    .where("exp", ">", now)
    .executeTakeFirst();
  return changed(r) === 1;
}

export async function revokeTokensOfZone(db: Db, zoneId: string, now: number): Promise<number> {
  const r = await db
    .updateTable("tsm_tokens")
    .set({ revoked_at: now })
    .where("zone_id", "=", zoneId)
    .where("revoked_at", "is", null)
    .executeTakeFirst();
  return changed(r);
}

export async function revokeToken(db: Db, jti: string, now: number): Promise<boolean> {
  const r = await db
    .updateTable("tsm_tokens")
    .set({ revoked_at: now })
    .where("jti", "=", jti)
    .where("revoked_at", "is", null)
    .executeTakeFirst();
  return changed(r) === 1;
}

// --- signals --------------------------------------------------------------------------------------

export interface SignalRow {
  zoneId: string;
  seq: number;
  epoch: number;
  type: string;
  body: Record<string, unknown>;
  mac: string;
  createdAt: number;
  appliedAt: number | null;
}

export async function insertSignal(db: Db, s: Omit<SignalRow, "appliedAt">): Promise<void> {
  await db
    .insertInto("tsm_signals")
    .values({
      zone_id: s.zoneId,
      seq: s.seq,
      epoch: s.epoch,
      type: s.type,
      body: JSON.stringify(s.body),
      mac: s.mac,
      created_at: s.createdAt,
      applied_at: null,
    })
    .execute();
}

/** Signals the zone has not reported applied, in seq order. */
export async function pendingSignals(db: Db, zoneId: string, limit: number): Promise<SignalRow[]> {
  const rows = await db
    .selectFrom("tsm_signals")
    .selectAll()
    .where("zone_id", "=", zoneId)
    .where("applied_at", "is", null)
    .orderBy("seq")
    .limit(limit)
    .execute();
  return rows.map((r) => ({
    zoneId: r.zone_id,
    seq: n(r.seq),
    epoch: n(r.epoch),
    type: r.type,
    body: JSON.parse(r.body),
    mac: r.mac,
    createdAt: n(r.created_at),
    appliedAt: nOrNull(r.applied_at),
  }));
}

/** Marks every signal up to `seq` applied (the zone applies them in order). */
export async function markSignalsApplied(
  db: Db,
  zoneId: string,
  upToSeq: number,
  now: number,
): Promise<number> {
  const r = await db
    .updateTable("tsm_signals")
    .set({ applied_at: now })
    .where("zone_id", "=", zoneId)
    .where("seq", "<=", upToSeq)
    .where("applied_at", "is", null)
    .executeTakeFirst();
  return changed(r);
}

/** Signals of an older epoch can never apply: dropped from the queue (kept for the record). */
export async function retireSignalsBefore(db: Db, zoneId: string, epoch: number, now: number): Promise<void> {
  await db
    .updateTable("tsm_signals")
    .set({ applied_at: now })
    .where("zone_id", "=", zoneId)
    .where("epoch", "<", epoch)
    .where("applied_at", "is", null)
    .execute();
}

// --- relay ----------------------------------------------------------------------------------------

export type RelayOp = "put" | "get" | "delete" | "list";
export type RelayState = "queued" | "done" | "failed";

export interface RelayRow {
  id: string;
  zoneId: string;
  epoch: number;
  managerId: string;
  idx: number;
  op: RelayOp;
  name: string | null;
  command: Record<string, unknown>;
  package: Uint8Array | null;
  proof: string;
  state: RelayState;
  result: Record<string, unknown> | null;
  resultPackage: Uint8Array | null;
  errorCode: string | null;
  createdAt: number;
  updatedAt: number;
}

function toRelay(r: TrustzoneTables["tsm_relay"]): RelayRow {
  return {
    id: r.id,
    zoneId: r.zone_id,
    epoch: n(r.epoch),
    managerId: r.manager_id,
    idx: n(r.idx),
    op: r.op as RelayOp,
    name: r.name,
    command: JSON.parse(r.command),
    package: toBytesOrNull(r.package),
    proof: r.proof,
    state: r.state as RelayState,
    result: r.result === null ? null : JSON.parse(r.result),
    resultPackage: toBytesOrNull(r.result_package),
    errorCode: r.error_code,
    createdAt: n(r.created_at),
    updatedAt: n(r.updated_at),
  };
}

export async function insertRelay(db: Db, r: RelayRow): Promise<void> {
  await db
    .insertInto("tsm_relay")
    .values({
      id: r.id,
      zone_id: r.zoneId,
      epoch: r.epoch,
      manager_id: r.managerId,
      idx: r.idx,
      op: r.op,
      name: r.name,
      command: JSON.stringify(r.command),
      package: r.package,
      proof: r.proof,
      state: r.state,
      result: r.result === null ? null : JSON.stringify(r.result),
      result_package: r.resultPackage,
      error_code: r.errorCode,
      created_at: r.createdAt,
      updated_at: r.updatedAt,
    })
    .execute();
}

export async function findRelay(db: Db, id: string): Promise<RelayRow | undefined> {
  const r = await db.selectFrom("tsm_relay").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toRelay(r) : undefined;
}

export async function queuedRelay(db: Db, zoneId: string, limit: number): Promise<RelayRow[]> {
  const rows = await db
    .selectFrom("tsm_relay")
    .selectAll()
    .where("zone_id", "=", zoneId)
    .where("state", "=", "queued")
    .orderBy("created_at")
    .orderBy("id")
    .limit(limit)
    .execute();
  return rows.map(toRelay);
}

/** The zone's answer, once (compare-and-set on `queued`); the queued package is dropped. */
export async function finishRelay(
  db: Db,
  id: string,
  zoneId: string,
  outcome: {
    state: "done" | "failed";
    result: Record<string, unknown> | null;
    resultPackage: Uint8Array | null;
    errorCode: string | null;
  },
  now: number,
): Promise<boolean> {
  const r = await db
    .updateTable("tsm_relay")
    .set({
      state: outcome.state,
      result: outcome.result === null ? null : JSON.stringify(outcome.result),
      result_package: outcome.resultPackage,
      error_code: outcome.errorCode,
      package: null,
      updated_at: now,
    })
    .where("id", "=", id)
    .where("zone_id", "=", zoneId)
    .where("state", "=", "queued")
    .executeTakeFirst();
  return changed(r) === 1;
}

/** Fails what still waits for the containers (reclaimed, reset): the zone will not answer it. */
export async function failQueuedRelay(
  db: Db,
  zoneId: string,
  idxs: readonly number[] | undefined,
  code: string,
  now: number,
): Promise<number> {
  let q = db
    .updateTable("tsm_relay")
    .set({ state: "failed", error_code: code, package: null, updated_at: now })
    .where("zone_id", "=", zoneId)
    .where("state", "=", "queued");
  if (idxs !== undefined) {
    if (idxs.length === 0) return 0;
    q = q.where("idx", "in", [...idxs]);
  }
  return changed(await q.executeTakeFirst());
}

// --- audit trail ----------------------------------------------------------------------------------

export interface AuditTrailEntry {
  seq: number;
  at: number;
  actor: string;
  action: string;
  subject: string | null;
  outcome: string;
  details: Record<string, unknown>;
}

/** The newest audit records whose subject is one of `subjects`, oldest first. */
export async function auditTrailOf(
  db: Db,
  subjects: readonly string[],
  limit: number,
): Promise<AuditTrailEntry[]> {
  if (subjects.length === 0) return [];
  const rows = await db
    .selectFrom("audit_log")
    .select(["seq", "at", "actor", "action", "subject", "outcome", "details"])
    .where("subject", "in", [...subjects])
    .orderBy("seq", "desc")
    .limit(limit)
    .execute();
  return rows.reverse().map((r) => ({
    seq: n(r.seq),
    at: n(r.at),
    actor: r.actor,
    action: r.action,
    subject: r.subject,
    outcome: r.outcome,
    details: JSON.parse(r.details),
  }));
}
