import { utf8 } from "../codec/bytes.ts";
import { HandsafeError } from "../errors.ts";
import { hmacSha256 } from "./hash.ts";

/**
 * HKDF-SHA256 (RFC 5869) read directly off §2.2–2.3 over the backend's HMAC-SHA256: node's native
 * HMAC on Node, @noble/hashes in a browser. Synchronous everywhere; for our short outputs it
 * measured ~1.8× faster than @noble's hkdf on Node and faster than node's hkdfSync, whose every
 * call is a job round trip. `info` may be a label string (UTF-8, e.g.
 * "handsafe/v1/management/session") or bytes.
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
  return expandPrk(hkdfExtract(ikm, salt), infoBytes(info), length);
}

/** RFC 5869 §2.2 HKDF-Extract(salt, IKM) → PRK (32 bytes). */
export function hkdfExtract(ikm: Uint8Array, salt?: Uint8Array): Uint8Array {
  return hmacSha256(salt === undefined || salt.length === 0 ? new Uint8Array(HASH_LENGTH) : salt, ikm);
}

/** T(0) = empty; T(i) = HMAC(PRK, T(i−1) ‖ info ‖ i); OKM = the first L bytes of T(1) ‖ T(2) ‖ … */
function expandPrk(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  const okm = new Uint8Array(length);
  let previous: Uint8Array = new Uint8Array(0);
  for (let i = 1, offset = 0; offset < length; i++) {
    const input = new Uint8Array(previous.length + info.length + 1);
    input.set(previous, 0);
    input.set(info, previous.length);
    input[input.length - 1] = i;
    previous = hmacSha256(prk, input);
    okm.set(previous.subarray(0, Math.min(HASH_LENGTH, length - offset)), offset);
    offset += HASH_LENGTH;
  }
  return okm;
}

/** RFC 5869 §2.3 HKDF-Expand(PRK, info, L) → OKM. */
export function hkdfExpand(prk: Uint8Array, info: string | Uint8Array, length: number): Uint8Array {
  checkLength(length);
  if (prk.length < HASH_LENGTH)
    throw new HandsafeError("crypto.invalid_key", `HKDF PRK must be at least ${HASH_LENGTH} bytes`);
  return expandPrk(prk, infoBytes(info), length);
}
