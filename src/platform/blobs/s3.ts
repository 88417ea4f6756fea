/**
 * The S3-compatible blob store (AWS S3, MinIO, Ceph RGW, …): one object per blob at `<prefix><key>`,
 * with the same semantics as the filesystem store (src/platform/blobs/filesystem.ts).
 *
 * Size and hash: the object's length is the blob's size and its SHA-256 (hex, computed while the
 * bytes went by) is the object metadata `x-amz-meta-sha256`, so stat() is one HEAD and never rehashes.
 *
 * put(): up to one 8 MiB part is buffered. A blob that fits is one PutObject. A larger one goes as a
 * multipart upload (8 MiB parts, up to 4 in flight) to a temporary object `<prefix>.tmp/<random>`;
 * when the last byte is in and its SHA-256 known, a server-side copy puts it at the key with its
 * metadata (S3 metadata cannot be changed after the fact), so the blob appears whole or not at all,
 * hash included. Sources above 5 GiB are copied part by part (UploadPartCopy). S3 allows 10,000 parts,
 * so a blob is at most ~78 GiB ("blob.too_large", 413).
 *
 * Uploads (BlobUploads) live under `<prefix>.uploads/<id>/`:
 *   state.json     {multipart upload id, the parts sent (number, ETag, size), the pending object}
 *   data           what the multipart upload assembles
 *   pending-<rnd>  appended bytes that do not fill a part yet (S3 parts are ≥ 5 MiB but the last)
 * Everything lives in the bucket, so another node (or this one after a restart) continues an upload.
 * append() reads the pending bytes back (≤ 8 MiB, so append in large pieces), fills 8 MiB parts, sends each and records it in
 * state.json, and stores the rest as a new pending object; state.json is written last, so it always
 * names parts and a pending object that exist: a crash or a failing source leaves the upload at the
 * last state written (a source that fails midway: its bytes received so far are kept as pending).
 * complete() sends the pending bytes as the last part, completes the multipart upload and copies
 * `data` to the key with its SHA-256. The running SHA-256 is kept in memory by the node that received
 * every byte; otherwise complete() reads the assembled object back to hash it.
 *
 * One writer per upload at a time: calls for one upload id are serialised in this process, but two
 * nodes appending to one upload at once would race on state.json (the offset check is the client's
 * protocol). Crashed puts and abandoned uploads leave objects under `<prefix>.tmp/` and
 * `<prefix>.uploads/` and incomplete multipart uploads: give the bucket a lifecycle rule that expires
 * those prefixes and aborts incomplete multipart uploads after a few days.
 */
import { createHash } from "node:crypto";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
} from "@aws-sdk/client-s3";
import { toHex } from "../../core/codec/bytes.ts";
import { createStreamHash, type StreamHash } from "../../core/crypto/hash.ts";
import { randomToken } from "../../core/crypto/random.ts";
import { HandsafeError } from "../../core/errors.ts";
import {
  blobChunks,
  createSerialiser,
  offsetMismatch,
  resolveRange,
  uploadNotFound,
  validateBlobKey,
  validateUploadId,
} from "./filesystem.ts";
import type { BlobInfo, BlobStore, BlobUploads } from "./types.ts";

