/**
 * Trusted security zone containers — the pure protocol core (docs/protocols/trustzone.md). No I/O:
 * labels, the key tree (§2), token claims (§3), the sub-key generator shared by both placements (§4),
 * provisioning signals (§5), package sealing and relay proofs (§6). The zone simulator
 * (handset/secure-zone.ts) and the server (trustzone/server.ts) are thin shells over these functions.
 *
 * Bytes are Uint8Array; every key is 32 bytes; base64url only where the spec puts bytes in JSON
 * (signal `keys`). Times: token `iat`/`exp` are JWT NumericDate seconds (RFC 7519 §2); everything
 * else (`now`, `notAfter`, relay `created`) is milliseconds since the epoch, as Date.now() gives.
 */

import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { concatBytes, fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { canonicalJson } from "../core/codec/canonical-json.ts";
import { AEAD_NONCE_LENGTH, aesGcmOpen, aesGcmSeal, chachaOpen, chachaSeal } from "../core/crypto/aead.ts";
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
import { randomBytes, randomToken } from "../core/crypto/random.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import { type JwsKeys, type JwsSigner, signJws, verifyJws } from "../core/jws.ts";

// ---- labels ---------------------------------------------------------------------------------

/** Every label of the spec (§2–§6), and the two this module adds (marked). */
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

// ---- encodings ------------------------------------------------------------------------------

const ZERO = new Uint8Array([0]);

/** u32be(i) of §2. */
export function u32be(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > MAX_CONTAINER_INDEX)
    throw new HandsafeError("tsm.invalid_index", `not a u32: ${n}`);
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n, false);
  return out;
}

function checkKey(what: string, key: Uint8Array): void {
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

// ---- §3 tokens ------------------------------------------------------------------------------

export interface TokenLimits {
  /** How long a bound container lives, from binding. */
  containerSeconds: number;
  /** Wrong keys a container tolerates before it locks. */
  maxAttempts: number;
}

export interface TokenClaims {
  iss: typeof TOKEN_ISSUER;
  /** The service manager's id. */
  sub: string;
  /** The zone's id. */
  aud: string;
  /** "tok_…" */
  jti: string;
  /** Seconds (NumericDate). */
  iat: number;
  exp: number;
  maxUses: number;
  containers: number[];
  limits: TokenLimits;
}

export interface TokenContext {
  /** Milliseconds since the epoch (Date.now()). */
  now: number;
  zoneId: string;
  /** When known (the caller is authenticated as a manager): must equal `sub`. */
  managerId?: string;
}

function tokenError(code: string, message: string, status = 401): HandsafeError {
  return new HandsafeError(code, message, { status });
}

const TOKEN_MEMBERS = new Set(["iss", "sub", "aud", "jti", "iat", "exp", "maxUses", "containers", "limits"]);

function isPositiveInt(v: unknown, max = Number.MAX_SAFE_INTEGER): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 1 && v <= max;
}

function nonEmptyString(v: unknown, max = 256): v is string {
  return typeof v === "string" && v.length > 0 && v.length <= max;
}

/** A fresh token id: "tok_" + 128 random bits. */
export function newTokenId(): string {
  return `tok_${randomToken(16)}`;
}

/** Shape only (no time or audience): the claims, typed, or `token.invalid`. */
export function parseTokenClaims(value: unknown): TokenClaims {
  const bad = (why: string) => tokenError("token.invalid", `token claims: ${why}`);
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw bad("not an object");
  const c = value as Record<string, unknown>;
  for (const k of Object.keys(c)) if (!TOKEN_MEMBERS.has(k)) throw bad(`unexpected member ${k}`);
  if (c.iss !== TOKEN_ISSUER) throw bad("iss");
  if (!nonEmptyString(c.sub)) throw bad("sub");
  if (!nonEmptyString(c.aud, MAX_ZONE_ID_BYTES)) throw bad("aud");
  if (!nonEmptyString(c.jti) || !c.jti.startsWith("tok_")) throw bad("jti");
  if (!isPositiveInt(c.iat) || !isPositiveInt(c.exp) || c.exp <= c.iat) throw bad("iat/exp");
  if (!isPositiveInt(c.maxUses, 1_000_000)) throw bad("maxUses");
  const containers = c.containers;
  if (!Array.isArray(containers) || containers.length === 0 || containers.length > 1024)
    throw bad("containers");
  const seen = new Set<number>();
  for (const i of containers) {
    if (typeof i !== "number" || !Number.isInteger(i) || i < 0 || i > MAX_CONTAINER_INDEX || seen.has(i))
      throw bad("containers");
    seen.add(i);
  }
  const limits = c.limits as Record<string, unknown> | undefined;
  if (typeof limits !== "object" || limits === null || Array.isArray(limits)) throw bad("limits");
  for (const k of Object.keys(limits))
    if (k !== "containerSeconds" && k !== "maxAttempts") throw bad("limits");
  if (!isPositiveInt(limits.containerSeconds) || !isPositiveInt(limits.maxAttempts, 1000))
    throw bad("limits");
  return {
    iss: TOKEN_ISSUER,
    sub: c.sub,
    aud: c.aud,
    jti: c.jti,
    iat: c.iat,
    exp: c.exp,
    maxUses: c.maxUses,
    containers: [...(containers as number[])],
    limits: { containerSeconds: limits.containerSeconds, maxAttempts: limits.maxAttempts },
  };
}

