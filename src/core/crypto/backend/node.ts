import * as nodeCrypto from "node:crypto";
import { createLaneHash } from "./hash-lanes.ts";
import {
  AEAD_TAG_LENGTH,
  type CryptoBackend,
  decryptFailed,
  invalidKey,
  invalidNonce,
  invalidPoint,
  isAllZero,
} from "./types.ts";

/**
 * node:crypto backend (OpenSSL, native). The only file in core/ allowed to import node:crypto (with
 * hash-lanes.ts, its worker-thread hashing).
 *
 * Raw 32-byte keys are imported as JWK (~6 µs for a public key, against ~80 µs for DER). Importing an
 * X25519 private key costs about one scalar multiplication, as OpenSSL derives its public half:
 * `x25519Multiplier` lets a caller pay that once per scalar. Node
 * requires the `x` member of a private OKP JWK but derives the public half from `d` itself (it
 * ignores `x`), so a fixed placeholder is passed instead of paying a scalar multiplication; the
 * RFC 8032 and RFC 7748 vectors in test/vectors would catch a Node that started trusting `x`.
 */

const PLACEHOLDER_X = Buffer.alloc(32).toString("base64url");

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64url");
}

/** A plain Uint8Array over the Buffer's bytes; copies when the Buffer is a slice of Node's pool. */
function plain(buf: Buffer): Uint8Array {
  if (buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength) return new Uint8Array(buf.buffer);
  return new Uint8Array(buf);
}

/**
 * Small random requests are served from a pool that one OpenSSL call fills, as Node's own
 * randomUUID does: each randomFillSync costs about 3 µs whatever its size (it is a call into the
 * DRBG, not a copy), and a message accepted asks for five ids, keys and nonces. Every byte leaves
 * the pool once: it is copied out and zeroed there, so no two callers ever get the same bytes and
 * the pool never holds a byte that was handed out.
 */
const RANDOM_POOL_BYTES = 4096;
/** Requests above this go to OpenSSL directly (the pool would refill for nearly every one). */
const RANDOM_POOLED_MAX = 256;
const randomPool = Buffer.alloc(RANDOM_POOL_BYTES);
let randomPoolOffset = RANDOM_POOL_BYTES;

function pooledRandomBytes(length: number): Uint8Array {
  if (length > RANDOM_POOLED_MAX) return plain(nodeCrypto.randomBytes(length));
  if (randomPoolOffset + length > RANDOM_POOL_BYTES) {
    nodeCrypto.randomFillSync(randomPool);
    randomPoolOffset = 0;
  }
  const out = new Uint8Array(length);
  const end = randomPoolOffset + length;
  out.set(randomPool.subarray(randomPoolOffset, end));
  randomPool.fill(0, randomPoolOffset, end);
  randomPoolOffset = end;
  return out;
}

function okpPrivateKey(crv: "X25519" | "Ed25519", d: Uint8Array): nodeCrypto.KeyObject {
  return nodeCrypto.createPrivateKey({
    key: { kty: "OKP", crv, d: b64url(d), x: PLACEHOLDER_X },
    format: "jwk",
  });
}

function okpPublicKey(crv: "X25519" | "Ed25519", x: Uint8Array): nodeCrypto.KeyObject {
  return nodeCrypto.createPublicKey({ key: { kty: "OKP", crv, x: b64url(x) }, format: "jwk" });
}

function rawPublicOf(privateKey: nodeCrypto.KeyObject): Uint8Array {
  const jwk = nodeCrypto.createPublicKey(privateKey).export({ format: "jwk" });
  return plain(Buffer.from(jwk.x as string, "base64url"));
}

function need(what: string, bytes: Uint8Array, length: number): void {
  if (bytes.length !== length) throw invalidKey(what, length, bytes.length);
}

function checkAeadParameters(key: Uint8Array, nonce: Uint8Array): void {
  need("AEAD key", key, 32);
  if (nonce.length !== 12) throw invalidNonce(nonce.length);
}

type AeadName = "aes-256-gcm" | "chacha20-poly1305";

/**
 * An AEAD seal as `[ciphertext, tag]`. An AEAD's final() adds no bytes, so the ciphertext is
 * update()'s output itself and nothing is joined (the STREAM chunks of age take it so).
 */
function sealParts(
  algorithm: AeadName,
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad?: Uint8Array,
): [Uint8Array, Uint8Array] {
  checkAeadParameters(key, nonce);
  const options = { authTagLength: AEAD_TAG_LENGTH };
  const cipher =
    algorithm === "aes-256-gcm"
      ? nodeCrypto.createCipheriv(algorithm, key, nonce, options)
      : nodeCrypto.createCipheriv(algorithm, key, nonce, options);
  if (aad !== undefined && aad.length > 0) cipher.setAAD(aad);
  const head = cipher.update(plaintext);
  const tail = cipher.final();
  return [plain(tail.length === 0 ? head : Buffer.concat([head, tail])), plain(cipher.getAuthTag())];
}

/** `ciphertext || tag`. */
function seal(
  algorithm: AeadName,
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad?: Uint8Array,
): Uint8Array {
  const [ciphertext, tag] = sealParts(algorithm, key, nonce, plaintext, aad);
  const out = new Uint8Array(ciphertext.length + tag.length);
  out.set(ciphertext);
  out.set(tag, ciphertext.length);
  return out;
}

