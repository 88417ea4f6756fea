/**
 * The handset's backup SDK (docs/protocols/backup.md §2, §3, §6, §7): a thin I/O shell around the pure
 * parts — selection.ts picks items, item-crypto.ts seals and opens them, envelope.ts writes and reads
 * the signed SyncML envelope, `planBackup` below decides Add / Replace / Copy / Delete against the
 * parent. Every request is RFC 9421 signed with the identity module's account key (keyid = account id).
 *
 * Memory stays bounded whatever the item sizes: an item is read one 64 KiB chunk at a time, and a
 * blob goes up in PATCH requests of at most `uploadChunkBytes` (8 MiB) each, re-sealed from the
 * plaintext (deterministically) from the offset HEAD reports when a PATCH fails. The envelope is PUT
 * only after every blob completed, so the server never lists half a backup.
 */
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { concatBytes, fromUtf8, toHex, utf8 } from "../core/codec/bytes.ts";
import { verify } from "../core/crypto/ed25519.ts";
import { createHash } from "../core/crypto/hash.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import { type SignatureProfile, signRequest } from "../core/http-signatures/index.ts";
import {
  createHttpClient,
  type HttpClient,
  type StreamingHttpTransport,
  type TransportResponse,
} from "../handset/http-client.ts";
import { accountIdOf, type UnlockedIdentity } from "../handset/identity-module.ts";
import type { DataStores, StoredItem } from "./data-stores.ts";
import { encodeEnvelope, envelopeSigningInput, parseEnvelope } from "./envelope.ts";
import {
  collectBytes,
  type ItemMetadata,
  isDamage,
  openItem,
  openName,
  type PayloadDigest,
  rewrapHeader,
  type SealedItem,
  sealItem,
  unwrapItemKey,
} from "./item-crypto.ts";
import {
  ACCOUNT_ID,
  BACKUP_ERRORS,
  type BackupEnvelope,
  backupUri,
  type EnvelopeItem,
  HANDSET_URI,
  INLINE_MAX_BYTES,
  newBackupId,
} from "./protocol.ts";
// TODO(protocol.ts): the profiles belong in the pure protocol module; request-auth.ts is server code.
import { REQUEST_SIGNATURE, UPLOAD_SIGNATURE } from "./request-auth.ts";
import { compileSelection, type Selection } from "./selection.ts";

// --- public types ------------------------------------------------------------------------------

/**
 * Progress of a run. `hash`, `seal` (first pass), `download`: bytes of plaintext over the whole run's;
 * `upload` and the re-seal of a changed item: that item's payload / plaintext bytes.
 */
export interface BackupProgress {
  phase: "scan" | "hash" | "seal" | "upload" | "envelope" | "download" | "verify" | "commit" | "share";
  /** The item's path (its id before the path is known). */
  item?: string;
  bytesDone: number;
  bytesTotal: number;
}
export type ProgressListener = (p: BackupProgress) => void;

