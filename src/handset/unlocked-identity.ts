/**
 * The identity module unlocked (docs/protocols/backup.md §1): the age identity `s` and the keys
 * derived from it, used but never handed out — it unwraps age stanzas, signs, hashes and derives
 * item ids, and lock() wipes every copy. Isomorphic (no node:* imports).
 */

import type { ContentHasher } from "../backup/item-crypto.ts";
import { LABELS } from "../backup/protocol.ts";
import type { AgeIdentity, Stanza } from "../core/age/stanza.ts";
import { X25519Identity } from "../core/age/x25519-recipient.ts";
import { toBase64url } from "../core/codec/base64url.ts";
import { utf8 } from "../core/codec/bytes.ts";
import { sign } from "../core/crypto/ed25519.ts";
import { createHash, createStreamHash, hmacSha256 } from "../core/crypto/hash.ts";
import { hkdfSha256 } from "../core/crypto/hkdf.ts";
import { HandsafeError } from "../core/errors.ts";
import type { Ed25519SigningKey } from "../core/http-signatures/algorithms.ts";

const ITEM_ID_BYTES = 18;

export interface UnlockedIdentity {
  readonly recipient: string;
  readonly accountId: string;
  readonly accountPublicKey: Uint8Array;
  /** An age identity that unwraps X25519 stanzas to this module; it never exposes `s`. */
  ageIdentity(): AgeIdentity;
  unwrapFileKey(stanzas: readonly Stanza[]): Uint8Array | undefined;
  /** Ed25519 (RFC 8032) with the account key. */
  sign(message: Uint8Array): Uint8Array;
  /** RFC 9421 signing of a signature base's bytes with the account key; keyId is the account id. */
  requestSigner(): { keyId: string; sign(base: Uint8Array): Uint8Array };
  /**
   * The account key as an http-signatures SigningKey, for signRequest(). The derived account seed (never
   * `s`) is read from it on each use; after lock() reading it throws wim.locked.
   */
  httpSigningKey(): Ed25519SigningKey;
  /**
   * Streaming HMAC-SHA256 with the content-hash key (native SHA-256 on Node, on a worker thread for
   * long streams): await what `update` returns before the next update.
   */
  contentHasher(): ContentHasher;
  /** `it_` + base64url(HMAC-SHA256(item-id key, path)[0..18]). */
  itemId(path: string): string;
  /** Wipes the unlocked secrets; every later call throws wim.locked. */
  lock(): void;
}

export const lockedError = () =>
  new HandsafeError("wim.locked", "the identity module is locked", { status: 403 });

/** backup.md §1 table: HKDF-SHA256, salt empty, 32 bytes. */
export function deriveKey(secret: Uint8Array, label: string): Uint8Array {
  return hkdfSha256(secret, undefined, label, 32);
}

/** HMAC-SHA256 (RFC 2104) over the incremental SHA-256 of the crypto backend: native speed on Node. */
function streamingHmac(key: Uint8Array, isLocked: () => boolean) {
  const pad = (byte: number) => {
    const block = new Uint8Array(64);
    block.set(key); // the derived keys are 32 bytes, shorter than the 64-byte block
    for (let k = 0; k < 64; k++) block[k]! ^= byte;
    return block;
  };
  const inner = createStreamHash("sha256");
  const ipad = pad(0x36);
  inner.update(ipad); // 64 bytes: kept, never a wait
  ipad.fill(0);
  let opad: Uint8Array | undefined = pad(0x5c);
  const spent = () => new HandsafeError("internal", "contentHasher: digest() was called", { status: 500 });
  return {
    update(data: Uint8Array): Promise<void> | undefined {
      if (isLocked()) throw lockedError();
      if (opad === undefined) throw spent();
      return inner.update(data);
    },
    async digest(): Promise<Uint8Array> {
      if (isLocked()) throw lockedError();
      if (opad === undefined) throw spent();
      const key = opad;
      opad = undefined;
      const outer = createHash("sha256");
      outer.update(key);
      key.fill(0);
      outer.update(await inner.digest());
      return outer.digest();
    },
    release(): void {
      opad?.fill(0);
      opad = undefined;
      inner.release();
    },
  };
}

/** `secret` is taken over: lock() wipes it. */
export function unlockIdentity(
  secret: Uint8Array,
  recipient: string,
  accountPublicKey: Uint8Array,
  accountId: string,
): UnlockedIdentity {
  const seed = deriveKey(secret, LABELS.accountKey);
  const contentKey = deriveKey(secret, LABELS.contentHash);
  const itemKey = deriveKey(secret, LABELS.itemId);
  // X25519Identity imports `secret` once (each unwrap is then one multiplication); lock() drops
  // that import and wipes `secret`.
  const x25519 = new X25519Identity(secret);
  let isLocked = false;
  const live = () => {
    if (isLocked) throw lockedError();
  };
  const identity: AgeIdentity = {
    unwrap(stanzas) {
      live();
      return x25519.unwrap(stanzas);
    },
  };
  return {
    recipient,
    accountId,
    accountPublicKey,
    ageIdentity() {
      live();
      return identity;
    },
    unwrapFileKey: (stanzas) => identity.unwrap(stanzas),
    sign(message) {
      live();
      return sign(seed, message);
    },
    requestSigner() {
      live();
      return {
        keyId: accountId,
        sign(base: Uint8Array) {
          live();
          return sign(seed, base);
        },
      };
    },
    httpSigningKey() {
      live();
      return Object.freeze({
        alg: "ed25519" as const,
        get seed() {
          live();
          return seed;
        },
        toJSON: () => "[redacted]",
      });
    },
    contentHasher() {
      live();
      return streamingHmac(contentKey, () => isLocked);
    },
    itemId(path) {
      live();
      if (typeof path !== "string" || path.length === 0)
        throw new HandsafeError("backup.path_invalid", "an item path is a non-empty string");
      return `it_${toBase64url(hmacSha256(itemKey, utf8(path)).subarray(0, ITEM_ID_BYTES))}`;
    },
    lock() {
      isLocked = true;
      x25519.wipe();
      for (const k of [secret, seed, contentKey, itemKey]) k.fill(0);
    },
  };
}
