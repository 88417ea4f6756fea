/**
 * The backup service (docs/protocols/backup.md §5): public storage that cannot read what it keeps.
 * Accounts are public keys (an Ed25519 signing key, an age recipient); blobs arrive by resumable
 * upload into the platform's blob store and are published once their declared size and SHA-256
 * hold; an envelope (the owner's signed SyncML XML) is listed in one transaction with its blob
 * references, shares and quota; deleting it drops the blobs no envelope references any more.
 *
 * Another account's backup, blob or upload answers exactly as a missing one (backup.not_found),
 * and the attempt is audited. Routes (routes.ts) only parse, authorise and call this.
 */
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { fromHex, toHex } from "../core/codec/bytes.ts";
import { verify as verifyEd25519 } from "../core/crypto/ed25519.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import type { BlobStore } from "../platform/blobs/types.ts";
import type { AuditEntry, Platform } from "../platform/context.ts";
import { envelopeSigningInput, parseEnvelope } from "./envelope.ts";
import { BLOB_ID, backupUri, blobIdOfUri, blobUri, newBlobId, newUploadId, UPLOAD_ID } from "./protocol.ts";
import * as store from "./store.ts";

/** A PATCH body, an upload chunk: at most 64 MiB (§5 limits). */
export const MAX_PATCH_BYTES = 64 * 1024 * 1024;
/** A blob: at most 64 GiB (§5 limits). */
export const MAX_BLOB_BYTES = 64 * 1024 ** 3;
/** An envelope: at most 16 MiB (§5 limits; the XML reader refuses more as xml.too_large). */
export const MAX_ENVELOPE_BYTES = 16 * 1024 * 1024;
/** Uploads not completed within this long are dropped by the sweep. */
export const UPLOAD_TTL_MS = 7 * 86_400_000;
const SWEEP_BATCH = 100;
const ED25519_SIGNATURE_BYTES = 64;

/** Blob-store key of a published blob; upload ids are the store's upload ids. */
const blobKey = (id: string) => `backup/blobs/${id}`;
export const uploadUri = (id: string) => `/v1/backup/uploads/${id}`;

// --- errors ----------------------------------------------------------------------------------------

/** One answer for missing and for another account's: the message never says which. */
export function notFound(): HandsafeError {
  return new HandsafeError("backup.not_found", "no such backup, blob or upload", { status: 404 });
}

const quotaExceeded = (quota: number) =>
  new HandsafeError("backup.quota_exceeded", `this account's storage quota (${quota} bytes) is used up`, {
    status: 413,
  });

const uploadMismatch = (message: string, details?: Record<string, unknown>) =>
  new HandsafeError("backup.upload_mismatch", message, { status: 422, ...(details ? { details } : {}) });

const envelopeInvalid = (message: string) =>
  new HandsafeError("backup.envelope_invalid", message, { status: 400 });

const signatureInvalid = (message: string) =>
  new HandsafeError("backup.signature_invalid", message, { status: 400 });

const blobMissing = (uri: string) =>
  new HandsafeError("backup.blob_missing", `no complete blob of this account at ${uri}`, {
    status: 422,
    details: { uri },
  });

// --- views -----------------------------------------------------------------------------------------

export interface AccountView {
  accountId: string;
  signingKey: string;
  recipient: string;
  handle: string | null;
  createdAt: number;
}

export interface BackupSummary {
  id: string;
  kind: "backup" | "share";
  createdAt: number;
  parent: string | null;
  items: number;
  bytes: number;
}

export interface SharedSummary extends BackupSummary {
  owner: string;
  sharedAt: number;
}

export interface BlobDownload {
  size: number;
  sha256: string;
  /** Inclusive byte range served, when the request asked for one that fits. */
  range: { start: number; end: number } | undefined;
  body: AsyncIterable<Uint8Array>;
}

const accountView = (a: store.AccountRow): AccountView => ({
  accountId: a.id,
  signingKey: toBase64url(a.signingKey),
  recipient: a.recipient,
  handle: a.handle,
  createdAt: a.createdAt,
});

const summaryOf = (e: store.EnvelopeSummary): BackupSummary => ({
  id: e.id,
  kind: e.kind,
  createdAt: e.createdAt,
  parent: e.parent,
  items: e.items,
  bytes: e.bytes,
});

