import { toBase64url } from "../core/codec/base64url.ts";
import { sha256 } from "../core/crypto/hash.ts";
import { randomToken } from "../core/crypto/random.ts";

/**
 * The backup capability's shared vocabulary (docs/protocols/backup.md): labels, ids, URIs, limits,
 * error codes and the envelope model. Pure — no I/O — so the server, the handset and the SDK share it.
 */

/** HKDF infos (§1, §3) and the envelope signature context (§4). */
export const LABELS = {
  accountKey: "handsafe/v1/backup/account-key",
  contentHash: "handsafe/v1/backup/content-hash",
  itemId: "handsafe/v1/backup/item-id",
  itemName: "handsafe/v1/backup/item-name",
  envelope: "handsafe/v1/backup/envelope",
} as const;

/** §3.4: an item of at most this many plaintext bytes keeps its payload inline in the envelope. */
export const INLINE_MAX_BYTES = 64 * 1024;

/** age v1 §Payload: a 16-byte nonce, then 64 KiB STREAM chunks each sealed with a 16-byte tag. */
export const AGE_NONCE_BYTES = 16;
export const AGE_CHUNK_BYTES = 64 * 1024;
export const AGE_TAG_BYTES = 16;

/**
 * The age payload length (nonce and chunks, no header) for `plaintextBytes` of plaintext: the last
 * chunk may be full, and only an empty plaintext has an empty chunk — so always at least one chunk.
 */
export function agePayloadSize(plaintextBytes: number): number {
  const chunks = Math.max(1, Math.ceil(plaintextBytes / AGE_CHUNK_BYTES));
  return AGE_NONCE_BYTES + plaintextBytes + chunks * AGE_TAG_BYTES;
}

/** The largest inline `<Data>` payload: 16 + 65 536 + 16 = 65 568 bytes. */
export const INLINE_PAYLOAD_MAX_BYTES = agePayloadSize(INLINE_MAX_BYTES);

export const BACKUP_ID = /^bk_[A-Za-z0-9_-]{22}$/;
/** `it_` + base64url(HMAC-SHA256(item-id key, path)[0..18]) (§1). */
export const ITEM_ID = /^it_[A-Za-z0-9_-]{24}$/;
/** `acct_` + base64url(SHA-256(account public key))[0..22] (§1). */
export const ACCOUNT_ID = /^acct_[A-Za-z0-9_-]{22}$/;

/** §1: `acct_` + base64url(SHA-256(account public key))[0..22] — the ACCOUNT_ID of a signing key. */
export function accountIdOf(signingKey: Uint8Array): string {
  return `acct_${toBase64url(sha256(signingKey)).slice(0, 22)}`;
}
export const BLOB_ID = /^bl_[A-Za-z0-9_-]{22}$/;
export const UPLOAD_ID = /^up_[A-Za-z0-9_-]{22}$/;

/** A handset's `<Source><LocURI>`: `handset:` and up to 256 printable ASCII characters, no spaces. */
export const HANDSET_URI = /^handset:[!-~]{1,256}$/;

export const BACKUPS_PATH = "/v1/backup/backups/";
export const BLOBS_PATH = "/v1/backup/blobs/";
export const BLOB_URI = /^\/v1\/backup\/blobs\/(bl_[A-Za-z0-9_-]{22})$/;

export const backupUri = (backupId: string): string => BACKUPS_PATH + backupId;
export const blobUri = (blobId: string): string => BLOBS_PATH + blobId;

/** The `bl_…` id a `/v1/backup/blobs/bl_…` URI names, or undefined when it is not such a URI. */
export function blobIdOfUri(uri: string): string | undefined {
  return BLOB_URI.exec(uri)?.[1];
}

// 16 random bytes are 22 base64url characters: the `{22}` of the patterns above.
export const newBackupId = (): string => "bk_" + randomToken(16);
export const newBlobId = (): string => "bl_" + randomToken(16);
export const newUploadId = (): string => "up_" + randomToken(16);

/** The envelope's fixed header values (§4). */
export const ENVELOPE_NAMESPACE = "urn:handsafe:backup:1";
export const ENVELOPE_VER_DTD = "1.2";
export const ENVELOPE_VER_PROTO = "handsafe-backup/1";
export const HASH_ALG = "hmac-sha256";

export const ITEM_KINDS = ["contacts", "messages", "calendar", "files", "appdata"] as const;
export type ItemKind = (typeof ITEM_KINDS)[number];
export const ITEM_COMMANDS = ["Add", "Replace", "Copy"] as const;
/** Relative to the parent: Add a new item, Replace a changed one, Copy an unchanged one verbatim. */
export type ItemCommand = (typeof ITEM_COMMANDS)[number];
export const ENVELOPE_KINDS = ["backup", "share"] as const;
export type EnvelopeKind = (typeof ENVELOPE_KINDS)[number];