/**
 * Shape, then expiry (`token.expired` from `exp`, `token.invalid` for an iat in the future beyond
 * the skew), audience (`token.wrong_zone`) and, when given, manager (`token.wrong_manager`).
 */
export function checkTokenClaims(claims: unknown, ctx: TokenContext): TokenClaims {
  const c = parseTokenClaims(claims);
  const nowSeconds = Math.floor(ctx.now / 1000);
  if (nowSeconds >= c.exp) throw tokenError("token.expired", "token has expired");
  if (c.iat > nowSeconds + TOKEN_CLOCK_SKEW_SECONDS)
    throw tokenError("token.invalid", "token issued in the future");
  if (c.aud !== ctx.zoneId) throw tokenError("token.wrong_zone", "token is for another zone", 403);
  if (ctx.managerId !== undefined && c.sub !== ctx.managerId)
    throw tokenError("token.wrong_manager", "token is for another manager", 403);
  return c;
}

/** Signs the claims (checked for shape first) as a JWS with the trust-zone signing key. */
export function issueToken(claims: TokenClaims, signer: JwsSigner): string {
  const c = parseTokenClaims(claims);
  return signJws(c as unknown as Record<string, unknown>, signer);
}

/** Verifies the JWS against the trust-zone keys (by kid), then checkTokenClaims. */
export function verifyToken(tokenJws: string, keys: JwsKeys, ctx: TokenContext): TokenClaims {
  return checkTokenClaims(verifyJws(tokenJws, keys).payload, ctx);
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

// ---- §5 provisioning signals ----------------------------------------------------------------

export type ZoneSignalType = "bind" | "unbind" | "reclaim" | "renew";
export const ZONE_SIGNAL_TYPES: readonly ZoneSignalType[] = ["bind", "unbind", "reclaim", "renew"];

export interface ZoneSignal {
  type: ZoneSignalType;
  zoneId: string;
  epoch: number;
  /** Strictly increasing per zone; the zone refuses a seq not above the last it applied. */
  seq: number;
  containers: number[];
  /** bind / renew only. */
  managerId?: string;
  jti?: string;
  /** bind / renew: container index (decimal string) → wrapSignalKey(…). */
  keys?: Record<string, string>;
  /** bind / renew: milliseconds. */
  notAfter?: number;
  maxAttempts?: number;
}

function signalInvalid(message: string): HandsafeError {
  return new HandsafeError("zone.signal_invalid", message, { status: 400 });
}

const SIGNAL_MEMBERS = new Set([
  "type",
  "zoneId",
  "epoch",
  "seq",
  "containers",
  "managerId",
  "jti",
  "keys",
  "notAfter",
  "maxAttempts",
]);

/** Shape of a signal (`zone.signal_invalid`); bind/renew need managerId, jti, keys for every container, limits. */
export function parseSignal(value: unknown): ZoneSignal {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw signalInvalid("not an object");
  const s = value as Record<string, unknown>;
  for (const k of Object.keys(s)) if (!SIGNAL_MEMBERS.has(k)) throw signalInvalid(`unexpected member ${k}`);
  if (!ZONE_SIGNAL_TYPES.includes(s.type as ZoneSignalType)) throw signalInvalid("type");
  if (!nonEmptyString(s.zoneId, MAX_ZONE_ID_BYTES)) throw signalInvalid("zoneId");
  if (!isPositiveInt(s.epoch, MAX_CONTAINER_INDEX)) throw signalInvalid("epoch");
  if (!isPositiveInt(s.seq)) throw signalInvalid("seq");
  const containers = s.containers;
  if (!Array.isArray(containers) || containers.length === 0 || containers.length > 1024)
    throw signalInvalid("containers");
  const seen = new Set<number>();
  for (const i of containers) {
    if (typeof i !== "number" || !Number.isInteger(i) || i < 0 || i > MAX_CONTAINER_INDEX || seen.has(i))
      throw signalInvalid("containers");
    seen.add(i);
  }
  const signal: ZoneSignal = {
    type: s.type as ZoneSignalType,
    zoneId: s.zoneId,
    epoch: s.epoch,
    seq: s.seq,
    containers: [...(containers as number[])],
  };
  if (signal.type === "bind" || signal.type === "renew") {
    if (!nonEmptyString(s.managerId)) throw signalInvalid("managerId");
    if (!nonEmptyString(s.jti)) throw signalInvalid("jti");
    if (!isPositiveInt(s.notAfter)) throw signalInvalid("notAfter");
    if (!isPositiveInt(s.maxAttempts, 1000)) throw signalInvalid("maxAttempts");
    const keys = s.keys;
    if (typeof keys !== "object" || keys === null || Array.isArray(keys)) throw signalInvalid("keys");
    const k = keys as Record<string, unknown>;
    if (Object.keys(k).length !== signal.containers.length) throw signalInvalid("keys");
    for (const i of signal.containers) if (typeof k[String(i)] !== "string") throw signalInvalid("keys");
    Object.assign(signal, {
      managerId: s.managerId,
      jti: s.jti,
      notAfter: s.notAfter,
      maxAttempts: s.maxAttempts,
      keys: { ...(k as Record<string, string>) },
    });
  } else {
    for (const k of ["managerId", "jti", "keys", "notAfter", "maxAttempts"])
      if (s[k] !== undefined) throw signalInvalid(`${k} is only for bind/renew`);
  }
  return signal;
}

/** mac = HMAC(ZAK, "…/signal" ‖ 0 ‖ canonical JSON(signal)). */
export function macSignal(zak: Uint8Array, signal: ZoneSignal): Uint8Array {
  checkKey("ZAK", zak);
  return hmacSha256(zak, concatBytes(utf8(LABELS.signal), ZERO, utf8(canonicalJson(signal))));
}

export interface SignalExpectation {
  zoneId: string;
  epoch: number;
  /** The last seq the zone applied (0 before any). */
  lastSeq: number;
}

/**
 * The zone's check of a pulled signal: shape, MAC (constant time), zone, epoch, seq > lastSeq.
 * Every refusal is `zone.signal_invalid`. `mac` may be bytes or base64url.
 */
export function verifySignal(
  zak: Uint8Array,
  signal: unknown,
  mac: Uint8Array | string,
  expect?: SignalExpectation,
): ZoneSignal {
  const parsed = parseSignal(signal);
  let macBytes: Uint8Array;
  try {
    macBytes = typeof mac === "string" ? fromBase64url(mac, "mac") : mac;
  } catch {
    throw signalInvalid("mac is not base64url");
  }
  if (!(macBytes instanceof Uint8Array) || !constantTimeEqual(macSignal(zak, parsed), macBytes))
    throw signalInvalid("signal MAC does not verify");
  if (expect !== undefined) {
    if (parsed.zoneId !== expect.zoneId) throw signalInvalid("signal is for another zone");
    if (parsed.epoch !== expect.epoch) throw signalInvalid("signal is for another epoch");
    if (parsed.seq <= expect.lastSeq) throw signalInvalid("signal replayed (seq not above the last applied)");
  }
  return parsed;
}

function signalKeyAad(zoneId: string, epoch: number, index: number): Uint8Array {
  return concatBytes(utf8(LABELS.signalKey), ZERO, checkZoneId(zoneId), ZERO, u32be(epoch), u32be(index));
}

/** A signal's `keys[i]` = base64url(nonce(12) ‖ ChaCha20-Poly1305(ZAK, nonce, CK_i, aad = signal-key ‖ 0 ‖ zoneId ‖ 0 ‖ u32be(epoch) ‖ u32be(i))). */
export function wrapSignalKey(
  zak: Uint8Array,
  zoneId: string,
  epoch: number,
  index: number,
  ck: Uint8Array,
): string {
  checkKey("ZAK", zak);
  checkKey("CK", ck);
  const nonce = randomBytes(AEAD_NONCE_LENGTH);
  return toBase64url(concatBytes(nonce, chachaSeal(zak, nonce, ck, signalKeyAad(zoneId, epoch, index))));
}

/** CK_i out of a signal's `keys[i]`, or `zone.signal_invalid`. */
export function unwrapSignalKey(
  zak: Uint8Array,
  zoneId: string,
  epoch: number,
  index: number,
  wrapped: string,
): Uint8Array {
  checkKey("ZAK", zak);
  try {
    const bytes = fromBase64url(wrapped, "signal key");
    if (bytes.length !== AEAD_NONCE_LENGTH + KEY_LENGTH + 16) throw signalInvalid("wrapped key length");
    const ck = chachaOpen(
      zak,
      bytes.subarray(0, AEAD_NONCE_LENGTH),
      bytes.subarray(AEAD_NONCE_LENGTH),
      signalKeyAad(zoneId, epoch, index),
    );
    return ck;
  } catch (e) {
    if (isHandsafeError(e, "zone.signal_invalid")) throw e;
    throw signalInvalid("signal key does not open");
  }
}

export interface SignalInput {
  zak: Uint8Array;
  zoneId: string;
  epoch: number;
  seq: number;
}

/** The server's helper: a bind/renew signal with every CK_i wrapped, and its MAC. */
export function buildKeyedSignal(
  input: SignalInput & {
    type: "bind" | "renew";
    managerId: string;
    jti: string;
    containerKeys: readonly { index: number; ck: Uint8Array }[];
    notAfter: number;
    maxAttempts: number;
  },
): { signal: ZoneSignal; mac: Uint8Array } {
  const keys: Record<string, string> = {};
  for (const { index, ck } of input.containerKeys)
    keys[String(index)] = wrapSignalKey(input.zak, input.zoneId, input.epoch, index, ck);
  const signal = parseSignal({
    type: input.type,
    zoneId: input.zoneId,
    epoch: input.epoch,
    seq: input.seq,
    containers: input.containerKeys.map((c) => c.index),
    managerId: input.managerId,
    jti: input.jti,
    keys,
    notAfter: input.notAfter,
    maxAttempts: input.maxAttempts,
  });
  return { signal, mac: macSignal(input.zak, signal) };
}

/** The server's helper: an unbind/reclaim signal and its MAC. */
export function buildFreeingSignal(
  input: SignalInput & { type: "unbind" | "reclaim"; containers: readonly number[] },
): { signal: ZoneSignal; mac: Uint8Array } {
  const signal = parseSignal({
    type: input.type,
    zoneId: input.zoneId,
    epoch: input.epoch,
    seq: input.seq,
    containers: [...input.containers],
  });
  return { signal, mac: macSignal(input.zak, signal) };
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

// ---- §6 relayed commands --------------------------------------------------------------------

export type RelayOp = "put" | "get" | "delete" | "list";

export interface RelayCommand {
  op: RelayOp;
  zoneId: string;
  epoch: number;
  container: number;
  /** put / get / delete. */
  name?: string;
  /** put: base64url of the package sealed under CK_i (sealPackage). */
  package?: string;
  /** Unique per command (the zone refuses one it has seen: replay). */
  id: string;
  /** Milliseconds; the zone refuses a command outside ±RELAY_MAX_AGE_MS of its clock. */
  created: number;
}

const RELAY_MEMBERS = new Set(["op", "zoneId", "epoch", "container", "name", "package", "id", "created"]);

function relayInvalid(message: string): HandsafeError {
  return new HandsafeError("zone.relay_invalid", message, { status: 400 });
}

/** Shape of a relayed command, or `zone.relay_invalid`. */
export function parseRelayCommand(value: unknown): RelayCommand {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw relayInvalid("not an object");
  const c = value as Record<string, unknown>;
  for (const k of Object.keys(c)) if (!RELAY_MEMBERS.has(k)) throw relayInvalid(`unexpected member ${k}`);
  if (c.op !== "put" && c.op !== "get" && c.op !== "delete" && c.op !== "list") throw relayInvalid("op");
  if (!nonEmptyString(c.zoneId, MAX_ZONE_ID_BYTES)) throw relayInvalid("zoneId");
  if (!isPositiveInt(c.epoch, MAX_CONTAINER_INDEX)) throw relayInvalid("epoch");
  if (typeof c.container !== "number" || !Number.isInteger(c.container) || c.container < 0)
    throw relayInvalid("container");
  if (!nonEmptyString(c.id, 128)) throw relayInvalid("id");
  if (!isPositiveInt(c.created)) throw relayInvalid("created");
  const needsName = c.op !== "list";
  if (needsName !== (c.name !== undefined)) throw relayInvalid("name");
  if (needsName) {
    try {
      checkPackageName(c.name as string);
    } catch {
      throw relayInvalid("name");
    }
  }
  if (
    (c.op === "put") !== (c.package !== undefined) ||
    (c.package !== undefined && typeof c.package !== "string")
  )
    throw relayInvalid("package");
  return { ...(c as unknown as RelayCommand) };
}

/** proof = HMAC(CK_i, "…/relay" ‖ 0 ‖ canonical JSON(command)). */
export function relayProof(ck: Uint8Array, command: RelayCommand): Uint8Array {
  checkKey("CK", ck);
  return hmacSha256(ck, concatBytes(utf8(LABELS.relay), ZERO, utf8(canonicalJson(command))));
}

/** Constant-time check of a relay proof (bytes or base64url). */
export function verifyRelayProof(ck: Uint8Array, command: RelayCommand, proof: Uint8Array | string): boolean {
  let bytes: Uint8Array | undefined;
  if (typeof proof === "string") {
    try {
      bytes = fromBase64url(proof, "proof");
    } catch {
      return false;
    }
  } else bytes = proof;
  return bytes instanceof Uint8Array && constantTimeEqual(relayProof(ck, command), bytes);
}
