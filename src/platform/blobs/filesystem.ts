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
 */
import { createHash } from "node:crypto";
import { type FileHandle, mkdir, open, rename, unlink } from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";
import { randomToken } from "../../core/crypto/random.ts";
import { HandsafeError } from "../../core/errors.ts";
import type { BlobInfo, BlobStore } from "./types.ts";

const MAGIC = Buffer.from("HSBLOB01", "ascii");
const HEADER_SIZE = 48;
const READ_CHUNK = 64 * 1024;
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

export function createFilesystemBlobStore(rootDir: string): BlobStore {
  const root = resolve(rootDir);

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
      const hash = createHash("sha256");
      let size = 0;
      try {
        let position = HEADER_SIZE;
        for await (const chunk of data instanceof Uint8Array ? [data] : data) {
          if (!(chunk instanceof Uint8Array))
            throw new HandsafeError("blob.invalid_data", "blob data must be Uint8Array chunks", {
              status: 400,
            });
          hash.update(chunk);
          await writeAll(file, chunk, position);
          position += chunk.length;
          size += chunk.length;
        }
        const digest = hash.digest();
        await writeAll(file, header(size, digest), 0);
        await file.sync();
        await file.close();
        await rename(temp, path);
        await syncDirectory(dir);
        return { key, size, sha256: digest.toString("hex") };
      } catch (e) {
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
        let start = 0;
        let end = info.size - 1;
        if (range) {
          start = range.start;
          // HTTP semantics (RFC 9110 §14.1.2): an end past the last byte means "to the end".
          end = Math.min(range.end ?? info.size - 1, info.size - 1);
          if (
            !Number.isSafeInteger(start) ||
            start < 0 ||
            !Number.isSafeInteger(end) ||
            start >= info.size ||
            end < start
          )
            throw new HandsafeError(
              "blob.range_not_satisfiable",
              `range ${range.start}-${range.end ?? ""} is outside blob ${key} of ${info.size} bytes`,
              { status: 416, details: { size: info.size } },
            );
        }
        for (let offset = start; offset <= end; ) {
          const length = Math.min(READ_CHUNK, end - offset + 1);
          // A fresh buffer per chunk: the consumer may keep what we yield.
          const chunk = new Uint8Array(length);
          const { bytesRead } = await file.read(chunk, 0, length, HEADER_SIZE + offset);
          if (bytesRead === 0) throw corrupt(key, "file shorter than its header says");
          yield bytesRead === length ? chunk : chunk.subarray(0, bytesRead);
          offset += bytesRead;
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
  };
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