/**
 * RFC 9110 §14.2: one `bytes=` range (first-last, first-, -suffix). Anything else is ignored (the
 * whole blob); a range that starts past the end is unsatisfiable.
 */
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | "unsatisfiable" | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d{0,16})-(\d{0,16})$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return undefined;
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== "" && Number(m[2]) < start) return undefined;
  if (start >= size) return "unsatisfiable";
  return { start, end };
}

export interface BackupDeps {
  blobs: BlobStore;
  /** Bytes an account may store (HANDSAFE_BACKUP_QUOTA_BYTES). */
  quotaBytes: number;
}

export class BackupService {
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
  private async audited<T>(entry: Omit<AuditEntry, "outcome">, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (e) {
      if (isHandsafeError(e) && e.status < 500) return this.refuse(e, entry);
      throw e;
    }
  }

  /** Someone else's (or nothing): the same 404, audited with whether it exists. */
  private async notYours(actor: string, action: string, subject: string, exists: boolean): Promise<never> {
    return this.refuse(notFound(), { actor, action, subject, details: { exists } });
  }

  // --- accounts -------------------------------------------------------------------------------------

  /**
   * Creates the account of a signing key (the route checked the signature by that key). The same
   * keys again answer the account as it is (created: false); other keys under that id cannot exist
   * (the id is the key's hash), another recipient or handle for it is backup.exists.
   */
  async createAccount(input: {
    id: string;
    signingKey: Uint8Array;
    recipient: string;
    handle: string | null;
  }): Promise<{ created: boolean; account: AccountView }> {
    const actor = `account:${input.id}`;
    const action = "backup.account_created";
    const existing = await store.findAccount(this.db, input.id);
    const same = (a: store.AccountRow) =>
      a.recipient === input.recipient && (input.handle === null || a.handle === input.handle);
    if (existing) {
      if (!same(existing))
        return this.refuse(
          new HandsafeError("backup.exists", "this account exists with another recipient or handle", {
            status: 409,
          }),
          { actor, action },
        );
      return { created: false, account: accountView(existing) };
    }
    const createdAt = this.now();
    const inserted = await store.insertAccount(this.db, { ...input, createdAt });
    if (!inserted) {
      const raced = await store.findAccount(this.db, input.id);
      if (raced && same(raced)) return { created: false, account: accountView(raced) };
      if (raced)
        return this.refuse(
          new HandsafeError("backup.exists", "this account exists with another recipient or handle", {
            status: 409,
          }),
          { actor, action },
        );
      return this.refuse(
        new HandsafeError("backup.handle_taken", "another account has this handle", { status: 409 }),
        { actor, action, details: { handle: input.handle } },
      );
    }
    await this.platform.audit({
      actor,
      action,
      subject: actor,
      outcome: "allow",
      details: { handle: input.handle },
    });
    return { created: true, account: accountView({ ...input, createdAt, bytesUsed: 0 }) };
  }

  async directory(handle: string, asker: store.AccountRow): Promise<AccountView & { handle: string }> {
    const a = await store.findAccountByHandle(this.db, handle);
    if (!a)
      return this.refuse(notFound(), {
        actor: `account:${asker.id}`,
        action: "backup.directory_lookup",
        details: { handle },
      });
    return { ...accountView(a), handle };
  }

  // --- uploads --------------------------------------------------------------------------------------

  /** Starts a resumable upload of `size` bytes whose SHA-256 will be `sha256` (hex). */
  async beginUpload(
    account: store.AccountRow,
    input: { size: number; sha256: string },
  ): Promise<{ uploadId: string; uri: string }> {
    const actor = `account:${account.id}`;
    return this.audited({ actor, action: "backup.upload_started" }, async () => {
      if (!Number.isSafeInteger(input.size) || input.size < 0 || input.size > MAX_BLOB_BYTES)
        throw new HandsafeError("request.invalid", `size is a whole number of bytes ≤ ${MAX_BLOB_BYTES}`, {
          status: 400,
        });
      if (!/^[0-9a-f]{64}$/.test(input.sha256))
        throw new HandsafeError("request.invalid", "sha256 is 64 lower-case hex digits", { status: 400 });
      // The declared bytes of open uploads count too: no one holds the disk with unfinished uploads.
      const fresh = await store.findAccount(this.db, account.id);
      const pending = await store.openUploadBytes(this.db, account.id);
      if ((fresh?.bytesUsed ?? 0) + pending + input.size > this.quota) throw quotaExceeded(this.quota);
      const id = newUploadId();
      await this.blobs.uploads.begin(id);
      await store.insertUpload(this.db, {
        id,
        accountId: account.id,
        size: input.size,
        sha256: fromHex(input.sha256),
        createdAt: this.now(),
        state: "open",
        blobId: null,
      });
      await this.platform.audit({
        actor,
        action: "backup.upload_started",
        subject: `upload:${id}`,
        outcome: "allow",
        details: { size: input.size },
      });
      return { uploadId: id, uri: uploadUri(id) };
    });
  }

