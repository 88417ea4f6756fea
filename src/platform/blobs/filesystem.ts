/**
 * The filesystem blob store: one file per blob under `rootDir`, at the key's path.
 *
 * File format: a 48-byte header, then the blob's bytes.
 *   0..8    "HSBLOB01"      magic and version
 *   8..16   size            uint64 big-endian, bytes after the header
 *   16..48  SHA-256         of those bytes
 * Keeping size and hash inside the one file makes a put a single rename: the blob, its size and its
 * hash appear together or not at all, and stat() never rehashes.
 *
 * put(): stream into `<dir>/.tmp-<random>` (same folder, so rename is atomic), hashing and
 * counting as the bytes go by; write the header; fsync the file; rename over the key; fsync the
 * folder so the rename survives a power cut. One chunk is in memory at a time.
 *
 * Keys: 1–1024 characters of [A-Za-z0-9._/-], "/"-separated segments that are non-empty and do not
 * start with "." (so no ".", "..", and no clash with temp files), no leading or trailing "/".
 *
 * Uploads (resumable writes, BlobUploads): `<root>/.uploads/<id>` is already in the blob file format,
 * the 48 header bytes reserved (zeros) and the bytes appended after them, so its length is the file's
 * size less the header. append() writes at the end in order and fdatasyncs before it answers, so a
 * length once reported survives a power cut; a source that fails midway leaves the bytes written so
 * far (a prefix of what was sent, so never a corrupt upload). complete() writes the header, fsyncs and
 * renames the file onto the key: no copy of the data. The SHA-256 is kept running in memory while this
 * store object lives; an upload continued after a restart (or by another store object) is re-hashed
 * from the file on completion instead. Operations on one upload id are serialised in this process;
 * two processes must not append to the same upload at once.
 */
import { type FileHandle, mkdir, open, rename, stat, unlink } from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";
import { toHex } from "../../core/codec/bytes.ts";
import { createStreamHash, type StreamHash } from "../../core/crypto/hash.ts";
import { randomToken } from "../../core/crypto/random.ts";
import { HandsafeError } from "../../core/errors.ts";
import { WriteBehind } from "../../core/streams.ts";
import type { BlobInfo, BlobStore, BlobUploads } from "./types.ts";

const MAGIC = Buffer.from("HSBLOB01", "ascii");
const HEADER_SIZE = 48;
/** Bytes per read when streaming a blob out (one more is read ahead). */
const READ_CHUNK = 256 * 1024;
const REHASH_CHUNK = 1024 * 1024;
const UPLOADS_DIR = ".uploads";
const KEY = /^[A-Za-z0-9._/-]{1,1024}$/;

export function validateBlobKey(key: string): void {
  const ok =
    typeof key === "string" &&
    KEY.test(key) &&
    key.split("/").every((segment) => segment.length > 0 && !segment.startsWith("."));
  if (!ok)
    throw new HandsafeError(
      "blob.invalid_key",
      `blob key ${JSON.stringify(typeof key === "string" ? key.slice(0, 100) : key)} is not allowed: ` +
        "use [A-Za-z0-9._-] segments joined by '/', none empty or starting with '.'",
      { status: 400 },
    );
}

/** Upload ids follow the blob key rules, as one segment (no "/"). */
export function validateUploadId(uploadId: string): void {
  if (typeof uploadId !== "string" || uploadId.includes("/") || uploadId.length > 255)
    throw new HandsafeError(
      "blob.invalid_key",
      `upload id ${JSON.stringify(typeof uploadId === "string" ? uploadId.slice(0, 100) : uploadId)} is not allowed: ` +
        "use 1–255 characters of [A-Za-z0-9._-], not starting with '.'",
      { status: 400 },
    );
  validateBlobKey(uploadId);
}

/**
 * The inclusive byte range to serve of a blob of `size` bytes, with HTTP semantics (RFC 9110
 * §14.1.2): an end past the last byte means "to the end"; otherwise "blob.range_not_satisfiable" (416).
 */
