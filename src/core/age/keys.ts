import { randomBytes } from "../crypto/random.ts";
import { x25519PublicKey } from "../crypto/x25519.ts";
import { bech32Decode, bech32Encode } from "./bech32.ts";
import { AGE_ERRORS, ageError } from "./errors.ts";

/**
 * age v1 §X25519 recipient type: an identity is 32 CSPRNG bytes, Bech32 with HRP `AGE-SECRET-KEY-`
 * (written upper-case); its recipient is X25519(identity, basepoint), Bech32 with HRP `age`.
 */

export const IDENTITY_HRP = "age-secret-key-";
export const RECIPIENT_HRP = "age";
const KEY_LENGTH = 32;

function decodeKey(text: string, hrp: string, what: string): Uint8Array {
  const decoded = bech32Decode(text);
  if (decoded === undefined || decoded.hrp !== hrp || decoded.data.length !== KEY_LENGTH)
    throw ageError(AGE_ERRORS.keyInvalid, `not an age ${what}`);
  return decoded.data;
}

export function encodeRecipient(publicKey: Uint8Array): string {
  if (publicKey.length !== KEY_LENGTH) throw ageError(AGE_ERRORS.keyInvalid, "X25519 recipient is 32 bytes");
  return bech32Encode(RECIPIENT_HRP, publicKey);
}

/** `age1…` → the 32-byte X25519 public key. */
export function parseRecipient(text: string): Uint8Array {
  return decodeKey(text, RECIPIENT_HRP, "X25519 recipient (age1…)");
}

export function encodeIdentity(privateKey: Uint8Array): string {
  if (privateKey.length !== KEY_LENGTH) throw ageError(AGE_ERRORS.keyInvalid, "X25519 identity is 32 bytes");
  return bech32Encode(IDENTITY_HRP, privateKey).toUpperCase();
}

/** `AGE-SECRET-KEY-1…` → the 32-byte X25519 private scalar. */
export function parseIdentity(text: string): Uint8Array {
  return decodeKey(text, IDENTITY_HRP, "X25519 identity (AGE-SECRET-KEY-1…)");
}

/** A fresh identity string, as `age-keygen` would print it. */
export function generateIdentity(): string {
  return encodeIdentity(randomBytes(KEY_LENGTH));
}

/** The `age1…` recipient of an `AGE-SECRET-KEY-1…` identity. */
export function identityToRecipient(identity: string): string {
  return encodeRecipient(x25519PublicKey(parseIdentity(identity)));
}
