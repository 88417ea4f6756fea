/**
 * The two RFC 9421 algorithms we use (§3.3.3 hmac-sha256, §3.3.6 ed25519), over the signature base's
 * UTF-8 bytes. Keys carry their algorithm, so a key can only be used the way it was meant: RFC 9421
 * §7.3.6 — the verifier takes the algorithm from the key, never from the message (whose `alg` must
 * merely agree). An Ed25519 public key can never be fed to HMAC as a "secret" anyone knows.
 */
import { utf8 } from "../codec/bytes.ts";
import { constantTimeEqual } from "../crypto/ct.ts";
import { ED25519_PUBLIC_KEY_LENGTH, ED25519_SEED_LENGTH, sign, verify } from "../crypto/ed25519.ts";
import { hmacSha256 } from "../crypto/hash.ts";
import { HandsafeError } from "../errors.ts";

export const SIGNATURE_ALGORITHMS = ["hmac-sha256", "ed25519"] as const;
export type SignatureAlgorithm = (typeof SIGNATURE_ALGORITHMS)[number];

/** A shared secret shorter than this is a caller's mistake (RFC 2104 §3: at least the output length is best). */
export const HMAC_MIN_SECRET_BYTES = 16;

export interface HmacSha256Key {
  readonly alg: "hmac-sha256";
  /** The shared secret; signs and verifies. */
  readonly secret: Uint8Array;
}
export interface Ed25519SigningKey {
  readonly alg: "ed25519";
  /** The RFC 8032 private key (32-byte seed). */
  readonly seed: Uint8Array;
}
export interface Ed25519VerificationKey {
  readonly alg: "ed25519";
  readonly publicKey: Uint8Array;
}

export type SigningKey = HmacSha256Key | Ed25519SigningKey;
export type VerificationKey = HmacSha256Key | Ed25519VerificationKey;

const redacted = { toJSON: () => "[redacted]" };

function invalidKey(message: string): HandsafeError {
  return new HandsafeError("crypto.invalid_key", message, { status: 500 });
}

/** An HMAC-SHA256 key over (not copying) `secret`; `toJSON` redacts it. */
export function hmacSha256Key(secret: Uint8Array): HmacSha256Key {
  if (!(secret instanceof Uint8Array) || secret.length < HMAC_MIN_SECRET_BYTES)
    throw invalidKey(`an hmac-sha256 secret has at least ${HMAC_MIN_SECRET_BYTES} bytes`);
  return Object.freeze({ ...redacted, alg: "hmac-sha256", secret });
}

/** An Ed25519 signing key from its 32-byte seed; `toJSON` redacts it. */
export function ed25519SigningKey(seed: Uint8Array): Ed25519SigningKey {
  if (!(seed instanceof Uint8Array) || seed.length !== ED25519_SEED_LENGTH)
    throw invalidKey(`an Ed25519 seed is ${ED25519_SEED_LENGTH} bytes`);
  return Object.freeze({ ...redacted, alg: "ed25519", seed });
}

export function ed25519VerificationKey(publicKey: Uint8Array): Ed25519VerificationKey {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== ED25519_PUBLIC_KEY_LENGTH)
    throw invalidKey(`an Ed25519 public key is ${ED25519_PUBLIC_KEY_LENGTH} bytes`);
  return Object.freeze({ alg: "ed25519", publicKey });
}

/** The length of a signature value: 32 (HMAC-SHA256) or 64 (Ed25519, R ‖ S). */
export function signatureLength(alg: SignatureAlgorithm): number {
  return alg === "hmac-sha256" ? 32 : 64;
}

/** §3.1: the signature of the signature base. */
export function signBase(key: SigningKey, base: string): Uint8Array {
  const message = utf8(base);
  return key.alg === "hmac-sha256" ? hmacSha256(key.secret, message) : sign(key.seed, message);
}

/** §3.2: true only when `signature` is the key's signature of the base (HMAC compared in constant time). */
export function verifyBase(key: VerificationKey, base: string, signature: Uint8Array): boolean {
  const message = utf8(base);
  if (key.alg === "hmac-sha256") return constantTimeEqual(hmacSha256(key.secret, message), signature);
  return verify(key.publicKey, message, signature);
}
