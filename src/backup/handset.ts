/**
 * The handset's backup SDK (docs/protocols/backup.md §2, §3, §5–§7): a thin I/O shell around the
 * pure parts — selection.ts picks items, item-crypto.ts seals and opens them, envelope.ts writes and
 * reads the signed SyncML envelope, plan.ts decides Add / Replace / Copy / Delete against the parent.
 * Every request is RFC 9421 signed with the identity module's account key (client-http.ts).
 *
 * The work itself sits beside this file, one idea each: run-backup.ts (a backup run), upload.ts
 * (resumable blob uploads, bounded memory), restore.ts (checked restore into a staging area),
 * share.ts (re-wrapped headers, no payload moves). Browser-safe: nothing here imports node:*
 * (the folder data store, data-stores.ts, is Node's and only its types are used).
 */
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import type { UnlockedIdentity } from "../handset/identity-module.ts";
import { backupError, SignedBackupHttp } from "./client-http.ts";
import type {
  BackupClientOptions,
  BackupResult,
  BackupSummary,
  ClientContext,
  DirectoryEntry,
  RestoreResult,
  SharedSummary,
} from "./client-types.ts";
import {
  combineEnvelopeParts,
  DEFAULT_PART_LIMITS,
  type EnvelopePart,
  type EnvelopePartLimits,
  countEnvelopeParts,
  envelopeParts,
  envelopeSigningInput,
  parseEnvelopePart,
} from "./envelope.ts";
import {
  ACCOUNT_ID,
  accountIdOf,
  BACKUP_ERRORS,
  type BackupEnvelope,
  backupUri,
  HANDSET_URI,
  MAX_ENVELOPE_PARTS,
} from "./protocol.ts";
import { type RestoreInput, restoreBackup } from "./restore.ts";
import { type BackupInput, runBackup } from "./run-backup.ts";
import { type ShareInput, type ShareResult, shareBackup } from "./share.ts";
import { verifyEnvelopeSignature } from "./signatures.ts";
import { DEFAULT_UPLOAD_CHUNK } from "./upload.ts";

export { errorOfResponse } from "./client-http.ts";
export type {
  BackupClientOptions,
  BackupProgress,
  BackupResult,
  BackupSummary,
  DirectoryEntry,
  ProgressListener,
  RestoreResult,
  SharedSummary,
} from "./client-types.ts";
export { type PlannedItem, type PlanStep, planBackup } from "./plan.ts";
export type { RestoreInput } from "./restore.ts";
export type { BackupInput } from "./run-backup.ts";
export type { ShareInput, ShareResult } from "./share.ts";
export { verifyEnvelopeSignature } from "./signatures.ts";

export class BackupClient {
  readonly #http: SignedBackupHttp;
  readonly #id: UnlockedIdentity;
  readonly #ctx: ClientContext;
  readonly #partLimits: EnvelopePartLimits;