export function resolveRange(
  key: string,
  size: number,
  range: { start: number; end?: number } | undefined,
): { start: number; end: number } {
  if (!range) return { start: 0, end: size - 1 };
  const start = range.start;
  const end = Math.min(range.end ?? size - 1, size - 1);
  if (!Number.isSafeInteger(start) || start < 0 || !Number.isSafeInteger(end) || start >= size || end < start)
    throw new HandsafeError(
      "blob.range_not_satisfiable",
      `range ${range.start}-${range.end ?? ""} is outside blob ${key} of ${size} bytes`,
      { status: 416, details: { size } },
    );
  return { start, end };
}

export function offsetMismatch(uploadId: string, offset: number, length: number): HandsafeError {
  return new HandsafeError(
    "blob.offset_mismatch",
    `upload ${uploadId} has ${length} bytes: append at offset ${length}, not ${offset}`,
    { status: 409, details: { length } },
  );
}

export function uploadNotFound(uploadId: string): HandsafeError {
  return new HandsafeError("blob.upload_not_found", `no upload ${uploadId}`, { status: 404 });
}

/** Bytes written between two background flushes of a blob being stored. */
const FLUSH_EVERY = 32 * 1024 * 1024;
/**
 * The same for an upload's append, which fdatasyncs before it answers: with a flush started after
 * each MiB, most of a 4 MiB PATCH is on its way to the disk while the rest still arrives, and the
 * closing fdatasync waits for the tail only.
 */
const APPEND_FLUSH_EVERY = 1024 * 1024;

/**
 * Flushes a file being written to disk as it grows: each time another FLUSH_EVERY bytes were
 * written, an fdatasync starts on the thread pool (one at a time) while the writing goes on. The
 * closing fsync then has only the tail to write, so a large blob's disk writes overlap the work
 * that produces it instead of all waiting for the end (RocksDB's bytes_per_sync, for the same
 * reason). The file is durable only after that closing fsync, as before; a background flush that
 * fails fails the store at `settle`.
 */
export class ProgressiveFlush {
  #unflushed = 0;
  #running: Promise<void> | undefined;
  #failure: unknown;

  constructor(
    private readonly file: { datasync(): Promise<void> },
    private readonly every = FLUSH_EVERY,
  ) {}

  /** `n` more bytes reached the file. */
  wrote(n: number): void {
    this.#unflushed += n;
    if (this.#running !== undefined || this.#unflushed < this.every || this.#failure !== undefined) return;
    this.#unflushed = 0;
    this.#running = this.file.datasync().then(
      () => {
        this.#running = undefined;
      },
      (e: unknown) => {
        this.#running = undefined;
        this.#failure = e;
      },
    );
  }

