import { HandsafeError } from "../../errors.ts";

/**
 * The few primitives `core/crypto` needs from a platform. Two implementations exist: `node.ts`
 * (node:crypto, native) and `web.ts` (@noble/*, pure JS, runs anywhere). package.json "imports"
 * picks one for `#crypto-backend`; both must give byte-identical answers on the same input, which
 * the vector tests check by running every vector through each.
 *
 * Conventions shared by both:
 * - Everything is synchronous and speaks `Uint8Array` (never a Node `Buffer` subclass).
 * - Lengths are checked by the public wrappers in `core/crypto/*.ts`; a backend may assume them,
 *   but still fails closed (typed error) rather than compute on a wrong length.
 * - `x25519` never returns the all-zero shared secret: when the result would be the neutral
 *   element (a low-order or otherwise degenerate `u`, RFC 7748 §6.1) it throws
 *   `HandsafeError("crypto.invalid_point")`. OpenSSL refuses to derive such a secret and noble
 *   refuses low-order inputs, so throwing is the one behaviour both can give.
 * - `ed25519Verify` never throws: any malformed key or signature is simply `false`.
 * - AEAD `…Open` throws `HandsafeError("crypto.decrypt_failed")` on any authentication failure,
 *   and the sealed form is always `ciphertext || tag` with a 16-byte tag.
 */
export interface IncrementalHash {
  update(data: Uint8Array): void;
  digest(): Uint8Array;
}

/**
 * An incremental hash whose work may run off the calling thread (node: a worker, for long streams).
 * `update` copies what it is given before it returns; when it returns a promise, the caller awaits
 * it before the next call (the stream is ahead of the hashing and must wait for room).
 */
export interface StreamHash {
  update(data: Uint8Array): Promise<void> | undefined;
  digest(): Promise<Uint8Array>;
  /** Drops the stream without a digest (after a failure); nothing once digest() was called. */
  release(): void;
}

/** An IncrementalHash behind the StreamHash interface, hashing on the calling thread. */
export function inlineStreamHash(h: IncrementalHash): StreamHash {
  let done = false;
  return {
    update(data) {
      if (done) throw new HandsafeError("internal", "update() after digest() or release()", { status: 500 });
      h.update(data);
      return undefined;
    },
    async digest() {
      if (done) throw new HandsafeError("internal", "digest() called twice", { status: 500 });
      done = true;
      return h.digest();
    },
    release() {
      done = true;
    },
  };
}

export interface CryptoBackend {
  /** "node" or "web": shown by benchmarks and tests, never branched on by callers. */
  readonly name: "node" | "web";
  randomBytes(length: number): Uint8Array;
  sha256(data: Uint8Array): Uint8Array;
  sha512(data: Uint8Array): Uint8Array;
  /** An incremental hash for data too large to hold (a 256 MiB image). */
  createHash(algorithm: "sha256" | "sha512"): IncrementalHash;
  /**
   * A hash for long streams that a backend may compute on another thread; without it, `createHash`
   * serves on the calling thread (core/crypto/hash.ts createStreamHash).
   */
  createStreamHash?(algorithm: "sha256" | "sha512"): StreamHash;
  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array;
  /** RFC 7748 §5 X25519(k, u) with the scalar clamped and bit 255 of u ignored. */
  x25519(scalar: Uint8Array, u: Uint8Array): Uint8Array;
  /**
   * X25519 with one scalar against several u: the scalar is imported once. On node an X25519
   * private-key import costs a full multiplication (OpenSSL derives the public key), so a party
   * that multiplies twice with the same scalar (CPace) saves one. Same errors as `x25519`.
   */
  x25519Multiplier(scalar: Uint8Array): (u: Uint8Array) => Uint8Array;
  /**
   * The public key X25519(k, 9) and a multiplier for k, from one import: on node the import
   * derives the public key anyway, so a party that needs both (an ephemeral key: its share and one
   * agreement) pays two multiplications, not three.
   */
  x25519KeyPair(scalar: Uint8Array): { publicKey: Uint8Array; times: (u: Uint8Array) => Uint8Array };
  /** X25519(k, 9): the public key of an X25519 private scalar. */
  x25519PublicKey(scalar: Uint8Array): Uint8Array;
  /** RFC 8032 §5.1.5: the public key A of a 32-byte Ed25519 seed. */
  ed25519PublicKey(seed: Uint8Array): Uint8Array;
  /** RFC 8032 §5.1.6: pure Ed25519 (no context, no prehash). */
  ed25519Sign(seed: Uint8Array, message: Uint8Array): Uint8Array;
  /** RFC 8032 §5.1.7, cofactorless, canonical encodings only (s < L). */
  ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;
  aes256gcmSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad?: Uint8Array): Uint8Array;
  aes256gcmOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad?: Uint8Array): Uint8Array;
  /** RFC 8439 §2.8 AEAD_CHACHA20_POLY1305 with a 12-byte nonce. */
  chacha20poly1305Seal(
    key: Uint8Array,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad?: Uint8Array,
  ): Uint8Array;
  chacha20poly1305Open(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad?: Uint8Array): Uint8Array;
  /**
   * The same seal as `[ciphertext, tag]`, for a backend that can give them without joining them
   * (a large chunk then is not copied once more); aead.ts splits the joined form otherwise.
   */
  chacha20poly1305SealDetached?(
    key: Uint8Array,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad?: Uint8Array,
  ): [Uint8Array, Uint8Array];
}

/** Tag length of both AEADs (AES-GCM with a full tag; Poly1305). */
export const AEAD_TAG_LENGTH = 16;

/** The failures both backends must report identically (tests assert on these codes). */
export function decryptFailed(): HandsafeError {
  return new HandsafeError("crypto.decrypt_failed", "authenticated decryption failed");
}

export function invalidPoint(): HandsafeError {
  return new HandsafeError("crypto.invalid_point", "X25519 result is the neutral element (low-order input)");
}

export function invalidKey(what: string, length: number, got: number): HandsafeError {
  return new HandsafeError("crypto.invalid_key", `${what} must be ${length} bytes, got ${got}`);
}

export function invalidNonce(got: number): HandsafeError {
  return new HandsafeError("crypto.invalid_nonce", `AEAD nonce must be 12 bytes, got ${got}`);
}

/** Constant-time test for the all-zero string (RFC 7748 §6.1's check). */
export function isAllZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < bytes.length; i++) acc |= bytes[i]!;
  return acc === 0;
}
