/**
 * The backup service (docs/protocols/backup.md §5): public storage that cannot read what it keeps.
 * Accounts are public keys (an Ed25519 signing key, an age recipient); blobs arrive by resumable
 * upload (uploads.ts) into the platform's blob store and are published once their declared size and
 * SHA-256 hold; an envelope (the owner's signed SyncML XML) is listed in one transaction with its
 * blob references, shares and quota; deleting it drops the blobs no envelope references any more.
 *
 * Another account's backup, blob or upload answers exactly as a missing one (backup.not_found),
 * and the attempt is audited. Routes (routes.ts) only parse, authorise and call this.
 */

import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { toHex } from "../core/codec/bytes.ts";
import { constantTimeEqual } from "../core/crypto/ct.ts";
import { verify as verifyEd25519 } from "../core/crypto/ed25519.ts";
import { HandsafeError } from "../core/errors.ts";
import { parseRange } from "../platform/http/range.ts";
import { type PeriodicJob, startPeriodic } from "../platform/periodic.ts";
import { type BlobDownload, blobDamage, exactly } from "./blob-download.ts";
import {
  type EnvelopePart,
  envelopeHeaderKey,
  envelopeSigningInput,
  EnvelopeJoiner,
  parseEnvelopePart,
  partRefusal,
} from "./envelope.ts";
import {
  ACCOUNT_ID,
  type BackupSummary,
  BLOB_ID,
  backupUri,
  blobIdOfUri,
  type SharedSummary,
} from "./protocol.ts";

export type { BackupSummary, SharedSummary };

import {
  blobDamaged,
  blobKey,
  blobMissing,
  envelopeInvalid,
  notFound,
  quotaExceeded,
  signatureInvalid,
} from "./server-errors.ts";
import * as store from "./store.ts";
import { BackupUploads } from "./uploads.ts";

export type { BlobDownload } from "./blob-download.ts";
export {
  MAX_BLOB_BYTES,
  MAX_ENVELOPE_BYTES,
  MAX_PATCH_BYTES,
  UPLOAD_TTL_MS,
} from "./protocol.ts";
export { type BackupDeps, notFound, uploadUri } from "./server-errors.ts";

const ED25519_SIGNATURE_BYTES = 64;

/** PUT of a part before the last (§4 Parts): it waits for the rest. */
export interface StagedPart {
  id: string;
  part: number;
  staged: true;
}

const backupExists = () =>
  new HandsafeError("backup.exists", "a backup with this id exists", { status: 409 });

/** One part of an envelope as it came: read, and as signed. */
interface SignedPart {
  part: EnvelopePart;
  xml: Uint8Array;
  signature: Uint8Array;
}

// --- views -----------------------------------------------------------------------------------------

export interface AccountView {
  accountId: string;
  signingKey: string;
  recipient: string;
  handle: string | null;
  createdAt: number;
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

export class BackupService extends BackupUploads {
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

  /** The operator's view of storage: usage against the quota and backup counts, no content. */
  async accountUsage(page: { after?: string; limit: number }): Promise<{
    quotaBytes: number;
    accounts: store.AccountUsage[];
  }> {
    return { quotaBytes: this.quota, accounts: await store.accountUsage(this.db, page) };
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

  /** The same public record by account id, for a user without a handle (handle then null). */
  async directoryByAccount(accountId: string, asker: store.AccountRow): Promise<AccountView> {
    const a = ACCOUNT_ID.test(accountId) ? await store.findAccount(this.db, accountId) : undefined;
    if (!a)
      return this.refuse(notFound(), {
        actor: `account:${asker.id}`,
        action: "backup.directory_lookup",
        details: { account: accountId },
      });
    return accountView(a);
  }

  // --- blobs ----------------------------------------------------------------------------------------

  /**
   * The blob's bytes (or a range), to its owner or an account a live share of it names — once the
   * blob store's header agrees with the row on size and SHA-256 (else 500 backup.blob_damaged,
   * audited), so the Content-Length announced is the length served.
   */
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
    const sha256 = toHex(b.sha256);
    const damage = await blobDamage(this.blobs, blobKey(id), { size: b.size, sha256 });
    if (damage !== undefined)
      return this.refuse(blobDamaged(id), {
        actor: `account:${account.id}`,
        action: "backup.blob_read",
        subject: `blob:${id}`,
        details: { damage },
      });
    const length = r === undefined ? b.size : r.end - r.start + 1;
    return {
      size: b.size,
      sha256,
      range: r,
      body: exactly(this.blobs.get(blobKey(id), r), length, id),
    };
  }

