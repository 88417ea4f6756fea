import { concatBytes } from "../codec/bytes.ts";
import { chachaOpen, chachaSeal } from "../crypto/aead.ts";
import { hkdfSha256 } from "../crypto/hkdf.ts";
import { randomBytes } from "../crypto/random.ts";
import { X25519_KEY_LENGTH, x25519KeyPair } from "../crypto/x25519.ts";
import { isHandsafeError } from "../errors.ts";
import { decodeBase64, encodeBase64 } from "./base64.ts";
import { AGE_ERRORS, ageError } from "./errors.ts";
import { parseIdentity, parseRecipient } from "./keys.ts";
import { type AgeIdentity, type AgeRecipient, FILE_KEY_LENGTH, type Stanza } from "./stanza.ts";

/** age v1 §X25519 recipient stanza: `-> X25519 <ephemeral share>` over ChaCha20-Poly1305(wrap key, file key). */

export const X25519_STANZA_TYPE = "X25519";
export const X25519_WRAP_INFO = "age-encryption.org/v1/X25519";
const SHARE_LENGTH = 32;
/** The 16-byte file key plus the 16-byte Poly1305 tag. */
const BODY_LENGTH = FILE_KEY_LENGTH + 16;
/** The wrap key is used once, so the nonce is fixed to 12 zero bytes. */
const ZERO_NONCE = new Uint8Array(12);

function sharedSecret(times: (u: Uint8Array) => Uint8Array, u: Uint8Array): Uint8Array {
  try {
    return times(u);
  } catch (e) {
    // "If the shared secret is all 0x00 bytes, the identity implementation MUST abort."
    if (isHandsafeError(e, "crypto.invalid_point"))
      throw ageError(AGE_ERRORS.x25519LowOrder, "X25519 share is a low-order point", e);
    throw e;
  }
}

function wrapKey(secret: Uint8Array, share: Uint8Array, recipient: Uint8Array): Uint8Array {
  return hkdfSha256(secret, concatBytes(share, recipient), X25519_WRAP_INFO, 32);
}

export class X25519Recipient implements AgeRecipient {
  readonly publicKey: Uint8Array;

  /** From an `age1…` string or a 32-byte public key. */
  constructor(recipient: string | Uint8Array) {
    this.publicKey = typeof recipient === "string" ? parseRecipient(recipient) : recipient;
    if (this.publicKey.length !== SHARE_LENGTH)
      throw ageError(AGE_ERRORS.keyInvalid, "X25519 recipient is 32 bytes");
  }

  wrap(fileKey: Uint8Array): Stanza[] {
    // A new ephemeral secret for each stanza and each file; one import gives its share and the
    // agreement (two multiplications).
    const scalar = randomBytes(X25519_KEY_LENGTH);
    const ephemeral = x25519KeyPair(scalar);
    scalar.fill(0);
    const secret = sharedSecret(ephemeral.times, this.publicKey);
    const key = wrapKey(secret, ephemeral.publicKey, this.publicKey);
    return [
      {
        args: [X25519_STANZA_TYPE, encodeBase64(ephemeral.publicKey)],
        body: chachaSeal(key, ZERO_NONCE, fileKey),
      },
    ];
  }
}

export class X25519Identity implements AgeIdentity {
  /** The scalar imported once: every unwrap is one multiplication. Undefined once wiped. */
  #times: ((u: Uint8Array) => Uint8Array) | undefined;
  readonly publicKey: Uint8Array;

  /**
   * From an `AGE-SECRET-KEY-1…` string or a 32-byte scalar. The scalar is imported, not kept:
   * the caller zeroes its own bytes, and wipe() drops the import.
   */
  constructor(identity: string | Uint8Array) {
    const scalar = typeof identity === "string" ? parseIdentity(identity) : identity;
    const pair = x25519KeyPair(scalar);
    this.publicKey = pair.publicKey;
    this.#times = pair.times;
  }

  /** Drops the imported key: later unwraps find no file key (the caller's own lock says why). */
  wipe(): void {
    this.#times = undefined;
  }

  unwrap(stanzas: readonly Stanza[]): Uint8Array | undefined {
    for (const stanza of stanzas) {
      if (stanza.args[0] !== X25519_STANZA_TYPE) continue;
      if (stanza.args.length !== 2)
        throw ageError(AGE_ERRORS.stanzaMalformed, "X25519 stanza must have exactly two arguments");
      const share = decodeBase64(stanza.args[1]!);
      if (share === undefined || share.length !== SHARE_LENGTH)
        throw ageError(AGE_ERRORS.stanzaMalformed, "X25519 share must be canonical base64 of 32 bytes");
      // Checked before decrypting, against partitioning oracles (age v1 §X25519).
      if (stanza.body.length !== BODY_LENGTH)
        throw ageError(AGE_ERRORS.stanzaMalformed, `X25519 stanza body must be ${BODY_LENGTH} bytes`);
      if (this.#times === undefined) return undefined;
      const secret = sharedSecret(this.#times, share);
      const key = wrapKey(secret, share, this.publicKey);
      try {
        return chachaOpen(key, ZERO_NONCE, stanza.body);
      } catch (e) {
        if (isHandsafeError(e, "crypto.decrypt_failed")) continue; // addressed to someone else
        throw e;
      }
    }
    return undefined;
  }

  toJSON(): string {
    return "[X25519Identity redacted]";
  }
}