  /** Waits for the flush still running; throws what a background flush failed with. */
  async settle(): Promise<void> {
    await this.#running;
    if (this.#failure !== undefined) throw this.#failure;
  }
}

/** The chunks of `data`, each checked to be a Uint8Array ("blob.invalid_data" otherwise). */
export async function* blobChunks(data: AsyncIterable<Uint8Array> | Uint8Array): AsyncIterable<Uint8Array> {
  for await (const chunk of data instanceof Uint8Array ? [data] : data) {
    if (!(chunk instanceof Uint8Array))
      throw new HandsafeError("blob.invalid_data", "blob data must be Uint8Array chunks", { status: 400 });
    yield chunk;
  }
}

/** Runs the calls made for one name one after another (in this process), in the order they came. */
export function createSerialiser(): <T>(name: string, work: () => Promise<T>) => Promise<T> {
  const tails = new Map<string, Promise<unknown>>();
  return async (name, work) => {
    const previous = tails.get(name);
    const run = (previous ?? Promise.resolve()).then(work, work);
    const tail = run.then(
      () => {},
      () => {},
    );
    tails.set(name, tail);
    try {
      return await run;
    } finally {
      if (tails.get(name) === tail) tails.delete(name);
    }
  };
}

export function createFilesystemBlobStore(rootDir: string): BlobStore {
  const root = resolve(rootDir);
  const uploadsDir = join(root, UPLOADS_DIR);

  function pathOf(key: string): string {
    validateBlobKey(key);
    const path = resolve(root, key);
    // Belt and braces: the key rules already keep every path under the root.
    if (!path.startsWith(root + sep))
      throw new HandsafeError("blob.invalid_key", "blob key leaves the store", { status: 400 });
    return path;
  }

  return {
    async put(key, data) {
      const path = pathOf(key);
      const dir = dirname(path);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const temp = join(dir, `.tmp-${randomToken(12)}`);
      const file = await open(temp, "wx", 0o600);
      // Hashed on a worker thread (core/crypto hash lanes) while this thread writes.
      const hash = createStreamHash("sha256");
      let size = 0;
      const flush = new ProgressiveFlush(file);
      try {
        // One write runs on the thread pool while the next chunk is pulled and hashed.
        const behind = new WriteBehind(
          (bytes, at) => writeAll(file, bytes, at),
          HEADER_SIZE,
          (n) => flush.wrote(n),
        );
        try {
          for await (const chunk of blobChunks(data)) {
            const wait = hash.update(chunk);
            if (wait) await wait;
            await behind.write(chunk);
            size += chunk.length;
          }
        } finally {
          try {
            await behind.settle();
          } finally {
            await flush.settle();
          }
        }
        const digest = await hash.digest();
        await writeAll(file, header(size, digest), 0);
        await file.sync();
        await file.close();
        await rename(temp, path);
        await syncDirectory(dir);
        return { key, size, sha256: toHex(digest) };
      } catch (e) {
        hash.release();
        await file.close().catch(() => {});
        await unlink(temp).catch(() => {});
        if (e instanceof HandsafeError) throw e;
        throw new HandsafeError("blob.write_failed", `cannot store blob ${key}`, { status: 500, cause: e });
      }
    },

    async *get(key, range) {
      const path = pathOf(key);
      const file = await openBlob(path);
      if (!file) throw new HandsafeError("blob.not_found", `no blob ${key}`, { status: 404 });
      try {
        const info = await readHeader(file, key);
        const { start, end } = resolveRange(key, info.size, range);
        // One read ahead: the next chunk is read on the thread pool while this one is consumed.
        const readAt = async (offset: number) => {
          const length = Math.min(READ_CHUNK, end - offset + 1);
          // A fresh buffer per chunk: the consumer may keep what we yield.
          const chunk = new Uint8Array(length);
          const { bytesRead } = await file.read(chunk, 0, length, HEADER_SIZE + offset);
          return bytesRead === length ? chunk : chunk.subarray(0, bytesRead);
        };
        let ahead: Promise<Uint8Array> | undefined = start <= end ? readAt(start) : undefined;
        try {
          for (let offset = start; ahead !== undefined; ) {
            const chunk = await ahead;
            if (chunk.length === 0) throw corrupt(key, "file shorter than its header says");
            offset += chunk.length;
            ahead = offset <= end ? readAt(offset) : undefined;
            yield chunk;
          }
        } finally {
          // A consumer that stopped early: let the read still out finish before the file closes.
          await ahead?.catch(() => {});
        }
      } finally {
        await file.close();
      }
    },

    async stat(key) {
      const file = await openBlob(pathOf(key));
      if (!file) return undefined;
      try {
        return await readHeader(file, key);
      } finally {
        await file.close();
      }
    },

    async delete(key) {
      try {
        await unlink(pathOf(key));
      } catch (e) {
        if (!isMissing(e)) throw e;
      }
    },

    uploads: createFilesystemUploads(uploadsDir, pathOf),
  };
}

/** Per upload, while this store object lives: the SHA-256 of its first `length` bytes. */
interface RunningHash {
  hash: StreamHash;
  length: number;
}

function createFilesystemUploads(uploadsDir: string, pathOf: (key: string) => string): BlobUploads {
  const serialise = createSerialiser();
  const hashes = new Map<string, RunningHash>();
  /** Drops an upload's running hash (its lane, when it has one, goes back). */
  const forget = (uploadId: string) => {
    hashes.get(uploadId)?.hash.release();
    hashes.delete(uploadId);
  };

  function uploadPath(uploadId: string): string {
    validateUploadId(uploadId);
    return join(uploadsDir, uploadId);
  }

  /** The upload's file opened for writing, or "blob.upload_not_found". */
  async function openUpload(uploadId: string, path: string): Promise<FileHandle> {
    try {
      return await open(path, "r+");
    } catch (e) {
      if (isMissing(e)) throw uploadNotFound(uploadId);
      throw writeFailed(`cannot open upload ${uploadId}`, e);
    }
  }

  return {
    async begin(uploadId) {
      const path = uploadPath(uploadId);
      await serialise(uploadId, async () => {
        try {
          await mkdir(uploadsDir, { recursive: true, mode: 0o700 });
          let file: FileHandle;
          try {
            file = await open(path, "wx", 0o600);
          } catch (e) {
            if ((e as { code?: unknown }).code === "EEXIST") return;
            throw e;
          }
          try {
            // The header's place, filled in by complete().
            await writeAll(file, Buffer.alloc(HEADER_SIZE), 0);
            await file.sync();
          } finally {
            await file.close();
          }
          await syncDirectory(uploadsDir);
          hashes.set(uploadId, { hash: createStreamHash("sha256"), length: 0 });
        } catch (e) {
          throw writeFailed(`cannot begin upload ${uploadId}`, e);
        }
      });
    },

    async append(uploadId, offset, data) {
      const path = uploadPath(uploadId);
      return serialise(uploadId, async () => {
        const file = await openUpload(uploadId, path);
        try {
          let written: number;
          try {
            written = Math.max(0, (await file.stat()).size - HEADER_SIZE);
          } catch (e) {
            throw writeFailed(`cannot read upload ${uploadId}`, e);
          }
          if (offset !== written) throw offsetMismatch(uploadId, offset, written);
          let running = hashes.get(uploadId);
          if (running?.length !== written) {
            // Continued after a restart: complete() re-hashes the file.
            forget(uploadId);
            running = written === 0 ? { hash: createStreamHash("sha256"), length: 0 } : undefined;
            if (running) hashes.set(uploadId, running);
          }
          let failure: unknown;
          const flush = new ProgressiveFlush(file, APPEND_FLUSH_EVERY);
          // Writes run on the thread pool while the next chunks are received and hashed;
          // `written` counts only the bytes whose writes (and all before them) completed.
          const behind = new WriteBehind(
            (bytes, at) => writeAll(file, bytes, at),
            HEADER_SIZE + written,
            (n) => {
              written += n;
              if (running) running.length = written;
              flush.wrote(n);
            },
          );
          let hashed = written;
          try {
            for await (const chunk of blobChunks(data)) {
              const wait = running?.hash.update(chunk);
              if (wait) await wait;
              hashed += chunk.length;
              await behind.write(chunk);
            }
            await behind.settle();
          } catch (e) {
            failure = e;
            // Whatever write is still out lands (or fails) before the file is cut back below.
            await behind.settle().catch(() => {});
          }
          if (running !== undefined && hashed !== written) {
            // The running hash took bytes that were not all stored: it no longer fits the file.
            forget(uploadId);
            running = undefined;
          }
          try {
            // The background flush still running completes (or fails) first.
            await flush.settle();
            // A write that failed partway may have stored part of its chunk: cut back to `written`.
            if (failure !== undefined) await file.truncate(HEADER_SIZE + written);
            await file.datasync();
          } catch (e) {
            forget(uploadId);
            throw writeFailed(`cannot store upload ${uploadId}`, e);
          }
          if (failure === undefined) return written;
          if (failure instanceof HandsafeError) throw failure;
          throw new HandsafeError(
            "blob.write_failed",
            `upload ${uploadId} was cut off at ${written} bytes; append again from there`,
            { status: 500, details: { length: written }, cause: failure },
          );
        } finally {
          await file.close().catch(() => {});
        }
      });
    },

    async length(uploadId) {
      const path = uploadPath(uploadId);
      try {
        return Math.max(0, (await stat(path)).size - HEADER_SIZE);
      } catch (e) {
        if (isMissing(e)) return undefined;
        throw new HandsafeError("blob.read_failed", `cannot read upload ${uploadId}`, {
          status: 500,
          cause: e,
        });
      }
    },

    async complete(uploadId, key) {
      const path = uploadPath(uploadId);
      const target = pathOf(key);
      return serialise(uploadId, async () => {
        const file = await openUpload(uploadId, path);
        let size: number;
        let digest: Uint8Array;
        try {
          size = Math.max(0, (await file.stat()).size - HEADER_SIZE);
          const running = hashes.get(uploadId);
          hashes.delete(uploadId);
          if (running?.length === size) digest = await running.hash.digest();
          else {
            running?.hash.release();
            digest = await rehash(file, size);
          }
          await writeAll(file, header(size, digest), 0);
          await file.sync();
        } catch (e) {
          throw writeFailed(`cannot complete upload ${uploadId}`, e);
        } finally {
          await file.close().catch(() => {});
        }
        try {
          const dir = dirname(target);
          await mkdir(dir, { recursive: true, mode: 0o700 });
          await rename(path, target);
          await syncDirectory(dir);
          await syncDirectory(uploadsDir);
        } catch (e) {
          throw writeFailed(`cannot store blob ${key}`, e);
        }
        return { key, size, sha256: toHex(digest) };
      });
    },

    async abort(uploadId) {
      const path = uploadPath(uploadId);
      await serialise(uploadId, async () => {
        forget(uploadId);
        try {
          await unlink(path);
        } catch (e) {
          if (isMissing(e)) return;
          throw writeFailed(`cannot drop upload ${uploadId}`, e);
        }
      });
    },
  };
}

/** The SHA-256 of the `size` bytes after the header, read back 1 MiB at a time. */
async function rehash(file: FileHandle, size: number): Promise<Uint8Array> {
  const hash = createStreamHash("sha256");
  try {
    const buffer = Buffer.allocUnsafe(REHASH_CHUNK);
    for (let offset = 0; offset < size; ) {
      const { bytesRead } = await file.read(
        buffer,
        0,
        Math.min(buffer.length, size - offset),
        HEADER_SIZE + offset,
      );
      if (bytesRead === 0) throw new Error("upload file shorter than its length");
      // The buffer is read into again only after the hash has taken its copy.
      const wait = hash.update(buffer.subarray(0, bytesRead));
      if (wait) await wait;
      offset += bytesRead;
    }
    return await hash.digest();
  } catch (e) {
    hash.release();
    throw e;
  }
}

function writeFailed(message: string, cause: unknown): HandsafeError {
  if (cause instanceof HandsafeError) return cause;
  return new HandsafeError("blob.write_failed", message, { status: 500, cause });
}

function header(size: number, sha256: Uint8Array): Buffer {
  const out = Buffer.alloc(HEADER_SIZE);
  MAGIC.copy(out, 0);
  out.writeBigUInt64BE(BigInt(size), 8);
  out.set(sha256, 16);
  return out;
}

async function readHeader(file: FileHandle, key: string): Promise<BlobInfo> {
  const buf = Buffer.alloc(HEADER_SIZE);
  const { bytesRead } = await file.read(buf, 0, HEADER_SIZE, 0);
  if (bytesRead !== HEADER_SIZE || !buf.subarray(0, 8).equals(MAGIC)) throw corrupt(key, "bad header");
  const size = Number(buf.readBigUInt64BE(8));
  const { size: fileSize } = await file.stat();
  if (fileSize !== HEADER_SIZE + size) throw corrupt(key, "size does not match its header");
  return { key, size, sha256: buf.subarray(16, 48).toString("hex") };
}

/** The blob file opened for reading, or undefined when there is none (a folder is none). */
async function openBlob(path: string): Promise<FileHandle | undefined> {
  let file: FileHandle;
  try {
    file = await open(path, "r");
  } catch (e) {
    if (isMissing(e)) return undefined;
    throw e;
  }
  if ((await file.stat()).isFile()) return file;
  await file.close();
  return undefined;
}

async function writeAll(file: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < bytes.length; ) {
    const { bytesWritten } = await file.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}

/** fsync on the folder makes a rename in it durable (POSIX); some platforms refuse, which is fine. */
async function syncDirectory(dir: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, "r");
    await handle.sync();
  } catch {
    // e.g. EISDIR/EPERM on platforms that cannot open folders: nothing more to do there.
  } finally {
    await handle?.close();
  }
}

function corrupt(key: string, why: string): HandsafeError {
  return new HandsafeError("blob.corrupt", `blob ${key} is damaged: ${why}`, { status: 500 });
}

/** No blob there: nothing at the path, a blob where a folder was expected, or a folder. */
function isMissing(e: unknown): boolean {
  const code = typeof e === "object" && e !== null ? (e as { code?: unknown }).code : undefined;
  return code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR";
}
