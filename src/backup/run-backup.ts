/**
 * One backup run (docs/protocols/backup.md §3, §4): list what the selection picks, hash each item
 * the parent knows (small ones the parent does not know are sealed in that pass instead), plan
 * Add / Replace / Copy / Delete against the parent (plan.ts), then seal and upload what changed —
 * a large item in one pass, hashed as it is sent — and sign and PUT the envelope, only after every
 * blob completed, so the server never lists half a backup.
 */
import { concatBytes } from "../core/codec/bytes.ts";
import { backupError } from "./client-http.ts";
import type { BackupResult, ClientContext, ProgressListener } from "./client-types.ts";
import type { DataStores, StoredItem } from "./data-store-types.ts";
import { countEnvelopeParts } from "./envelope.ts";
import {
  collectBytes,
  type ItemMetadata,
  type PayloadDigest,
  rewrapHeader,
  type SealedItem,
  sealItem,
} from "./item-crypto.ts";
import { type PlannedItem, planBackup, sameSet } from "./plan.ts";
import {
  agePayloadSize,
  type BackupEnvelope,
  backupUri,
  blobUri,
  type EnvelopeItem,
  INLINE_MAX_BYTES,
  newBackupId,
} from "./protocol.ts";
import { compileSelection, type Selection } from "./selection.ts";
import { isItemChanged, type UploadedPayload, uploadPayload } from "./upload.ts";

const PLACEHOLDER_BLOB_URI = blobUri(`bl_${"A".repeat(22)}`);
/** The stand-in of a hash not known before the item's one sealing pass (same length as the real one). */
const PLACEHOLDER_HASH = new Uint8Array(32);

export interface BackupInput {
  from: DataStores;
  selection: Selection;
  /** Users who may restore this backup too: handles, or `acct_…` account ids. */
  shareWith?: readonly string[];
  onProgress?: ProgressListener;
  /** Parent override: a backup id, or null for a full backup. Default: the newest own backup. */
  parent?: string | null;
}

/** The newest listed Kind=backup of this account: the parent of the next incremental backup. */
export async function latestOwnBackup(ctx: ClientContext): Promise<BackupEnvelope | undefined> {
  const backups = (await ctx.list()).filter((b) => b.kind === "backup");
  if (backups.length === 0) return undefined;
  const newest = backups.reduce((a, b) => (b.createdAt >= a.createdAt ? b : a));
  return (await ctx.fetchEnvelope(newest.id)).envelope;
}

/**
 * Backs up what `selection` picks from `from`, incrementally against the latest own backup, to the
 * owner and the users of `shareWith` (handles). Returns what it did; nothing is listed unless all
 * of it went up.
 */