export interface S3BlobStoreOptions {
  /** e.g. http://127.0.0.1:9000 for MinIO; unset: AWS S3 of `region`. */
  endpoint?: string;
  region: string;
  bucket: string;
  /** Prepended to every object name; a "/" is added when missing ("handsafe" → "handsafe/…"). */
  prefix?: string;
  /** Both or neither; neither: the SDK's default credential chain (environment, profile, instance role). */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Path-style URLs (http://host/bucket/key), which most S3-compatible servers need. */
  forcePathStyle?: boolean;
}

export type S3BlobStore = BlobStore & {
  /** Closes the client's connections. */
  destroy(): void;
};

/** Parts of multipart uploads; S3 wants ≥ 5 MiB for all but the last. */
export const S3_PART_SIZE = 8 * 1024 * 1024;
const PUT_PARTS_IN_FLIGHT = 4;
/** S3's limit on parts per multipart upload: with 8 MiB parts, blobs up to 78 GiB. */
const MAX_PARTS = 10_000;
/** The largest source CopyObject takes; larger ones are copied in parts. */
const COPY_OBJECT_LIMIT = 5 * 1024 ** 3;
const COPY_PART_SIZE = 512 * 1024 * 1024;
const SHA256_METADATA = "sha256";
const CONTENT_TYPE = "application/octet-stream";

interface Part {
  n: number;
  etag: string;
  size: number;
}

interface UploadState {
  v: 1;
  /** The multipart upload assembling `data`, created with the first full part. */
  multipart: string | null;
  /** Parts sent, numbered 1…k in order. */
  parts: Part[];
  /** Bytes after the parts, not yet a part: the object's name inside the upload's folder. */
  pending: { name: string; size: number } | null;
  /** The multipart upload is completed: `data` holds every byte; only complete() or abort() remain. */
  assembled: boolean;
}

export function createS3BlobStore(options: S3BlobStoreOptions): S3BlobStore {
  if ((options.accessKeyId === undefined) !== (options.secretAccessKey === undefined))
    throw new HandsafeError(
      "config.invalid",
      "S3 blob store: give both an access key id and a secret access key, or neither",
      { status: 500 },
    );
  const client = new S3Client({
    region: options.region,
    endpoint: options.endpoint,
    forcePathStyle: options.forcePathStyle ?? false,
    credentials:
      options.accessKeyId !== undefined && options.secretAccessKey !== undefined
        ? { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey }
        : undefined,
    // Only the checksums an operation requires: S3-compatible servers vary in what else they take,
    // and every blob carries its own SHA-256.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  const Bucket = options.bucket;
  const rawPrefix = (options.prefix ?? "").replace(/^\/+/, "");
  const prefix = rawPrefix === "" || rawPrefix.endsWith("/") ? rawPrefix : `${rawPrefix}/`;

  function objectKey(key: string): string {
    validateBlobKey(key);
    return prefix + key;
  }

  // ---- small S3 helpers; every SDK error leaves as a HandsafeError ----

  async function head(name: string): Promise<{ size: number; etag?: string; sha256?: string } | undefined> {
    try {
      const r = await client.send(new HeadObjectCommand({ Bucket, Key: name }));
      return { size: r.ContentLength ?? 0, etag: r.ETag, sha256: r.Metadata?.[SHA256_METADATA] };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw failed("blob.read_failed", `cannot read ${name}`, e);
    }
  }

  async function putBytes(name: string, body: Uint8Array, sha256?: string): Promise<void> {
    await client.send(
      new PutObjectCommand({
        Bucket,
        Key: name,
        Body: body,
        ContentLength: body.length,
        ContentType: CONTENT_TYPE,
        ...(sha256 ? { Metadata: { [SHA256_METADATA]: sha256 } } : {}),
      }),
    );
  }

  /** The object's bytes, streamed; undefined when there is none. */
  async function open(
    name: string,
    range?: { start: number; end: number },
    etag?: string,
  ): Promise<(AsyncIterable<Uint8Array> & { destroy?: () => void }) | undefined> {
    try {
      const r = await client.send(
        new GetObjectCommand({
          Bucket,
          Key: name,
          ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}),
          ...(etag ? { IfMatch: etag } : {}),
        }),
      );
      return r.Body as unknown as AsyncIterable<Uint8Array> & { destroy?: () => void };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** Reads an object of `size` bytes (small: state, pending) into `into` or a fresh buffer. */
  async function readSmall(name: string, size: number, into?: Buffer): Promise<Buffer> {
    const out = into ?? Buffer.allocUnsafe(size);
    let body: Awaited<ReturnType<typeof open>>;
    try {
      body = await open(name);
    } catch (e) {
      throw failed("blob.read_failed", `cannot read ${name}`, e);
    }
    if (!body) throw corrupt(name, "an object the upload names is missing");
    let at = 0;
    try {
      for await (const chunk of body) {
        if (at + chunk.length > size) throw corrupt(name, "longer than recorded");
        out.set(chunk, at);
        at += chunk.length;
      }
    } catch (e) {
      body.destroy?.();
      if (e instanceof HandsafeError) throw e;
      throw failed("blob.read_failed", `cannot read ${name}`, e);
    }
    if (at !== size) throw corrupt(name, "shorter than recorded");
    return out;
  }

  async function hashObject(name: string): Promise<string> {
    const hash = createStreamHash("sha256");
    try {
      const body = await open(name);
      if (!body) throw corrupt(name, "the assembled upload is missing");
      for await (const chunk of body) {
        const wait = hash.update(chunk);
        if (wait) await wait;
      }
      return toHex(await hash.digest());
    } catch (e) {
      hash.release();
      if (e instanceof HandsafeError) throw e;
      throw failed("blob.read_failed", `cannot read ${name}`, e);
    }
  }

  async function remove(name: string): Promise<void> {
    await client.send(new DeleteObjectCommand({ Bucket, Key: name }));
  }

  /** Copies `from` to `to` server-side, giving it the blob's SHA-256 as metadata. */
  async function copyWithHash(from: string, to: string, size: number, sha256: string): Promise<void> {
    const CopySource = `${Bucket}/${from.split("/").map(encodeURIComponent).join("/")}`;
    const Metadata = { [SHA256_METADATA]: sha256 };
    if (size <= COPY_OBJECT_LIMIT) {
      await client.send(
        new CopyObjectCommand({
          Bucket,
          Key: to,
          CopySource,
          MetadataDirective: "REPLACE",
          Metadata,
          ContentType: CONTENT_TYPE,
        }),
      );
      return;
    }
    const { UploadId } = await client.send(
      new CreateMultipartUploadCommand({ Bucket, Key: to, Metadata, ContentType: CONTENT_TYPE }),
    );
    try {
      const parts: { PartNumber: number; ETag: string }[] = [];
      for (let start = 0, n = 1; start < size; start += COPY_PART_SIZE, n++) {
        const end = Math.min(size, start + COPY_PART_SIZE) - 1;
        const r = await client.send(
          new UploadPartCopyCommand({
            Bucket,
            Key: to,
            UploadId,
            PartNumber: n,
            CopySource,
            CopySourceRange: `bytes=${start}-${end}`,
          }),
        );
        parts.push({ PartNumber: n, ETag: r.CopyPartResult?.ETag ?? "" });
      }
      await client.send(
        new CompleteMultipartUploadCommand({ Bucket, Key: to, UploadId, MultipartUpload: { Parts: parts } }),
      );
    } catch (e) {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key: to, UploadId })).catch(() => {});
      throw e;
    }
  }

