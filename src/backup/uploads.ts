/**
 * Resumable uploads (docs/protocols/backup.md §5): bytes appended in order under an upload id in
 * the blob store, published as a blob once their declared size and SHA-256 (declared at the start,
 * at completion, or both) hold and the quota takes them; uploads not completed in UPLOAD_TTL_MS are swept. Another account's upload answers
 * as a missing one.
 */
import { fromHex, toHex } from "../core/codec/bytes.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import type { BlobStore } from "../platform/blobs/types.ts";
import { blobUri, MAX_BLOB_BYTES, newBlobId, newUploadId, UPLOAD_ID, UPLOAD_TTL_MS } from "./protocol.ts";
import {
  BackupServiceBase,
  blobKey,
  notFound,
  quotaExceeded,
  uploadMismatch,
  uploadUri,
} from "./server-errors.ts";
import * as store from "./store.ts";

const SWEEP_BATCH = 100;

export abstract class BackupUploads extends BackupServiceBase {
  // --- uploads --------------------------------------------------------------------------------------

  /**
   * Starts a resumable upload of `size` bytes whose SHA-256 will be `sha256` (hex), if declared now;
   * otherwise the completion declares it. The upload row holds an empty hash until then.
   */
  async beginUpload(
    account: store.AccountRow,
    input: { size: number; sha256?: string | undefined },
  ): Promise<{ uploadId: string; uri: string }> {
    const actor = `account:${account.id}`;
    return this.audited({ actor, action: "backup.upload_started" }, async () => {
      if (!Number.isSafeInteger(input.size) || input.size < 0 || input.size > MAX_BLOB_BYTES)
        throw new HandsafeError("request.invalid", `size is a whole number of bytes ≤ ${MAX_BLOB_BYTES}`, {
          status: 400,
        });
      if (input.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(input.sha256))
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
        sha256: input.sha256 === undefined ? new Uint8Array(0) : fromHex(input.sha256),
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

  protected async ownUpload(account: store.AccountRow, id: string, action: string): Promise<store.UploadRow> {
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
   * Publishes the upload as a blob once its size and SHA-256 are the declared ones — `sha256` (hex)
   * here, the one declared at the start, or both, which must agree; the blob store's hash of the
   * appended bytes is compared with it (otherwise backup.upload_mismatch, and the upload is spent)
   * — and the quota takes it. Completing twice answers the same blob (its SHA-256 must be the one
   * declared again, if one is).
   */
  async completeUpload(
    account: store.AccountRow,
    id: string,
    input: { sha256?: string | undefined } = {},
  ): Promise<{ uri: string; size: number; sha256: string }> {
    const actor = `account:${account.id}`;
    const action = "backup.upload_completed";
    const subject = `upload:${id}`;
    const u = await this.ownUpload(account, id, action);
    if (input.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(input.sha256))
      return this.refuse(
        new HandsafeError("request.invalid", "sha256 is 64 lower-case hex digits", { status: 400 }),
        { actor, action, subject },
      );
    const begun = u.sha256.length === 0 ? undefined : toHex(u.sha256);
    const done = async (row: store.UploadRow): Promise<{ uri: string; size: number; sha256: string }> => {
      const sha256 = toHex(row.sha256);
      if (input.sha256 !== undefined && input.sha256 !== sha256)
        return this.refuse(uploadMismatch("the upload was completed with another SHA-256"), {
          actor,
          action,
          subject,
        });
      return { uri: blobUri(row.blobId!), size: row.size, sha256 };
    };
    if (u.state === "complete" && u.blobId !== null) return done(u);
    if (begun === undefined && input.sha256 === undefined)
      return this.refuse(
        new HandsafeError("request.invalid", "the completion declares the upload's sha256", { status: 400 }),
        { actor, action, subject },
      );
    if (begun !== undefined && input.sha256 !== undefined && begun !== input.sha256)
      return this.refuse(uploadMismatch("the completion declares another SHA-256 than the start did"), {
        actor,
        action,
        subject,
      });
    const declared = (input.sha256 ?? begun)!;
    if (!(await store.transitionUpload(this.db, id, "open", "completing"))) {
      const now = await store.findUpload(this.db, id);
      if (now?.state === "complete" && now.blobId !== null) return done(now);
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
    if (info.size !== u.size || info.sha256 !== declared)
      return spent(uploadMismatch("the uploaded bytes do not have the declared SHA-256; start again"));
    const took = await this.db.transaction().execute(async (trx) => {
      if (!(await store.takeQuota(trx, account.id, u.size, this.quota))) return false;
      await store.insertBlob(trx, {
        id: blobId,
        accountId: account.id,
        size: u.size,
        sha256: fromHex(declared),
        createdAt: this.now(),
        refs: 0,
      });
      await store.transitionUpload(trx, id, "completing", "complete", blobId, fromHex(declared));
      await this.platform.audit(
        { actor, action, subject: `blob:${blobId}`, outcome: "allow", details: { upload: id, size: u.size } },
        trx,
      );
      return true;
    });
    if (!took) return spent(quotaExceeded(this.quota));
    return { uri: blobUri(blobId), size: u.size, sha256: declared };
  }

  // --- housekeeping ---------------------------------------------------------------------------------

  /**
   * Drops what was left unfinished UPLOAD_TTL_MS ago, each audited as a count: uploads never
   * completed (their bytes too), blobs no envelope listed, and parts of an envelope (§4 Parts)
   * whose last part never came. Returns how many things went.
   */
  async sweepStaleUploads(): Promise<number> {
    const before = this.now() - UPLOAD_TTL_MS;
    const uploads = await this.sweep(
      "backup.uploads_expired",
      () => store.staleUploads(this.db, before, SWEEP_BATCH),
      async (u) => {
        if (!(await store.transitionUpload(this.db, u.id, "open", "expired"))) return false;
        await this.blobs.uploads.abort(u.id);
        return true;
      },
    );
    // A blob row goes first, only while still unreferenced, so an envelope listing it at that
    // moment either took its reference first (the blob stays) or finds it gone (backup.blob_missing).
    const blobs = await this.sweep(
      "backup.blobs_unlisted_dropped",
      () => store.unreferencedBlobs(this.db, before, SWEEP_BATCH),
      async (b) => {
        const deleted = await this.db.transaction().execute(async (trx) => {
          if (!(await store.deleteUnreferencedBlob(trx, b.id))) return false;
          await store.releaseQuota(trx, b.accountId, b.size);
          return true;
        });
        if (deleted) await this.blobs.delete(blobKey(b.id));
        return deleted;
      },
    );
    const parts = await this.sweep(
      "backup.parts_expired",
      () => store.staleParts(this.db, before, SWEEP_BATCH),
      (p) =>
        this.db.transaction().execute(async (trx) => {
          if (!(await store.deleteStagedPart(trx, p.backupId, p.part))) return false;
          await store.releaseQuota(trx, p.accountId, p.bytes);
          return true;
        }),
    );
    return uploads + blobs + parts;
  }

  /** Batches of `next()` until a short one, each thing `drop`ped (true: it went); one audit record of the count. */
  private async sweep<T>(
    action: string,
    next: () => Promise<T[]>,
    drop: (thing: T) => Promise<boolean>,
  ): Promise<number> {
    let dropped = 0;
    for (;;) {
      const batch = await next();
      for (const thing of batch) if (await drop(thing)) dropped++;
      if (batch.length < SWEEP_BATCH) break;
    }
    if (dropped > 0)
      await this.platform.audit({ actor: "system", action, outcome: "info", details: { count: dropped } });
    return dropped;
  }
}
