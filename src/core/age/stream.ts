import { chachaOpen, chachaSealDetached } from "../crypto/aead.ts";
import { hkdfSha256 } from "../crypto/hkdf.ts";
import { isHandsafeError } from "../errors.ts";
import { AGE_ERRORS, ageError } from "./errors.ts";
import type { ByteReader } from "./reader.ts";

/**
 * age v1 §Payload: after a 16-byte nonce, the plaintext in 64 KiB chunks, each sealed with
 * ChaCha20-Poly1305 under HKDF-SHA-256(ikm = file key, salt = nonce, info = "payload") and the nonce
 * `11-byte big-endian chunk counter || last-chunk flag`. The final chunk may be short but is empty only
 * when the whole plaintext is. Both directions hold one chunk at a time.
 */

export const PAYLOAD_INFO = "payload";
export const PAYLOAD_NONCE_LENGTH = 16;
export const CHUNK_SIZE = 64 * 1024;
const TAG_LENGTH = 16;
export const SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_LENGTH;

export function payloadKey(fileKey: Uint8Array, nonce: Uint8Array): Uint8Array {
  return hkdfSha256(fileKey, nonce, PAYLOAD_INFO, 32);
}

/** The STREAM nonce of chunk `counter` (counters stay below 2^53: 2^69 bytes of plaintext). */
export function chunkNonce(counter: number, last: boolean): Uint8Array {
  const nonce = new Uint8Array(12);
  let c = counter;
  for (let i = 10; i >= 0 && c > 0; i--) {
    nonce[i] = c % 256;
    c = Math.floor(c / 256);
  }
  nonce[11] = last ? 1 : 0;
  return nonce;
}

/**
 * Seals `plaintext` chunk by chunk, holding one chunk: yields each sealed chunk as two pieces, its
 * ciphertext (≤ 64 KiB) then its 16-byte tag — together the chunk's bytes, without copying the
 * ciphertext once more to join them.
 */
export async function* encryptPayload(
  key: Uint8Array,
  plaintext: AsyncIterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  const buffer = new Uint8Array(CHUNK_SIZE);
  let filled = 0;
  let counter = 0;
  for await (const piece of plaintext) {
    let at = 0;
    while (at < piece.length) {
      // A full buffer is sealed as non-final only once we know more plaintext follows.
      if (filled === CHUNK_SIZE) {
        yield* chachaSealDetached(key, chunkNonce(counter++, false), buffer);
        filled = 0;
      }
      const n = Math.min(CHUNK_SIZE - filled, piece.length - at);
      buffer.set(piece.subarray(at, at + n), filled);
      filled += n;
      at += n;
    }
  }
  yield* chachaSealDetached(key, chunkNonce(counter, true), buffer.subarray(0, filled));
}

function open(key: Uint8Array, counter: number, last: boolean, sealed: Uint8Array): Uint8Array | undefined {
  try {
    return chachaOpen(key, chunkNonce(counter, last), sealed);
  } catch (e) {
    if (isHandsafeError(e, "crypto.decrypt_failed")) return undefined;
    throw e;
  }
}

/**
 * Opens the chunks read from `reader` (positioned after the nonce), yielding each plaintext chunk
 * once it authenticates; whatever was yielded before a failure is authentic, but the whole file is
 * only when the generator returns normally.
 */
export async function* decryptPayload(key: Uint8Array, reader: ByteReader): AsyncGenerator<Uint8Array> {
  for (let counter = 0; ; counter++) {
    const sealed = await reader.read(SEALED_CHUNK_SIZE);
    if (sealed.length === 0)
      throw ageError(AGE_ERRORS.payloadTruncated, "age payload has no chunk after its nonce");
    if (sealed.length < TAG_LENGTH)
      throw ageError(AGE_ERRORS.payloadTruncated, "age payload ends inside a chunk's tag");
    if (!(await reader.atEnd())) {
      // More follows, so this (full-size) chunk must be a non-final one.
      const plain = open(key, counter, false, sealed);
      if (plain !== undefined) {
        yield plain;
        continue;
      }
      const final = open(key, counter, true, sealed);
      if (final !== undefined) {
        // The chunk itself is authentic (CCTV expects it released); what follows it is not.
        yield final;
        throw ageError(AGE_ERRORS.payloadTrailingData, "age payload has data after its final chunk");
      }
      throw ageError(AGE_ERRORS.payloadAuth, `age payload chunk ${counter} does not authenticate`);
    }
    const plain = open(key, counter, true, sealed);
    if (plain === undefined) {
      const nonFinal = open(key, counter, false, sealed);
      if (nonFinal !== undefined) {
        // A full non-final chunk is authentic and released (as CCTV expects); a short one cannot be non-final.
        if (sealed.length === SEALED_CHUNK_SIZE) yield nonFinal;
        throw ageError(AGE_ERRORS.payloadUnterminated, "age payload ends without a final chunk (truncated)");
      }
      throw ageError(AGE_ERRORS.payloadAuth, `age payload chunk ${counter} does not authenticate`);
    }
    if (plain.length === 0 && counter > 0)
      throw ageError(AGE_ERRORS.payloadEmptyChunk, "age payload's final chunk is empty after other chunks");
    yield plain;
    return;
  }
}