  const store: S3BlobStore = {
    async put(key, data) {
      const name = objectKey(key);
      // Hashed on a worker thread (core/crypto hash lanes) while the parts are gathered and sent.
      const hash = createStreamHash("sha256");
      let size = 0;
      let part = Buffer.allocUnsafe(S3_PART_SIZE);
      let fill = 0;
      let multipart: { temp: string; uploadId: string } | undefined;
      const parts: { PartNumber: number; ETag: string }[] = [];
      const inFlight: Promise<void>[] = [];
      let partFailure: unknown;

      async function send(body: Buffer): Promise<void> {
        if (!multipart) {
          const temp = `${prefix}.tmp/${randomToken(16)}`;
          const r = await client.send(
            new CreateMultipartUploadCommand({ Bucket, Key: temp, ContentType: CONTENT_TYPE }),
          );
          multipart = { temp, uploadId: r.UploadId ?? "" };
        }
        const PartNumber = parts.length + 1;
        if (PartNumber > MAX_PARTS) throw tooLarge();
        parts.push({ PartNumber, ETag: "" });
        const { temp, uploadId } = multipart;
        inFlight.push(
          client
            .send(
              new UploadPartCommand({
                Bucket,
                Key: temp,
                UploadId: uploadId,
                PartNumber,
                Body: body,
                ContentLength: body.length,
              }),
            )
            .then(
              (r) => {
                parts[PartNumber - 1] = { PartNumber, ETag: r.ETag ?? "" };
              },
              (e) => {
                partFailure ??= e;
              },
            ),
        );
        if (inFlight.length >= PUT_PARTS_IN_FLIGHT) await inFlight.shift();
        if (partFailure !== undefined) throw partFailure;
      }

      try {
        for await (const chunk of blobChunks(data)) {
          const wait = hash.update(chunk);
          if (wait) await wait;
          size += chunk.length;
          for (let at = 0; at < chunk.length; ) {
            // A full part goes only once more bytes come: a blob of one part stays one PutObject.
            if (fill === S3_PART_SIZE) {
              await send(part);
              part = Buffer.allocUnsafe(S3_PART_SIZE);
              fill = 0;
            }
            const n = Math.min(S3_PART_SIZE - fill, chunk.length - at);
            part.set(chunk.subarray(at, at + n), fill);
            fill += n;
            at += n;
          }
        }
        const sha256 = toHex(await hash.digest());
        if (!multipart) {
          await putBytes(name, part.subarray(0, fill), sha256);
          return { key, size, sha256 };
        }
        await send(part.subarray(0, fill));
        await Promise.all(inFlight);
        if (partFailure !== undefined) throw partFailure;
        const { temp, uploadId } = multipart;
        await client.send(
          new CompleteMultipartUploadCommand({
            Bucket,
            Key: temp,
            UploadId: uploadId,
            MultipartUpload: { Parts: parts },
          }),
        );
        multipart = undefined;
        try {
          await copyWithHash(temp, name, size, sha256);
        } finally {
          await remove(temp).catch(() => {});
        }
        return { key, size, sha256 };
      } catch (e) {
        hash.release();
        await Promise.allSettled(inFlight);
        if (multipart) {
          const { temp, uploadId } = multipart;
          await client
            .send(new AbortMultipartUploadCommand({ Bucket, Key: temp, UploadId: uploadId }))
            .catch(() => {});
        }
        if (e instanceof HandsafeError) throw e;
        throw failed("blob.write_failed", `cannot store blob ${key}`, e);
      }
    },

    async *get(key, range) {
      const name = objectKey(key);
      // HEAD for the size (the range rules are the filesystem store's), then GET that version.
      for (let attempt = 1; ; attempt++) {
        const info = await head(name);
        if (!info) throw new HandsafeError("blob.not_found", `no blob ${key}`, { status: 404 });
        const { start, end } = resolveRange(key, info.size, range);
        if (end < start) return; // the whole of an empty blob
        let body: Awaited<ReturnType<typeof open>>;
        try {
          body = await open(name, { start, end }, info.etag);
        } catch (e) {
          // Replaced between the HEAD and the GET: look again.
          if (statusOf(e) === 412 && attempt < 3) continue;
          throw failed("blob.read_failed", `cannot read blob ${key}`, e);
        }
        if (!body) throw new HandsafeError("blob.not_found", `no blob ${key}`, { status: 404 });
        let done = false;
        try {
          for await (const chunk of body) yield chunk;
          done = true;
        } catch (e) {
          if (e instanceof HandsafeError) throw e;
          throw failed("blob.read_failed", `cannot read blob ${key}`, e);
        } finally {
          if (!done) body.destroy?.();
        }
        return;
      }
    },

    async stat(key) {
      const info = await head(objectKey(key));
      if (!info) return undefined;
      if (!info.sha256 || !/^[0-9a-f]{64}$/.test(info.sha256))
        throw corrupt(key, "the object has no sha256 metadata (not written by handsafe?)");
      return { key, size: info.size, sha256: info.sha256 };
    },

    async delete(key) {
      const name = objectKey(key);
      try {
        await remove(name);
      } catch (e) {
        if (isNotFound(e)) return;
        throw failed("blob.write_failed", `cannot delete blob ${key}`, e);
      }
    },

    uploads: createS3Uploads(),

    destroy() {
      client.destroy();
    },
  };