  private async ownUpload(account: store.AccountRow, id: string, action: string): Promise<store.UploadRow> {
    const u = UPLOAD_ID.test(id) ? await store.findUpload(this.db, id) : undefined;
    if (!u || u.accountId !== account.id || u.state === "expired" || u.state === "failed")
      return this.notYours(`account:${account.id}`, action, `upload:${id}`, u !== undefined);
    return u;
  }

  /** Bytes stored so far (a completed upload: all of them) and the declared size. */
  async uploadOffset(account: store.AccountRow, id: string): Promise<{ offset: number; size: number }> {
    const u = await this.ownUpload(account, id, "backup.upload_offset");
    if (u.state === "complete") return { offset: u.size, size: u.size };
    const offset = await this.blobs.uploads.length(id);
    if (offset === undefined)
      return this.notYours(`account:${account.id}`, "backup.upload_offset", `upload:${id}`, true);
    return { offset, size: u.size };
  }

  /**
   * Appends one PATCH body at `offset` (it must be the stored length: backup.offset_mismatch 409
   * with the right one otherwise) without reading it whole. A body cut off midway keeps what the
   * blob store safely stored; HEAD tells the client where to go on.
   */
  async appendUpload(
    account: store.AccountRow,
    id: string,
    offset: number,
    length: number,
    body: AsyncIterable<Uint8Array> | Uint8Array,
  ): Promise<number> {
    const actor = `account:${account.id}`;
    const u = await this.ownUpload(account, id, "backup.upload_append");
    if (u.state !== "open")
      return this.refuse(
        new HandsafeError("backup.offset_mismatch", "this upload is being completed or is complete", {
          status: 409,
          details: { offset: u.size },
        }),
        { actor, action: "backup.upload_append", subject: `upload:${id}` },
      );
    if (offset + length > u.size)
      return this.refuse(uploadMismatch(`the upload was declared as ${u.size} bytes`, { size: u.size }), {
        actor,
        action: "backup.upload_append",
        subject: `upload:${id}`,
      });
    try {
      return await this.blobs.uploads.append(id, offset, body);
    } catch (e) {
      if (isHandsafeError(e, "blob.offset_mismatch")) {
        const right = Number(e.details?.["length"] ?? 0);
        throw new HandsafeError("backup.offset_mismatch", `the upload holds ${right} bytes`, {
          status: 409,
          details: { offset: right },
        });
      }
      if (isHandsafeError(e, "blob.upload_not_found")) throw notFound();
      if (isHandsafeError(e)) throw e;
      // The client went away mid-body: what was stored stays, HEAD says how much.
      throw new HandsafeError("request.aborted", "the upload body ended early", { status: 400, cause: e });
    }
  }

