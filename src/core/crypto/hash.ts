import { backend } from "#crypto-backend";
import type { IncrementalHash } from "./backend/types.ts";

export type { IncrementalHash };

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
