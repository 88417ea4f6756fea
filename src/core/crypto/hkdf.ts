import { expand, extract, hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { utf8 } from "../codec/bytes.ts";
import { HandsafeError } from "../errors.ts";

/**
 * HKDF-SHA256 (RFC 5869) on @noble/hashes on every platform: for the short outputs we derive it
 * measured faster than node's hkdfSync, and it is synchronous everywhere. `info` may be a label
 * string (UTF-8 encoded, e.g. "handsafe/v1/management/session") or bytes.
 */

const HASH_LENGTH = 32;
/** RFC 5869 §2.3: L ≤ 255 · HashLen. */
export const HKDF_SHA256_MAX_LENGTH = 255 * HASH_LENGTH;

function infoBytes(info: string | Uint8Array): Uint8Array {
  return typeof info === "string" ? utf8(info) : info;
}

function checkLength(length: number): void {
  if (!Number.isSafeInteger(length) || length < 1 || length > HKDF_SHA256_MAX_LENGTH)
    throw new HandsafeError(
      "crypto.invalid_length",
      `HKDF-SHA256 output must be 1..${HKDF_SHA256_MAX_LENGTH} bytes, got ${length}`,
    );
}

/** Extract-then-expand. An empty salt means HashLen zero bytes (RFC 5869 §2.2). */
export function hkdfSha256(
  ikm: Uint8Array,
  salt: Uint8Array | undefined,
  info: string | Uint8Array,
  length: number,
): Uint8Array {
  checkLength(length);
  return hkdf(sha256, ikm, salt, infoBytes(info), length);
}

/** RFC 5869 §2.2 HKDF-Extract(salt, IKM) → PRK (32 bytes). */
export function hkdfExtract(ikm: Uint8Array, salt?: Uint8Array): Uint8Array {
  return extract(sha256, ikm, salt);
}

/** RFC 5869 §2.3 HKDF-Expand(PRK, info, L) → OKM. */
export function hkdfExpand(prk: Uint8Array, info: string | Uint8Array, length: number): Uint8Array {
  checkLength(length);
  if (prk.length < HASH_LENGTH)
    throw new HandsafeError("crypto.invalid_key", `HKDF PRK must be at least ${HASH_LENGTH} bytes`);
  return expand(sha256, prk, infoBytes(info), length);
}