  /**
   * Publishes the upload as a blob once its size and SHA-256 are the declared ones (otherwise
   * backup.upload_mismatch, and the upload is spent) and the quota takes it. Completing twice
   * answers the same blob.
   */
  async completeUpload(
    account: store.AccountRow,
    id: string,
  ): Promise<{ uri: string; size: number; sha256: string }> {
    const actor = `account:${account.id}`;
    const action = "backup.upload_completed";
    const subject = `upload:${id}`;
    const u = await this.ownUpload(account, id, action);
    const done = (blobId: string) => ({ uri: blobUri(blobId), size: u.size, sha256: toHex(u.sha256) });
    if (u.state === "complete" && u.blobId !== null) return done(u.blobId);
    if (!(await store.transitionUpload(this.db, id, "open", "completing"))) {
      const now = await store.findUpload(this.db, id);
      if (now?.state === "complete" && now.blobId !== null) return done(now.blobId);
      return this.notYours(actor, action, subject, now !== undefined);
    }
    const length = await this.blobs.uploads.length(id);
    if (length !== u.size) {
      await store.transitionUpload(this.db, id, "completing", "open");
      return this.refuse(
        uploadMismatch(`the upload holds ${length ?? 0} of its ${u.size} bytes`, {
          offset: length ?? 0,
          size: u.size,
        }),
        { actor, action, subject },
      );
    }
    const blobId = newBlobId();
    const key = blobKey(blobId);
    let info: Awaited<ReturnType<BlobStore["uploads"]["complete"]>>;
    try {
      info = await this.blobs.uploads.complete(id, key);
    } catch (e) {
      // The store lost the upload (or failed to publish it): it is spent, never stuck half-way.
      await store.transitionUpload(this.db, id, "completing", "failed");
      if (isHandsafeError(e, "blob.upload_not_found")) return this.notYours(actor, action, subject, true);
      throw e;
    }
    const spent = async (error: HandsafeError): Promise<never> => {
      await this.blobs.delete(key);
      await store.transitionUpload(this.db, id, "completing", "failed");
      return this.refuse(error, { actor, action, subject });
    };
    if (info.size !== u.size || info.sha256 !== toHex(u.sha256))
      return spent(uploadMismatch("the uploaded bytes do not have the declared SHA-256; start again"));
    const took = await this.db.transaction().execute(async (trx) => {
      if (!(await store.takeQuota(trx, account.id, u.size, this.quota))) return false;
      await store.insertBlob(trx, {
        id: blobId,
        accountId: account.id,
        size: u.size,
        sha256: u.sha256,
        createdAt: this.now(),
        refs: 0,
      });
      await store.transitionUpload(trx, id, "completing", "complete", blobId);
      await this.platform.audit(
        { actor, action, subject: `blob:${blobId}`, outcome: "allow", details: { upload: id, size: u.size } },
        trx,
      );
      return true;
    });
    if (!took) return spent(quotaExceeded(this.quota));
    return done(blobId);
  }

  // --- blobs ----------------------------------------------------------------------------------------

  /** The blob's bytes (or a range), to its owner or an account a live share of it names. */
  async openBlob(account: store.AccountRow, id: string, range: string | undefined): Promise<BlobDownload> {
    const b = BLOB_ID.test(id) ? await store.findBlob(this.db, id) : undefined;
    const allowed =
      b !== undefined &&
      (b.accountId === account.id || (await store.blobSharedWith(this.db, id, account.id)));
    if (!b || !allowed) return this.notYours(`account:${account.id}`, "backup.blob_read", `blob:${id}`, !!b);
    const r = parseRange(range, b.size);
    if (r === "unsatisfiable")
      throw new HandsafeError("request.range_not_satisfiable", `the blob is ${b.size} bytes`, {
        status: 416,
        details: { size: b.size },
      });
    return {
      size: b.size,
      sha256: toHex(b.sha256),
      range: r,
      body: this.blobs.get(blobKey(id), r),
    };
  }

  // --- envelopes ------------------------------------------------------------------------------------