function open(
  algorithm: AeadName,
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad?: Uint8Array,
): Uint8Array {
  checkAeadParameters(key, nonce);
  if (sealed.length < AEAD_TAG_LENGTH) throw decryptFailed();
  const split = sealed.length - AEAD_TAG_LENGTH;
  // authTagLength pins the tag to 16 bytes: without it setAuthTag would accept a truncated tag.
  const options = { authTagLength: AEAD_TAG_LENGTH };
  const decipher =
    algorithm === "aes-256-gcm"
      ? nodeCrypto.createDecipheriv(algorithm, key, nonce, options)
      : nodeCrypto.createDecipheriv(algorithm, key, nonce, options);
  decipher.setAuthTag(sealed.subarray(split));
  if (aad !== undefined && aad.length > 0) decipher.setAAD(aad);
  const head = decipher.update(sealed.subarray(0, split));
  try {
    const tail = decipher.final();
    // An AEAD's final() gives no more bytes: the plaintext is `head` itself, not a copy of it.
    return plain(tail.length === 0 ? head : Buffer.concat([head, tail]));
  } catch {
    head.fill(0); // unauthenticated plaintext never leaves this function
    throw decryptFailed();
  }
}

/** X25519 with an imported private key against any u (RFC 7748 §5); all-zero: invalid_point. */
function multiplierOf(privateKey: nodeCrypto.KeyObject): (u: Uint8Array) => Uint8Array {
  return (u: Uint8Array): Uint8Array => {
    need("X25519 u-coordinate", u, 32);
    let shared: Buffer;
    try {
      // OpenSSL clamps the scalar, masks bit 255 of u and reduces non-canonical u (RFC 7748 §5);
      // it refuses to return the all-zero secret, which is the only way derivation fails here.
      shared = nodeCrypto.diffieHellman({ privateKey, publicKey: okpPublicKey("X25519", u) });
    } catch {
      throw invalidPoint();
    }
    const out = plain(shared);
    if (isAllZero(out)) throw invalidPoint();
    return out;
  };
}

export const backend = {
  name: "node",

  randomBytes(length: number): Uint8Array {
    return pooledRandomBytes(length);
  },

  sha256(data: Uint8Array): Uint8Array {
    return plain(nodeCrypto.createHash("sha256").update(data).digest());
  },

  createHash(algorithm) {
    const h = nodeCrypto.createHash(algorithm);
    return {
      update: (data: Uint8Array) => void h.update(data),
      digest: () => plain(h.digest()),
    };
  },

  createStreamHash: createLaneHash,

  sha512(data: Uint8Array): Uint8Array {
    return plain(nodeCrypto.createHash("sha512").update(data).digest());
  },

  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
    return plain(nodeCrypto.createHmac("sha256", key).update(data).digest());
  },

  x25519(scalar: Uint8Array, u: Uint8Array): Uint8Array {
    return backend.x25519Multiplier(scalar)(u);
  },

  x25519Multiplier(scalar: Uint8Array): (u: Uint8Array) => Uint8Array {
    need("X25519 scalar", scalar, 32);
    return multiplierOf(okpPrivateKey("X25519", scalar));
  },

  x25519KeyPair(scalar: Uint8Array): { publicKey: Uint8Array; times: (u: Uint8Array) => Uint8Array } {
    need("X25519 scalar", scalar, 32);
    const privateKey = okpPrivateKey("X25519", scalar);
    return { publicKey: rawPublicOf(privateKey), times: multiplierOf(privateKey) };
  },

  x25519PublicKey(scalar: Uint8Array): Uint8Array {
    need("X25519 scalar", scalar, 32);
    return rawPublicOf(okpPrivateKey("X25519", scalar));
  },

  ed25519PublicKey(seed: Uint8Array): Uint8Array {
    need("Ed25519 seed", seed, 32);
    return rawPublicOf(okpPrivateKey("Ed25519", seed));
  },

  ed25519Sign(seed: Uint8Array, message: Uint8Array): Uint8Array {
    need("Ed25519 seed", seed, 32);
    return plain(nodeCrypto.sign(null, message, okpPrivateKey("Ed25519", seed)));
  },

  ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    if (publicKey.length !== 32 || signature.length !== 64) return false;
    try {
      return nodeCrypto.verify(null, message, okpPublicKey("Ed25519", publicKey), signature);
    } catch {
      return false;
    }
  },

  aes256gcmSeal(key, nonce, plaintext, aad) {
    return seal("aes-256-gcm", key, nonce, plaintext, aad);
  },
  aes256gcmOpen(key, nonce, sealed, aad) {
    return open("aes-256-gcm", key, nonce, sealed, aad);
  },
  chacha20poly1305Seal(key, nonce, plaintext, aad) {
    return seal("chacha20-poly1305", key, nonce, plaintext, aad);
  },
  chacha20poly1305Open(key, nonce, sealed, aad) {
    return open("chacha20-poly1305", key, nonce, sealed, aad);
  },
  chacha20poly1305SealDetached(key, nonce, plaintext, aad) {
    return sealParts("chacha20-poly1305", key, nonce, plaintext, aad);
  },
} satisfies CryptoBackend;
