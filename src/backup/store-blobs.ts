/**
 * The backup tables' uploads and blobs (docs/protocols/backup.md §5, storage states): an upload's
 * state moves once per compare-and-set; a blob row counts the listed envelopes naming it. Re-exported
 * by store.ts, which callers import.
 */

import { toBytes } from "../platform/db/columns.ts";
import type { BackupTables, Db } from "./store.ts";

// --- uploads ---------------------------------------------------------------------------------------

export type UploadState = "open" | "completing" | "complete" | "failed" | "expired";

export interface UploadRow {
  id: string;
  accountId: string;
  size: number;
  sha256: Uint8Array;
  createdAt: number;
  state: UploadState;
  blobId: string | null;
}

function toUpload(r: BackupTables["backup_uploads"]): UploadRow {
  return {
    id: r.id,
    accountId: r.account_id,
    size: Number(r.size),
    sha256: toBytes(r.sha256),
    createdAt: Number(r.created_at),
    state: r.state as UploadState,
    blobId: r.blob_id,
  };
}

export async function insertUpload(db: Db, u: UploadRow): Promise<void> {
  await db
    .insertInto("backup_uploads")
    .values({
      id: u.id,
      account_id: u.accountId,
      size: u.size,
      sha256: u.sha256,
      created_at: u.createdAt,
      state: u.state,
      blob_id: u.blobId,
    })
    .execute();
}

export async function findUpload(db: Db, id: string): Promise<UploadRow | undefined> {
  const r = await db.selectFrom("backup_uploads").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toUpload(r) : undefined;
}

/** Bytes declared by the account's uploads still open: they count against the quota at begin. */
export async function openUploadBytes(db: Db, accountId: string): Promise<number> {
  const r = await db
    .selectFrom("backup_uploads")
    .select((eb) => eb.fn.sum<number | string>("size").as("n"))
    .where("account_id", "=", accountId)
    .where("state", "in", ["open", "completing"])
    .executeTakeFirst();
  return Number(r?.n ?? 0);
}

/**
 * Moves an upload from one state to another once; true when this caller moved it. Completing it
 * records its blob and the SHA-256 its bytes have (the declaration may have come only then).
 */
export async function transitionUpload(
  db: Db,
  id: string,
  from: UploadState,
  to: UploadState,
  blobId: string | null = null,
  sha256?: Uint8Array,
): Promise<boolean> {
  const r = await db
    .updateTable("backup_uploads")
    .set({
      state: to,
      ...(blobId === null ? {} : { blob_id: blobId }),
      ...(sha256 === undefined ? {} : { sha256 }),
    })
    .where("id", "=", id)
    .where("state", "=", from)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** Open uploads begun before `before` (the sweep's candidates), oldest first. */
export async function staleUploads(db: Db, before: number, limit: number): Promise<UploadRow[]> {
  const rows = await db
    .selectFrom("backup_uploads")
    .selectAll()
    .where("state", "=", "open")
    .where("created_at", "<", before)
    .orderBy("created_at")
    .limit(limit)
    .execute();
  return rows.map(toUpload);
}

// --- blobs -----------------------------------------------------------------------------------------

export interface BlobRow {
  id: string;
  accountId: string;
  size: number;
  sha256: Uint8Array;
  createdAt: number;
  refs: number;
}

function toBlob(r: BackupTables["backup_blobs"]): BlobRow {
  return {
    id: r.id,
    accountId: r.account_id,
    size: Number(r.size),
    sha256: toBytes(r.sha256),
    createdAt: Number(r.created_at),
    refs: Number(r.refs),
  };
}

export async function insertBlob(db: Db, b: BlobRow): Promise<void> {
  await db
    .insertInto("backup_blobs")
    .values({
      id: b.id,
      account_id: b.accountId,
      size: b.size,
      sha256: b.sha256,
      created_at: b.createdAt,
      refs: b.refs,
    })
    .execute();
}

export async function findBlob(db: Db, id: string): Promise<BlobRow | undefined> {
  const r = await db.selectFrom("backup_blobs").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toBlob(r) : undefined;
}

export async function findBlobs(db: Db, ids: readonly string[]): Promise<Map<string, BlobRow>> {
  if (ids.length === 0) return new Map();
  const rows = await db
    .selectFrom("backup_blobs")
    .selectAll()
    .where("id", "in", [...ids])
    .execute();
  return new Map(rows.map((r) => [r.id, toBlob(r)]));
}

/** The blobs among `ids` that a listed envelope of `accountId` references (Copy of an earlier backup). */
export async function blobsReferencedBy(
  db: Db,
  accountId: string,
  ids: readonly string[],
): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await db
    .selectFrom("backup_envelope_blobs as eb")
    .innerJoin("backup_envelopes as e", "e.id", "eb.envelope_id")
    .select("eb.blob_id")
    .where("e.account_id", "=", accountId)
    .where("eb.blob_id", "in", [...ids])
    .execute();
  return new Set(rows.map((r) => r.blob_id));
}

/** Adds one reference to each blob; how many rows moved (fewer: one went meanwhile). */
export async function addBlobRefs(db: Db, ids: readonly string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const r = await db
    .updateTable("backup_blobs")
    .set((eb) => ({ refs: eb("refs", "+", 1) }))
    .where("id", "in", [...ids])
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

/** Drops one reference from each blob, then removes the rows left at zero; returns those. */
export async function dropBlobRefs(db: Db, ids: readonly string[]): Promise<BlobRow[]> {
  if (ids.length === 0) return [];
  await db
    .updateTable("backup_blobs")
    .set((eb) => ({ refs: eb("refs", "-", 1) }))
    .where("id", "in", [...ids])
    .where("refs", ">", 0)
    .execute();
  const gone = await db
    .selectFrom("backup_blobs")
    .selectAll()
    .where("id", "in", [...ids])
    .where("refs", "=", 0)
    .execute();
  if (gone.length > 0)
    await db
      .deleteFrom("backup_blobs")
      .where(
        "id",
        "in",
        gone.map((g) => g.id),
      )
      .where("refs", "=", 0)
      .execute();
  return gone.map(toBlob);
}

/** Blobs no envelope references, stored before `before`: completed uploads never listed. */
export async function unreferencedBlobs(db: Db, before: number, limit: number): Promise<BlobRow[]> {
  const rows = await db
    .selectFrom("backup_blobs")
    .selectAll()
    .where("refs", "=", 0)
    .where("created_at", "<", before)
    .orderBy("created_at")
    .limit(limit)
    .execute();
  return rows.map(toBlob);
}

/** Deletes the blob's row only while nothing references it (an envelope PUT may just have). */
export async function deleteUnreferencedBlob(db: Db, id: string): Promise<boolean> {
  const r = await db.deleteFrom("backup_blobs").where("id", "=", id).where("refs", "=", 0).executeTakeFirst();
  return Number(r.numDeletedRows) === 1;
}

/** May `accountId` read the blob through a share? A live share of an envelope that references it. */
export async function blobSharedWith(db: Db, blobId: string, accountId: string): Promise<boolean> {
  const r = await db
    .selectFrom("backup_envelope_blobs as eb")
    .innerJoin("backup_shares as s", "s.envelope_id", "eb.envelope_id")
    .select("eb.envelope_id")
    .where("eb.blob_id", "=", blobId)
    .where("s.account_id", "=", accountId)
    .where("s.revoked_at", "is", null)
    .executeTakeFirst();
  return r !== undefined;
}