  /**
   * Lists a backup: the Envelope-Signature by the account's key over the XML, the document well
   * formed, its id the path's, its source the signer, every blob it names complete and the
   * account's own (or, for Copy, referenced by one of its earlier backups) with the size and
   * SHA-256 the envelope says, every SharedWith account real. Then one transaction: the envelope,
   * its blob references, its shares, the quota, the audit record — all or nothing.
   */
  async putEnvelope(
    account: store.AccountRow,
    backupId: string,
    xml: Uint8Array,
    signatureHeader: string | undefined,
  ): Promise<BackupSummary> {
    const actor = `account:${account.id}`;
    const action = "backup.backup_listed";
    return this.audited({ actor, action, subject: `backup:${backupId}` }, async () => {
      const signature = decodeSignature(signatureHeader);
      if (!verifyEd25519(account.signingKey, envelopeSigningInput(xml), signature))
        throw signatureInvalid("Envelope-Signature does not verify under this account's key");
      if (await store.envelopeExists(this.db, backupId))
        throw new HandsafeError("backup.exists", "a backup with this id exists", { status: 409 });
      const env = parseEnvelope(xml);
      if (env.backupId !== backupId) throw envelopeInvalid("SessionID is not the backup id of the path");
      if (env.source.account !== account.id)
        throw signatureInvalid("the envelope's Source names another account than its signer");
      if (env.target !== backupUri(backupId)) throw envelopeInvalid(`Target must be ${backupUri(backupId)}`);

      const sharedWith = [...new Set(env.sharedWith)];
      if (sharedWith.includes(account.id)) throw envelopeInvalid("SharedWith names the owner");
      const known = await store.existingAccounts(this.db, sharedWith);
      const unknown = sharedWith.find((a) => !known.has(a));
      if (unknown !== undefined)
        throw new HandsafeError("backup.not_found", `SharedWith names no account: ${unknown}`, {
          status: 404,
          details: { account: unknown },
        });

      // Every blob the snapshot names, once, with what the envelope says of it.
      const wanted = new Map<string, { uri: string; size: number; sha256: string; copy: boolean }>();
      for (const item of env.items) {
        if (!("blob" in item.payload)) continue;
        const { uri, size, sha256 } = item.payload.blob;
        const id = blobIdOfUri(uri);
        if (id === undefined) throw blobMissing(uri);
        const seen = wanted.get(id);
        const hex = toHex(sha256);
        if (seen && (seen.size !== size || seen.sha256 !== hex)) throw blobMissing(uri);
        wanted.set(id, { uri, size, sha256: hex, copy: (seen?.copy ?? true) && item.command === "Copy" });
      }
      const ids = [...wanted.keys()];
      const rows = await store.findBlobs(this.db, ids);
      const carried = await store.blobsReferencedBy(
        this.db,
        account.id,
        ids.filter((id) => rows.get(id)?.accountId !== account.id),
      );
      let blobBytes = 0;
      for (const [id, w] of wanted) {
        const row = rows.get(id);
        const mine = row !== undefined && (row.accountId === account.id || (w.copy && carried.has(id)));
        if (!row || !mine || row.size !== w.size || toHex(row.sha256) !== w.sha256) {
          if (row && row.accountId !== account.id)
            await this.platform.audit({
              actor,
              action: "backup.blob_foreign",
              subject: `blob:${id}`,
              outcome: "deny",
              details: { backup: backupId },
            });
          throw blobMissing(w.uri);
        }
        blobBytes += row.size;
      }

      const summary: store.EnvelopeRow = {
        id: backupId,
        accountId: account.id,
        kind: env.kind,
        parent: env.parent ?? null,
        createdAt: env.createdAt,
        items: env.items.length,
        bytes: xml.length + blobBytes,
        listedAt: this.now(),
        xml,
        signature,
      };
      await this.db.transaction().execute(async (trx) => {
        if (!(await store.insertEnvelope(trx, summary)))
          throw new HandsafeError("backup.exists", "a backup with this id exists", { status: 409 });
        await store.insertEnvelopeBlobs(trx, backupId, ids);
        // A blob deleted since the check above (its last envelope went) is missing now.
        if ((await store.addBlobRefs(trx, ids)) !== ids.length) throw blobMissing("(a referenced blob)");
        await store.insertShares(trx, backupId, sharedWith, summary.listedAt);
        if (!(await store.takeQuota(trx, account.id, xml.length, this.quota)))
          throw quotaExceeded(this.quota);
        await this.platform.audit(
          {
            actor,
            action,
            subject: `backup:${backupId}`,
            outcome: "allow",
            details: { kind: env.kind, items: env.items.length, blobs: ids.length, sharedWith },
          },
          trx,
        );
      });
      return summaryOf(summary);
    });
  }

  async listBackups(account: store.AccountRow): Promise<BackupSummary[]> {
    return (await store.listEnvelopes(this.db, account.id)).map(summaryOf);
  }

  async listShared(account: store.AccountRow): Promise<SharedSummary[]> {
    return (await store.sharedWith(this.db, account.id)).map((e) => ({
      ...summaryOf(e),
      owner: e.accountId,
      sharedAt: e.sharedAt,
    }));
  }

  /** The XML and its signature, to the owner or an account a live share names. */
  async getBackup(
    account: store.AccountRow,
    id: string,
  ): Promise<{ xml: Uint8Array; signature: Uint8Array; owner: string }> {
    const e = await store.findEnvelope(this.db, id);
    const allowed =
      e !== undefined && (e.accountId === account.id || (await store.liveShare(this.db, id, account.id)));
    if (!e || !allowed)
      return this.notYours(`account:${account.id}`, "backup.backup_read", `backup:${id}`, !!e);
    return { xml: e.xml, signature: e.signature, owner: e.accountId };
  }

