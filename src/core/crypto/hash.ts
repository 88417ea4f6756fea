import { backend } from "#crypto-backend";
import { type IncrementalHash, inlineStreamHash, type StreamHash } from "./backend/types.ts";

export type { IncrementalHash, StreamHash };

/** SHA-256 (FIPS 180-4). */
export function sha256(data: Uint8Array): Uint8Array {
  return backend.sha256(data);
}

/** SHA-512 (FIPS 180-4). */
export function sha512(data: Uint8Array): Uint8Array {
  return backend.sha512(data);
}

/** HMAC-SHA256 (RFC 2104); any key length, as the RFC allows. */
export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  return backend.hmacSha256(key, data);
}

/** Incremental SHA-256 / SHA-512: native on Node, @noble/hashes in a browser. */
export function createHash(algorithm: "sha256" | "sha512"): IncrementalHash {
  return backend.createHash(algorithm);
}

/**
 * Incremental SHA-256 / SHA-512 for long streams (a blob, a backup item): on Node the hashing runs on
 * a worker thread once the stream passes 128 KiB, overlapping the caller's own work on the same bytes;
 * elsewhere it runs inline. `update` may return a promise: await it before the next update.
 */
export function createStreamHash(algorithm: "sha256" | "sha512"): StreamHash {
  return backend.createStreamHash?.(algorithm) ?? inlineStreamHash(backend.createHash(algorithm));
}