export interface DirectoryEntry {
  handle: string;
  accountId: string;
  recipient: string;
  /** base64url Ed25519 public key; its SHA-256 is the account id (checked on lookup). */
  signingKey: string;
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

export interface BackupResult {
  backupId: string;
  parent?: string;
  added: number;
  replaced: number;
  copied: number;
  deleted: number;
  /** Blobs uploaded by this run (unchanged and inline items upload none). */
  uploads: number;
  /** Payload bytes sent in PATCH requests (a resumed upload counts each byte once). */
  bytesUploaded: number;
}

export interface RestoreResult {
  backupId: string;
  owner: string;
  items: Array<{ id: string; path: string; size: number }>;
}

export interface BackupClientOptions {
  /** e.g. the test server's URL; a path prefix is allowed. */
  baseUrl: string;
  /** Pinned node transport (createNodeTransport({pin})) or any streaming transport. */
  transport: StreamingHttpTransport;
  identity: UnlockedIdentity;
  /** `<Source><LocURI>`; default `handset:` + the account id. */
  handsetUri?: string;
  /** Largest PATCH body (default 8 MiB): the upload's memory bound. */
  uploadChunkBytes?: number;
  /** PATCH attempts per blob before giving up (default 5). */
  uploadAttempts?: number;
  /** Signature `created` clock. */
  clock?: () => number;
}

// --- the pure part: what a backup run does ---------------------------------------------------

export interface PlannedItem {
  item: StoredItem;
  id: string;
  hash: Uint8Array;
}

export type PlanStep =
  | { command: "Copy"; planned: PlannedItem; parent: EnvelopeItem }
  | { command: "Add" | "Replace"; planned: PlannedItem };

/**
 * Relative to the parent snapshot: an item whose id and HMAC hash are the parent's is carried over
 * (Copy), a known id with another hash is Replaced, an unknown one Added; the parent's ids not selected
 * now are Deleted (information only — the envelope lists the whole snapshot anyway).
 */
export function planBackup(
  current: readonly PlannedItem[],
  parent: BackupEnvelope | undefined,
): { steps: PlanStep[]; deleted: string[] } {
  const previous = new Map((parent?.items ?? []).map((i) => [i.id, i] as const));
  const steps: PlanStep[] = [];
  const seen = new Set<string>();
  for (const planned of current) {
    seen.add(planned.id);
    const before = previous.get(planned.id);
    if (before === undefined) steps.push({ command: "Add", planned });
    else if (bytesEqual(before.hash, planned.hash) && before.size === planned.item.size)
      steps.push({ command: "Copy", planned, parent: before });
    else steps.push({ command: "Replace", planned });
  }
  const deleted = [...previous.keys()].filter((id) => !seen.has(id));
  return { steps, deleted };
}

/** `"handsafe/v1/backup/envelope" || 0x00 || xml` verified against the owner's key. */
export function verifyEnvelopeSignature(
  xml: Uint8Array,
  signature: Uint8Array,
  ownerKey: Uint8Array,
): boolean {
  return verify(ownerKey, envelopeSigningInput(xml), signature);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

const DEFAULT_UPLOAD_CHUNK = 8 * 1024 * 1024;

function backupError(code: string, message: string, status: number, details?: Record<string, unknown>) {
  return new HandsafeError(code, message, { status, ...(details ? { details } : {}) });
}

/** Concatenating chunks into one bounded buffer (a PATCH body). */
class ChunkBuffer {
  readonly #buffer: Uint8Array;
  length = 0;
  constructor(capacity: number) {
    this.#buffer = new Uint8Array(capacity);
  }
  get free(): number {
    return this.#buffer.length - this.length;
  }
  push(bytes: Uint8Array): void {
    this.#buffer.set(bytes, this.length);
    this.length += bytes.length;
  }
  view(): Uint8Array {
    return this.#buffer.subarray(0, this.length);
  }
  clear(): void {
    this.length = 0;
  }
}

// --- the client ------------------------------------------------------------------------------

export class BackupClient {
  readonly #baseUrl: string;
  readonly #transport: StreamingHttpTransport;
  readonly #http: HttpClient;
  readonly #id: UnlockedIdentity;
  readonly #handsetUri: string;
  readonly #chunk: number;
  readonly #attempts: number;
  readonly #clock: () => number;

  constructor(options: BackupClientOptions) {
    this.#http = createHttpClient({ baseUrl: options.baseUrl, transport: options.transport });
    this.#baseUrl = this.#http.baseUrl;
    this.#transport = options.transport;
    this.#id = options.identity;
    this.#handsetUri = options.handsetUri ?? `handset:${options.identity.accountId}`;
    if (!HANDSET_URI.test(this.#handsetUri))
      throw backupError("backup.invalid_options", "handsetUri is handset: and printable ASCII", 400);
    this.#chunk = options.uploadChunkBytes ?? DEFAULT_UPLOAD_CHUNK;
    if (!Number.isSafeInteger(this.#chunk) || this.#chunk < 1)
      throw backupError("backup.invalid_options", "uploadChunkBytes must be a positive integer", 400);
    this.#attempts = options.uploadAttempts ?? 5;
    this.#clock = options.clock ?? Date.now;
  }

  get accountId(): string {
    return this.#id.accountId;
  }

  // --- signed HTTP ---------------------------------------------------------------------------

  #sign(
    profile: SignatureProfile,
    method: string,
    path: string,
    headers: Record<string, string>,
    body: Uint8Array | undefined,
  ): Record<string, string> {
    return signRequest(
      profile,
      this.#id.httpSigningKey(),
      { method, url: this.#baseUrl + path, headers, ...(body === undefined ? {} : { body }) },
      { keyId: this.#id.accountId, created: Math.floor(this.#clock() / 1000) },
    );
  }

  async #send(
    method: string,
    path: string,
    options: {
      json?: unknown;
      body?: Uint8Array;
      headers?: Record<string, string>;
      profile?: SignatureProfile;
    } = {},
  ): Promise<TransportResponse> {
    const headers: Record<string, string> = { accept: "application/json", ...options.headers };
    let body = options.body;
    if (options.json !== undefined) {
      headers["content-type"] = "application/json";
      body = utf8(JSON.stringify(options.json));
    }
    const profile = options.profile ?? REQUEST_SIGNATURE;
    // The upload profile covers content-length instead of a digest: the body streams unread.
    const signed = this.#sign(
      profile,
      method,
      path,
      headers,
      profile === UPLOAD_SIGNATURE ? undefined : body,
    );
    const response = await this.#transport.send({
      method,
      url: this.#baseUrl + path,
      headers: { ...headers, ...signed },
      ...(body === undefined ? {} : { body }),
    });
    if (response.status >= 400) throw errorOfResponse(method, path, response);
    return response;
  }

  async #json<T>(method: string, path: string, json?: unknown): Promise<T> {
    const res = await this.#send(method, path, json === undefined ? {} : { json });
    if (res.body.length === 0) return undefined as T;
    return JSON.parse(fromUtf8(res.body)) as T;
  }

  // --- accounts and the directory --------------------------------------------------------------

  /** Creates the account (again with the same keys: fine); `backup.handle_taken` for another's handle. */
  async register(options: { handle?: string } = {}): Promise<{ accountId: string; handle?: string }> {
    await this.#json("POST", "/v1/backup/accounts", {
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
   * A user's public keys from the directory. The account id is recomputed from the signing key, so
   * the directory cannot pair a handle with someone else's key under the right id.
   */
  async lookup(handle: string): Promise<DirectoryEntry> {
    const entry = await this.#json<DirectoryEntry>(
      "GET",
      `/v1/backup/directory/${encodeURIComponent(handle)}`,
    );
    let key: Uint8Array;
    try {
      key = fromBase64url(entry.signingKey, "signingKey");
    } catch {
      throw backupError("backup.directory_invalid", "the directory sent a malformed signing key", 502, {
        handle,
      });
    }
    if (key.length !== 32 || accountIdOf(key) !== entry.accountId)
      throw backupError("backup.directory_invalid", "the directory's account id is not its key's", 502, {
        handle,
      });
    return entry;
  }

  /** A user named by handle. The directory (§5) has no lookup by account id, so an `acct_…` is refused. */
  async #resolve(who: string): Promise<DirectoryEntry> {
    if (ACCOUNT_ID.test(who))
      throw backupError(
        "backup.handle_required",
        `name users by handle: the directory cannot find the keys of ${who}`,
        400,
      );
    return this.lookup(who);
  }

  // --- listing ------------------------------------------------------------------------------

  async list(): Promise<BackupSummary[]> {
    const body = await this.#json<{ backups: BackupSummary[] } | BackupSummary[]>(
      "GET",
      "/v1/backup/backups",
    );
    return Array.isArray(body) ? body : body.backups;
  }

