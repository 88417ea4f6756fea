/**
 * Trusted security zone containers — the pure protocol core (docs/protocols/trustzone.md). No I/O:
 * labels, the key tree (§2), token claims (§3), the sub-key generator shared by both placements (§4),
 * provisioning signals (§5), package sealing and relay proofs (§6). The zone simulator
 * (handset/secure-zone.ts) and the server (trustzone/server.ts) are thin shells over these functions.
 *
 * This file holds the key tree, the sub-key material and packages; it re-exports the rest, so that
 * one import path serves every caller: encoding.ts (labels, limits, encodings), token-claims.ts (§3),
 * signal-protocol.ts (§5), relay-protocol.ts (§6 relay commands, §7 the zone's request signature).
 *
 * Bytes are Uint8Array; every key is 32 bytes; base64url only where the spec puts bytes in JSON
 * (signal `keys`). Times: token `iat`/`exp` are JWT NumericDate seconds (RFC 7519 §2); everything
 * else (`now`, `notAfter`, relay `created`) is milliseconds since the epoch, as Date.now() gives.
 */

import { concatBytes, utf8 } from "../core/codec/bytes.ts";
import { AEAD_NONCE_LENGTH, aesGcmOpen, aesGcmSeal } from "../core/crypto/aead.ts";
import { constantTimeEqual } from "../core/crypto/ct.ts";
import { hmacSha256, sha256 } from "../core/crypto/hash.ts";
import { hkdfSha256 } from "../core/crypto/hkdf.ts";
import {
  type HpkeRecipientKey,
  type HpkeSealed,
  hpkeOpen,
  hpkeSeal,
  isValidHpkePublicKey,
} from "../core/crypto/hpke.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import {
  checkKey,
  checkPackageName,
  checkZoneId,
  KEY_LENGTH,
  LABELS,
  MAX_CONTAINER_INDEX,
  u32be,
  ZERO,
} from "./encoding.ts";

export {
  checkPackageName,
  checkZoneId,
  KEY_LENGTH,
  LABELS,
  MAX_CONTAINER_BYTES,
  MAX_CONTAINER_INDEX,
  MAX_LISTED_CONTAINERS,
  MAX_PACKAGE_BYTES,
  MAX_PACKAGE_NAME_BYTES,
  MAX_PACKAGES_PER_CONTAINER,
  MAX_ZONE_ID_BYTES,
  RELAY_MAX_AGE_MS,
  TOKEN_CLOCK_SKEW_SECONDS,
  TOKEN_ISSUER,
  u32be,
} from "./encoding.ts";
export {
  parseRelayCommand,
  type RelayCommand,
  type RelayOp,
  relayProof,
  verifyRelayProof,
  ZONE_REQUEST_SIGNATURE,
} from "./relay-protocol.ts";
export {
  buildFreeingSignal,
  buildKeyedSignal,
  macSignal,
  parseSignal,
  type SignalExpectation,
  type SignalInput,
  unwrapSignalKey,
  verifySignal,
  wrapSignalKey,
  ZONE_SIGNAL_TYPES,
  type ZoneSignal,
  type ZoneSignalType,
} from "./signal-protocol.ts";
export {
  checkTokenClaims,
  issueToken,
  newTokenId,
  parseTokenClaims,
  type TokenClaims,
  type TokenContext,
  type TokenLimits,
  verifyToken,
} from "./token-claims.ts";

function hkdf32(ikm: Uint8Array, salt: Uint8Array | undefined, info: Uint8Array | string): Uint8Array {
  return hkdfSha256(ikm, salt, info, KEY_LENGTH);
}

function labelWith(label: string, index: number): Uint8Array {
  return concatBytes(utf8(label), u32be(index));
}

// ---- §2 key tree ----------------------------------------------------------------------------

/** SSK = HKDF(HUK, "…/storage"): seals everything the zone persists. */
export function deriveStorageKey(huk: Uint8Array): Uint8Array {
  checkKey("HUK", huk);
  return hkdf32(huk, undefined, LABELS.storage);
}

/** The salt of UK: SHA-256(userInfo ‖ u32be(epoch)); userInfo as UTF-8 when a string. */
export function userKeySalt(userInfo: string | Uint8Array, epoch: number): Uint8Array {
  const info = typeof userInfo === "string" ? utf8(userInfo) : userInfo;
  if (!(info instanceof Uint8Array))
    throw new HandsafeError("tsm.invalid_user_info", "user info must be bytes or text");
  if (!Number.isInteger(epoch) || epoch < 1 || epoch > MAX_CONTAINER_INDEX)
    throw new HandsafeError("tsm.invalid_epoch", `epoch must be a u32 ≥ 1, got ${epoch}`);
  return sha256(concatBytes(info, u32be(epoch)));
}

/** UK = HKDF(ZMK, salt = SHA-256(userInfo ‖ u32be(epoch)), "…/user-key"): replaces ZMK everywhere. */
export function deriveUserKey(zmk: Uint8Array, userInfo: string | Uint8Array, epoch: number): Uint8Array {
  checkKey("ZMK", zmk);
  return hkdf32(zmk, userKeySalt(userInfo, epoch), LABELS.userKey);
}

/** ZAK = HKDF(UK, "…/zone-admin"): MACs provisioning signals. */
export function deriveZoneAdminKey(uk: Uint8Array): Uint8Array {
  checkKey("UK", uk);
  return hkdf32(uk, undefined, LABELS.zoneAdmin);
}

/** ZRK = HKDF(UK, "…/zone-request"): the zone's RFC 9421 hmac-sha256 request key. */
export function deriveZoneRequestKey(uk: Uint8Array): Uint8Array {
  checkKey("UK", uk);
  return hkdf32(uk, undefined, LABELS.zoneRequest);
}