  // --- envelopes ------------------------------------------------------------------------------------

  /**
   * Takes one message of an envelope (§4 Parts), signed by the account's key (Envelope-Signature
   * over its XML), its id the path's, its source the signer. A whole envelope (MsgID 1 with
   * <Final/>) is listed at once; parts before the last wait, in order, counted in the quota
   * (answer: `{staged}`), and the one with <Final/> lists the whole backup from all of them.
   * Listing checks the joined envelope: every blob it names complete and the account's own (or,
   * for Copy, referenced by one of its earlier backups) with the size and SHA-256 the envelope
   * says, every SharedWith account real. Then one transaction: the envelope, its parts, its blob
   * references, its shares, the quota, the audit record — all or nothing.
   */
  async putEnvelope(
    account: store.AccountRow,
    backupId: string,
    xml: Uint8Array,
    signatureHeader: string | undefined,
  ): Promise<BackupSummary | StagedPart> {
    const actor = `account:${account.id}`;
    return this.audited(
      { actor, action: "backup.backup_listed", subject: `backup:${backupId}` },
      async () => {
        const signature = decodeSignature(signatureHeader);
        if (!verifyEd25519(account.signingKey, envelopeSigningInput(xml), signature))
          throw signatureInvalid("Envelope-Signature does not verify under this account's key");
        if (await store.envelopeExists(this.db, backupId)) throw backupExists();
        const part = parseEnvelopePart(xml);
        const env = part.envelope;
        if (env.backupId !== backupId) throw envelopeInvalid("SessionID is not the backup id of the path");
        if (env.source.account !== account.id)
          throw signatureInvalid("the envelope's Source names another account than its signer");
        if (env.target !== backupUri(backupId))
          throw envelopeInvalid(`Target must be ${backupUri(backupId)}`);
        if (part.msgId === 1 && part.final) return this.listEnvelope(account, [{ part, xml, signature }]);

        const staged = await store.stagedParts(this.db, backupId);
        if (staged.some((p) => p.accountId !== account.id)) throw backupExists();
        if (staged.some((p) => p.part === part.msgId)) {
          // The same part again (a retry after a lost answer) is answered again; another is a conflict.
          const held = await store.findPart(this.db, backupId, part.msgId, "staged");
          if (part.final || !held || !constantTimeEqual(held.xml, xml)) throw backupExists();
          return { id: backupId, part: part.msgId, staged: true };
        }
        if (part.msgId !== staged.length + 1)
          throw partRefusal(
            part.msgId,
            "SyncML/SyncHdr/MsgID",
            `part ${part.msgId} before part ${staged.length + 1}: send them in order`,
          );
        const headerKey = envelopeHeaderKey(env);
        if (staged.length > 0 && staged[0]!.headerKey !== headerKey)
          throw partRefusal(part.msgId, "SyncML/SyncHdr", "not the first part's header");

        if (!part.final) {
          await this.db.transaction().execute(async (trx) => {
            const row = { backupId, part: part.msgId, accountId: account.id, headerKey, xml, signature };
            if (!(await store.insertPart(trx, { ...row, receivedAt: this.now(), listed: false })))
              throw backupExists();
            if (!(await store.takeQuota(trx, account.id, xml.length, this.quota)))
              throw quotaExceeded(this.quota);
            await this.platform.audit(
              {
                actor,
                action: "backup.part_staged",
                subject: `backup:${backupId}`,
                outcome: "allow",
                details: { part: part.msgId, bytes: xml.length },
              },
              trx,
            );
          });
          return { id: backupId, part: part.msgId, staged: true };
        }
        // The last part: every staged part read again as it was signed, one at a time.
        const db = this.db;
        async function* all(): AsyncGenerator<SignedPart> {
          for (const p of staged) {
            const row = await store.findPart(db, backupId, p.part, "staged");
            if (!row) throw partRefusal(p.part, "SyncML", "a part went while the backup was being listed");
            yield { part: parseEnvelopePart(row.xml), xml: row.xml, signature: row.signature };
          }
          yield { part, xml, signature };
        }
        return this.listEnvelope(account, all());
      },
    );
  }

