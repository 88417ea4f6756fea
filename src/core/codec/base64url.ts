import { HandsafeError } from "../errors.ts";

/** RFC 4648 §5 base64url without padding: the one encoding of bytes in our JSON. */

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const LOOKUP = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) LOOKUP[ALPHABET.charCodeAt(i)] = i;

export function toBase64url(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]! + ALPHABET[(n >> 6) & 63]! + ALPHABET[n & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i]! << 16;
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]!;
  } else if (rest === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]! + ALPHABET[(n >> 6) & 63]!;
  }
  return out;
}

/**
 * Strict decoding: no padding, no whitespace, no other alphabet, and non-canonical trailing bits
 * refused — so one byte string has exactly one encoding.
 */
export function fromBase64url(text: string, field = "value"): Uint8Array {
  const bad = () =>
    new HandsafeError("request.invalid_encoding", `${field} is not canonical unpadded base64url`);
  if (text.length % 4 === 1) throw bad();
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const v = c < 128 ? LOOKUP[c]! : -1;
    if (v < 0) throw bad();
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  if ((acc & ((1 << bits) - 1)) !== 0) throw bad();
  return out;
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