  async sharedWithMe(): Promise<SharedSummary[]> {
    const body = await this.#json<{ shared: SharedSummary[] } | SharedSummary[]>("GET", "/v1/backup/shared");
    return Array.isArray(body) ? body : body.shared;
  }

  async delete(backupId: string): Promise<void> {
    await this.#send("DELETE", backupUri(backupId));
  }

  /** Fetches an envelope, checks its signature against `ownerKey` (or our own), parses it. */
  async fetchEnvelope(
    backupId: string,
    ownerKey?: Uint8Array,
  ): Promise<{ xml: Uint8Array; envelope: BackupEnvelope }> {
    const res = await this.#send("GET", backupUri(backupId), {
      headers: { accept: "application/vnd.syncml+xml, application/json" },
    });
    const servedOwner = res.headers["backup-owner"];
    if (ownerKey === undefined && servedOwner !== undefined && servedOwner !== this.#id.accountId)
      throw backupError(
        "backup.owner_required",
        `${backupId} belongs to ${servedOwner}: name its owner's handle to check its signature`,
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
    const key = ownerKey ?? this.#id.accountPublicKey;
    if (signature === undefined || !verifyEnvelopeSignature(res.body, signature, key))
      throw backupError(
        BACKUP_ERRORS.signatureInvalid,
        `the envelope of ${backupId} is not signed by its owner`,
        422,
        {
          backupId,
        },
      );
    const envelope = parseEnvelope(res.body);
    // Signed, but is it the one we asked for, by whom we think? (A signed envelope of another backup.)
    if (envelope.backupId !== backupId || envelope.source.account !== accountIdOf(key))
      throw backupError(
        BACKUP_ERRORS.signatureInvalid,
        `the envelope served for ${backupId} is another one`,
        422,
        {
          backupId,
        },
      );
    return { xml: res.body, envelope };
  }

  /** Signs an envelope with the account key and lists it (PUT): all or nothing on the server. */
  async publish(envelope: BackupEnvelope): Promise<void> {
    const xml = encodeEnvelope(envelope);
    const signature = this.#id.sign(envelopeSigningInput(xml));
    await this.#send("PUT", backupUri(envelope.backupId), {
      body: xml,
      headers: { "content-type": "application/vnd.syncml+xml", "envelope-signature": toBase64url(signature) },
    });
  }

  /** The newest listed Kind=backup of this account: the parent of the next incremental backup. */
  async #latestOwnBackup(): Promise<BackupEnvelope | undefined> {
    const backups = (await this.list()).filter((b) => b.kind === "backup");
    if (backups.length === 0) return undefined;
    const newest = backups.reduce((a, b) => (b.createdAt >= a.createdAt ? b : a));
    return (await this.fetchEnvelope(newest.id)).envelope;
  }

  // --- backup ---------------------------------------------------------------------------------

  /**
   * Backs up what `selection` picks from `from`, incrementally against the latest own backup, to the
   * owner and the users of `shareWith` (handles). Returns what it did; nothing is listed unless all
   * of it went up.
   */
  async backup(input: {
    from: DataStores;
    selection: Selection;
    shareWith?: readonly string[];
    onProgress?: ProgressListener;
    /** Parent override: a backup id, or null for a full backup. Default: the newest own backup. */
    parent?: string | null;
  }): Promise<BackupResult> {
    const progress = input.onProgress ?? (() => {});
    const selection = compileSelection(input.selection);
    const shared = await Promise.all((input.shareWith ?? []).map((h) => this.#resolve(h)));
    const recipients = [this.#id.recipient, ...shared.map((s) => s.recipient)];
    const sharedWith = [...new Set(shared.map((s) => s.accountId))];
    const parent =
      input.parent === null
        ? undefined
        : input.parent !== undefined
          ? (await this.fetchEnvelope(input.parent)).envelope
          : await this.#latestOwnBackup();
    const sameRecipients = parent !== undefined && sameSet(parent.recipients, recipients);

    progress({ phase: "scan", bytesDone: 0, bytesTotal: 0 });
    const items = (await input.from.list()).filter((i) => selection.matches(i.path));
    const total = items.reduce((n, i) => n + i.size, 0);
    const parentIds = new Set((parent?.items ?? []).map((i) => i.id));

    // Items the parent does not know are sealed in the same pass that hashes them.
    const planned: PlannedItem[] = [];
    const presealed = new Map<string, { sealed: SealedItem; digest: PayloadDigest; inline?: Uint8Array }>();
    let done = 0;
    for (const item of items) {
      const id = this.#id.itemId(item.path);
      if (parentIds.has(id)) {
        planned.push({
          item,
          id,
          hash: await this.#hashOnly(item, (n) =>
            progress({ phase: "hash", item: item.path, bytesDone: done + n, bytesTotal: total }),
          ),
        });
      } else {
        const sealed = this.#seal(item, id, recipients);
        const { digest, inline } = await this.#sealPass(sealed, item, (n) =>
          progress({ phase: "seal", item: item.path, bytesDone: done + n, bytesTotal: total }),
        );
        presealed.set(id, { sealed, digest, ...(inline ? { inline } : {}) });
        planned.push({ item, id, hash: digest.hash! });
      }
      done += item.size;
    }

    const { steps, deleted } = planBackup(planned, parent);
    const out: EnvelopeItem[] = [];
    let uploads = 0;
    let bytesUploaded = 0;
    const counts = { Add: 0, Replace: 0, Copy: 0 };
    for (const step of steps) {
      counts[step.command]++;
      const { item, id } = step.planned;
      if (step.command === "Copy") {
        // Carried over verbatim; only a changed recipient set re-wraps the header (payload untouched).
        const header = sameRecipients
          ? step.parent.header
          : rewrapHeader(step.parent.header, this.#id, recipients);
        out.push({ ...step.parent, command: "Copy", header });
        continue;
      }
      let pre = presealed.get(id);
      if (pre === undefined) {
        const sealed = this.#seal(item, id, recipients);
        const pass = await this.#sealPass(sealed, item, (n) =>
          progress({ phase: "seal", item: item.path, bytesDone: n, bytesTotal: item.size }),
        );
        pre = { sealed, digest: pass.digest, ...(pass.inline ? { inline: pass.inline } : {}) };
      }
      const base = {
        command: step.command,
        id,
        kind: item.kind,
        size: pre.digest.size,
        hash: pre.digest.hash!,
        name: pre.sealed.name,
        header: pre.sealed.header,
      } as const;
      if (pre.inline !== undefined) {
        out.push({ ...base, payload: { inline: pre.inline } });
        continue;
      }
      const blob = await this.#upload(pre.sealed, pre.digest, item.path, progress, (n) => {
        bytesUploaded += n;
      });
      uploads++;
      out.push({ ...base, payload: { blob } });
    }

    const backupId = newBackupId();
    const envelope: BackupEnvelope = {
      backupId,
      kind: "backup",
      createdAt: this.#clock(),
      ...(parent ? { parent: parent.backupId } : {}),
      source: { handset: this.#handsetUri, account: this.#id.accountId },
      target: backupUri(backupId),
      recipients: [...new Set(recipients)],
      sharedWith,
      items: out,
      deleted,
    };
    progress({ phase: "envelope", bytesDone: total, bytesTotal: total });
    await this.publish(envelope);
    return {
      backupId,
      ...(parent ? { parent: parent.backupId } : {}),
      added: counts.Add,
      replaced: counts.Replace,
      copied: counts.Copy,
      deleted: deleted.length,
      uploads,
      bytesUploaded,
    };
  }

  #seal(item: StoredItem, id: string, recipients: readonly string[]): SealedItem {
    const metadata: ItemMetadata = {
      path: item.path,
      modifiedAt: item.modifiedAt,
      ...(item.contentType === undefined ? {} : { contentType: item.contentType }),
    };
    return sealItem({
      itemId: id,
      metadata,
      recipients,
      plaintext: () => item.open(),
      hasher: () => this.#id.contentHasher(),
    });
  }

  async #hashOnly(item: StoredItem, onBytes: (n: number) => void): Promise<Uint8Array> {
    const hasher = this.#id.contentHasher();
    let n = 0;
    for await (const chunk of item.open()) {
      hasher.update(chunk);
      n += chunk.length;
      onBytes(n);
    }
    return hasher.digest();
  }

  /** One sealing pass: the digests, and the payload itself when the item is small enough to be inline. */
  async #sealPass(
    sealed: SealedItem,
    item: StoredItem,
    onBytes: (n: number) => void,
  ): Promise<{ digest: PayloadDigest; inline?: Uint8Array }> {
    let digest: PayloadDigest | undefined;
    const keep = item.size <= INLINE_MAX_BYTES;
    const parts: Uint8Array[] = [];
    let n = 0;
    for await (const chunk of sealed.payload(0, (d) => (digest = d))) {
      if (keep) parts.push(chunk);
      n += chunk.length;
      onBytes(Math.min(n, item.size));
    }
    if (digest === undefined) throw backupError("internal", "the sealing pass did not finish", 500);
    // The store's size is a hint; what was read decides (a file may have grown since the listing).
    if (digest.size <= INLINE_MAX_BYTES) {
      return { digest, inline: keep ? concatBytes(...parts) : await collectBytes(sealed.payload()) };
    }
    return { digest };
  }

  /**
   * The payload through a resumable upload: PATCHes of at most `uploadChunkBytes`, and after a failed
   * one, HEAD for the offset the server holds and re-seal from there. Completes and checks the answer.
   */
  async #upload(
    sealed: SealedItem,
    digest: PayloadDigest,
    path: string,
    progress: ProgressListener,
    onSent: (n: number) => void,
  ): Promise<{ uri: string; size: number; sha256: Uint8Array }> {
    const size = digest.payloadSize;
    const sha256 = toHex(digest.payloadSha256);
    const started = await this.#json<{ uploadId: string; uri: string }>("POST", "/v1/backup/uploads", {
      size,
      sha256,
    });
    const uploadPath = `/v1/backup/uploads/${started.uploadId}`;
    const buffer = new ChunkBuffer(Math.min(this.#chunk, Math.max(size, 1)));
    let offset = 0;
    let failures = 0;
    while (offset < size) {
      try {
        offset = await this.#patchFrom(sealed, uploadPath, offset, size, buffer, (sent, at) => {
          onSent(sent);
          progress({ phase: "upload", item: path, bytesDone: at, bytesTotal: size });
        });
      } catch (e) {
        if (!isRetryable(e) || ++failures >= this.#attempts) throw e;
        // The server keeps what it stored safely: go on from there, re-sealing from that offset.
        const head = await this.#send("HEAD", uploadPath);
        const held = Number(head.headers["upload-offset"]);
        if (!Number.isSafeInteger(held) || held < 0 || held > size)
          throw backupError(
            BACKUP_ERRORS.uploadMismatch,
            "the server reports an impossible upload offset",
            502,
          );
        offset = held;
      }
    }
    const completed = await this.#json<{ uri: string; size: number; sha256: string }>(
      "POST",
      `${uploadPath}/complete`,
    );
    if (completed.size !== size || completed.sha256 !== sha256)
      throw backupError("backup.upload_mismatch", "the server completed another blob than was sent", 502);
    return { uri: completed.uri, size, sha256: digest.payloadSha256 };
  }

  /** PATCHes the payload from `offset` to its end, one bounded buffer at a time; returns the end offset. */
  async #patchFrom(
    sealed: SealedItem,
    uploadPath: string,
    from: number,
    size: number,
    buffer: ChunkBuffer,
    onPatched: (sent: number, offset: number) => void,
  ): Promise<number> {
    let offset = from;
    const stream = sealed.payload(offset)[Symbol.asyncIterator]();
    try {
      let pending: Uint8Array | undefined;
      for (;;) {
        buffer.clear();
        while (buffer.free > 0) {
          if (pending === undefined) {
            const next = await stream.next();
            if (next.done) break;
            pending = next.value;
          }
          const take = Math.min(buffer.free, pending.length);
          buffer.push(pending.subarray(0, take));
          pending = take === pending.length ? undefined : pending.subarray(take);
        }
        if (buffer.length === 0) return offset;
        if (offset + buffer.length > size)
          throw backupError(BACKUP_ERRORS.uploadMismatch, "the item grew while it was backed up", 409);
        const res = await this.#send("PATCH", uploadPath, {
          body: buffer.view(),
          profile: UPLOAD_SIGNATURE,
          headers: {
            "content-type": "application/offset+octet-stream",
            "upload-offset": String(offset),
            "content-length": String(buffer.length),
          },
        });
        const expected = offset + buffer.length;
        const answered = Number(res.headers["upload-offset"] ?? expected);
        onPatched(buffer.length, answered);
        // The server stored less than it was sent: resynchronise through HEAD.
        if (answered !== expected)
          throw backupError(BACKUP_ERRORS.offsetMismatch, "the upload offset moved unexpectedly", 409);
        offset = expected;
      }
    } finally {
      await stream.return?.(undefined);
    }
  }

  // --- restore ------------------------------------------------------------------------------

  /**
   * Restores one backup (own, or a share when `owner` names the sharer's handle) into `into`: every
   * item is opened and checked — envelope signature, blob SHA-256, every age tag, size, and for own
   * backups the HMAC hash and item id — into a staging area, which replaces the stores only when all
   * of it checked out. Else nothing changes and `backup.restore_damaged` names each damaged item.
   */
  async restore(input: {
    backupId: string;
    into: DataStores;
    /** Only the items these rules pick (by path); the others in the stores stay as they are. */
    items?: Selection;
    /** The sharer's handle, for a backup shared with us. */
    owner?: string;
    /**
     * `replace`: the stores the backup covers are replaced by it; `merge`: its items are added over
     * what is there. Default: replace for a whole own backup, merge for chosen items and shares.
     */
    mode?: "replace" | "merge";
    onProgress?: ProgressListener;
  }): Promise<RestoreResult> {
    const progress = input.onProgress ?? (() => {});
    const ownerKey =
      input.owner === undefined ? undefined : fromBase64url((await this.#resolve(input.owner)).signingKey);
    const own = ownerKey === undefined || bytesEqual(ownerKey, this.#id.accountPublicKey);
    const { envelope } = await this.fetchEnvelope(input.backupId, ownerKey);
    const filter = input.items === undefined ? undefined : compileSelection(input.items);

    // Headers and names first: cheap, and they say which items are wanted and whether we may open any.
    type Opened = { item: EnvelopeItem; metadata: ItemMetadata };
    const damaged: Array<{ id: string; path?: string; code: string }> = [];
    const chosen: Opened[] = [];
    let notRecipient = 0;
    const paths = new Set<string>();
    for (const item of envelope.items) {
      try {
        const { fileKey } = unwrapItemKey(item.header, this.#id);
        const metadata = openName(fileKey, item.id, item.name);
        fileKey.fill(0);
        if (filter !== undefined && !filter.matches(metadata.path)) continue;
        if (own && this.#id.itemId(metadata.path) !== item.id)
          throw backupError("backup.name_invalid", `${item.id} is not the id of ${metadata.path}`, 422);
        if (paths.has(metadata.path))
          throw backupError("backup.name_invalid", `${metadata.path} is listed twice`, 422);
        paths.add(metadata.path);
        chosen.push({ item, metadata });
      } catch (e) {
        if (isHandsafeError(e, BACKUP_ERRORS.notARecipient)) notRecipient++;
        if (!isDamage(e)) throw e;
        damaged.push({ id: item.id, code: e.code });
      }
    }
    if (envelope.items.length > 0 && notRecipient === envelope.items.length)
      throw backupError(
        BACKUP_ERRORS.notARecipient,
        `this identity is not a recipient of ${input.backupId}`,
        403,
        {
          backupId: input.backupId,
        },
      );

    const total = chosen.reduce((n, c) => n + c.item.size, 0);
    let done = 0;
    // A whole own backup is a point in time: the stores it covers become exactly it. Chosen items
    // and shares (someone else's paths) only add and overwrite, never wipe the user's own data.
    const snapshot =
      input.mode === "replace" ||
      (input.mode === undefined && own && envelope.kind === "backup" && filter === undefined);
    const staging = await input.into.stage(
      snapshot ? { replace: [...new Set(chosen.map((c) => c.item.kind))] } : {},
    );
    const restored: RestoreResult["items"] = [];
    try {
      for (const { item, metadata } of chosen) {
        try {
          const opened = openItem({
            itemId: item.id,
            header: item.header,
            name: item.name,
            payload: this.#payloadOf(item),
            unlocked: this.#id,
            // A shared user cannot compute the owner's HMAC: tags, blob hash and signature suffice.
            expected: own
              ? { size: item.size, hash: item.hash, hasher: this.#id.contentHasher() }
              : { size: item.size },
          });
          const base = done;
          let n = 0;
          const counted = (async function* () {
            for await (const chunk of opened.plaintext) {
              n += chunk.length;
              progress({ phase: "download", item: metadata.path, bytesDone: base + n, bytesTotal: total });
              yield chunk;
            }
          })();
          await staging.write(metadata.path, counted, { modifiedAt: metadata.modifiedAt });
          opened.fileKey.fill(0);
          restored.push({ id: item.id, path: metadata.path, size: item.size });
        } catch (e) {
          if (!isDamage(e)) throw e;
          damaged.push({ id: item.id, path: metadata.path, code: e.code });
        }
        done += item.size;
      }
      if (damaged.length > 0)
        throw backupError(
          BACKUP_ERRORS.restoreDamaged,
          `${damaged.length} item(s) of ${input.backupId} are damaged: nothing was restored`,
          422,
          { backupId: input.backupId, items: damaged },
        );
      progress({ phase: "commit", bytesDone: total, bytesTotal: total });
      await staging.commit();
    } catch (e) {
      await staging.abort();
      throw e;
    }
    return { backupId: input.backupId, owner: envelope.source.account, items: restored };
  }

  /** The item's payload bytes: inline, or the blob streamed with its size and SHA-256 checked. */
  #payloadOf(item: EnvelopeItem): AsyncIterable<Uint8Array> {
    if ("inline" in item.payload) {
      const bytes = item.payload.inline;
      return (async function* () {
        yield bytes;
      })();
    }
    const blob = item.payload.blob;
    const self = this;
    return (async function* () {
      const headers = self.#sign(REQUEST_SIGNATURE, "GET", blob.uri, {}, undefined);
      const res = await self.#transport.stream({ method: "GET", url: self.#baseUrl + blob.uri, headers });
      if (res.status >= 400) {
        const body = await collectBytes(res.body, 64 * 1024).catch(() => new Uint8Array());
        const err = errorOfResponse("GET", blob.uri, { status: res.status, headers: res.headers, body });
        if (res.status === 404)
          throw backupError(BACKUP_ERRORS.blobMissing, `blob ${blob.uri} is missing`, 404, { uri: blob.uri });
        throw err;
      }
      const sha = createHash("sha256");
      let size = 0;
      const body = res.body[Symbol.asyncIterator]();
      for (;;) {
        let next: IteratorResult<Uint8Array>;
        try {
          next = await body.next();
        } catch (e) {
          // The server announced the blob's length and sent less: a cut blob, as far as we can tell.
          if (isHandsafeError(e) && e.status === 0)
            throw new HandsafeError("backup.blob_mismatch", `blob ${blob.uri} was cut short`, {
              status: 422,
              details: { uri: blob.uri },
              cause: e,
            });
          throw e;
        }
        if (next.done) break;
        const chunk = next.value;
        size += chunk.length;
        if (size > blob.size)
          throw backupError("backup.blob_mismatch", `blob ${blob.uri} is longer than listed`, 422, {
            uri: blob.uri,
          });
        sha.update(chunk);
        yield chunk;
      }
      if (size !== blob.size || !bytesEqual(sha.digest(), blob.sha256))
        throw backupError(
          "backup.blob_mismatch",
          `blob ${blob.uri} is not the listed size and SHA-256`,
          422,
          {
            uri: blob.uri,
          },
        );
    })();
  }

  // --- sharing ------------------------------------------------------------------------------

  /**
   * Shares a backup (or the items `items` picks) with users of the directory (handles): new headers
   * for the owner plus them around the same file keys, a Kind=share envelope naming them; no payload
   * moves. Returns the share's backup id.
   */
  async share(input: {
    backupId: string;
    with: readonly string[];
    items?: Selection;
    onProgress?: ProgressListener;
  }): Promise<{ backupId: string; sharedWith: string[]; items: number }> {
    const users = await Promise.all(input.with.map((h) => this.#resolve(h)));
    if (users.length === 0) throw backupError("backup.share_invalid", "share with at least one user", 400);
    const { envelope } = await this.fetchEnvelope(input.backupId);
    const filter = input.items === undefined ? undefined : compileSelection(input.items);
    const recipients = [...new Set([this.#id.recipient, ...users.map((u) => u.recipient)])];
    const items: EnvelopeItem[] = [];
    let n = 0;
    for (const item of envelope.items) {
      n++;
      if (filter !== undefined) {
        const { fileKey } = unwrapItemKey(item.header, this.#id);
        const metadata = openName(fileKey, item.id, item.name);
        fileKey.fill(0);
        if (!filter.matches(metadata.path)) continue;
      }
      items.push({ ...item, command: "Copy", header: rewrapHeader(item.header, this.#id, recipients) });
      input.onProgress?.({ phase: "share", item: item.id, bytesDone: n, bytesTotal: envelope.items.length });
    }
    const backupId = newBackupId();
    const sharedWith = [...new Set(users.map((u) => u.accountId))];
    await this.publish({
      backupId,
      kind: "share",
      createdAt: this.#clock(),
      parent: envelope.backupId,
      source: { handset: this.#handsetUri, account: this.#id.accountId },
      target: backupUri(backupId),
      recipients,
      sharedWith,
      items,
      deleted: [],
    });
    return { backupId, sharedWith, items: items.length };
  }

  /** Drops one account (an `acct_…` or a handle) from a share. */
  async revokeShare(backupId: string, account: string): Promise<void> {
    const accountId = ACCOUNT_ID.test(account) ? account : (await this.#resolve(account)).accountId;
    await this.#send("DELETE", `/v1/backup/shares/${backupId}/${accountId}`);
  }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const sa = new Set(a);
  const sb = new Set(b);
  return sa.size === sb.size && [...sa].every((x) => sb.has(x));
}

/** Transport failures (status 0) and server errors are worth a HEAD and a retry; 4xx other than 409 are not. */
function isRetryable(e: unknown): boolean {
  if (!isHandsafeError(e)) return false;
  return e.status === 0 || e.status >= 500 || e.code === BACKUP_ERRORS.offsetMismatch || e.status === 409;
}

/** `{"error":{code,message,details}}` as that HandsafeError, else transport.http_error. */
export function errorOfResponse(method: string, path: string, res: TransportResponse): HandsafeError {
  try {
    const parsed = JSON.parse(fromUtf8(res.body)) as {
      error?: { code?: unknown; message?: unknown; details?: unknown };
    };
    const code = parsed.error?.code;
    if (typeof code === "string" && code !== "")
      return new HandsafeError(
        code,
        typeof parsed.error?.message === "string" ? parsed.error.message : `HTTP ${res.status}`,
        {
          status: res.status,
          ...(typeof parsed.error?.details === "object" && parsed.error.details !== null
            ? { details: parsed.error.details as Record<string, unknown> }
            : {}),
        },
      );
  } catch {
    // not JSON
  }
  return new HandsafeError("transport.http_error", `${method} ${path} answered HTTP ${res.status}`, {
    status: res.status,
  });
}
