/**
 * Trust-zone labels, limits and byte encodings (docs/protocols/trustzone.md §2, §9): the constants
 * every other pure module (protocol.ts, token-claims.ts, signal-protocol.ts, relay-protocol.ts) and
 * both shells (handset/secure-zone.ts, the zone server) share. No I/O; re-exported by protocol.ts.
 */

import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { HandsafeError } from "../core/errors.ts";

// ---- labels ---------------------------------------------------------------------------------

/** Every label of the spec (docs/protocols/trustzone.md §2 table); the ones the seed spec lacked are marked. */
export const LABELS = {
  /** §2 SSK = HKDF(HUK, storage). */
  storage: "handsafe/v1/trustzone/storage",
  /** §2 UK = HKDF(ZMK, salt = SHA-256(userInfo ‖ u32be(epoch)), user-key). */
  userKey: "handsafe/v1/trustzone/user-key",
  /** §2 ZAK: MACs provisioning signals. */
  zoneAdmin: "handsafe/v1/trustzone/zone-admin",
  /** §2 ZRK: RFC 9421 hmac-sha256 key of the zone's requests. */
  zoneRequest: "handsafe/v1/trustzone/zone-request",
  /** §2 FK_i = HKDF(UK, free-container ‖ u32be(i)). */
  freeContainer: "handsafe/v1/trustzone/free-container",
  /** §2 SK = HKDF(UK, salt = SHA-256(token JWS), sub-key). */
  subKey: "handsafe/v1/trustzone/sub-key",
  /** §2 CK_i = HKDF(SK, container ‖ u32be(i)). */
  container: "handsafe/v1/trustzone/container",
  /** §2 package AAD prefix. */
  package: "handsafe/v1/trustzone/package",
  /** §4 KC_i = HMAC(CK_i, key-check). */
  keyCheck: "handsafe/v1/trustzone/key-check",
  /** §4 HPKE info of the sub-key delivery (aad = jti). */
  subKeyDelivery: "handsafe/v1/trustzone/sub-key-delivery",
  /** §5 signal MAC prefix. */
  signal: "handsafe/v1/trustzone/signal",
  /** §6 relay proof prefix. */
  relay: "handsafe/v1/trustzone/relay",
  /** Added: AAD of a signal's wrapped CK_i (ChaCha20-Poly1305 under ZAK), see wrapSignalKey. */
  signalKey: "handsafe/v1/trustzone/signal-key",
  /** Added: AAD prefix of a zone record sealed under SSK (‖ 0 ‖ keystore entry name). */
  storageRecord: "handsafe/v1/trustzone/storage-record",
  /** Added: the RFC 9421 `tag` of webhook calls to a manager (server → manager). */
  webhook: "handsafe/v1/trustzone/webhook",
} as const;

export const KEY_LENGTH = 32;
export const TOKEN_ISSUER = "handsafe-mtsm";
/** A token's iat may be this far in the future (clock skew) before it is refused. */
export const TOKEN_CLOCK_SKEW_SECONDS = 300;
/** A relayed command older (or further in the future) than this is refused. */
export const RELAY_MAX_AGE_MS = 5 * 60 * 1000;
export const MAX_PACKAGE_NAME_BYTES = 128;
export const MAX_ZONE_ID_BYTES = 128;
export const MAX_CONTAINER_INDEX = 0xffff_ffff;
/** A sealed package (nonce ‖ AES-256-GCM ciphertext ‖ tag), as the zone stores it: 1..64 KiB. */
export const MAX_PACKAGE_BYTES = 64 * 1024;
/** Packages one container holds. */
export const MAX_PACKAGES_PER_CONTAINER = 64;
/** Sealed bytes one container holds. */
export const MAX_CONTAINER_BYTES = 1024 * 1024;
/** Containers or keys a token or a signal names. */
export const MAX_LISTED_CONTAINERS = 1024;

// ---- encodings ------------------------------------------------------------------------------

export const ZERO = new Uint8Array([0]);

/** u32be(i) of §2. */
export function u32be(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > MAX_CONTAINER_INDEX)
    throw new HandsafeError("tsm.invalid_index", `not a u32: ${n}`);
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n, false);
  return out;
}

export function checkKey(what: string, key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== KEY_LENGTH)
    throw new HandsafeError("crypto.invalid_key", `${what} must be ${KEY_LENGTH} bytes`);
}

function textField(what: string, value: string, max: number): Uint8Array {
  if (typeof value !== "string" || value.length === 0)
    throw new HandsafeError("tsm.invalid_name", `${what} must be a non-empty string`);
  const bytes = utf8(value);
  if (fromUtf8(bytes) !== value || bytes.includes(0) || bytes.length > max)
    throw new HandsafeError(
      "tsm.invalid_name",
      `${what} must be well-formed, without NUL, at most ${max} bytes`,
    );
  return bytes;
}

/** A package name: 1..128 UTF-8 bytes, well-formed, no NUL (it is NUL-separated in the AAD). */
export function checkPackageName(name: string): Uint8Array {
  return textField("package name", name, MAX_PACKAGE_NAME_BYTES);
}

export function checkZoneId(zoneId: string): Uint8Array {
  return textField("zone id", zoneId, MAX_ZONE_ID_BYTES);
}

export function isPositiveInt(v: unknown, max = Number.MAX_SAFE_INTEGER): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 1 && v <= max;
}

export function nonEmptyString(v: unknown, max = 256): v is string {
  return typeof v === "string" && v.length > 0 && v.length <= max;
}

/** A list of 1..MAX_LISTED_CONTAINERS distinct u32 container indexes, or undefined. */
export function indexList(value: unknown): number[] | undefined {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_LISTED_CONTAINERS) return undefined;
  const seen = new Set<number>();
  for (const i of value) {
    if (typeof i !== "number" || !Number.isInteger(i) || i < 0 || i > MAX_CONTAINER_INDEX || seen.has(i))
      return undefined;
    seen.add(i);
  }
  return [...(value as number[])];
}