  constructor(options: BackupClientOptions) {
    this.#partLimits = options.envelopePartLimits ?? DEFAULT_PART_LIMITS;
    const { maxBytes, maxElements } = this.#partLimits;
    if (
      ![maxBytes, maxElements].every((n) => Number.isSafeInteger(n) && n > 0) ||
      maxBytes > DEFAULT_PART_LIMITS.maxBytes ||
      maxElements > DEFAULT_PART_LIMITS.maxElements
    )
      throw backupError(
        BACKUP_ERRORS.invalidOptions,
        "envelopePartLimits are positive integers within the server's limits (16 MiB, 200 000 elements)",
        400,
      );
    const clock = options.clock ?? Date.now;
    this.#id = options.identity;
    this.#http = new SignedBackupHttp({
      baseUrl: options.baseUrl,
      transport: options.transport,
      identity: options.identity,
      clock,
    });
    const handsetUri = options.handsetUri ?? `handset:${options.identity.accountId}`;
    if (!HANDSET_URI.test(handsetUri))
      throw backupError(BACKUP_ERRORS.invalidOptions, "handsetUri is handset: and printable ASCII", 400);
    const uploadChunkBytes = options.uploadChunkBytes ?? DEFAULT_UPLOAD_CHUNK;
    if (!Number.isSafeInteger(uploadChunkBytes) || uploadChunkBytes < 1)
      throw backupError(BACKUP_ERRORS.invalidOptions, "uploadChunkBytes must be a positive integer", 400);
    this.#ctx = {
      http: this.#http,
      identity: this.#id,
      handsetUri,
      clock,
      uploadChunkBytes,
      uploadAttempts: options.uploadAttempts ?? 5,
      envelopePartLimits: this.#partLimits,
      resolve: (who) => this.#resolve(who),
      fetchEnvelope: (backupId, ownerKey) => this.fetchEnvelope(backupId, ownerKey),
      publish: (envelope) => this.publish(envelope),
      list: () => this.list(),
    };
  }

  get accountId(): string {
    return this.#id.accountId;
  }

  // --- accounts and the directory --------------------------------------------------------------

  /** Creates the account (again with the same keys: fine); `backup.handle_taken` for another's handle. */
  async register(options: { handle?: string } = {}): Promise<{ accountId: string; handle?: string }> {
    await this.#http.json("POST", "/v1/backup/accounts", {
      signingKey: toBase64url(this.#id.accountPublicKey),
      recipient: this.#id.recipient,
      ...(options.handle === undefined ? {} : { handle: options.handle }),
    });
    return {
      accountId: this.#id.accountId,
      ...(options.handle === undefined ? {} : { handle: options.handle }),
    };
  }

  /**
   * A user's public keys from the directory by handle. The account id is recomputed from the
   * signing key, so the directory cannot pair a handle with someone else's key under the right id.
   */
  async lookup(handle: string): Promise<DirectoryEntry> {
    const entry = await this.#http.json<DirectoryEntry>(
      "GET",
      `/v1/backup/directory/${encodeURIComponent(handle)}`,
    );
    return checkedEntry(entry, { handle });
  }

  /**
   * A user's public keys by account id (`GET /v1/backup/directory?account=acct_…`), for a user
   * without a handle. The signing key must hash to that very id, so the directory cannot answer
   * with another user's keys.
   */
  async lookupAccount(accountId: string): Promise<DirectoryEntry> {
    if (!ACCOUNT_ID.test(accountId))
      throw backupError(BACKUP_ERRORS.invalidOptions, `${accountId} is not an account id`, 400);
    const entry = await this.#http.json<DirectoryEntry>(
      "GET",
      `/v1/backup/directory?account=${encodeURIComponent(accountId)}`,
    );
    return checkedEntry(entry, { accountId });
  }

  /** A user named by handle or by account id (`acct_…`). */
  #resolve(who: string): Promise<DirectoryEntry> {
    return ACCOUNT_ID.test(who) ? this.lookupAccount(who) : this.lookup(who);
  }

  // --- listing ------------------------------------------------------------------------------

  async list(): Promise<BackupSummary[]> {
    const body = await this.#http.json<{ backups: BackupSummary[] } | BackupSummary[]>(
      "GET",
      "/v1/backup/backups",
    );
    return Array.isArray(body) ? body : body.backups;
  }

  async sharedWithMe(): Promise<SharedSummary[]> {
    const body = await this.#http.json<{ shared: SharedSummary[] } | SharedSummary[]>(
      "GET",
      "/v1/backup/shared",
    );
    return Array.isArray(body) ? body : body.shared;
  }

  async delete(backupId: string): Promise<void> {
    await this.#http.send("DELETE", backupUri(backupId));
  }

  /**
   * Fetches an envelope — every part of it, for an envelope in parts (§4 Parts) — checks each
   * part's signature against `ownerKey` (or our own), parses and joins them. Another account's
   * envelope without `ownerKey` is backup.owner_required: whose key to trust is the caller's
   * choice, never the server's.
   */
  async fetchEnvelope(backupId: string, ownerKey?: Uint8Array): Promise<{ envelope: BackupEnvelope }> {
    const key = ownerKey ?? this.#id.accountPublicKey;
    const parts: EnvelopePart[] = [];
    do {
      const n = parts.length + 1;
      const res = await this.#http.send("GET", backupUri(backupId) + (n === 1 ? "" : `?part=${n}`), {
        headers: { accept: "application/vnd.syncml+xml, application/json" },
      });
      const servedOwner = res.headers["backup-owner"];
      if (ownerKey === undefined && servedOwner !== undefined && servedOwner !== this.#id.accountId)
        throw backupError(
          BACKUP_ERRORS.ownerRequired,
          `${backupId} belongs to ${servedOwner}: name its owner (handle or account id) to check its signature`,
          400,
          { backupId, owner: servedOwner },
        );
      const signatureHeader = res.headers["envelope-signature"];
      let signature: Uint8Array | undefined;
      try {
        signature =
          signatureHeader === undefined ? undefined : fromBase64url(signatureHeader, "Envelope-Signature");
      } catch {
        signature = undefined;
      }
      if (signature === undefined || !verifyEnvelopeSignature(res.body, signature, key))
        throw backupError(
          BACKUP_ERRORS.signatureInvalid,
          `the envelope of ${backupId} is not signed by its owner`,
          422,
          { backupId },
        );
      const part = parseEnvelopePart(res.body);
      // Signed, but is it the one we asked for, by whom we think? (A signed envelope of another
      // backup, or another part of this one.)
      if (
        part.envelope.backupId !== backupId ||
        part.envelope.source.account !== accountIdOf(key) ||
        part.msgId !== n
      )
        throw backupError(
          BACKUP_ERRORS.signatureInvalid,
          `the envelope served for ${backupId}${n === 1 ? "" : ` (part ${n})`} is another one`,
          422,
          { backupId, ...(n === 1 ? {} : { part: n }) },
        );
      parts.push(part);
    } while (!parts.at(-1)!.final && parts.length < MAX_ENVELOPE_PARTS);
    return { envelope: combineEnvelopeParts(parts) };
  }

  /**
   * Signs an envelope with the account key and lists it (PUT), in parts when it is larger than
   * one message may be (each part but the last waits on the server; the last lists the backup):
   * all or nothing on the server.
   */
  async publish(envelope: BackupEnvelope): Promise<void> {
    // Refused before the first PUT when it cannot fit; then each part is written as it is sent.
    countEnvelopeParts(envelope, this.#partLimits);
    for (const xml of envelopeParts(envelope, this.#partLimits)) {
      const signature = this.#id.sign(envelopeSigningInput(xml));
      await this.#http.send("PUT", backupUri(envelope.backupId), {
        body: xml,
        headers: {
          "content-type": "application/vnd.syncml+xml",
          "envelope-signature": toBase64url(signature),
        },
      });
    }
  }

  // --- the work (run-backup.ts, restore.ts, share.ts) ----------------------------------------

  /**
   * Backs up what `selection` picks from `from`, incrementally against the latest own backup, to the
   * owner and the users of `shareWith` (handles or account ids). Returns what it did; nothing is
   * listed unless all of it went up.
   */
  backup(input: BackupInput): Promise<BackupResult> {
    return runBackup(this.#ctx, input);
  }

  /**
   * Restores one backup (own, or a share when `owner` names the sharer by handle or account id)
   * into `into`; see restore.ts. A damaged backup restores nothing: `backup.restore_damaged`.
   */
  restore(input: RestoreInput): Promise<RestoreResult> {
    return restoreBackup(this.#ctx, input);
  }

  /** Shares a backup (or chosen items) with users named by handle or account id; see share.ts. */
  share(input: ShareInput): Promise<ShareResult> {
    return shareBackup(this.#ctx, input);
  }

  /** Drops one account (an `acct_…` or a handle) from a share. */
  async revokeShare(backupId: string, account: string): Promise<void> {
    const accountId = ACCOUNT_ID.test(account) ? account : (await this.lookup(account)).accountId;
    await this.#http.send("DELETE", `/v1/backup/shares/${backupId}/${accountId}`);
  }
}

/** A directory answer whose key hashes to its account id, and is the one asked for. */
function checkedEntry(entry: DirectoryEntry, asked: { handle?: string; accountId?: string }): DirectoryEntry {
  let key: Uint8Array;
  try {
    key = fromBase64url(entry.signingKey, "signingKey");
  } catch {
    throw backupError(
      BACKUP_ERRORS.directoryInvalid,
      "the directory sent a malformed signing key",
      502,
      asked,
    );
  }
  if (key.length !== 32 || accountIdOf(key) !== entry.accountId)
    throw backupError(
      BACKUP_ERRORS.directoryInvalid,
      "the directory's account id is not its key's",
      502,
      asked,
    );
  if (asked.accountId !== undefined && entry.accountId !== asked.accountId)
    throw backupError(
      BACKUP_ERRORS.directoryInvalid,
      "the directory answered for another account",
      502,
      asked,
    );
  if (asked.handle !== undefined && entry.handle !== asked.handle)
    throw backupError(
      BACKUP_ERRORS.directoryInvalid,
      "the directory answered for another handle",
      502,
      asked,
    );
  return entry;
}
