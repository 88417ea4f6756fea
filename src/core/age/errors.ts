import { HandsafeError } from "../errors.ts";

/**
 * Every way an age file can be refused, each with its own stable code. The CCTV vectors
 * (test/vectors/age) group them into classes; docs/protocols/age.md lists them.
 */
export const AGE_ERRORS = {
  /** The first line is not `age-encryption.org/v1` (another version, or no age file at all). */
  versionUnsupported: "age.version_unsupported",
  /** The header breaks the ABNF of age v1 §Header: bad line, non-canonical base64, CR, a missing MAC… */
  headerMalformed: "age.header_malformed",
  /** The header is larger than we are willing to hold in memory. */
  headerTooLarge: "age.header_too_large",
  /** An X25519 stanza with the wrong arguments or lengths (age v1 §X25519 recipient stanza). */
  stanzaMalformed: "age.stanza_malformed",
  /** The X25519 shared secret is all zeros: the share is a low-order point (age v1 §X25519). */
  x25519LowOrder: "age.x25519_low_order",
  /** No identity could unwrap any stanza. */
  noMatch: "age.no_match",
  /** A file key was unwrapped but the header MAC does not verify under it. */
  headerMac: "age.header_mac",
  /** The file ends before the 16-byte payload nonce. */
  nonceMissing: "age.nonce_missing",
  /** The payload ends before any chunk, or with a chunk shorter than its tag. */
  payloadTruncated: "age.payload_truncated",
  /** The payload ends on a chunk that authenticates as non-final: the file was cut at a chunk boundary. */
  payloadUnterminated: "age.payload_unterminated",
  /** A chunk fails ChaCha20-Poly1305 authentication (tampered, reordered or cut inside a chunk). */
  payloadAuth: "age.payload_auth",
  /** An empty final chunk after other chunks (only an empty file may have one, age v1 §Payload). */
  payloadEmptyChunk: "age.payload_empty_chunk",
  /** Bytes follow the final chunk. */
  payloadTrailingData: "age.payload_trailing_data",
  /** A recipient (`age1…`) or identity (`AGE-SECRET-KEY-1…`) string that does not decode. */
  keyInvalid: "age.key_invalid",
  /** The ASCII armor (age v1 §ASCII armor) is not the strict PEM form. */
  armorInvalid: "age.armor_invalid",
  /** An scrypt stanza beside any other stanza (age v1 §scrypt: "MUST be the only stanza"). */
  scryptNotAlone: "age.scrypt_not_alone",
  /** The header asks for an scrypt work factor above the identity's limit (a denial-of-service guard). */
  scryptWorkFactorTooHigh: "age.scrypt_work_factor_too_high",
} as const;

export type AgeErrorCode = (typeof AGE_ERRORS)[keyof typeof AGE_ERRORS];

export function ageError(code: AgeErrorCode, message: string, cause?: unknown): HandsafeError {
  return new HandsafeError(code, message, { status: 422, cause });
}