  function createS3Uploads(): BlobUploads {
    const serialise = createSerialiser();
    /** Per upload, on the node that received every byte so far: the SHA-256 of the first `length`. */
    const hashes = new Map<string, { hash: StreamHash; length: number }>();
    /** Drops an upload's running hash (its lane, when it has one, goes back). */
    const forget = (uploadId: string) => {
      hashes.get(uploadId)?.hash.release();
      hashes.delete(uploadId);
    };

    const folder = (uploadId: string) => `${prefix}.uploads/${uploadId}/`;
    const stateName = (uploadId: string) => `${folder(uploadId)}state.json`;
    const dataName = (uploadId: string) => `${folder(uploadId)}data`;

    async function load(uploadId: string): Promise<UploadState | undefined> {
      let text: string;
      try {
        const body = await open(stateName(uploadId));
        if (!body) return undefined;
        const chunks: Uint8Array[] = [];
        for await (const chunk of body) chunks.push(chunk);
        text = Buffer.concat(chunks).toString("utf8");
      } catch (e) {
        throw failed("blob.read_failed", `cannot read upload ${uploadId}`, e);
      }
      try {
        const state = JSON.parse(text) as UploadState;
        if (state.v !== 1 || !Array.isArray(state.parts)) throw new Error("unknown format");
        return state;
      } catch {
        throw corrupt(stateName(uploadId), "unreadable upload state");
      }
    }

    async function save(uploadId: string, state: UploadState): Promise<void> {
      await putBytes(stateName(uploadId), Buffer.from(JSON.stringify(state)));
    }

    function lengthOf(state: UploadState): number {
      return state.parts.reduce((sum, p) => sum + p.size, 0) + (state.pending?.size ?? 0);
    }

    /** Deletes every object of the upload's folder, state.json first (best effort after that). */
    async function dropFolder(uploadId: string): Promise<void> {
      await remove(stateName(uploadId));
      let ContinuationToken: string | undefined;
      do {
        const r = await client.send(
          new ListObjectsV2Command({ Bucket, Prefix: folder(uploadId), ContinuationToken }),
        );
        await Promise.all((r.Contents ?? []).map((o) => (o.Key ? remove(o.Key).catch(() => {}) : undefined)));
        ContinuationToken = r.IsTruncated ? r.NextContinuationToken : undefined;
      } while (ContinuationToken);
    }

    return {
      async begin(uploadId) {
        validateUploadId(uploadId);
        await serialise(uploadId, async () => {
          if (await load(uploadId)) return;
          try {
            await dropFolder(uploadId); // leftovers of an upload that crashed while completing
            await save(uploadId, { v: 1, multipart: null, parts: [], pending: null, assembled: false });
          } catch (e) {
            throw failed("blob.write_failed", `cannot begin upload ${uploadId}`, e);
          }
          hashes.set(uploadId, { hash: createStreamHash("sha256"), length: 0 });
        });
      },

      async append(uploadId, offset, data) {
        validateUploadId(uploadId);
        return serialise(uploadId, async () => {
          let state = await load(uploadId);
          if (!state) throw uploadNotFound(uploadId);
          if (state.assembled) throw completing(uploadId);
          const length = lengthOf(state);
          if (offset !== length) throw offsetMismatch(uploadId, offset, length);
          let running = hashes.get(uploadId);
          if (running?.length !== length) {
            forget(uploadId);
            running = length === 0 ? { hash: createStreamHash("sha256"), length: 0 } : undefined;
            if (running) hashes.set(uploadId, running);
          }

          // The part being filled: the pending bytes, then the new ones.
          const part = Buffer.allocUnsafe(S3_PART_SIZE);
          let fill = 0;
          if (state.pending) {
            await readSmall(folder(uploadId) + state.pending.name, state.pending.size, part);
            fill = state.pending.size;
          }
          let unsaved = false;
          let received = length;

          /** Creates the multipart upload and records it before any part is sent to it. */
          const startMultipart = async (current: UploadState): Promise<UploadState> => {
            const r = await client.send(
              new CreateMultipartUploadCommand({
                Bucket,
                Key: dataName(uploadId),
                ContentType: CONTENT_TYPE,
              }),
            );
            const next: UploadState = { ...current, multipart: r.UploadId ?? "" };
            await save(uploadId, next);
            return next;
          };

          /** Sends the full part and records it (the pending bytes are in it now). */
          const sendPart = async (current: UploadState): Promise<UploadState> => {
            const n = current.parts.length + 1;
            // The last part is sent by complete(): keep its number free.
            if (n >= MAX_PARTS) throw tooLarge();
            const r = await client.send(
              new UploadPartCommand({
                Bucket,
                Key: dataName(uploadId),
                UploadId: current.multipart ?? "",
                PartNumber: n,
                Body: part.subarray(0, fill),
                ContentLength: fill,
              }),
            );
            const next: UploadState = {
              ...current,
              parts: [...current.parts, { n, etag: r.ETag ?? "", size: fill }],
              pending: null,
            };
            await save(uploadId, next);
            if (current.pending) await remove(folder(uploadId) + current.pending.name).catch(() => {});
            return next;
          };

          let failure: unknown;
          try {
            for await (const chunk of blobChunks(data)) {
              for (let at = 0; at < chunk.length; ) {
                if (fill === S3_PART_SIZE) {
                  if (!state.multipart) state = await startMultipart(state);
                  state = await sendPart(state);
                  fill = 0;
                  unsaved = false;
                }
                const n = Math.min(S3_PART_SIZE - fill, chunk.length - at);
                const bytes = chunk.subarray(at, at + n);
                part.set(bytes, fill);
                // The running hash covers exactly the bytes taken: `received` of them.
                const wait = running?.hash.update(bytes);
                if (wait) await wait;
                fill += n;
                at += n;
                received += n;
                if (running) running.length = received;
                unsaved = true;
              }
            }
          } catch (e) {
            failure = e;
          }

          // What was received and is not in a part yet becomes the pending object: kept even when
          // the source failed, so the client resumes from everything it got to send.
          if (unsaved) {
            try {
              const name = `pending-${randomToken(12)}`;
              await putBytes(folder(uploadId) + name, part.subarray(0, fill));
              const next: UploadState = { ...state, pending: { name, size: fill } };
              await save(uploadId, next);
              if (state.pending) await remove(folder(uploadId) + state.pending.name).catch(() => {});
              state = next;
            } catch (e) {
              failure ??= e;
            }
          }
          const stored = lengthOf(state);
          // Bytes taken but not stored (a failed write): the running hash is ahead, so drop it.
          if (received !== stored) forget(uploadId);
          if (failure === undefined) return stored;
          if (failure instanceof HandsafeError && failure.code !== "blob.read_failed") throw failure;
          throw new HandsafeError(
            "blob.write_failed",
            `upload ${uploadId} was cut off at ${stored} bytes; append again from there`,
            { status: 500, details: { length: stored }, cause: failure },
          );
        });
      },

      async length(uploadId) {
        validateUploadId(uploadId);
        const state = await load(uploadId);
        return state ? lengthOf(state) : undefined;
      },

      async complete(uploadId, key) {
        validateUploadId(uploadId);
        const name = objectKey(key);
        return serialise(uploadId, async () => {
          let state = await load(uploadId);
          if (!state) throw uploadNotFound(uploadId);
          const size = lengthOf(state);
          const running = hashes.get(uploadId);
          hashes.delete(uploadId);
          let sha256: string | undefined;
          if (running?.length === size) sha256 = toHex(await running.hash.digest());
          else running?.hash.release();
          try {
            if (!state.multipart) {
              // Never a full part sent: every byte is in the pending object (≤ 8 MiB), if any.
              const bytes = state.pending
                ? await readSmall(folder(uploadId) + state.pending.name, state.pending.size)
                : Buffer.alloc(0);
              sha256 ??= createHash("sha256").update(bytes).digest("hex");
              await putBytes(name, bytes, sha256);
            } else {
              if (!state.assembled) state = await assemble(uploadId, state);
              sha256 ??= await hashObject(dataName(uploadId));
              await copyWithHash(dataName(uploadId), name, size, sha256);
            }
          } catch (e) {
            if (e instanceof HandsafeError) throw e;
            throw failed("blob.write_failed", `cannot complete upload ${uploadId} as ${key}`, e);
          }
          // Published: the upload is gone once state.json is; the rest is cleanup.
          await dropFolder(uploadId).catch(() => {});
          return { key, size, sha256 } satisfies BlobInfo;
        });
      },

      async abort(uploadId) {
        validateUploadId(uploadId);
        await serialise(uploadId, async () => {
          forget(uploadId);
          const state = await load(uploadId);
          try {
            await dropFolder(uploadId);
            // Best effort: the upload is gone with its state.json; a multipart upload left behind
            // (a server without AbortMultipartUpload, an outage) is the lifecycle rule's to expire.
            if (state?.multipart && !state.assembled)
              await client
                .send(
                  new AbortMultipartUploadCommand({
                    Bucket,
                    Key: dataName(uploadId),
                    UploadId: state.multipart,
                  }),
                )
                .catch(() => {});
          } catch (e) {
            throw failed("blob.write_failed", `cannot drop upload ${uploadId}`, e);
          }
        });
      },
    };

    /** Sends the pending bytes as the last part and completes the multipart upload into `data`. */
    async function assemble(uploadId: string, state: UploadState): Promise<UploadState> {
      const multipart = state.multipart ?? "";
      const parts = [...state.parts];
      if (state.pending) {
        const bytes = await readSmall(folder(uploadId) + state.pending.name, state.pending.size);
        const n = parts.length + 1;
        const r = await client.send(
          new UploadPartCommand({
            Bucket,
            Key: dataName(uploadId),
            UploadId: multipart,
            PartNumber: n,
            Body: bytes,
            ContentLength: bytes.length,
          }),
        );
        parts.push({ n, etag: r.ETag ?? "", size: bytes.length });
      }
      try {
        await client.send(
          new CompleteMultipartUploadCommand({
            Bucket,
            Key: dataName(uploadId),
            UploadId: multipart,
            MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.n, ETag: p.etag })) },
          }),
        );
      } catch (e) {
        // Completed by an earlier try that stopped before it could say so in state.json?
        const size = lengthOf(state);
        const assembled = isNotFound(e) ? await head(dataName(uploadId)) : undefined;
        if (assembled?.size !== size) throw e;
      }
      const next: UploadState = { ...state, parts, pending: null, assembled: true };
      await save(uploadId, next);
      return next;
    }
  }

  return store;
}

