import { HandsafeError } from "../errors.ts";
import { base64Url } from "./base64.ts";

/** RFC 4648 §5 base64url without padding: the one encoding of bytes in our JSON. */
export const toBase64url = (bytes: Uint8Array): string => base64Url.encode(bytes);

/**
 * Strict decoding (codec/base64.ts): no padding, no whitespace, no other alphabet, non-canonical
 * trailing bits refused — so one byte string has exactly one encoding.
 */
export function fromBase64url(text: string, field = "value"): Uint8Array {
  const bytes = typeof text === "string" ? base64Url.decode(text) : undefined;
  if (bytes === undefined)
    throw new HandsafeError("request.invalid_encoding", `${field} is not canonical unpadded base64url`);
  return bytes;
}

/** Decodes and checks the length — the usual check for keys, nonces and signatures. */
export function fromBase64urlOfLength(text: string, length: number, field = "value"): Uint8Array {
  const bytes = fromBase64url(text, field);
  if (bytes.length !== length)
    throw new HandsafeError(
      "request.invalid_length",
      `${field} must be ${length} bytes, got ${bytes.length}`,
    );
  return bytes;
}