/** FK_i = HKDF(UK, "…/free-container" ‖ u32be(i)): the master's key of free container i. */
export function deriveFreeContainerKey(uk: Uint8Array, index: number): Uint8Array {
  checkKey("UK", uk);
  return hkdf32(uk, undefined, labelWith(LABELS.freeContainer, index));
}

/** §4 SK = HKDF(UK, salt = SHA-256(token JWS as sent), "…/sub-key"). Both placements call this. */
export function deriveSubKey(uk: Uint8Array, tokenJws: string): Uint8Array {
  checkKey("UK", uk);
  if (typeof tokenJws !== "string" || tokenJws.length === 0)
    throw new HandsafeError("token.invalid", "token must be a non-empty string", { status: 401 });
  return hkdf32(uk, sha256(utf8(tokenJws)), LABELS.subKey);
}

/** CK_i = HKDF(SK, "…/container" ‖ u32be(i)). */
export function deriveContainerKey(sk: Uint8Array, index: number): Uint8Array {
  checkKey("SK", sk);
  return hkdf32(sk, undefined, labelWith(LABELS.container, index));
}

/** §4 KC = HMAC(key, "…/key-check"): what the zone stores and compares, never the key itself. */
export function keyCheck(key: Uint8Array): Uint8Array {
  checkKey("container key", key);
  return hmacSha256(key, utf8(LABELS.keyCheck));
}

/** Constant-time comparison of a presented key against a stored key check. */
export function keyMatchesCheck(key: Uint8Array, check: Uint8Array): boolean {
  if (!(key instanceof Uint8Array) || key.length !== KEY_LENGTH) return false;
  return constantTimeEqual(keyCheck(key), check);
}

// ---- §4 sub-key generator -------------------------------------------------------------------

export interface ContainerKeyCheck {
  index: number;
  /** KC_i = HMAC(CK_i, key-check). */
  keyCheck: Uint8Array;
}

export interface SubKeyMaterial {
  sk: Uint8Array;
  containers: { index: number; ck: Uint8Array; keyCheck: Uint8Array }[];
}

/** SK and, for each container, CK_i and KC_i: what both placements compute from a checked token. */
export function generateSubKeyMaterial(
  uk: Uint8Array,
  tokenJws: string,
  containers: readonly number[],
): SubKeyMaterial {
  const sk = deriveSubKey(uk, tokenJws);
  return {
    sk,
    containers: containers.map((index) => {
      const ck = deriveContainerKey(sk, index);
      return { index, ck, keyCheck: keyCheck(ck) };
    }),
  };
}

/** §4 SK HPKE-sealed (RFC 9180 base mode) to the manager's X25519 key; info = sub-key-delivery, aad = jti. */
export function sealSubKeyForManager(sk: Uint8Array, managerPublicKey: Uint8Array, jti: string): HpkeSealed {
  checkKey("SK", sk);
  if (!(managerPublicKey instanceof Uint8Array) || !isValidHpkePublicKey(managerPublicKey))
    throw new HandsafeError("hpke.invalid_public_key", "manager X25519 key is not a valid public key");
  return hpkeSeal(managerPublicKey, sk, { info: LABELS.subKeyDelivery, aad: utf8(jti) });
}

/** The manager's side: SK, or `hpke.open_failed`. */
export function openSubKey(
  managerPrivateKey: Uint8Array | HpkeRecipientKey,
  sealed: HpkeSealed,
  jti: string,
): Uint8Array {
  const sk = hpkeOpen(managerPrivateKey, sealed.enc, sealed.ciphertext, {
    info: LABELS.subKeyDelivery,
    aad: utf8(jti),
  });
  if (sk.length !== KEY_LENGTH) throw new HandsafeError("hpke.open_failed", "HPKE open failed");
  return sk;
}

// ---- §2 / §6 packages -----------------------------------------------------------------------

/** aad = "…/package" ‖ 0 ‖ zoneId ‖ 0 ‖ u32be(i) ‖ 0 ‖ name. */
export function packageAad(zoneId: string, index: number, name: string): Uint8Array {
  return concatBytes(
    utf8(LABELS.package),
    ZERO,
    checkZoneId(zoneId),
    ZERO,
    u32be(index),
    ZERO,
    checkPackageName(name),
  );
}

/** The manager's end-to-end seal: nonce(12, random) ‖ AES-256-GCM(CK_i, nonce, plaintext, aad). */
export function sealPackage(
  ck: Uint8Array,
  zoneId: string,
  index: number,
  name: string,
  plaintext: Uint8Array,
): Uint8Array {
  checkKey("CK", ck);
  const aad = packageAad(zoneId, index, name);
  const nonce = randomBytes(AEAD_NONCE_LENGTH);
  return concatBytes(nonce, aesGcmSeal(ck, nonce, plaintext, aad));
}

/** The plaintext, or `crypto.decrypt_failed` (wrong key, container, zone, name, or tampered). */
export function openPackage(
  ck: Uint8Array,
  zoneId: string,
  index: number,
  name: string,
  sealed: Uint8Array,
): Uint8Array {
  checkKey("CK", ck);
  const aad = packageAad(zoneId, index, name);
  if (!(sealed instanceof Uint8Array) || sealed.length < AEAD_NONCE_LENGTH + 16)
    throw new HandsafeError("crypto.decrypt_failed", "authenticated decryption failed");
  return aesGcmOpen(ck, sealed.subarray(0, AEAD_NONCE_LENGTH), sealed.subarray(AEAD_NONCE_LENGTH), aad);
}
