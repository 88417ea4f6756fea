/**
 * Secure backup's tables and queries (migrations.ts). Every change that must happen once is a
 * compare-and-set: an upload leaves `open` once, the quota is taken by
 * `update … where bytes_used + n <= quota`, blob references move inside the envelope's
 * transaction, and a blob row goes when its count reaches zero — so N server nodes agree.
 */
import { type Kysely, sql } from "kysely";
import { toBytes } from "../platform/db/columns.ts";

export interface BackupTables {
  backup_accounts: {
    id: string;
    signing_key: Uint8Array;
    recipient: string;
    handle: string | null;
    created_at: number;
    bytes_used: number;
  };
  backup_uploads: {
    id: string;
    account_id: string;
    size: number;
    sha256: Uint8Array;
    created_at: number;
    state: string;
    blob_id: string | null;
  };
  backup_blobs: {
    id: string;
    account_id: string;
    size: number;
    sha256: Uint8Array;
    created_at: number;
    refs: number;
  };
  backup_envelopes: {
    id: string;
    account_id: string;
    kind: string;
    parent: string | null;
    created_at: number;
    items: number;
    bytes: number;
    xml: Uint8Array;
    signature: Uint8Array;
    listed_at: number;
  };
  backup_envelope_parts: {
    backup_id: string;
    part: number;
    account_id: string;
    header_key: string;
    xml: Uint8Array;
    signature: Uint8Array;
    received_at: number;
    listed: number;
  };
  backup_envelope_blobs: { envelope_id: string; blob_id: string };
  backup_shares: { envelope_id: string; account_id: string; created_at: number; revoked_at: number | null };
}

export type Db = Kysely<BackupTables>;

export {
  addBlobRefs,
  type BlobRow,
  blobSharedWith,
  blobsReferencedBy,
  deleteUnreferencedBlob,
  dropBlobRefs,
  findBlob,
  findBlobs,
  findUpload,
  insertBlob,
  insertUpload,
  openUploadBytes,
  staleUploads,
  transitionUpload,
  type UploadRow,
  type UploadState,
  unreferencedBlobs,
} from "./store-blobs.ts";

// --- accounts --------------------------------------------------------------------------------------

export interface AccountRow {
  id: string;
  signingKey: Uint8Array;
  recipient: string;
  handle: string | null;
  createdAt: number;
  bytesUsed: number;
}

function toAccount(r: BackupTables["backup_accounts"]): AccountRow {
  return {
    id: r.id,
    signingKey: toBytes(r.signing_key),
    recipient: r.recipient,
    handle: r.handle,
    createdAt: Number(r.created_at),
    bytesUsed: Number(r.bytes_used),
  };
}

export async function findAccount(db: Db, id: string): Promise<AccountRow | undefined> {
  const r = await db.selectFrom("backup_accounts").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toAccount(r) : undefined;
}

export async function findAccountByHandle(db: Db, handle: string): Promise<AccountRow | undefined> {
  const r = await db
    .selectFrom("backup_accounts")
    .selectAll()
    .where("handle", "=", handle)
    .executeTakeFirst();
  return r ? toAccount(r) : undefined;
}

/** False when the id or the handle is taken (nothing written): the caller tells which. */
export async function insertAccount(db: Db, a: Omit<AccountRow, "bytesUsed">): Promise<boolean> {
  const r = await db
    .insertInto("backup_accounts")
    .values({
      id: a.id,
      signing_key: a.signingKey,
      recipient: a.recipient,
      handle: a.handle,
      created_at: a.createdAt,
      bytes_used: 0,
    })
    .onConflict((oc) => oc.doNothing())
    .executeTakeFirst();
  return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
}

/** The ids among `ids` that name accounts. */
export async function existingAccounts(db: Db, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await db
    .selectFrom("backup_accounts")
    .select("id")
    .where("id", "in", [...ids])
    .execute();
  return new Set(rows.map((r) => r.id));
}

/** Takes `n` bytes of the quota, or answers false (nothing changed) when they do not fit. */
/** For the operator: each account's usage and backups (never their content), oldest account first. */
export interface AccountUsage {
  id: string;
  handle: string | null;
  createdAt: number;
  bytesUsed: number;
  backups: number;
  lastBackupAt: number | null;
}