  /**
   * Unlists the account's backup: its blob references drop by one, blobs left at none go (their
   * rows in the transaction, their bytes after the commit), and the quota gets it all back.
   */
  async deleteBackup(account: store.AccountRow, id: string): Promise<void> {
    const actor = `account:${account.id}`;
    const action = "backup.backup_deleted";
    const summary = await store.findEnvelopeSummary(this.db, id);
    if (!summary || summary.accountId !== account.id)
      return this.notYours(actor, action, `backup:${id}`, summary !== undefined);
    const gone = await this.db.transaction().execute(async (trx) => {
      if (!(await store.deleteEnvelope(trx, id, account.id))) return undefined;
      const blobIds = await store.takeEnvelopeBlobs(trx, id);
      const referenced = await store.findBlobs(trx, blobIds);
      const blobBytes = [...referenced.values()].reduce((n, b) => n + b.size, 0);
      const dropped = await store.dropBlobRefs(trx, blobIds);
      await store.deleteShares(trx, id);
      const freed = summary.bytes - blobBytes + dropped.reduce((n, b) => n + b.size, 0);
      await store.releaseQuota(trx, account.id, freed);
      await this.platform.audit(
        {
          actor,
          action,
          subject: `backup:${id}`,
          outcome: "allow",
          details: { blobsDeleted: dropped.length, bytesFreed: freed },
        },
        trx,
      );
      return dropped;
    });
    if (gone === undefined) return this.notYours(actor, action, `backup:${id}`, false);
    for (const b of gone) await this.blobs.delete(blobKey(b.id));
  }

  /** The owner takes one account off a share; that account reads neither the envelope nor its blobs. */
  async revokeShare(account: store.AccountRow, backupId: string, accountId: string): Promise<void> {
    const actor = `account:${account.id}`;
    const action = "backup.share_revoked";
    const subject = `backup:${backupId}`;
    const e = await store.findEnvelopeSummary(this.db, backupId);
    if (!e || e.accountId !== account.id) return this.notYours(actor, action, subject, e !== undefined);
    if (!(await store.revokeShare(this.db, backupId, accountId, this.now())))
      return this.refuse(notFound(), { actor, action, subject, details: { account: accountId } });
    await this.platform.audit({ actor, action, subject, outcome: "allow", details: { account: accountId } });
  }

  // --- housekeeping ---------------------------------------------------------------------------------

  /** Drops uploads not completed within UPLOAD_TTL_MS (their bytes too); returns how many. */
  async sweepStaleUploads(): Promise<number> {
    const before = this.now() - UPLOAD_TTL_MS;
    let dropped = 0;
    for (;;) {
      const stale = await store.staleUploads(this.db, before, SWEEP_BATCH);
      for (const u of stale)
        if (await store.transitionUpload(this.db, u.id, "open", "expired")) {
          await this.blobs.uploads.abort(u.id);
          dropped++;
        }
      if (stale.length < SWEEP_BATCH) break;
    }
    if (dropped > 0)
      await this.platform.audit({
        actor: "system",
        action: "backup.uploads_expired",
        outcome: "info",
        details: { count: dropped },
      });
    return dropped;
  }
}

function decodeSignature(header: string | undefined): Uint8Array {
  const bad = () => signatureInvalid("Envelope-Signature is a base64url Ed25519 signature (64 bytes)");
  if (header === undefined) throw bad();
  let bytes: Uint8Array;
  try {
    bytes = fromBase64url(header.trim(), "Envelope-Signature");
  } catch {
    throw bad();
  }
  if (bytes.length !== ED25519_SIGNATURE_BYTES) throw bad();
  return bytes;
}

/** Drops stale uploads every `intervalMs` (unref'd); `stop` waits for a pass in flight. */
export function startBackupSweeper(
  service: BackupService,
  onError: (err: unknown) => void,
  intervalMs = 3_600_000,
): { stop(): Promise<void> } {
  let running: Promise<unknown> | undefined;
  const timer = setInterval(() => {
    if (running) return;
    running = service
      .sweepStaleUploads()
      .catch(onError)
      .finally(() => {
        running = undefined;
      });
  }, intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