function statusOf(e: unknown): number | undefined {
  return typeof e === "object" && e !== null
    ? (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode
    : undefined;
}

function isNotFound(e: unknown): boolean {
  const name = typeof e === "object" && e !== null ? (e as { name?: unknown }).name : undefined;
  if (name === "NoSuchBucket") return false;
  return name === "NoSuchKey" || name === "NotFound" || name === "NoSuchUpload" || statusOf(e) === 404;
}

/** A HandsafeError for an S3 failure: the SDK error stays as the cause, never on the wire. */
function failed(code: "blob.read_failed" | "blob.write_failed", message: string, e: unknown): HandsafeError {
  if (e instanceof HandsafeError) return e;
  const name = typeof e === "object" && e !== null ? (e as { name?: unknown }).name : undefined;
  return new HandsafeError(code, `${message}${typeof name === "string" ? ` (S3: ${name})` : ""}`, {
    status: 500,
    cause: e,
  });
}

function corrupt(name: string, why: string): HandsafeError {
  return new HandsafeError("blob.corrupt", `blob ${name} is damaged: ${why}`, { status: 500 });
}

function tooLarge(): HandsafeError {
  return new HandsafeError(
    "blob.too_large",
    `a blob in the S3 store is at most ${MAX_PARTS} parts of ${S3_PART_SIZE / 2 ** 20} MiB`,
    { status: 413 },
  );
}

function completing(uploadId: string): HandsafeError {
  return new HandsafeError(
    "blob.upload_completing",
    `upload ${uploadId} is being completed: complete it again or abort it`,
    { status: 409 },
  );
}
