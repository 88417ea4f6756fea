/** Zones and their containers (tsm_zones, tsm_containers): personalisation, reset, binding by compare-and-set. Re-exported by store.ts. */
import { toBytes, toBytesOrNull } from "../platform/db/columns.ts";
import { changed, type Db, n, nOrNull, type TrustzoneTables } from "./store-tables.ts";

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
