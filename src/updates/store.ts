/**
 * Updates' tables and queries (migration 0008_updates, src/updates/migrations.ts). Secrets are
 * sealed at rest by the caller: content keys under "updates/content-key/<package id>", TUF role
 * seeds under "updates/tuf-key/<role>/<keyid>".
 */
import type { Kysely, Transaction } from "kysely";
import { toBytes, toBytesOrNull } from "../platform/db/columns.ts";
import type { VersionRange } from "./version.ts";

export interface UpdatesTables {
  update_packages: {
    id: string;
    version: string;
    kind: string;
    from_version: string | null;
    from_package_id: string | null;
    base_package_id: string | null;
    models: string;
    version_range: string | null;
    channel: string;
    plaintext_length: number;
    plaintext_sha256: string;
    image_length: number;
    image_sha256: string;
    encrypted_length: number;
    encrypted_sha256: string;
    tuf_path: string;
    file_name: string;
    blob_key: string;
    sealed_content_key: Uint8Array;
    created_by: string;
    created_at: number;
  };
  tuf_repository: {
    id: string;
    record: string;
    revision: number;
    pending_root: string | null;
    updated_at: number;
  };
  tuf_keys: {
    keyid: string;
    role: string;
    public_key: string;
    sealed_seed: Uint8Array | null;
    state: string;
    created_at: number;
  };
  tuf_files: { name: string; bytes: Uint8Array; created_at: number };
}

export type Db = Kysely<UpdatesTables> | Transaction<UpdatesTables>;

// --- packages -------------------------------------------------------------------------------------

export interface PackageRow {
  id: string;
  version: string;
  kind: "full" | "delta";
  fromVersion: string | null;
  /** Delta only: the full package whose image the delta starts from. */
  fromPackageId: string | null;
  /** Delta only: the full package whose image the delta produces. */
  basePackageId: string | null;
  models: string[];
  versionRange: VersionRange | null;
  channel: string;
  plaintextLength: number;
  plaintextSha256: string;
  imageLength: number;
  imageSha256: string;
  encryptedLength: number;
  encryptedSha256: string;
  tufPath: string;
  fileName: string;
  blobKey: string;
  sealedContentKey: Uint8Array;
  createdBy: string;
  createdAt: number;
}

function toPackage(r: UpdatesTables["update_packages"]): PackageRow {
  return {
    id: r.id,
    version: r.version,
    kind: r.kind as "full" | "delta",
    fromVersion: r.from_version,
    fromPackageId: r.from_package_id,
    basePackageId: r.base_package_id,
    models: JSON.parse(r.models) as string[],
    versionRange: r.version_range === null ? null : (JSON.parse(r.version_range) as VersionRange),
    channel: r.channel,
    plaintextLength: Number(r.plaintext_length),
    plaintextSha256: r.plaintext_sha256,
    imageLength: Number(r.image_length),
    imageSha256: r.image_sha256,
    encryptedLength: Number(r.encrypted_length),
    encryptedSha256: r.encrypted_sha256,
    tufPath: r.tuf_path,
    fileName: r.file_name,
    blobKey: r.blob_key,
    sealedContentKey: toBytes(r.sealed_content_key),
    createdBy: r.created_by,
    createdAt: Number(r.created_at),
  };
}

export async function insertPackage(db: Db, p: PackageRow): Promise<void> {
  await db
    .insertInto("update_packages")
    .values({
      id: p.id,
      version: p.version,
      kind: p.kind,
      from_version: p.fromVersion,
      from_package_id: p.fromPackageId,
      base_package_id: p.basePackageId,
      models: JSON.stringify(p.models),
      version_range: p.versionRange === null ? null : JSON.stringify(p.versionRange),
      channel: p.channel,
      plaintext_length: p.plaintextLength,
      plaintext_sha256: p.plaintextSha256,
      image_length: p.imageLength,
      image_sha256: p.imageSha256,
      encrypted_length: p.encryptedLength,
      encrypted_sha256: p.encryptedSha256,
      tuf_path: p.tufPath,
      file_name: p.fileName,
      blob_key: p.blobKey,
      sealed_content_key: p.sealedContentKey,
      created_by: p.createdBy,
      created_at: p.createdAt,
    })
    .execute();
}

export async function findPackage(db: Db, id: string): Promise<PackageRow | undefined> {
  const r = await db.selectFrom("update_packages").selectAll().where("id", "=", id).executeTakeFirst();
  return r ? toPackage(r) : undefined;
}

