import { backend } from "#crypto-backend";
import { HandsafeError } from "../errors.ts";

/**
 * X25519 (RFC 7748 §5). Private keys are 32 random bytes (clamped inside X25519), public keys and
 * shared secrets 32-byte u-coordinates. A shared secret that would be all zeros (the peer sent a
 * low-order point, RFC 7748 §6.1) is refused with HandsafeError("crypto.invalid_point").
 */

export const X25519_KEY_LENGTH = 32;

export interface X25519KeyPair {
  privateKey: Uint8Array;
  publicKey: Uint8Array;
}

function check(what: string, bytes: Uint8Array): void {
  if (bytes.length !== X25519_KEY_LENGTH)
    throw new HandsafeError("crypto.invalid_key", `${what} must be ${X25519_KEY_LENGTH} bytes`);
}

export function generateX25519(): X25519KeyPair {
  const privateKey = backend.randomBytes(X25519_KEY_LENGTH);
  return { privateKey, publicKey: backend.x25519PublicKey(privateKey) };
}

/**
 * The public key of `privateKey` and a multiplier for it, from one import (backend.x25519KeyPair):
 * for a key used for its public half and agreements both (an ephemeral key, an identity).
 */
export function x25519KeyPair(privateKey: Uint8Array): {
  publicKey: Uint8Array;
  times: (u: Uint8Array) => Uint8Array;
} {
  check("X25519 private key", privateKey);
  const { publicKey, times } = backend.x25519KeyPair(privateKey);
  return {
    publicKey,
    times: (u) => {
      check("X25519 u-coordinate", u);
      return times(u);
    },
  };
}

export function x25519PublicKey(privateKey: Uint8Array): Uint8Array {
  check("X25519 private key", privateKey);
  return backend.x25519PublicKey(privateKey);
}

/** X25519(scalar, u): the Diffie-Hellman shared secret. */
export function x25519(scalar: Uint8Array, u: Uint8Array): Uint8Array {
  check("X25519 scalar", scalar);
  check("X25519 u-coordinate", u);
  return backend.x25519(scalar, u);
}
