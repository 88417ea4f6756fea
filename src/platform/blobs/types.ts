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
}
