/**
 * RFC 4648 base64 without `=` padding, over one of its two alphabets (§4 standard, §5 url-safe).
 * Decoding is strict: no padding, no whitespace, no other alphabet, and non-canonical trailing bits
 * refused (§3.5) — so one byte string has exactly one encoding. Callers name their own failure.
 */

export interface UnpaddedBase64 {
  encode(bytes: Uint8Array): string;
  /** The bytes, or undefined when `text` is not canonical unpadded base64 of this alphabet. */
  decode(text: string): Uint8Array | undefined;
}

const ASCII = new TextDecoder();

function unpaddedBase64(alphabet: string): UnpaddedBase64 {
  const lookup = new Int16Array(128).fill(-1);
  const codes = new Uint8Array(64);
  for (let i = 0; i < alphabet.length; i++) {
    lookup[alphabet.charCodeAt(i)] = i;
    codes[i] = alphabet.charCodeAt(i);
  }
  return {
    encode(bytes) {
      // Into ASCII codes, then one decode into a string: appending to a string four characters at
      // a time builds a rope of ~8 bytes a character (a 64 KiB payload left ~700 KB of garbage).
      const rest = bytes.length % 3;
      const full = bytes.length - rest;
      const out = new Uint8Array((full / 3) * 4 + (rest === 0 ? 0 : rest + 1));
      let o = 0;
      for (let i = 0; i < full; i += 3) {
        const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
        out[o++] = codes[n >> 18]!;
        out[o++] = codes[(n >> 12) & 63]!;
        out[o++] = codes[(n >> 6) & 63]!;
        out[o++] = codes[n & 63]!;
      }
      if (rest > 0) {
        const n = (bytes[full]! << 16) | (rest === 2 ? bytes[full + 1]! << 8 : 0);
        out[o++] = codes[n >> 18]!;
        out[o++] = codes[(n >> 12) & 63]!;
        if (rest === 2) out[o++] = codes[(n >> 6) & 63]!;
      }
      return ASCII.decode(out);
    },
    decode(text) {
      if (text.length % 4 === 1) return undefined;
      const out = new Uint8Array(Math.floor((text.length * 3) / 4));
      let bits = 0;
      let acc = 0;
      let o = 0;
      for (let i = 0; i < text.length; i++) {
        const c = text.charCodeAt(i);
        const v = c < 128 ? lookup[c]! : -1;
        if (v < 0) return undefined;
        acc = ((acc << 6) | v) & 0xffff;
        bits += 6;
        if (bits >= 8) {
          bits -= 8;
          out[o++] = (acc >> bits) & 0xff;
        }
      }
      // §3.5: the unused low bits of the last character must be zero.
      if ((acc & ((1 << bits) - 1)) !== 0) return undefined;
      return out;
    },
  };
}

/** RFC 4648 §4 (`+/`): what age headers use. */
export const base64Standard = unpaddedBase64(
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
);
/** RFC 4648 §5 (`-_`): the one encoding of bytes in our JSON. */
export const base64Url = unpaddedBase64("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
