import { backend } from "#crypto-backend";
import { HandsafeError } from "../errors.ts";

/**
 * Ed25519 signatures (RFC 8032 §5.1, pure, no context). Keys are the 32-byte seed (the RFC's
 * "private key") and the 32-byte public key A; signatures are 64 bytes.
 */

export const ED25519_SEED_LENGTH = 32;
export const ED25519_PUBLIC_KEY_LENGTH = 32;
export const ED25519_SIGNATURE_LENGTH = 64;

export interface SigningKeyPair {
  seed: Uint8Array;
  publicKey: Uint8Array;
}

function checkKey(what: string, key: Uint8Array, length: number): void {
  if (!(key instanceof Uint8Array) || key.length !== length)
    throw new HandsafeError("crypto.invalid_key", `${what} must be ${length} bytes`);
}

export function generateSigningKey(): SigningKeyPair {
  const seed = backend.randomBytes(ED25519_SEED_LENGTH);
  return { seed, publicKey: backend.ed25519PublicKey(seed) };
}

export function signingPublicKey(seed: Uint8Array): Uint8Array {
  checkKey("Ed25519 seed", seed, ED25519_SEED_LENGTH);
  return backend.ed25519PublicKey(seed);
}

export function sign(seed: Uint8Array, message: Uint8Array): Uint8Array {
  checkKey("Ed25519 seed", seed, ED25519_SEED_LENGTH);
  return backend.ed25519Sign(seed, message);
}

/**
 * True only for a valid signature. A public key of the wrong length is a caller's mistake
 * ("crypto.invalid_key"); a signature of the wrong length, or any malformed point, is an invalid
 * signature and gives `false` — signatures come from the outside, keys from our own records.
 */
export function verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  checkKey("Ed25519 public key", publicKey, ED25519_PUBLIC_KEY_LENGTH);
  if (signature.length !== ED25519_SIGNATURE_LENGTH) return false;
  return backend.ed25519Verify(publicKey, message, signature);
}
