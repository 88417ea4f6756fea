import { createHash } from "node:crypto";
import { type Kysely, sql } from "kysely";
import { canonicalJson } from "../core/codec/canonical-json.ts";
import { HandsafeError } from "../core/errors.ts";
import type { Database } from "./db/database.ts";
import { AUDIT_GENESIS_HASH } from "./db/migrations/0001_platform.ts";

/**
 * The audit log: every security decision, append-only and hash-chained (docs/storage.md).
 *
 *   hash_n = hex SHA-256( "handsafe/v1/audit" || 0x00 || prev_hash_n || 0x00 ||
 *                         canonicalJson({seq, at, actor, action, subject, outcome, details}) )
 *   prev_hash_1 = 64 × "0";  prev_hash_n = hash_(n-1)
 *
 * NEVER put secrets in `details` (keys, passwords, OTPs, activation secrets, tokens, session
 * keys, full phone numbers where an id will do): the log is kept forever, cannot be edited to
 * remove them, and is readable by every admin through the API.
 */

export const AUDIT_HASH_LABEL = "handsafe/v1/audit";
export { AUDIT_GENESIS_HASH };

export const AUDIT_OUTCOMES = ["allow", "deny", "error", "info"] as const;
export type AuditOutcome = (typeof AUDIT_OUTCOMES)[number];

export interface AuditEntry {
  /** Who: "admin:<id>", "handset:<id>", "sender:<id>", "system", … */
  actor: string;
  /** What, as a stable dotted name: "activation.redeem", "admin.login", … */
  action: string;
  /** On what, when there is one thing: "handset:<id>", "container:<id>". */
  subject?: string;
  outcome: AuditOutcome;
  /** Canonical-JSON-encodable: strings, safe integers, booleans, null, arrays, objects. No secrets. */
  details?: Record<string, unknown>;
}

