/**
 * A blob's resumable upload from the SDK (docs/protocols/backup.md §5): POST declares the payload's
 * size, PATCHes of at most `uploadChunkBytes` append it, and the completion declares its SHA-256 —
 * learnt by hashing the payload as it is sealed, so a new item is sealed once, while it is sent.
 * Sealing overlaps sending: while one PATCH is in flight the next chunk is sealed into a second
 * buffer (the PATCHes themselves stay one at a time, in offset order). After a failed PATCH a HEAD
 * says how much the server holds and the payload is re-sealed (deterministically) from its start,
 * hashing every byte again but sending only from that offset. Memory stays two PATCH bodies,
 * whatever the blob's size.
 */
import { toHex } from "../core/codec/bytes.ts";
import { isHandsafeError } from "../core/errors.ts";
import { backupError } from "./client-http.ts";
import type { ClientContext, ProgressListener } from "./client-types.ts";
import type { PayloadDigest, SealedItem } from "./item-crypto.ts";
import { BACKUP_ERRORS } from "./protocol.ts";
import { UPLOAD_SIGNATURE } from "./signatures.ts";

/** The default largest PATCH body. 4 MiB: the 1 GiB bench peaked at 114 MiB RSS with it (8 MiB: 130) at the same MB/s. */
export const DEFAULT_UPLOAD_CHUNK = 4 * 1024 * 1024;

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

/** What an upload published: the blob, and the digests of the sealing pass that sent it. */
export interface UploadedPayload {
  blob: { uri: string; size: number; sha256: Uint8Array };
  digest: PayloadDigest;
}

/** The item changed between its listing (or an earlier pass) and this sealing pass: not retried. */
const ITEM_CHANGED = "the item changed while it was backed up";
const itemChanged = () => backupError(BACKUP_ERRORS.uploadMismatch, ITEM_CHANGED, 409, { itemChanged: true });

/** True for the refusal of a payload that is not the declared size (its item changed meanwhile). */
export function isItemChanged(e: unknown): boolean {
  return isHandsafeError(e, BACKUP_ERRORS.uploadMismatch) && e.details?.["itemChanged"] === true;
}

/**
 * The payload of `size` bytes through a resumable upload: sealed once while it is sent, PATCHes of at
 * most `uploadChunkBytes`, and after a failed one, HEAD for the offset the server holds and re-seal.
 * Completes with the payload's SHA-256 and checks the answer.
 */
export async function uploadPayload(
  ctx: ClientContext,
  sealed: SealedItem,
  size: number,
  path: string,
  progress: ProgressListener,
  onSent: (n: number) => void,
): Promise<UploadedPayload> {
  const started = await ctx.http.json<{ uploadId: string; uri: string }>("POST", "/v1/backup/uploads", {
    size,
  });
  const uploadPath = `/v1/backup/uploads/${started.uploadId}`;
  const capacity = Math.min(ctx.uploadChunkBytes, Math.max(size, 1));
  const buffers: [ChunkBuffer, ChunkBuffer] = [new ChunkBuffer(capacity), new ChunkBuffer(capacity)];
  let offset = 0;
  let failures = 0;
  let digest: PayloadDigest;
  for (;;) {
    try {
      digest = await sendFrom(ctx, sealed, uploadPath, offset, size, buffers, (sent, at) => {
        onSent(sent);
        progress({ phase: "upload", item: path, bytesDone: at, bytesTotal: size });
      });
      break;
    } catch (e) {
      if (!isRetryable(e) || ++failures >= ctx.uploadAttempts) throw e;
      // The server keeps what it stored safely: go on from there.
      const head = await ctx.http.send("HEAD", uploadPath);
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
  const sha256 = toHex(digest.payloadSha256);
  const completed = await ctx.http.json<{ uri: string; size: number; sha256: string }>(
    "POST",
    `${uploadPath}/complete`,
    { sha256 },
  );
  if (completed.size !== size || completed.sha256 !== sha256)
    throw backupError(BACKUP_ERRORS.uploadMismatch, "the server completed another blob than was sent", 502);
  return { blob: { uri: completed.uri, size, sha256: digest.payloadSha256 }, digest };
}

/**
 * Seals the whole payload (every byte through the pass's SHA-256) and PATCHes it from `from` on, one
 * bounded buffer at a time: the next buffer is sealed while the previous PATCH is in flight. Returns
 * the pass's digests once the server holds all `size` bytes.
 */
async function sendFrom(
  ctx: ClientContext,
  sealed: SealedItem,
  uploadPath: string,
  from: number,
  size: number,
  buffers: [ChunkBuffer, ChunkBuffer],
  onPatched: (sent: number, offset: number) => void,
): Promise<PayloadDigest> {
  let digest: PayloadDigest | undefined;
  const stream = sealed.payload(0, (d) => (digest = d))[Symbol.asyncIterator]();
  let produced = 0;
  let pending: Uint8Array | undefined;

  /** Fills `buffer` with the next payload bytes at or past `from`; empty at the end. */
  const fill = async (buffer: ChunkBuffer): Promise<void> => {
    buffer.clear();
    while (buffer.free > 0) {
      if (pending === undefined) {
        const next = await stream.next();
        if (next.done) break;
        const start = produced;
        produced += next.value.length;
        if (produced > size) throw itemChanged();
        // Bytes the server already holds are sealed (and hashed) again, not sent again.
        if (produced <= from) continue;
        pending = start < from ? next.value.subarray(from - start) : next.value;
      }
      const take = Math.min(buffer.free, pending.length);
      buffer.push(take === pending.length ? pending : pending.subarray(0, take));
      pending = take === pending.length ? undefined : pending.subarray(take);
    }
  };

  /** One PATCH of `buffer` at `offset`; settles with its failure (never rejects: it runs unawaited). */
  const patch = async (buffer: ChunkBuffer, offset: number): Promise<unknown> => {
    try {
      const res = await ctx.http.send("PATCH", uploadPath, {
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
      return undefined;
    } catch (e) {
      return e ?? new Error("PATCH failed");
    }
  };

  let offset = from;
  let inFlight: Promise<unknown> | undefined;
  let turn = 0;
  try {
    for (;;) {
      const buffer = buffers[turn]!;
      // A buffer is refilled only once its own PATCH was answered: two buffers, one PATCH at a time.
      await fill(buffer);
      if (inFlight !== undefined) {
        const failure = await inFlight;
        inFlight = undefined;
        if (failure !== undefined) throw failure;
      }
      if (buffer.length === 0) break;
      inFlight = patch(buffer, offset);
      offset += buffer.length;
      turn ^= 1;
    }
  } finally {
    if (inFlight !== undefined) await inFlight;
    await stream.return?.(undefined);
  }
  if (produced !== size || digest === undefined) throw itemChanged();
  return digest;
}

/**
 * Transport failures (status 0), server errors and 409s are worth a HEAD and a retry; other 4xx are
 * not, nor an item that changed under the sealing pass.
 */
function isRetryable(e: unknown): boolean {
  if (!isHandsafeError(e)) return false;
  if (e.code === BACKUP_ERRORS.uploadMismatch) return false;
  return e.status === 0 || e.status >= 500 || e.status === 409;
}
