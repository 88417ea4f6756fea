/** Relayed commands and their answers (tsm_relay), and the audit trail of a zone. Re-exported by store.ts. */
import { toBytesOrNull } from "../platform/db/columns.ts";
import { changed, type Db, n, type TrustzoneTables } from "./store-tables.ts";

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

/**
 * Hands an answered command over once: deletes it (and the sealed package of a `get` result) for its
 * manager. A queued one stays.
 */
export async function deleteAnsweredRelay(db: Db, id: string, managerId: string): Promise<boolean> {
  const r = await db
    .deleteFrom("tsm_relay")
    .where("id", "=", id)
    .where("manager_id", "=", managerId)
    .where("state", "in", ["done", "failed"])
    .executeTakeFirst();
  return Number(r.numDeletedRows) === 1;
}

/**
 * The sweeper's part of the relay: deletes answered rows last changed before `answeredBefore`
 * (no one fetched them), and fails queued rows created before `queuedBefore` (the zone would refuse
 * them as stale) with `code`, dropping their package.
 */
export async function purgeRelay(
  db: Db,
  answeredBefore: number,
  queuedBefore: number,
  code: string,
  now: number,
): Promise<{ deleted: number; expired: number }> {
  const deleted = await db
    .deleteFrom("tsm_relay")
    .where("state", "in", ["done", "failed"])
    .where("updated_at", "<", answeredBefore)
    .executeTakeFirst();
  const expired = await db
    .updateTable("tsm_relay")
    .set({ state: "failed", error_code: code, package: null, updated_at: now })
    .where("state", "=", "queued")
    .where("created_at", "<", queuedBefore)
    .executeTakeFirst();
  return { deleted: Number(deleted.numDeletedRows), expired: changed(expired) };
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
