import { gcm } from "@noble/ciphers/aes.js";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256, sha512 } from "@noble/hashes/sha2.js";
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
 * Portable backend on the audited @noble/* libraries: synchronous, pure JS, for browsers and any
 * runtime without node:crypto. Same contract and same bytes as node.ts (see types.ts).
 */

/** crypto.getRandomValues fills at most 65 536 bytes per call (WebCrypto §10.1.1). */
const RANDOM_CHUNK = 65_536;

function need(what: string, bytes: Uint8Array, length: number): void {
  if (bytes.length !== length) throw invalidKey(what, length, bytes.length);
}

function checkAeadParameters(key: Uint8Array, nonce: Uint8Array): void {
  need("AEAD key", key, 32);
  if (nonce.length !== 12) throw invalidNonce(nonce.length);
}

type AeadFactory = (
  key: Uint8Array,
  nonce: Uint8Array,
  aad?: Uint8Array,
) => {
  encrypt(plaintext: Uint8Array): Uint8Array;
  decrypt(sealed: Uint8Array): Uint8Array;
};

function seal(
  aead: AeadFactory,
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad?: Uint8Array,
): Uint8Array {
  checkAeadParameters(key, nonce);
  return aead(key, nonce, aad).encrypt(plaintext);
}

function open(
  aead: AeadFactory,
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad?: Uint8Array,
): Uint8Array {
  checkAeadParameters(key, nonce);
  if (sealed.length < AEAD_TAG_LENGTH) throw decryptFailed();
  try {
    return aead(key, nonce, aad).decrypt(sealed);
  } catch {
    throw decryptFailed();
  }
}

export const backend = {
  name: "web",

  randomBytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let offset = 0; offset < length; offset += RANDOM_CHUNK) {
      globalThis.crypto.getRandomValues(out.subarray(offset, Math.min(length, offset + RANDOM_CHUNK)));
    }
    return out;
  },

  createHash(algorithm) {
    const h = algorithm === "sha256" ? sha256.create() : sha512.create();
    return {
      update: (data: Uint8Array) => void h.update(data),
      digest: () => h.digest(),
    };
  },

  sha256(data: Uint8Array): Uint8Array {
    return sha256(data);
  },

  sha512(data: Uint8Array): Uint8Array {
    return sha512(data);
  },

  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
    return hmac(sha256, key, data);
  },

  x25519(scalar: Uint8Array, u: Uint8Array): Uint8Array {
    need("X25519 scalar", scalar, 32);
    need("X25519 u-coordinate", u, 32);
    let out: Uint8Array;
    try {
      // noble refuses the eight low-order u values (canonical or not) before running the ladder;
      // any refusal here is that case, as lengths were checked above.
      out = x25519.getSharedSecret(scalar, u);
    } catch {
      throw invalidPoint();
    }
    if (isAllZero(out)) throw invalidPoint();
    return out;
  },

  x25519Multiplier(scalar: Uint8Array): (u: Uint8Array) => Uint8Array {
    need("X25519 scalar", scalar, 32);
    const own = scalar.slice();
    return (u: Uint8Array): Uint8Array => backend.x25519(own, u);
  },

  x25519KeyPair(scalar: Uint8Array): { publicKey: Uint8Array; times: (u: Uint8Array) => Uint8Array } {
    need("X25519 scalar", scalar, 32);
    return { publicKey: x25519.getPublicKey(scalar), times: backend.x25519Multiplier(scalar) };
  },

  x25519PublicKey(scalar: Uint8Array): Uint8Array {
    need("X25519 scalar", scalar, 32);
    return x25519.getPublicKey(scalar);
  },

  ed25519PublicKey(seed: Uint8Array): Uint8Array {
    need("Ed25519 seed", seed, 32);
    return ed25519.getPublicKey(seed);
  },

  ed25519Sign(seed: Uint8Array, message: Uint8Array): Uint8Array {
    need("Ed25519 seed", seed, 32);
    return ed25519.sign(message, seed);
  },

  ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    if (publicKey.length !== 32 || signature.length !== 64) return false;
    try {
      // zip215: false = RFC 8032 strict decoding (canonical A, R and s < L), as OpenSSL does.
      return ed25519.verify(signature, message, publicKey, { zip215: false });
    } catch {
      return false;
    }
  },

  aes256gcmSeal(key, nonce, plaintext, aad) {
    return seal(gcm, key, nonce, plaintext, aad);
  },
  aes256gcmOpen(key, nonce, sealed, aad) {
    return open(gcm, key, nonce, sealed, aad);
  },
  chacha20poly1305Seal(key, nonce, plaintext, aad) {
    return seal(chacha20poly1305, key, nonce, plaintext, aad);
  },
  chacha20poly1305Open(key, nonce, sealed, aad) {
    return open(chacha20poly1305, key, nonce, sealed, aad);
  },
} satisfies CryptoBackend;