export type ItemPayload =
  | { inline: Uint8Array }
  | { blob: { uri: string; size: number; sha256: Uint8Array } };

export interface EnvelopeItem {
  command: ItemCommand;
  /** `it_…` */
  id: string;
  kind: ItemKind;
  /** Plaintext bytes. */
  size: number;
  /** 32 bytes: HMAC-SHA256(content-hash key, plaintext). */
  hash: Uint8Array;
  /** The sealed metadata (§3.3), opaque here. */
  name: Uint8Array;
  /** The age header bytes (kept in the envelope, never in the blob). */
  header: Uint8Array;
  /** The age payload (nonce and chunks): inline up to INLINE_MAX_BYTES of plaintext, else a blob. */
  payload: ItemPayload;
}

/** GET /v1/backup/backups, one entry. */
export interface BackupSummary {
  id: string;
  kind: "backup" | "share";
  /** Epoch milliseconds (the envelope's Created). */
  createdAt: number;
  parent: string | null;
  items: number;
  bytes: number;
}

/** GET /v1/backup/shared, one entry: `owner` is the sharer's account id. */
export interface SharedSummary extends BackupSummary {
  owner: string;
  sharedAt: number;
}

export interface BackupEnvelope {
  /** `bk_…`, the SyncML SessionID. */
  backupId: string;
  kind: EnvelopeKind;
  /** Milliseconds since the epoch; written as ISO-8601 UTC with milliseconds. */
  createdAt: number;
  /** The `bk_…` this backup builds on. */
  parent?: string;
  /** LocURI `handset:…` and LocName `acct_…` (the owner). */
  source: { handset: string; account: string };
  /** `/v1/backup/backups/<backupId>` */
  target: string;
  /** `age1…`, at least one (the owner). */
  recipients: string[];
  /** `acct_…` the envelope is shared with; empty for none. */
  sharedWith: string[];
  /** The whole snapshot (Add ∪ Replace ∪ Copy). */
  items: EnvelopeItem[];
  /** Ids of items gone since the parent (Delete commands, information only). */
  deleted: string[];
}

/** §5 limits, enforced by the server (and known to the SDK). */
/** A PATCH body, an upload chunk: at most 64 MiB. */
export const MAX_PATCH_BYTES = 64 * 1024 * 1024;
/** A blob: at most 64 GiB. */
export const MAX_BLOB_BYTES = 64 * 1024 ** 3;
/** An envelope: at most 16 MiB (the XML reader refuses more as xml.too_large). */
export const MAX_ENVELOPE_BYTES = 16 * 1024 * 1024;
/**
 * An envelope over the limits above travels as a SyncML session of several messages (§4 Parts):
 * at most this many, so at most 1 GiB of XML per backup (and ≈ 1 million items).
 */
export const MAX_ENVELOPE_PARTS = 64;
/** Uploads not completed within this long are dropped by the sweep. */
export const UPLOAD_TTL_MS = 7 * 86_400_000;

/** §8: the codes of the server's answers and of the SDK's refusals. */
export const BACKUP_ERRORS = {
  notFound: "backup.not_found",
  envelopeInvalid: "backup.envelope_invalid",
  signatureInvalid: "backup.signature_invalid",
  blobMissing: "backup.blob_missing",
  /** The blob store holds other bytes than the blob's row (size or SHA-256): the storage is damaged. */
  blobDamaged: "backup.blob_damaged",
  /** The client read other bytes than the envelope lists for a blob (short, long, another hash). */
  blobMismatch: "backup.blob_mismatch",
  offsetMismatch: "backup.offset_mismatch",
  uploadMismatch: "backup.upload_mismatch",
  quotaExceeded: "backup.quota_exceeded",
  restoreDamaged: "backup.restore_damaged",
  notARecipient: "backup.not_a_recipient",
  exists: "backup.exists",
  handleTaken: "backup.handle_taken",
  directoryInvalid: "backup.directory_invalid",
  ownerRequired: "backup.owner_required",
  shareInvalid: "backup.share_invalid",
  invalidOptions: "backup.invalid_options",
  /** The SDK refuses a backup whose envelope would pass MAX_ENVELOPE_BYTES, before uploading anything. */
  envelopeTooLarge: "backup.envelope_too_large",
} as const;

export type BackupErrorCode = (typeof BACKUP_ERRORS)[keyof typeof BACKUP_ERRORS];