  /**
   * Lists the envelope of `parts` (in order, taken one at a time: of each only its blobs and item
   * ids are kept, and part 1's bytes for the envelope row): joins them, checks its blobs and
   * accounts, then one transaction. Every part but the last is staged, its XML already in the quota.
   */
  private async listEnvelope(
    account: store.AccountRow,
    parts: Iterable<SignedPart> | AsyncIterable<SignedPart>,
  ): Promise<BackupSummary> {
    const actor = `account:${account.id}`;
    // Every blob the snapshot names, once, with what the envelope says of it.
    const wanted = new Map<string, { uri: string; size: number; sha256: string; copy: boolean }>();
    const joiner = new EnvelopeJoiner({
      item(item) {
        if (!("blob" in item.payload)) return;
        const { uri, size, sha256 } = item.payload.blob;
        const id = blobIdOfUri(uri);
        if (id === undefined) throw blobMissing(uri);
        const seen = wanted.get(id);
        const hex = toHex(sha256);
        if (seen && (seen.size !== size || seen.sha256 !== hex)) throw blobMissing(uri);
        wanted.set(id, { uri, size, sha256: hex, copy: (seen?.copy ?? true) && item.command === "Copy" });
      },
      deleted() {},
    });
    let xmlBytes = 0;
    let partCount = 0;
    let first: SignedPart | undefined;
    let last: SignedPart | undefined;
    for await (const p of parts) {
      joiner.add(p.part);
      xmlBytes += p.xml.length;
      partCount++;
      first ??= p;
      last = p;
    }
    const joined = joiner.finish();
    const env = joined.header;
    const backupId = env.backupId;
    const sharedWith = [...new Set(env.sharedWith)];
    if (sharedWith.includes(account.id)) throw envelopeInvalid("SharedWith names the owner");
    const known = await store.existingAccounts(this.db, sharedWith);
    const unknown = sharedWith.find((a) => !known.has(a));
    if (unknown !== undefined)
      throw new HandsafeError("backup.not_found", `SharedWith names no account: ${unknown}`, {
        status: 404,
        details: { account: unknown },
      });

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
      items: joined.items,
      bytes: xmlBytes + blobBytes,
      listedAt: this.now(),
      xml: first!.xml,
      signature: first!.signature,
    };
    await this.db.transaction().execute(async (trx) => {
      if (!(await store.insertEnvelope(trx, summary))) throw backupExists();
      if (partCount > 1) {
        // Part 1 is the envelope row's now; the others stay as listed parts, the last one added.
        if ((await store.listStagedParts(trx, backupId)) !== partCount - 2)
          throw partRefusal(partCount, "SyncML", "a part went while the backup was being listed");
        await store.insertPart(trx, {
          backupId,
          part: partCount,
          accountId: account.id,
          headerKey: envelopeHeaderKey(env),
          xml: last!.xml,
          signature: last!.signature,
          receivedAt: summary.listedAt,
          listed: true,
        });
      }
      await store.insertEnvelopeBlobs(trx, backupId, ids);
      // A blob deleted since the check above (its last envelope went) is missing now.
      if ((await store.addBlobRefs(trx, ids)) !== ids.length) throw blobMissing("(a referenced blob)");
      await store.insertShares(trx, backupId, sharedWith, summary.listedAt);
      // The parts before the last took their quota when they were staged.
      if (!(await store.takeQuota(trx, account.id, last!.xml.length, this.quota)))
        throw quotaExceeded(this.quota);
      await this.platform.audit(
        {
          actor,
          action: "backup.backup_listed",
          subject: `backup:${backupId}`,
          outcome: "allow",
          details: {
            kind: env.kind,
            items: joined.items,
            blobs: ids.length,
            sharedWith,
            parts: partCount,
          },
        },
        trx,
      );
    });
    return summaryOf(summary);
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
    part = 1,
  ): Promise<{ xml: Uint8Array; signature: Uint8Array; owner: string }> {
    const e = await store.findEnvelopeSummary(this.db, id);
    const allowed =
      e !== undefined && (e.accountId === account.id || (await store.liveShare(this.db, id, account.id)));
    if (!e || !allowed)
      return this.notYours(`account:${account.id}`, "backup.backup_read", `backup:${id}`, !!e);
    // Part 1 is the envelope row's XML; parts 2..n are rows of their own.
    const signed =
      part === 1 ? await store.findEnvelope(this.db, id) : await store.findPart(this.db, id, part, "listed");
    if (!signed) throw notFound();
    return { xml: signed.xml, signature: signed.signature, owner: e.accountId };
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
      await store.deleteParts(trx, id);
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
): PeriodicJob<number> {
  return startPeriodic(() => service.sweepStaleUploads(), intervalMs, onError);
}
