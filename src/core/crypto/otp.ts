import { hmac } from "@noble/hashes/hmac.js";
import { sha1 } from "@noble/hashes/legacy.js";
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import { lengthPrefixed, utf8 } from "../codec/bytes.ts";
import { HandsafeError } from "../errors.ts";
import { constantTimeEqual } from "./ct.ts";
import { hmacSha256 } from "./hash.ts";
import { randomBytes } from "./random.ts";

/**
 * One-time codes. Two kinds live here:
 * - HOTP (RFC 4226) and TOTP (RFC 6238): codes both sides derive from a shared secret — an
 *   authenticator app, a hardware token. The HMACs are @noble/hashes on every platform: the backend
 *   has no HMAC-SHA1 / HMAC-SHA512, and these few bytes per code do not need native speed.
 * - codes the server draws itself and sends (an SMS code): `generateNumericCode` from the CSPRNG,
 *   stored only as `codeMac`, checked with `codesEqual` in constant time.
 */

export type OtpHash = "sha1" | "sha256" | "sha512";

const HASHES = { sha1, sha256, sha512 } as const;

/** RFC 4226 §5.3: at least 6 digits, possibly 7 and 8 (the 31-bit value holds 9 unbiased at most). */
const HOTP_MIN_DIGITS = 6;
const HOTP_MAX_DIGITS = 8;
/** RFC 4226 §4 R6: the shared secret MUST be at least 128 bits. */
export const OTP_MIN_KEY_LENGTH = 16;
/** RFC 6238 §4.1: X = 30 seconds is the default time step, T0 = 0 the Unix epoch. */
export const TOTP_DEFAULT_PERIOD = 30;

export interface HotpOptions {
  /** 6 (default), 7 or 8. */
  digits?: number;
  /** RFC 4226 is HMAC-SHA-1; RFC 6238 §1.2 allows HMAC-SHA-256 and HMAC-SHA-512 for TOTP. */
  hash?: OtpHash;
}

export interface TotpOptions extends HotpOptions {
  /** Time step X in seconds (RFC 6238 §4.1), default 30. */
  period?: number;
  /** T0, the Unix time to start counting steps from (RFC 6238 §4.1), default 0. */
  t0?: number;
}

function invalidDigits(digits: unknown, min: number, max: number): HandsafeError {
  return new HandsafeError("otp.invalid_digits", `a code has ${min}..${max} digits, got ${String(digits)}`);
}

function checkKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length < OTP_MIN_KEY_LENGTH)
    throw new HandsafeError(
      "crypto.invalid_key",
      `an OTP secret must be at least ${OTP_MIN_KEY_LENGTH} bytes`,
    );
}

function hashOf(hash: OtpHash | undefined) {
  const h = HASHES[hash ?? "sha1"];
  if (h === undefined) throw new HandsafeError("otp.invalid_hash", `unknown OTP hash ${String(hash)}`);
  return h;
}

/** The 8-byte big-endian counter C of RFC 4226 §5.1. */
function counterBytes(counter: number | bigint): Uint8Array {
  const c = typeof counter === "bigint" ? counter : Number.isSafeInteger(counter) ? BigInt(counter) : -1n;
  if (c < 0n || c >= 1n << 64n)
    throw new HandsafeError("otp.invalid_counter", "an OTP counter is a whole number in 0..2^64-1");
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, c);
  return out;
}

/** RFC 4226 §5.3 step 1: HS = HMAC-SHA-1(K, C) (or SHA-256 / SHA-512 for TOTP). */
export function hotpDigest(key: Uint8Array, counter: number | bigint, hash?: OtpHash): Uint8Array {
  checkKey(key);
  return hmac(hashOf(hash), key, counterBytes(counter));
}

/**
 * RFC 4226 §5.3 step 2 and §5.4: DT(HS) — the low 4 bits of the last byte pick an offset, the 31
 * bits from there are Snum. RFC 6238's reference code uses the same rule on the longer digests.
 */
export function dynamicTruncate(hs: Uint8Array): number {
  if (!(hs instanceof Uint8Array) || hs.length < 20)
    throw new HandsafeError("otp.invalid_input", "dynamic truncation needs an HMAC of at least 20 bytes");
  const offset = hs[hs.length - 1]! & 0x0f;
  return ((hs[offset]! & 0x7f) << 24) | (hs[offset + 1]! << 16) | (hs[offset + 2]! << 8) | hs[offset + 3]!;
}

function digitsOf(digits: number | undefined): number {
  const d = digits ?? HOTP_MIN_DIGITS;
  if (!Number.isInteger(d) || d < HOTP_MIN_DIGITS || d > HOTP_MAX_DIGITS)
    throw invalidDigits(digits, HOTP_MIN_DIGITS, HOTP_MAX_DIGITS);
  return d;
}

/** RFC 4226 §5.3: HOTP(K, C) = Truncate(HMAC-SHA-1(K, C)) mod 10^Digit, zero-padded. */
export function hotp(key: Uint8Array, counter: number | bigint, options: HotpOptions = {}): string {
  const digits = digitsOf(options.digits);
  const snum = dynamicTruncate(hotpDigest(key, counter, options.hash));
  return (snum % 10 ** digits).toString().padStart(digits, "0");
}

