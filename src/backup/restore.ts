/**
 * Restore (docs/protocols/backup.md §6): fetch the envelope, check its signature against the
 * owner's key, open each chosen item — header, name, payload (a blob's size and SHA-256 checked as
 * it streams), every STREAM tag, size and, for own backups, the HMAC hash and item id — into a
 * staging area that replaces the stores only when every item checked out.
 */
import { fromBase64url } from "../core/codec/base64url.ts";
import { createStreamHash, type StreamHash } from "../core/crypto/hash.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import { backupError, errorOfResponse } from "./client-http.ts";
import type { ClientContext, ProgressListener, RestoreResult } from "./client-types.ts";
import type { DataStores } from "./data-store-types.ts";
import {
  collectBytes,
  type ItemMetadata,
  isDamage,
  openItem,
  openName,
  unwrapItemKey,
} from "./item-crypto.ts";
import { bytesEqual } from "./plan.ts";
import { BACKUP_ERRORS, type EnvelopeItem } from "./protocol.ts";
import { compileSelection, type Selection } from "./selection.ts";

export interface RestoreInput {
  backupId: string;
  into: DataStores;
  /** Only the items these rules pick (by path); the others in the stores stay as they are. */
  items?: Selection;
  /** The sharer, for a backup shared with us: a handle, or an account id (`acct_…`) for one without. */
  owner?: string;
  /**
   * `replace`: the stores the backup covers are replaced by it; `merge`: its items are added over
   * what is there. Default: replace for a whole own backup, merge for chosen items and shares.
   */
  mode?: "replace" | "merge";
  onProgress?: ProgressListener;
}

/**
 * Restores one backup (own, or a share when `owner` names the sharer by handle or account id) into `into`: every
 * item is opened and checked — envelope signature, blob SHA-256, every age tag, size, and for own
 * backups the HMAC hash and item id — into a staging area, which replaces the stores only when all
 * of it checked out. Else nothing changes and `backup.restore_damaged` names each damaged item.
 */
export async function restoreBackup(ctx: ClientContext, input: RestoreInput): Promise<RestoreResult> {
  const progress = input.onProgress ?? (() => {});
  const ownerKey =
    input.owner === undefined ? undefined : fromBase64url((await ctx.resolve(input.owner)).signingKey);
  const own = ownerKey === undefined || bytesEqual(ownerKey, ctx.identity.accountPublicKey);
  const { envelope } = await ctx.fetchEnvelope(input.backupId, ownerKey);
  const filter = input.items === undefined ? undefined : compileSelection(input.items);

  // Headers and names first: cheap, and they say which items are wanted and whether we may open any.
  type Opened = { item: EnvelopeItem; metadata: ItemMetadata };
  const damaged: Array<{ id: string; path?: string; code: string }> = [];
  const chosen: Opened[] = [];
  let notRecipient = 0;
  const paths = new Set<string>();
  for (const item of envelope.items) {
    try {
      const { fileKey } = unwrapItemKey(item.header, ctx.identity);
      const metadata = openName(fileKey, item.id, item.name);
      fileKey.fill(0);
      if (filter !== undefined && !filter.matches(metadata.path)) continue;
      if (own && ctx.identity.itemId(metadata.path) !== item.id)
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
          payload: payloadOf(ctx, item),
          unlocked: ctx.identity,
          // A shared user cannot compute the owner's HMAC: tags, blob hash and signature suffice.
          expected: own
            ? { size: item.size, hash: item.hash, hasher: ctx.identity.contentHasher() }
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
function payloadOf(ctx: ClientContext, item: EnvelopeItem): AsyncIterable<Uint8Array> {
  if ("inline" in item.payload) {
    const bytes = item.payload.inline;
    return (async function* () {
      yield bytes;
    })();
  }
  const blob = item.payload.blob;
  return (async function* () {
    const res = await ctx.http.stream(blob.uri);
    if (res.status >= 400) {
      const body = await collectBytes(res.body, 64 * 1024).catch(() => new Uint8Array());
      const err = errorOfResponse("GET", blob.uri, { status: res.status, headers: res.headers, body });
      if (res.status === 404)
        throw backupError(BACKUP_ERRORS.blobMissing, `blob ${blob.uri} is missing`, 404, { uri: blob.uri });
      throw err;
    }
    const sha = createStreamHash("sha256");
    try {
      yield* checkedBody(blob, res.body, sha);
    } finally {
      sha.release();
    }
  })();
}

/** The blob's bytes as they arrive, checked against its listed size and SHA-256 at the end. */
async function* checkedBody(
  blob: { uri: string; size: number; sha256: Uint8Array },
  source: AsyncIterable<Uint8Array>,
  sha: StreamHash,
): AsyncGenerator<Uint8Array> {
  let size = 0;
  const body = source[Symbol.asyncIterator]();
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
    const wait = sha.update(chunk);
    if (wait) await wait;
    yield chunk;
  }
  if (size !== blob.size || !bytesEqual(await sha.digest(), blob.sha256))
    throw backupError("backup.blob_mismatch", `blob ${blob.uri} is not the listed size and SHA-256`, 422, {
      uri: blob.uri,
    });
}
