import { createHash } from "node:crypto";
import { type Kysely, sql } from "kysely";
import { canonicalJson } from "../core/codec/canonical-json.ts";
import { HandsafeError } from "../core/errors.ts";
import { type PreparedQuery, prepareQuery } from "./db/compiled.ts";
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
  return chainHash(prevHash, body);
}

/** SHA-256 of label ‖ 0x00 ‖ prevHash ‖ 0x00 ‖ body (UTF-8), hex: one update, as the bytes are one string. */
function chainHash(prevHash: string, body: string): string {
  return createHash("sha256").update(`${AUDIT_HASH_LABEL}\u0000${prevHash}\u0000${body}`).digest("hex");
}

/**
 * canonicalJson of the record with its details already encoded (checkEntry did that once): the
 * keys in canonical order. auditRecordHash, which verifyAuditChain uses, is the definition; the
 * storage tests check every appended record against it.
 */
function recordBody(fields: Omit<AuditRecord, "prevHash" | "hash" | "details">, detailsText: string): string {
  return (
    `{"action":${JSON.stringify(fields.action)},"actor":${JSON.stringify(fields.actor)},` +
    `"at":${canonicalJson(fields.at)},"details":${detailsText},"outcome":${JSON.stringify(fields.outcome)},` +
    `"seq":${canonicalJson(fields.seq)},"subject":${fields.subject === null ? "null" : JSON.stringify(fields.subject)}}`
  );
}

type Head = { seq: number; hash: string };

// The two statements of every append (this head move and insertRecordsQuery), compiled once
// (db/compiled.ts): appends are on hot paths.
const moveHead = prepareQuery(
  4,
  (db: Kysely<AuditTables>, seq: number, hash: string, guessSeq: number, guessHash: string) =>
    db
      .updateTable("audit_head")
      .set({ seq, hash })
      .where("id", "=", 1)
      .where("seq", "=", guessSeq)
      .where("hash", "=", guessHash),
);

/** The insert of `count` records (one, or a group commit's batch), compiled once per count. */
const insertRecordsQueries = new Map<number, PreparedQuery<AuditTables, unknown[], unknown>>();
/** Counts compiled at most: a group commit's batches are at most 64 units (more is compiled anew). */
const MAX_COMPILED_COUNT = 128;

function insertRecordsQuery(count: number): PreparedQuery<AuditTables, unknown[], unknown> {
  let query = insertRecordsQueries.get(count);
  if (query === undefined) {
    query = prepareQuery(RECORD_COLUMNS.length * count, (db: Kysely<AuditTables>, ...a: unknown[]) =>
      db.insertInto("audit_log").values(
        Array.from({ length: count }, (_, i) => {
          const v = (k: number) => a[RECORD_COLUMNS.length * i + k] as never;
          return Object.fromEntries(RECORD_COLUMNS.map((c, k) => [c, v(k)])) as never;
        }),
      ),
    );
    if (count <= MAX_COMPILED_COUNT) insertRecordsQueries.set(count, query);
  }
  return query;
}

/** audit_log's columns, in the order insertRecordsQuery takes its arguments. */
const RECORD_COLUMNS = [
  "seq",
  "at",
  "actor",
  "action",
  "subject",
  "outcome",
  "details",
  "prev_hash",
  "hash",
] as const;

/**
 * Per open database, the head this process wrote last. Only a guess: appendAudit writes the new
 * head with a compare-and-set on it, so another process or node that appended since (or a
 * transaction that rolled back) makes the guess miss, and the head is then read under its lock.
 */
const lastHeads = new WeakMap<Database, Head>();

/** An entry checked (checkEntry) and timed, waiting for its place in the chain. */
interface Checked {
  entry: AuditEntry;
  /** The details' canonical JSON: what the hash covers and the row stores. */
  detailsText: string;
  at: number;
}

function checked(entry: AuditEntry, at: number): Checked {
  return { entry, detailsText: checkEntry(entry), at };
}

/**
 * Appends one record. With `within` (a transaction of `database` the caller has open) the record is
 * part of that transaction: it commits, or not, with the decision it records. Put it last there: on
 * PostgreSQL the head row stays locked until that commit.
 */
export async function appendAudit(
  database: Database,
  entry: AuditEntry,
  within?: Kysely<unknown>,
): Promise<AuditRecord> {
  const item = checked(entry, Date.now());
  const append = async (trx: Kysely<AuditTables>) => (await appendChecked(database, [item], trx, true))[0]!;
  if (within !== undefined) return append(within as Kysely<AuditTables>);
  return tables(database).transaction().execute(append);
}

/**
 * What `items` make after `head`, chained in order: the insert's arguments (RECORD_COLUMNS per
 * record, in order), the new head, and — only when asked for — the records themselves (a group
 * commit's deferred records are never returned, so they are never built).
 */
function chain(
  head: Head,
  items: readonly Checked[],
  wantRecords: boolean,
): { args: unknown[]; last: Head; records: AuditRecord[] } {
  const args: unknown[] = new Array(items.length * RECORD_COLUMNS.length);
  const records: AuditRecord[] = [];
  let { seq, hash } = head;
  let k = 0;
  for (const { entry, detailsText, at } of items) {
    const prevHash = hash;
    const fields = {
      seq: seq + 1,
      at,
      actor: entry.actor,
      action: entry.action,
      subject: entry.subject ?? null,
      outcome: entry.outcome,
    };
    seq = fields.seq;
    hash = chainHash(prevHash, recordBody(fields, detailsText));
    // In RECORD_COLUMNS order.
    args[k++] = fields.seq;
    args[k++] = at;
    args[k++] = fields.actor;
    args[k++] = fields.action;
    args[k++] = fields.subject;
    args[k++] = fields.outcome;
    args[k++] = detailsText;
    args[k++] = prevHash;
    args[k++] = hash;
    // The details as stored: exactly what the hash covers (undefined dropped).
    if (wantRecords)
      records.push({
        ...fields,
        details: JSON.parse(detailsText) as Record<string, unknown>,
        prevHash,
        hash,
      });
  }
  return { args, last: { seq, hash }, records };
}

