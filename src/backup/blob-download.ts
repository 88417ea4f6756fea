/**
 * Serving a blob (GET /v1/backup/blobs/{id}, docs/protocols/backup.md §5): the Range header, and
 * the check that the blob store still holds the bytes the blob's row names before the answer
 * announces their length. A blob file truncated or replaced behind the service's back is answered
 * 500 backup.blob_damaged at once; one that changes while it streams ends the body with an error,
 * so the HTTP layer drops the connection and the client sees a short body — never a hang under a
 * Content-Length the body will not reach.
 */
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import type { BlobStore } from "../platform/blobs/types.ts";

export interface BlobDownload {
  size: number;
  sha256: string;
  /** Inclusive byte range served, when the request asked for one that fits. */
  range: { start: number; end: number } | undefined;
  body: AsyncIterable<Uint8Array>;
}

/** Why the store's copy is not the row's: gone, unreadable, another size, another SHA-256. */
export type BlobDamage = "missing" | "unreadable" | "size" | "sha256";

/**
 * The store's own record of the blob (its header: size and SHA-256 written with it, so no rehash)
 * against the row's. Undefined when they agree.
 */
export async function blobDamage(
  blobs: BlobStore,
  key: string,
  expected: { size: number; sha256: string },
): Promise<BlobDamage | undefined> {
  let info: Awaited<ReturnType<BlobStore["stat"]>>;
  try {
    info = await blobs.stat(key);
  } catch (e) {
    if (isHandsafeError(e, "blob.corrupt")) return "unreadable";
    throw e;
  }
  if (info === undefined) return "missing";
  if (info.size !== expected.size) return "size";
  if (info.sha256 !== expected.sha256) return "sha256";
  return undefined;
}

/**
 * The store's bytes, exactly `length` of them: fewer or more (the file changed after the stat)
 * throws, which aborts the response mid-body instead of leaving the client waiting for the rest.
 */
export async function* exactly(
  source: AsyncIterable<Uint8Array>,
  length: number,
  blobId: string,
): AsyncGenerator<Uint8Array> {
  let sent = 0;
  for await (const chunk of source) {
    sent += chunk.length;
    if (sent > length) throw shortOrLong(blobId, "more");
    yield chunk;
  }
  if (sent !== length) throw shortOrLong(blobId, "fewer");
}

function shortOrLong(blobId: string, what: "fewer" | "more"): HandsafeError {
  return new HandsafeError("backup.blob_damaged", `blob ${blobId} holds ${what} bytes than announced`, {
    status: 500,
    details: { blobId },
  });
}