export interface AuditRecord {
  seq: number;
  /** Epoch milliseconds. */
  at: number;
  actor: string;
  action: string;
  subject: string | null;
  outcome: AuditOutcome;
  details: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

export type AuditVerification = { ok: true; count: number } | { ok: false; brokenAt: number; reason: string };

interface AuditTables {
  audit_log: {
    seq: number;
    at: number;
    actor: string;
    action: string;
    subject: string | null;
    outcome: string;
    details: string;
    prev_hash: string;
    hash: string;
  };
  audit_head: { id: number; seq: number; hash: string };
}

const MAX_NAME_LENGTH = 200;
const MAX_DETAILS_LENGTH = 16 * 1024;
const VERIFY_PAGE = 1000;
const MAX_LIST_LIMIT = 1000;

function tables(database: Database): Kysely<AuditTables> {
  return database.db as Kysely<AuditTables>;
}

/** The chain hash of one record; exported so external verifiers and tests share one definition. */
export function auditRecordHash(prevHash: string, record: Omit<AuditRecord, "prevHash" | "hash">): string {
  const body = canonicalJson({
    seq: record.seq,
    at: record.at,
    actor: record.actor,
    action: record.action,
    subject: record.subject,
    outcome: record.outcome,
    details: record.details,
  });
  return createHash("sha256")
    .update(AUDIT_HASH_LABEL)
    .update(Buffer.of(0))
    .update(prevHash)
    .update(Buffer.of(0))
    .update(body)
    .digest("hex");
}

export async function appendAudit(database: Database, entry: AuditEntry): Promise<AuditRecord> {
  const details = checkEntry(entry);
  const detailsText = canonicalJson(details);
  return tables(database)
    .transaction()
    .execute(async (trx) => {
      // Serialise appenders across processes on the head row. PostgreSQL: a row lock. SQLite:
      // writing first takes the database write lock before we read, so a second process waits
      // (busy_timeout) instead of failing to upgrade a read snapshot.
      if (database.dialect === "sqlite")
        await trx.updateTable("audit_head").set({ seq: sql`seq` }).where("id", "=", 1).execute();
      let headQuery = trx.selectFrom("audit_head").select(["seq", "hash"]).where("id", "=", 1);
      if (database.dialect === "postgres") headQuery = headQuery.forUpdate();
      const head = await headQuery.executeTakeFirst();
      if (head === undefined)
        throw new HandsafeError("storage.schema_missing", "audit_head row missing: migrations not run?", {
          status: 500,
        });

      const fields = {
        seq: Number(head.seq) + 1,
        at: Date.now(),
        actor: entry.actor,
        action: entry.action,
        subject: entry.subject ?? null,
        outcome: entry.outcome,
        details,
      };
      const hash = auditRecordHash(head.hash, fields);
      await trx
        .insertInto("audit_log")
        .values({ ...fields, details: detailsText, prev_hash: head.hash, hash })
        .execute();
      await trx.updateTable("audit_head").set({ seq: fields.seq, hash }).where("id", "=", 1).execute();
      return { ...fields, prevHash: head.hash, hash };
    });
}

function checkEntry(entry: AuditEntry): Record<string, unknown> {
  const bad = (why: string) =>
    new HandsafeError("audit.invalid_entry", `audit entry refused: ${why}`, { status: 500 });
  for (const key of ["actor", "action"] as const) {
    const v = entry[key];
    if (typeof v !== "string" || v.length === 0 || v.length > MAX_NAME_LENGTH)
      throw bad(`${key} must be a string of 1..${MAX_NAME_LENGTH} characters`);
  }
  if (
    entry.subject !== undefined &&
    (typeof entry.subject !== "string" || entry.subject.length > MAX_NAME_LENGTH)
  )
    throw bad(`subject must be a string of at most ${MAX_NAME_LENGTH} characters`);
  if (!(AUDIT_OUTCOMES as readonly string[]).includes(entry.outcome))
    throw bad(`outcome must be one of ${AUDIT_OUTCOMES.join(", ")}`);
  const details = entry.details ?? {};
  if (typeof details !== "object" || details === null || Array.isArray(details))
    throw bad("details must be an object");
  let text: string;
  try {
    text = canonicalJson(details);
  } catch (e) {
    throw bad(`details are not canonical-JSON encodable (${e instanceof Error ? e.message : String(e)})`);
  }
  if (text.length > MAX_DETAILS_LENGTH) throw bad(`details exceed ${MAX_DETAILS_LENGTH} characters`);
  // Round-trip so the returned record holds exactly what the hash covers (undefined dropped).
  return JSON.parse(text) as Record<string, unknown>;
}

/**
 * Walks the chain from seq 1 and reports the first record that does not fit: an edited row (hash
 * mismatch), a deleted row (a gap, or a tail shorter than the head), a reordered row (seq and
 * prev_hash are inside the hash) or a row inserted behind appendAudit's back (past the head).
 * Appends that land while it runs are outside the snapshot it checks and do not disturb it.
 */
export async function verifyAuditChain(database: Database): Promise<AuditVerification> {
  const db = tables(database);
  // One statement, one snapshot: the head and the highest seq as committed together.
  const state = await db
    .selectFrom("audit_head")
    .select((eb) => [
      "seq",
      "hash",
      eb
        .selectFrom("audit_log")
        .select((e) => e.fn.max("seq").as("m"))
        .as("max_seq"),
    ])
    .where("id", "=", 1)
    .executeTakeFirst();
  if (state === undefined) return { ok: false, brokenAt: 0, reason: "audit_head row is missing" };
  const headSeq = Number(state.seq);
  const maxSeq = state.max_seq === null || state.max_seq === undefined ? 0 : Number(state.max_seq);
  if (maxSeq > headSeq)
    return {
      ok: false,
      brokenAt: headSeq + 1,
      reason: `record ${headSeq + 1}..${maxSeq} lies beyond the chain head (${headSeq}): inserted outside appendAudit`,
    };

  let expected = 1;
  let prevHash = AUDIT_GENESIS_HASH;
  while (expected <= headSeq) {
    const rows = await db
      .selectFrom("audit_log")
      .selectAll()
      .where("seq", ">=", expected)
      .where("seq", "<=", headSeq)
      .orderBy("seq")
      .limit(VERIFY_PAGE)
      .execute();
    if (rows.length === 0) break;
    for (const row of rows) {
      const seq = Number(row.seq);
      if (seq !== expected) return { ok: false, brokenAt: expected, reason: `record ${expected} is missing` };
      if (row.prev_hash !== prevHash)
        return { ok: false, brokenAt: seq, reason: "prev_hash does not match the previous record's hash" };
      let details: Record<string, unknown>;
      try {
        details = JSON.parse(row.details) as Record<string, unknown>;
        if (canonicalJson(details) !== row.details) throw new Error("not canonical");
      } catch {
        return { ok: false, brokenAt: seq, reason: "details are not canonical JSON" };
      }
      const hash = auditRecordHash(prevHash, {
        seq,
        at: Number(row.at),
        actor: row.actor,
        action: row.action,
        subject: row.subject,
        outcome: row.outcome as AuditOutcome,
        details,
      });
      if (hash !== row.hash)
        return { ok: false, brokenAt: seq, reason: "hash does not match the record's contents" };
      prevHash = hash;
      expected++;
    }
  }
  if (expected <= headSeq)
    return {
      ok: false,
      brokenAt: expected,
      reason: `records ${expected}..${headSeq} are missing (tail deleted)`,
    };
  if (state.hash !== prevHash)
    return { ok: false, brokenAt: headSeq, reason: "the chain head's hash does not match the last record" };
  return { ok: true, count: headSeq };
}

/** A page of the log in seq order, for the admin API. */
export async function listAudit(
  database: Database,
  page: { afterSeq?: number; limit: number },
): Promise<AuditRecord[]> {
  const afterSeq = page.afterSeq ?? 0;
  if (!Number.isSafeInteger(afterSeq) || afterSeq < 0)
    throw new HandsafeError("audit.invalid_page", "afterSeq must be a whole number ≥ 0");
  if (!Number.isSafeInteger(page.limit) || page.limit < 1 || page.limit > MAX_LIST_LIMIT)
    throw new HandsafeError("audit.invalid_page", `limit must be a whole number from 1 to ${MAX_LIST_LIMIT}`);
  const rows = await tables(database)
    .selectFrom("audit_log")
    .selectAll()
    .where("seq", ">", afterSeq)
    .orderBy("seq")
    .limit(page.limit)
    .execute();
  return rows.map((row) => ({
    seq: Number(row.seq),
    at: Number(row.at),
    actor: row.actor,
    action: row.action,
    subject: row.subject,
    outcome: row.outcome as AuditOutcome,
    details: JSON.parse(row.details) as Record<string, unknown>,
    prevHash: row.prev_hash,
    hash: row.hash,
  }));
}