export async function findPackageByFileName(db: Db, fileName: string): Promise<PackageRow | undefined> {
  const r = await db
    .selectFrom("update_packages")
    .selectAll()
    .where("file_name", "=", fileName)
    .executeTakeFirst();
  return r ? toPackage(r) : undefined;
}

export async function listPackages(db: Db): Promise<PackageRow[]> {
  const rows = await db
    .selectFrom("update_packages")
    .selectAll()
    .orderBy("created_at")
    .orderBy("id")
    .execute();
  return rows.map(toPackage);
}

// --- the TUF repository record --------------------------------------------------------------------

export const REPOSITORY_ID = "main";

export interface RepositoryRow {
  record: string;
  revision: number;
  pendingRoot: string | null;
}

export async function findRepository(db: Db): Promise<RepositoryRow | undefined> {
  const r = await db
    .selectFrom("tuf_repository")
    .select(["record", "revision", "pending_root"])
    .where("id", "=", REPOSITORY_ID)
    .executeTakeFirst();
  return r ? { record: r.record, revision: Number(r.revision), pendingRoot: r.pending_root } : undefined;
}

/** Inserts the first record; false when another node was first (its record wins). */
export async function insertRepository(db: Db, record: string, now: number): Promise<boolean> {
  const result = await db
    .insertInto("tuf_repository")
    .values({ id: REPOSITORY_ID, record, revision: 1, pending_root: null, updated_at: now })
    .onConflict((oc) => oc.column("id").doNothing())
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) === 1;
}

/** Compare-and-set on the revision: false when another writer got there first. */
export async function updateRepository(
  db: Db,
  expectedRevision: number,
  next: { record: string; pendingRoot: string | null },
  now: number,
): Promise<boolean> {
  const result = await db
    .updateTable("tuf_repository")
    .set({
      record: next.record,
      pending_root: next.pendingRoot,
      revision: expectedRevision + 1,
      updated_at: now,
    })
    .where("id", "=", REPOSITORY_ID)
    .where("revision", "=", expectedRevision)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

// --- keys -----------------------------------------------------------------------------------------

export type KeyState = "active" | "pending" | "retired";

export interface TufKeyRow {
  keyid: string;
  role: string;
  publicKey: string;
  /** null once the key lives offline (exported). */
  sealedSeed: Uint8Array | null;
  state: KeyState;
  createdAt: number;
}

export async function insertKey(db: Db, k: TufKeyRow): Promise<void> {
  await db
    .insertInto("tuf_keys")
    .values({
      keyid: k.keyid,
      role: k.role,
      public_key: k.publicKey,
      sealed_seed: k.sealedSeed,
      state: k.state,
      created_at: k.createdAt,
    })
    .execute();
}

export async function listKeys(db: Db): Promise<TufKeyRow[]> {
  const rows = await db.selectFrom("tuf_keys").selectAll().orderBy("created_at").orderBy("keyid").execute();
  return rows.map((r) => ({
    keyid: r.keyid,
    role: r.role,
    publicKey: r.public_key,
    sealedSeed: toBytesOrNull(r.sealed_seed),
    state: r.state as KeyState,
    createdAt: Number(r.created_at),
  }));
}

export async function setKeyState(db: Db, keyid: string, state: KeyState): Promise<void> {
  await db.updateTable("tuf_keys").set({ state }).where("keyid", "=", keyid).execute();
}

/** The key now lives offline: its seed is gone from the server. */
export async function forgetKeySeed(db: Db, keyid: string): Promise<boolean> {
  const result = await db
    .updateTable("tuf_keys")
    .set({ sealed_seed: null })
    .where("keyid", "=", keyid)
    .where("sealed_seed", "is not", null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

// --- write-once files -----------------------------------------------------------------------------

/** Stores files never stored before; a name already there keeps its first bytes. */
export async function insertFiles(db: Db, files: Iterable<[string, Uint8Array]>, now: number): Promise<void> {
  for (const [name, bytes] of files)
    await db
      .insertInto("tuf_files")
      .values({ name, bytes, created_at: now })
      .onConflict((oc) => oc.column("name").doNothing())
      .execute();
}

export async function findFile(db: Db, name: string): Promise<Uint8Array | undefined> {
  const r = await db.selectFrom("tuf_files").select("bytes").where("name", "=", name).executeTakeFirst();
  return r ? toBytes(r.bytes) : undefined;
}

export async function fileNames(db: Db): Promise<Set<string>> {
  const rows = await db.selectFrom("tuf_files").select("name").execute();
  return new Set(rows.map((r) => r.name));
}

/** Only to undo a package whose publication failed. */
export async function deletePackage(db: Db, id: string): Promise<void> {
  await db.deleteFrom("update_packages").where("id", "=", id).execute();
}