/**
 * Appends `items` (at least one) in `trx`: one head move and one insert however many they are.
 * Returns the records when `wantRecords`, else none.
 */
async function appendChecked(
  database: Database,
  items: readonly Checked[],
  trx: Kysely<AuditTables>,
  wantRecords: boolean,
): Promise<AuditRecord[]> {
  const insert = (args: unknown[]) => insertRecordsQuery(items.length).execute(trx, ...args);
  const guess = lastHeads.get(database);
  if (guess !== undefined) {
    // The head moves only if it still is the guess: one statement, which takes the head row's
    // lock (PostgreSQL, rechecked after waiting for it) or the write lock (SQLite) first.
    const { args, last, records } = chain(guess, items, wantRecords);
    const moved = await moveHead.execute(trx, last.seq, last.hash, guess.seq, guess.hash);
    if (Number(moved.numAffectedRows) === 1) {
      await insert(args);
      lastHeads.set(database, last);
      return records;
    }
  }
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
  const { args, last, records } = chain({ seq: Number(head.seq), hash: head.hash }, items, wantRecords);
  await insert(args);
  await trx.updateTable("audit_head").set({ seq: last.seq, hash: last.hash }).where("id", "=", 1).execute();
  // Set before the commit: another append that guesses it waits for this transaction's lock
  // and then finds the head it guessed, or (rolled back) misses and reads the head.
  lastHeads.set(database, last);
  return records;
}

/**
 * Audit records left for the end of a transaction: a group commit's units (db/group-commit.ts)
 * each record their decision, and the batch appends them all at once, in its transaction, just
 * before its commit (one head move and one insert instead of two statements per record). A unit
 * rolled back to its savepoint drops the records it left (`dropFrom` its `mark`).
 */
export interface DeferredAudits {
  /** Where the records of the unit about to run start. */
  mark(): number;
  /** Drops the records left since `mark` (that unit rolled back). */
  dropFrom(mark: number): void;
  /** Appends the records left, in the order they were left; none: nothing. */
  flush(): Promise<void>;
}

const deferring = new WeakMap<object, Checked[]>();

/** From now on, an audit `within` `trx` (see deferAudit) waits for `flush`. */
export function deferAuditsIn(database: Database, trx: Kysely<unknown>): DeferredAudits {
  const pending: Checked[] = [];
  deferring.set(trx, pending);
  return {
    mark: () => pending.length,
    dropFrom: (mark) => {
      pending.length = mark;
    },
    async flush() {
      deferring.delete(trx);
      if (pending.length > 0) await appendChecked(database, pending, trx as Kysely<AuditTables>, false);
    },
  };
}

/**
 * Leaves `entry` for the end of `within` when that transaction defers its audits (deferAuditsIn);
 * false when it does not (the caller appends it now). The entry is checked now, so a bad one still
 * fails its caller, and it keeps the time it was recorded at.
 */
export function deferAudit(within: Kysely<unknown>, entry: AuditEntry): boolean {
  const pending = deferring.get(within);
  if (pending === undefined) return false;
  pending.push(checked(entry, Date.now()));
  return true;
}

/** The details' canonical JSON (undefined dropped); audit.invalid_entry when the entry is not valid. */
function checkEntry(entry: AuditEntry): string {
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
  // A returned record's details are JSON.parse(text) (chain): exactly what the hash covers.
  return text;
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

/**
 * A page of the log in seq order, for the admin API: the first `limit` records after `afterSeq`
 * (and before `beforeSeq`), or with `latest` the last `limit` of them — what a console shows first,
 * and, with `beforeSeq` its oldest shown, the page before.
 */
export async function listAudit(
  database: Database,
  page: { afterSeq?: number; beforeSeq?: number; limit: number; latest?: boolean },
): Promise<AuditRecord[]> {
  const afterSeq = page.afterSeq ?? 0;
  if (!Number.isSafeInteger(afterSeq) || afterSeq < 0)
    throw new HandsafeError("audit.invalid_page", "afterSeq must be a whole number ≥ 0");
  if (!Number.isSafeInteger(page.limit) || page.limit < 1 || page.limit > MAX_LIST_LIMIT)
    throw new HandsafeError("audit.invalid_page", `limit must be a whole number from 1 to ${MAX_LIST_LIMIT}`);
  const beforeSeq = page.beforeSeq;
  if (beforeSeq !== undefined && (!Number.isSafeInteger(beforeSeq) || beforeSeq < 1))
    throw new HandsafeError("audit.invalid_page", "beforeSeq must be a whole number ≥ 1");
  let query = tables(database).selectFrom("audit_log").selectAll().where("seq", ">", afterSeq);
  if (beforeSeq !== undefined) query = query.where("seq", "<", beforeSeq);
  const rows = await query
    .orderBy("seq", page.latest ? "desc" : "asc")
    .limit(page.limit)
    .execute();
  if (page.latest) rows.reverse();
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