/** RFC 6238 §4.2: T = floor((Unix time - T0) / X), the HOTP counter for a moment. */
export function totpCounter(timeSeconds: number, options: TotpOptions = {}): number {
  const period = options.period ?? TOTP_DEFAULT_PERIOD;
  const t0 = options.t0 ?? 0;
  if (!Number.isSafeInteger(period) || period < 1)
    throw new HandsafeError("otp.invalid_period", "a TOTP time step is a whole number of seconds ≥ 1");
  if (!Number.isFinite(timeSeconds) || !Number.isFinite(t0) || timeSeconds < t0)
    throw new HandsafeError("otp.invalid_time", "TOTP time must be a finite number of seconds ≥ T0");
  return Math.floor((timeSeconds - t0) / period);
}

/**
 * RFC 6238 §4.2: TOTP = HOTP(K, T). Per erratum 2866 the key of an HMAC-SHA-256 / -512 TOTP
 * should be 32 / 64 bytes (the Appendix B seeds are 20, 32 and 64 bytes), not the 20 of SHA-1.
 */
export function totp(key: Uint8Array, timeSeconds: number, options: TotpOptions = {}): string {
  return hotp(key, totpCounter(timeSeconds, options), options);
}

/**
 * RFC 6238 §5.2: accepts `code` for the step of `timeSeconds` or up to `window` steps either side
 * (default 1, the RFC's recommended network delay). Every candidate is compared, in constant time.
 * Returns the matching step so that the caller can refuse its reuse ("the verifier MUST NOT accept
 * the second attempt of the same OTP"), or null.
 */
export function verifyTotp(
  key: Uint8Array,
  code: string,
  timeSeconds: number,
  options: TotpOptions & { window?: number } = {},
): number | null {
  const window = options.window ?? 1;
  if (!Number.isInteger(window) || window < 0 || window > 10)
    throw new HandsafeError("otp.invalid_window", "a TOTP window is 0..10 steps");
  const now = totpCounter(timeSeconds, options);
  let matched: number | null = null;
  for (let step = Math.max(0, now - window); step <= now + window; step++)
    if (codesEqual(hotp(key, step, options), code) && matched === null) matched = step;
  return matched;
}

// ---- codes drawn by the server --------------------------------------------------------------

const NUMERIC_MIN_DIGITS = 6;
const NUMERIC_MAX_DIGITS = 20;
/** 250 = 25 · 10: a byte below it, mod 10, is a uniform digit; 250..255 are drawn again. */
const BYTE_LIMIT = 250;

/**
 * A uniformly random decimal code of `digits` digits (leading zeros kept) from the CSPRNG, by
 * rejection sampling: each digit is a byte < 250 taken mod 10, so no digit is likelier than another.
 */
export function generateNumericCode(digits: number): string {
  if (!Number.isInteger(digits) || digits < NUMERIC_MIN_DIGITS || digits > NUMERIC_MAX_DIGITS)
    throw invalidDigits(digits, NUMERIC_MIN_DIGITS, NUMERIC_MAX_DIGITS);
  let code = "";
  while (code.length < digits) {
    // A few spare bytes: about 2.3 % of bytes are rejected.
    for (const byte of randomBytes(digits - code.length + 4)) {
      if (byte < BYTE_LIMIT) code += String(byte % 10);
      if (code.length === digits) break;
    }
  }
  return code;
}

/** What `codeMac` accepts as a code: decimal digits, as `generateNumericCode` and HOTP produce. */
const CODE_PATTERN = /^[0-9]{6,20}$/;
/** A MAC key for stored codes: 32 bytes, as HMAC-SHA256 wants (RFC 2104 §3: at least L bytes). */
export const CODE_MAC_KEY_LENGTH = 32;

/**
 * The form a code is stored in: HMAC-SHA256(key, lengthPrefixed(context, code)). `context` names
 * what the code is for (a label and the record it belongs to, e.g. "handsafe/v1/messaging/otp" and a
 * registration id), so a code stored for one purpose or record never matches another. Without the
 * key, a stolen table of MACs cannot be searched for 6-8 digit codes.
 */
export function codeMac(key: Uint8Array, context: string | Uint8Array, code: string): Uint8Array {
  if (!(key instanceof Uint8Array) || key.length < CODE_MAC_KEY_LENGTH)
    throw new HandsafeError(
      "crypto.invalid_key",
      `a code MAC key must be at least ${CODE_MAC_KEY_LENGTH} bytes`,
    );
  if (typeof code !== "string" || !CODE_PATTERN.test(code))
    throw new HandsafeError("otp.invalid_code", "a code is 6 to 20 decimal digits");
  const contextBytes = typeof context === "string" ? utf8(context) : context;
  if (!(contextBytes instanceof Uint8Array) || contextBytes.length === 0 || contextBytes.length > 1024)
    throw new HandsafeError("otp.invalid_input", "a code MAC context is 1..1024 bytes");
  return hmacSha256(key, lengthPrefixed(contextBytes, utf8(code)));
}

/**
 * Compares two codes or two code MACs in constant time for equal lengths (ct.ts); a length
 * difference is public and answers false at once. Strings are compared as their UTF-8 bytes.
 */
export function codesEqual(a: string | Uint8Array, b: string | Uint8Array): boolean {
  const x = typeof a === "string" ? utf8(a) : a;
  const y = typeof b === "string" ? utf8(b) : b;
  return constantTimeEqual(x, y);
}
