/**
 * The backup service's refusals (docs/protocols/backup.md §5, §8) and the base the service's parts
 * share: the platform, the store, the blob store, the quota, and one way to refuse (audited).
 */
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import type { BlobStore } from "../platform/blobs/types.ts";
import type { AuditEntry, Platform } from "../platform/context.ts";
import { BACKUP_ERRORS } from "./protocol.ts";
import type * as store from "./store.ts";

/** One answer for missing and for another account's: the message never says which. */
export function notFound(): HandsafeError {
  return new HandsafeError(BACKUP_ERRORS.notFound, "no such backup, blob or upload", { status: 404 });
}

export const quotaExceeded = (quota: number) =>
  new HandsafeError(BACKUP_ERRORS.quotaExceeded, `this account's storage quota (${quota} bytes) is used up`, {
    status: 413,
  });

export const uploadMismatch = (message: string, details?: Record<string, unknown>) =>
  new HandsafeError(BACKUP_ERRORS.uploadMismatch, message, { status: 422, ...(details ? { details } : {}) });

export const envelopeInvalid = (message: string) =>
  new HandsafeError(BACKUP_ERRORS.envelopeInvalid, message, { status: 400 });

export const signatureInvalid = (message: string) =>
  new HandsafeError(BACKUP_ERRORS.signatureInvalid, message, { status: 400 });

export const blobMissing = (uri: string) =>
  new HandsafeError(BACKUP_ERRORS.blobMissing, `no complete blob of this account at ${uri}`, {
    status: 422,
    details: { uri },
  });

/**
 * The blob store does not hold the bytes the blob's row names (gone, another size or SHA-256, an
 * unreadable header): answered before any byte is sent, never as a hang under a wrong
 * Content-Length. The cause stays in the audit log, not in the answer.
 */
export const blobDamaged = (blobId: string) =>
  new HandsafeError(BACKUP_ERRORS.blobDamaged, `blob ${blobId} is damaged in storage`, {
    status: 500,
    details: { blobId },
  });

/** Blob-store key of a published blob; upload ids are the store's upload ids. */
export const blobKey = (id: string) => `backup/blobs/${id}`;
export const uploadUri = (id: string) => `/v1/backup/uploads/${id}`;

export interface BackupDeps {
  blobs: BlobStore;
  /** Bytes an account may store (HANDSAFE_BACKUP_QUOTA_BYTES). */
  quotaBytes: number;
}

/** What every part of the service holds, and how it refuses: audited, then thrown. */
export abstract class BackupServiceBase {
  readonly db: store.Db;
  readonly blobs: BlobStore;
  readonly quota: number;

  constructor(
    readonly platform: Platform,
    deps: BackupDeps,
  ) {
    this.db = platform.db as store.Db;
    this.blobs = deps.blobs;
    this.quota = deps.quotaBytes;
  }

  now(): number {
    return this.platform.clock();
  }

  /** Audits the refusal, then throws it. */
  async refuse(error: HandsafeError, entry: Omit<AuditEntry, "outcome">): Promise<never> {
    await this.platform.audit({ ...entry, outcome: "deny", details: { code: error.code, ...entry.details } });
    throw error;
  }

  /** Runs `work`; a HandsafeError it throws is audited as a refusal of `entry`, then rethrown. */
  protected async audited<T>(entry: Omit<AuditEntry, "outcome">, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (e) {
      if (isHandsafeError(e) && e.status < 500) return this.refuse(e, entry);
      throw e;
    }
  }

  /** Someone else's (or nothing): the same 404, audited with whether it exists. */
  protected async notYours(actor: string, action: string, subject: string, exists: boolean): Promise<never> {
    return this.refuse(notFound(), { actor, action, subject, details: { exists } });
  }
}