export async function accountUsage(db: Db, page: { after?: string; limit: number }): Promise<AccountUsage[]> {
  let q = db
    .selectFrom("backup_accounts as a")
    .leftJoin("backup_envelopes as e", "e.account_id", "a.id")
    .select((eb) => [
      "a.id",
      "a.handle",
      "a.created_at",
      "a.bytes_used",
      eb.fn.count<number>("e.id").as("backups"),
      eb.fn.max("e.created_at").as("last_backup_at"),
    ])
    .groupBy(["a.id", "a.handle", "a.created_at", "a.bytes_used"])
    .orderBy("a.id")
    .limit(page.limit);
  if (page.after !== undefined) q = q.where("a.id", ">", page.after);
  return (await q.execute()).map((r) => ({
    id: r.id,
    handle: r.handle,
    createdAt: Number(r.created_at),
    bytesUsed: Number(r.bytes_used),
    backups: Number(r.backups),
    lastBackupAt: r.last_backup_at === null ? null : Number(r.last_backup_at),
  }));
}

export async function takeQuota(db: Db, accountId: string, n: number, quota: number): Promise<boolean> {
  const r = await db
    .updateTable("backup_accounts")
    .set((eb) => ({ bytes_used: eb("bytes_used", "+", n) }))
    .where("id", "=", accountId)
    .where((eb) => eb(eb("bytes_used", "+", n), "<=", quota))
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export async function releaseQuota(db: Db, accountId: string, n: number): Promise<void> {
  if (n === 0) return;
  await db
    .updateTable("backup_accounts")
    .set((eb) => ({ bytes_used: eb("bytes_used", "-", n) }))
    .where("id", "=", accountId)
    .execute();
}

// --- envelopes -------------------------------------------------------------------------------------

export interface EnvelopeSummary {
  id: string;
  accountId: string;
  kind: "backup" | "share";
  parent: string | null;
  createdAt: number;
  items: number;
  bytes: number;
  listedAt: number;
}

export interface EnvelopeRow extends EnvelopeSummary {
  xml: Uint8Array;
  signature: Uint8Array;
}

const SUMMARY_COLUMNS = [
  "id",
  "account_id",
  "kind",
  "parent",
  "created_at",
  "items",
  "bytes",
  "listed_at",
] as const;

function toSummary(r: Omit<BackupTables["backup_envelopes"], "xml" | "signature">): EnvelopeSummary {
  return {
    id: r.id,
    accountId: r.account_id,
    kind: r.kind as EnvelopeSummary["kind"],
    parent: r.parent,
    createdAt: Number(r.created_at),
    items: Number(r.items),
    bytes: Number(r.bytes),
    listedAt: Number(r.listed_at),
  };
}

/** False when the id is taken (nothing written). */
export async function insertEnvelope(db: Db, e: EnvelopeRow): Promise<boolean> {
  const r = await db
    .insertInto("backup_envelopes")
    .values({
      id: e.id,
      account_id: e.accountId,
      kind: e.kind,
      parent: e.parent,
      created_at: e.createdAt,
      items: e.items,
      bytes: e.bytes,
      xml: e.xml,
      signature: e.signature,
      listed_at: e.listedAt,
    })
    .onConflict((oc) => oc.column("id").doNothing())
    .executeTakeFirst();
  return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
}

export async function envelopeExists(db: Db, id: string): Promise<boolean> {
  const r = await db.selectFrom("backup_envelopes").select("id").where("id", "=", id).executeTakeFirst();
  return r !== undefined;
}

export async function findEnvelopeSummary(db: Db, id: string): Promise<EnvelopeSummary | undefined> {
  const r = await db
    .selectFrom("backup_envelopes")
    .select(SUMMARY_COLUMNS)
    .where("id", "=", id)
    .executeTakeFirst();
  return r ? toSummary(r) : undefined;
}

export async function findEnvelope(db: Db, id: string): Promise<EnvelopeRow | undefined> {
  const r = await db.selectFrom("backup_envelopes").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? { ...toSummary(r), xml: toBytes(r.xml), signature: toBytes(r.signature) } : undefined;
}

export async function listEnvelopes(db: Db, accountId: string): Promise<EnvelopeSummary[]> {
  const rows = await db
    .selectFrom("backup_envelopes")
    .select(SUMMARY_COLUMNS)
    .where("account_id", "=", accountId)
    .orderBy("created_at")
    .orderBy("id")
    .execute();
  return rows.map(toSummary);
}

// --- envelope parts (§4 Parts) -------------------------------------------------------------------

export interface PartRow {
  backupId: string;
  part: number;
  accountId: string;
  headerKey: string;
  xml: Uint8Array;
  signature: Uint8Array;
  receivedAt: number;
  listed: boolean;
}

function toPart(r: BackupTables["backup_envelope_parts"]): PartRow {
  return {
    backupId: r.backup_id,
    part: Number(r.part),
    accountId: r.account_id,
    headerKey: r.header_key,
    xml: toBytes(r.xml),
    signature: toBytes(r.signature),
    receivedAt: Number(r.received_at),
    listed: Number(r.listed) === 1,
  };
}

/** The staged parts of a backup, in order, without their XML. */
export async function stagedParts(
  db: Db,
  backupId: string,
): Promise<Array<{ part: number; accountId: string; headerKey: string }>> {
  const rows = await db
    .selectFrom("backup_envelope_parts")
    .select(["part", "account_id", "header_key"])
    .where("backup_id", "=", backupId)
    .where("listed", "=", 0)
    .orderBy("part")
    .execute();
  return rows.map((r) => ({ part: Number(r.part), accountId: r.account_id, headerKey: r.header_key }));
}

/** Part `part` of a backup, staged (waiting for the last part) or listed (parts 2..n of a listed backup). */
export async function findPart(
  db: Db,
  backupId: string,
  part: number,
  state: "staged" | "listed",
): Promise<PartRow | undefined> {
  const r = await db
    .selectFrom("backup_envelope_parts")
    .selectAll()
    .where("backup_id", "=", backupId)
    .where("part", "=", part)
    .where("listed", "=", state === "listed" ? 1 : 0)
    .executeTakeFirst();
  return r ? toPart(r) : undefined;
}

/** False when that part is there already (nothing written). */
export async function insertPart(db: Db, p: PartRow): Promise<boolean> {
  const r = await db
    .insertInto("backup_envelope_parts")
    .values({
      backup_id: p.backupId,
      part: p.part,
      account_id: p.accountId,
      header_key: p.headerKey,
      xml: p.xml,
      signature: p.signature,
      received_at: p.receivedAt,
      listed: p.listed ? 1 : 0,
    })
    .onConflict((oc) => oc.columns(["backup_id", "part"]).doNothing())
    .executeTakeFirst();
  return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
}

/**
 * On listing: part 1 leaves (it is the envelope row's XML now) and the staged parts are listed.
 * Returns how many were staged, for the caller to check that none went meanwhile.
 */
export async function listStagedParts(db: Db, backupId: string): Promise<number> {
  await db
    .deleteFrom("backup_envelope_parts")
    .where("backup_id", "=", backupId)
    .where("part", "=", 1)
    .execute();
  const r = await db
    .updateTable("backup_envelope_parts")
    .set({ listed: 1 })
    .where("backup_id", "=", backupId)
    .where("listed", "=", 0)
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

export async function deleteParts(db: Db, backupId: string): Promise<void> {
  await db.deleteFrom("backup_envelope_parts").where("backup_id", "=", backupId).execute();
}

/** Staged parts received before `before`: a session never finished. */
export async function staleParts(
  db: Db,
  before: number,
  limit: number,
): Promise<Array<{ backupId: string; part: number; accountId: string; bytes: number }>> {
  // The XML's length, not the XML: a batch of parts could be 100 × 16 MiB.
  const rows = await db
    .selectFrom("backup_envelope_parts")
    .select(["backup_id", "part", "account_id", sql<number>`length(xml)`.as("bytes")])
    .where("listed", "=", 0)
    .where("received_at", "<", before)
    .limit(limit)
    .execute();
  return rows.map((r) => ({
    backupId: r.backup_id,
    part: Number(r.part),
    accountId: r.account_id,
    bytes: Number(r.bytes),
  }));
}

/** Removes one staged part once; false when it was listed or gone meanwhile. */
export async function deleteStagedPart(db: Db, backupId: string, part: number): Promise<boolean> {
  const r = await db
    .deleteFrom("backup_envelope_parts")
    .where("backup_id", "=", backupId)
    .where("part", "=", part)
    .where("listed", "=", 0)
    .executeTakeFirst();
  return Number(r.numDeletedRows) === 1;
}

/** Removes the account's envelope once; false when it is not there (or not the account's). */
export async function deleteEnvelope(db: Db, id: string, accountId: string): Promise<boolean> {
  const r = await db
    .deleteFrom("backup_envelopes")
    .where("id", "=", id)
    .where("account_id", "=", accountId)
    .executeTakeFirst();
  return Number(r.numDeletedRows) === 1;
}

export async function insertEnvelopeBlobs(
  db: Db,
  envelopeId: string,
  blobIds: readonly string[],
): Promise<void> {
  if (blobIds.length === 0) return;
  await db
    .insertInto("backup_envelope_blobs")
    .values(blobIds.map((blobId) => ({ envelope_id: envelopeId, blob_id: blobId })))
    .execute();
}

/** Removes the envelope's blob references; returns the blob ids they named. */
export async function takeEnvelopeBlobs(db: Db, envelopeId: string): Promise<string[]> {
  const rows = await db
    .selectFrom("backup_envelope_blobs")
    .select("blob_id")
    .where("envelope_id", "=", envelopeId)
    .execute();
  await db.deleteFrom("backup_envelope_blobs").where("envelope_id", "=", envelopeId).execute();
  return rows.map((r) => r.blob_id);
}

// --- shares ----------------------------------------------------------------------------------------

export async function insertShares(
  db: Db,
  envelopeId: string,
  accountIds: readonly string[],
  now: number,
): Promise<void> {
  if (accountIds.length === 0) return;
  await db
    .insertInto("backup_shares")
    .values(
      accountIds.map((a) => ({ envelope_id: envelopeId, account_id: a, created_at: now, revoked_at: null })),
    )
    .execute();
}

export async function deleteShares(db: Db, envelopeId: string): Promise<void> {
  await db.deleteFrom("backup_shares").where("envelope_id", "=", envelopeId).execute();
}

/** Is the envelope shared with the account, and not revoked? */
export async function liveShare(db: Db, envelopeId: string, accountId: string): Promise<boolean> {
  const r = await db
    .selectFrom("backup_shares")
    .select("envelope_id")
    .where("envelope_id", "=", envelopeId)
    .where("account_id", "=", accountId)
    .where("revoked_at", "is", null)
    .executeTakeFirst();
  return r !== undefined;
}

/** Revokes once; false when there is no live share of that envelope with that account. */
export async function revokeShare(
  db: Db,
  envelopeId: string,
  accountId: string,
  now: number,
): Promise<boolean> {
  const r = await db
    .updateTable("backup_shares")
    .set({ revoked_at: now })
    .where("envelope_id", "=", envelopeId)
    .where("account_id", "=", accountId)
    .where("revoked_at", "is", null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export interface SharedEnvelope extends EnvelopeSummary {
  sharedAt: number;
}

/** Envelopes other accounts shared with `accountId` and did not revoke. */
export async function sharedWith(db: Db, accountId: string): Promise<SharedEnvelope[]> {
  const rows = await db
    .selectFrom("backup_shares as s")
    .innerJoin("backup_envelopes as e", "e.id", "s.envelope_id")
    .select([
      "e.id",
      "e.account_id",
      "e.kind",
      "e.parent",
      "e.created_at",
      "e.items",
      "e.bytes",
      "e.listed_at",
      "s.created_at as shared_at",
    ])
    .where("s.account_id", "=", accountId)
    .where("s.revoked_at", "is", null)
    .orderBy("s.created_at")
    .orderBy("e.id")
    .execute();
  return rows.map((r) => ({ ...toSummary(r), sharedAt: Number(r.shared_at) }));
}
