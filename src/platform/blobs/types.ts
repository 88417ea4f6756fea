/**
 * Large immutable objects (update images, backups) live in a blob store, not the database:
 * the filesystem by default, S3-compatible storage by configuration. Keys are opaque paths such
 * as "updates/pkg_x/image.enc".
 */
export interface BlobInfo {
  key: string;
  size: number;
  /** Hex SHA-256 of the whole blob, computed while it was written. */
  sha256: string;
}

export interface BlobStore {
  /** Streams `data` in; the blob appears whole or not at all (write to a temp, then rename). */
  put(key: string, data: AsyncIterable<Uint8Array> | Uint8Array): Promise<BlobInfo>;
  /** Bytes [start, end] inclusive (HTTP Range semantics); the whole blob without a range. */
  get(key: string, range?: { start: number; end?: number }): AsyncIterable<Uint8Array>;
  stat(key: string): Promise<BlobInfo | undefined>;
  delete(key: string): Promise<void>;
  /** Resumable writes of large blobs (secure backup). */
  readonly uploads: BlobUploads;
}

/** Resumable writes: bytes appended in order under an upload id, then published whole under a key. */
export interface BlobUploads {
  /** Starts an empty upload (idempotent for an existing id). Upload ids follow the blob key rules, one segment. */
  begin(uploadId: string): Promise<void>;
  /**
   * Appends at `offset`, which must equal the current length (else HandsafeError
   * "blob.offset_mismatch", status 409, details {length}); returns the new length. If `data` fails
   * midway, the bytes safely stored so far stay (length() reports them) or are dropped back to the
   * last consistent point — never a corrupt upload. Unknown id: "blob.upload_not_found" 404.
   */
  append(uploadId: string, offset: number, data: AsyncIterable<Uint8Array> | Uint8Array): Promise<number>;
  /** Bytes stored so far, or undefined for an unknown upload. */
  length(uploadId: string): Promise<number | undefined>;
  /**
   * Publishes the bytes under `key` atomically (blob appears whole or not at all) and returns its
   * info (size, sha256 of the whole); removes the upload. Unknown id: "blob.upload_not_found" 404.
   */
  complete(uploadId: string, key: string): Promise<BlobInfo>;
  /** Drops the upload and its bytes (no-op if unknown). */
  abort(uploadId: string): Promise<void>;
}