export async function runBackup(ctx: ClientContext, input: BackupInput): Promise<BackupResult> {
  const progress = input.onProgress ?? (() => {});
  const selection = compileSelection(input.selection);
  const shared = await Promise.all((input.shareWith ?? []).map((h) => ctx.resolve(h)));
  const recipients = [ctx.identity.recipient, ...shared.map((s) => s.recipient)];
  const sharedWith = [...new Set(shared.map((s) => s.accountId))];
  const parent =
    input.parent === null
      ? undefined
      : input.parent !== undefined
        ? (await ctx.fetchEnvelope(input.parent)).envelope
        : await latestOwnBackup(ctx);
  const sameRecipients = parent !== undefined && sameSet(parent.recipients, recipients);

  progress({ phase: "scan", bytesDone: 0, bytesTotal: 0 });
  const items = (await input.from.list()).filter((i) => selection.matches(i.path));
  const total = items.reduce((n, i) => n + i.size, 0);
  const parentIds = new Set((parent?.items ?? []).map((i) => i.id));

  // Small items the parent does not know are sealed in the same pass that hashes them; large ones
  // are Adds whatever their hash, so they are read once, when they are sealed and uploaded.
  const planned: PlannedItem[] = [];
  const presealed = new Map<string, { sealed: SealedItem; digest: PayloadDigest; inline?: Uint8Array }>();
  let done = 0;
  for (const item of items) {
    const id = ctx.identity.itemId(item.path);
    if (!parentIds.has(id) && item.size > INLINE_MAX_BYTES) {
      planned.push({ item, id, hash: PLACEHOLDER_HASH });
    } else if (parentIds.has(id)) {
      planned.push({
        item,
        id,
        hash: await hashOnly(ctx, item, (n) =>
          progress({ phase: "hash", item: item.path, bytesDone: done + n, bytesTotal: total }),
        ),
      });
    } else {
      const sealed = sealFor(ctx, item, id, recipients);
      const { digest, inline } = await sealPass(sealed, item, (n) =>
        progress({ phase: "seal", item: item.path, bytesDone: done + n, bytesTotal: total }),
      );
      presealed.set(id, { sealed, digest, ...(inline ? { inline } : {}) });
      planned.push({ item, id, hash: digest.hash! });
    }
    done += item.size;
  }

  const { steps, deleted } = planBackup(planned, parent);
  const out: EnvelopeItem[] = [];
  const pending: Array<{ index: number; sealed: SealedItem; payloadSize: number; path: string }> = [];
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
        : rewrapHeader(step.parent.header, ctx.identity, recipients);
      out.push({ ...step.parent, command: "Copy", header });
      continue;
    }
    let pre = presealed.get(id);
    if (pre === undefined && item.size > INLINE_MAX_BYTES) {
      // Sealed once, while it is uploaded: its size, hash and blob are filled in then (stand-ins of
      // the same lengths until then, so the envelope's size is known before anything is sent).
      const sealed = sealFor(ctx, item, id, recipients);
      const payloadSize = agePayloadSize(item.size);
      pending.push({ index: out.length, sealed, payloadSize, path: item.path });
      out.push({
        command: step.command,
        id,
        kind: item.kind,
        size: item.size,
        hash: step.planned.hash,
        name: sealed.name,
        header: sealed.header,
        payload: {
          blob: { uri: PLACEHOLDER_BLOB_URI, size: payloadSize, sha256: PLACEHOLDER_HASH },
        },
      });
      continue;
    }
    if (pre === undefined) {
      const sealed = sealFor(ctx, item, id, recipients);
      const pass = await sealPass(sealed, item, (n) =>
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
    // A stand-in of the final length (a blob URI is always `bl_` + 22 characters): the envelope's
    // size is known before anything is uploaded.
    pending.push({
      index: out.length,
      sealed: pre.sealed,
      payloadSize: pre.digest.payloadSize,
      path: item.path,
    });
    out.push({
      ...base,
      payload: {
        blob: { uri: PLACEHOLDER_BLOB_URI, size: pre.digest.payloadSize, sha256: pre.digest.payloadSha256 },
      },
    });
  }

  const backupId = newBackupId();
  const envelope: BackupEnvelope = {
    backupId,
    kind: "backup",
    createdAt: ctx.clock(),
    ...(parent ? { parent: parent.backupId } : {}),
    source: { handset: ctx.handsetUri, account: ctx.identity.accountId },
    target: backupUri(backupId),
    recipients: [...new Set(recipients)],
    sharedWith,
    items: out,
    deleted,
  };
  // Past what the parts of one envelope can hold the PUTs would fail after every blob went up (and
  // those blobs would hold quota until deleted): refuse first — nothing uploaded.
  // The draft (blob stand-ins of the final length) cuts into parts as publish will cut it.
  countEnvelopeParts(envelope, ctx.envelopePartLimits);
  for (const p of pending) {
    const onSent = (n: number) => {
      bytesUploaded += n;
    };
    let uploaded: UploadedPayload;
    try {
      uploaded = await uploadPayload(ctx, p.sealed, p.payloadSize, p.path, progress, onSent);
    } catch (e) {
      if (!isItemChanged(e)) throw e;
      // Not the listed size any more: one pass learns what it is now, and that is what is sent.
      const item = items.find((i) => i.path === p.path)!;
      const pass = await sealPass(p.sealed, item, () => {});
      if (pass.inline !== undefined) {
        out[p.index] = {
          ...out[p.index]!,
          size: pass.digest.size,
          hash: pass.digest.hash!,
          payload: { inline: pass.inline },
        };
        continue;
      }
      uploaded = await uploadPayload(ctx, p.sealed, pass.digest.payloadSize, p.path, progress, onSent);
    }
    uploads++;
    const { blob, digest } = uploaded;
    // What this pass sealed decides the item's size and hash (the same as an earlier pass's, if any).
    out[p.index] = { ...out[p.index]!, size: digest.size, hash: digest.hash!, payload: { blob } };
  }
  progress({ phase: "envelope", bytesDone: total, bytesTotal: total });
  await ctx.publish(envelope);
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

function sealFor(
  ctx: ClientContext,
  item: StoredItem,
  id: string,
  recipients: readonly string[],
): SealedItem {
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
    hasher: () => ctx.identity.contentHasher(),
  });
}

async function hashOnly(
  ctx: ClientContext,
  item: StoredItem,
  onBytes: (n: number) => void,
): Promise<Uint8Array> {
  const hasher = ctx.identity.contentHasher();
  try {
    let n = 0;
    for await (const chunk of item.open()) {
      const wait = hasher.update(chunk);
      if (wait) await wait;
      n += chunk.length;
      onBytes(n);
    }
    return await hasher.digest();
  } finally {
    hasher.release();
  }
}

/** One sealing pass: the digests, and the payload itself when the item is small enough to be inline. */
async function sealPass(
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
