import { backend } from "#crypto-backend";
import { HandsafeError } from "../errors.ts";
import { AEAD_TAG_LENGTH } from "./backend/types.ts";

/**
 * AEADs with 32-byte keys and 12-byte nonces; sealed form is `ciphertext || 16-byte tag`.
 * Nonces must never repeat under one key (RFC 8439 §4, NIST SP 800-38D §8): callers either use a
 * fresh random nonce per message or a counter. Any authentication failure — tampered ciphertext,
 * tag or associated data, wrong key or nonce — is HandsafeError("crypto.decrypt_failed").
 */

export const AEAD_KEY_LENGTH = 32;
export const AEAD_NONCE_LENGTH = 12;
export { AEAD_TAG_LENGTH };

function check(key: Uint8Array, nonce: Uint8Array): void {
  if (key.length !== AEAD_KEY_LENGTH)
    throw new HandsafeError("crypto.invalid_key", `AEAD key must be ${AEAD_KEY_LENGTH} bytes`);
  if (nonce.length !== AEAD_NONCE_LENGTH)
    throw new HandsafeError("crypto.invalid_nonce", `AEAD nonce must be ${AEAD_NONCE_LENGTH} bytes`);
}

/** AES-256-GCM (NIST SP 800-38D) with a 96-bit nonce and a full 128-bit tag. */
export function aesGcmSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad?: Uint8Array,
): Uint8Array {
  check(key, nonce);
  return backend.aes256gcmSeal(key, nonce, plaintext, aad);
}

export function aesGcmOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad?: Uint8Array,
): Uint8Array {
  check(key, nonce);
  return backend.aes256gcmOpen(key, nonce, sealed, aad);
}

/** ChaCha20-Poly1305 (RFC 8439 §2.8). */
export function chachaSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad?: Uint8Array,
): Uint8Array {
  check(key, nonce);
  return backend.chacha20poly1305Seal(key, nonce, plaintext, aad);
}

/** The same seal as `[ciphertext, tag]` (concatenated, they are `chachaSeal`'s output). */
export function chachaSealDetached(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad?: Uint8Array,
): [Uint8Array, Uint8Array] {
  check(key, nonce);
  if (backend.chacha20poly1305SealDetached)
    return backend.chacha20poly1305SealDetached(key, nonce, plaintext, aad);
  const sealed = backend.chacha20poly1305Seal(key, nonce, plaintext, aad);
  const split = sealed.length - AEAD_TAG_LENGTH;
  return [sealed.subarray(0, split), sealed.subarray(split)];
}

export function chachaOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad?: Uint8Array,
): Uint8Array {
  check(key, nonce);
  return backend.chacha20poly1305Open(key, nonce, sealed, aad);
}
