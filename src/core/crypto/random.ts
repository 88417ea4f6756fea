import { backend } from "#crypto-backend";
import { toBase64url } from "../codec/base64url.ts";
import { HandsafeError } from "../errors.ts";

/** Bytes from the platform CSPRNG (node:crypto or crypto.getRandomValues). */
export function randomBytes(length: number): Uint8Array {
  if (!Number.isSafeInteger(length) || length < 0)
    throw new HandsafeError(
      "crypto.invalid_length",
      `random length must be a whole number ≥ 0, got ${length}`,
    );
  return backend.randomBytes(length);
}

/** An unguessable identifier or secret for URLs and JSON: `bytes` random bytes as base64url. */
export function randomToken(bytes = 32): string {
  return toBase64url(randomBytes(bytes));
}
