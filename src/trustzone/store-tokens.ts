import { changed, type Db, n, nOrNull, type TrustzoneTables } from "./store-tables.ts";

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
