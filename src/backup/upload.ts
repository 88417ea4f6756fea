/**
 * A blob's resumable upload from the SDK (docs/protocols/backup.md §5): POST declares the payload's
 * size and SHA-256, PATCHes of at most `uploadChunkBytes` append it, and after a failed PATCH a HEAD
 * says how much the server holds and the payload is re-sealed (deterministically) from there. Memory
 * stays one PATCH body, whatever the blob's size.
 */
import { toHex } from "../core/codec/bytes.ts";
import { isHandsafeError } from "../core/errors.ts";
import { backupError } from "./client-http.ts";
import type { ClientContext, ProgressListener } from "./client-types.ts";
import type { PayloadDigest, SealedItem } from "./item-crypto.ts";
import { BACKUP_ERRORS } from "./protocol.ts";
import { UPLOAD_SIGNATURE } from "./signatures.ts";

/** The default largest PATCH body. */
export const DEFAULT_UPLOAD_CHUNK = 8 * 1024 * 1024;

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

/**
 * The payload through a resumable upload: PATCHes of at most `uploadChunkBytes`, and after a failed
 * one, HEAD for the offset the server holds and re-seal from there. Completes and checks the answer.
 */
export async function uploadPayload(
  ctx: ClientContext,
  sealed: SealedItem,
  digest: PayloadDigest,
  path: string,
  progress: ProgressListener,
  onSent: (n: number) => void,
): Promise<{ uri: string; size: number; sha256: Uint8Array }> {
  const size = digest.payloadSize;
  const sha256 = toHex(digest.payloadSha256);
  const started = await ctx.http.json<{ uploadId: string; uri: string }>("POST", "/v1/backup/uploads", {
    size,
    sha256,
  });
  const uploadPath = `/v1/backup/uploads/${started.uploadId}`;
  const buffer = new ChunkBuffer(Math.min(ctx.uploadChunkBytes, Math.max(size, 1)));
  let offset = 0;
  let failures = 0;
  while (offset < size) {
    try {
      offset = await patchFrom(ctx, sealed, uploadPath, offset, size, buffer, (sent, at) => {
        onSent(sent);
        progress({ phase: "upload", item: path, bytesDone: at, bytesTotal: size });
      });
    } catch (e) {
      if (!isRetryable(e) || ++failures >= ctx.uploadAttempts) throw e;
      // The server keeps what it stored safely: go on from there, re-sealing from that offset.
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
  const completed = await ctx.http.json<{ uri: string; size: number; sha256: string }>(
    "POST",
    `${uploadPath}/complete`,
  );
  if (completed.size !== size || completed.sha256 !== sha256)
    throw backupError(BACKUP_ERRORS.uploadMismatch, "the server completed another blob than was sent", 502);
  return { uri: completed.uri, size, sha256: digest.payloadSha256 };
}

/** PATCHes the payload from `offset` to its end, one bounded buffer at a time; returns the end offset. */
async function patchFrom(
  ctx: ClientContext,
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
      offset = expected;
    }
  } finally {
    await stream.return?.(undefined);
  }
}

/** Transport failures (status 0), server errors and 409s are worth a HEAD and a retry; other 4xx are not. */
function isRetryable(e: unknown): boolean {
  if (!isHandsafeError(e)) return false;
  return e.status === 0 || e.status >= 500 || e.status === 409;
}
