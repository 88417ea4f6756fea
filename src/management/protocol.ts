/**
 * Management protocol core — no I/O. Spec: docs/protocols/management.md; every label is listed there.
 *
 *   manufacturer ──batch (CSV/JSON)──► server: devices + sealed static keys; key files returned once
 *   server: dynamic key ← CSPRNG(32) ──SMS "HSM1:…" sealed under KEK(static key)──► handset
 *   handset: session key = HKDF(static ‖ dynamic, device id, purpose)
 *   handset ──request + RFC 9421 signature (hmac-sha256, session key)──► server: verify, count a use
 *
 * Batch parsing lives in batch.ts, the signature profile in signature.ts; both are re-exported here.
 */
import { fromBase64url, fromBase64urlOfLength, toBase64url } from "../core/codec/base64url.ts";
import { concatBytes, lengthPrefixed, utf8 } from "../core/codec/bytes.ts";
import { AEAD_NONCE_LENGTH, AEAD_TAG_LENGTH, chachaOpen, chachaSeal } from "../core/crypto/aead.ts";
import { hkdfSha256 } from "../core/crypto/hkdf.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import { type KeySource, parseHardwareId, STATIC_KEY_BYTES } from "./batch.ts";

export * from "./batch.ts";
export * from "./signature.ts";

/** Every domain-separation label of the protocol (docs/protocols/management.md §Labels). */
export const LABELS = {
  notificationKek: "handsafe/v1/management/notification-kek",
  notificationAad: "handsafe/v1/management/notification",
  session: "handsafe/v1/management/session",
  pushAuth: "handsafe/v1/management/push-auth",
} as const;

export const DYNAMIC_KEY_BYTES = 32;
export const KEY_ID_BYTES = 12;
export const DEVICE_ID = /^dev_[A-Za-z0-9_-]{16}$/;
export const KEY_ID = /^dk_[A-Za-z0-9_-]{16}$/;
export const SESSION_PURPOSES = ["requests", "content"] as const;
export type SessionPurpose = (typeof SESSION_PURPOSES)[number];

// ---------------------------------------------------------------------------------------------
// Key types: never logged, never mixed up.

abstract class KeyMaterial {
  readonly #bytes: Uint8Array;
  protected constructor(bytes: Uint8Array, what: string) {
    if (!(bytes instanceof Uint8Array) || bytes.length !== 32)
      throw new HandsafeError("crypto.invalid_key", `${what} must be 32 bytes`);
    this.#bytes = Uint8Array.from(bytes);
  }
  /** The key bytes, for the one computation that needs them; do not keep the reference. */
  reveal(): Uint8Array {
    return this.#bytes;
  }
  wipe(): void {
    this.#bytes.fill(0);
  }
  toJSON(): string {
    return "[redacted key]";
  }
  toString(): string {
    return "[redacted key]";
  }
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `${this.constructor.name}([redacted])`;
  }
}

/** The 256-bit key the server sends in a notification: half of every session key. */
export class DynamicKey extends KeyMaterial {
  constructor(bytes: Uint8Array) {
    super(bytes, "a dynamic key");
  }
  static generate(): DynamicKey {
    return new DynamicKey(randomBytes(DYNAMIC_KEY_BYTES));
  }
}

/** An HMAC / key-wrapping key for one device, one dynamic key and one purpose. */
export class SessionKey extends KeyMaterial {
  constructor(
    bytes: Uint8Array,
    readonly purpose: SessionPurpose,
  ) {
    super(bytes, "a session key");
  }
}

/** The HMAC key that authenticates a push subscription: from the static key alone (see derivePushAuthKey). */
export class PushAuthKey extends KeyMaterial {
  constructor(bytes: Uint8Array) {
    super(bytes, "a push authentication key");
  }
}

export function newDeviceId(): string {
  return `dev_${toBase64url(randomBytes(12))}`;
}

export function newKeyId(): string {
  return `dk_${toBase64url(randomBytes(KEY_ID_BYTES))}`;
}

// ---------------------------------------------------------------------------------------------
// Key derivation.

/** KEK = HKDF-SHA256(IKM = static key, salt = device id, info = notification-kek label). */
export function notificationKek(staticKey: Uint8Array, deviceId: string): Uint8Array {
  checkStaticKey(staticKey);
  return hkdfSha256(staticKey, utf8(deviceId), LABELS.notificationKek, 32);
}

/**
 * Session key = HKDF-SHA256(IKM = static ‖ dynamic, salt = none,
 *                           info = lp(session label) ‖ lp(device id) ‖ lp(purpose)), 32 bytes.
 * Both halves are fixed-length 32-byte secrets in the IKM, so neither alone determines the key;
 * the device id and purpose in info give independent keys per device and per use.
 */
export function deriveSessionKey(
  staticKey: Uint8Array,
  dynamicKey: DynamicKey,
  deviceId: string,
  purpose: SessionPurpose,
): SessionKey {
  checkStaticKey(staticKey);
  if (!(SESSION_PURPOSES as readonly string[]).includes(purpose))
    throw new HandsafeError("management.invalid_purpose", `unknown session purpose ${purpose}`);
  const ikm = concatBytes(staticKey, dynamicKey.reveal());
  try {
    const info = lengthPrefixed(utf8(LABELS.session), utf8(deviceId), utf8(purpose));
    return new SessionKey(hkdfSha256(ikm, undefined, info, 32), purpose);
  } finally {
    ikm.fill(0);
  }
}

/**
 * Push authentication key = HKDF-SHA256(IKM = static key, salt = none,
 *                                      info = lp(push-auth label) ‖ lp(device id)), 32 bytes.
 * It needs no dynamic key on purpose: the push stream exists to deliver a fresh dynamic key when
 * the handset's one has expired or is used up. Its own label keeps it independent of the KEK and of
 * every session key (docs/protocols/management.md §Push channel).
 */
export function derivePushAuthKey(staticKey: Uint8Array, deviceId: string): PushAuthKey {
  checkStaticKey(staticKey);
  const info = lengthPrefixed(utf8(LABELS.pushAuth), utf8(deviceId));
  const bytes = hkdfSha256(staticKey, undefined, info, 32);
  try {
    return new PushAuthKey(bytes);
  } finally {
    bytes.fill(0);
  }
}

/** The RFC 9421 keyid of a push subscription: "push:" ‖ device id (a dynamic key id starts "dk_"). */
export const PUSH_KEY_ID_PREFIX = "push:";

export function pushKeyId(deviceId: string): string {
  return PUSH_KEY_ID_PREFIX + deviceId;
}

/** The device a push keyid names, or undefined when the keyid is not of that form. */
export function deviceOfPushKeyId(keyId: string): string | undefined {
  if (!keyId.startsWith(PUSH_KEY_ID_PREFIX)) return undefined;
  const deviceId = keyId.slice(PUSH_KEY_ID_PREFIX.length);
  return DEVICE_ID.test(deviceId) ? deviceId : undefined;
}

function checkStaticKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== STATIC_KEY_BYTES)
    throw new HandsafeError("crypto.invalid_key", `a static key must be ${STATIC_KEY_BYTES} bytes`);
}

// ---------------------------------------------------------------------------------------------
// The handset-side key file, one per device, produced on import.

export interface DeviceKeyFile {
  v: 1;
  deviceId: string;
  hardwareId: string;
  model: string;
  /** 32 bytes, base64url. */
  staticKey: string;
  keySource?: KeySource;
  serverUrl?: string;
  serverPin?: string;
}

export function makeKeyFile(input: {
  deviceId: string;
  hardwareId: string;
  model: string;
  staticKey: Uint8Array;
  keySource?: KeySource;
  serverUrl?: string;
  serverPin?: string;
}): DeviceKeyFile {
  checkStaticKey(input.staticKey);
  return {
    v: 1,
    deviceId: input.deviceId,
    hardwareId: input.hardwareId,
    model: input.model,
    staticKey: toBase64url(input.staticKey),
    ...(input.keySource ? { keySource: input.keySource } : {}),
    ...(input.serverUrl ? { serverUrl: input.serverUrl } : {}),
    ...(input.serverPin ? { serverPin: input.serverPin } : {}),
  };
}

/** Strict parse of a key file (text or parsed JSON). */
export function parseKeyFile(input: string | unknown): DeviceKeyFile & { staticKeyBytes: Uint8Array } {
  const bad = (why: string) =>
    new HandsafeError("device.invalid_key_file", `malformed device key file: ${why}`);
  let v: unknown = input;
  if (typeof input === "string") {
    try {
      v = JSON.parse(input);
    } catch {
      throw bad("not JSON");
    }
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw bad("not an object");
  const f = v as Record<string, unknown>;
  if (f["v"] !== 1) throw bad("unknown version");
  const allowed = [
    "v",
    "deviceId",
    "hardwareId",
    "model",
    "staticKey",
    "keySource",
    "serverUrl",
    "serverPin",
  ];
  const extra = Object.keys(f).filter((k) => !allowed.includes(k));
  if (extra.length) throw bad(`unexpected fields ${extra.join(", ")}`);
  if (typeof f["deviceId"] !== "string" || !DEVICE_ID.test(f["deviceId"])) throw bad("deviceId");
  if (typeof f["hardwareId"] !== "string") throw bad("hardwareId");
  try {
    parseHardwareId(f["hardwareId"]);
  } catch {
    throw bad("hardwareId");
  }
  if (typeof f["model"] !== "string" || f["model"].length === 0 || f["model"].length > 100)
    throw bad("model");
  if (typeof f["staticKey"] !== "string") throw bad("staticKey");
  let staticKeyBytes: Uint8Array;
  try {
    staticKeyBytes = fromBase64urlOfLength(f["staticKey"], STATIC_KEY_BYTES, "staticKey");
  } catch {
    throw bad("staticKey must be 32 bytes of base64url");
  }
  for (const k of ["keySource", "serverUrl", "serverPin"])
    if (f[k] !== undefined && typeof f[k] !== "string") throw bad(k);
  if (f["keySource"] !== undefined && !["file", "sim", "embedded"].includes(f["keySource"] as string))
    throw bad("keySource");
  return { ...(f as unknown as DeviceKeyFile), staticKeyBytes };
}

// ---------------------------------------------------------------------------------------------
// The dynamic-key notification: one GSM-7 SMS.
//
//   text    = "HSM1:" ‖ base64url(counter (u32 BE) ‖ nonce (12) ‖ ChaCha20-Poly1305(KEK, nonce, pt, aad))
//   pt      = dynamic key (32) ‖ key id (12) ‖ expiresAt (u32 BE unix s, 0 = none) ‖ maxUses (u32 BE, 0 = none)
//   aad     = lp(notification label) ‖ lp(device id) ‖ lp(counter u32 BE)
//   84 bytes → 112 base64url characters → 117 characters in all, within one 160-character GSM-7 SMS.

export const NOTIFICATION_PREFIX = "HSM1:";
const PLAINTEXT_LENGTH = DYNAMIC_KEY_BYTES + KEY_ID_BYTES + 4 + 4;
const PAYLOAD_LENGTH = 4 + AEAD_NONCE_LENGTH + PLAINTEXT_LENGTH + AEAD_TAG_LENGTH;
/** The exact length of a notification text (117), checked to fit one 160-septet GSM-7 SMS. */
export const NOTIFICATION_TEXT_LENGTH = NOTIFICATION_PREFIX.length + Math.ceil((PAYLOAD_LENGTH * 4) / 3);
export const MAX_COUNTER = 0xffff_ffff;

export interface DynamicKeyNotification {
  deviceId: string;
  keyId: string;
  dynamicKey: DynamicKey;
  /** Epoch milliseconds (whole seconds), or null when the server gave none. */
  expiresAt: number | null;
  /** null when the server gave none. */
  maxUses: number | null;
  /** Strictly increasing per device: the handset refuses anything not newer than its last. */
  counter: number;
}

/** Is this text a management notification (by form only — not yet authenticated)? */
export function isManagementSms(text: string): boolean {
  return (
    typeof text === "string" &&
    text.length === NOTIFICATION_TEXT_LENGTH &&
    text.startsWith(NOTIFICATION_PREFIX) &&
    /^[A-Za-z0-9_-]+$/.test(text.slice(NOTIFICATION_PREFIX.length))
  );
}

function u32(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

function readU32(bytes: Uint8Array, offset: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(offset);
}

function notificationAad(deviceId: string, counter: Uint8Array): Uint8Array {
  return lengthPrefixed(utf8(LABELS.notificationAad), utf8(deviceId), counter);
}

export function sealDynamicKeyNotification(staticKey: Uint8Array, n: DynamicKeyNotification): string {
  if (!KEY_ID.test(n.keyId)) throw new HandsafeError("management.invalid_key_id", "bad dynamic key id");
  if (!Number.isSafeInteger(n.counter) || n.counter < 1 || n.counter > MAX_COUNTER)
    throw new HandsafeError("management.counter_exhausted", "notification counter out of range");
  const expiresS = n.expiresAt === null ? 0 : Math.floor(n.expiresAt / 1000);
  const maxUses = n.maxUses ?? 0;
  if (expiresS > MAX_COUNTER || maxUses > MAX_COUNTER || maxUses < 0 || expiresS < 0)
    throw new HandsafeError("management.invalid_policy", "expiry or use limit out of range");
  const counter = u32(n.counter);
  const kek = notificationKek(staticKey, n.deviceId);
  const nonce = randomBytes(AEAD_NONCE_LENGTH);
  const pt = concatBytes(n.dynamicKey.reveal(), fromBase64url(n.keyId.slice(3)), u32(expiresS), u32(maxUses));
  try {
    const sealed = chachaSeal(kek, nonce, pt, notificationAad(n.deviceId, counter));
    return NOTIFICATION_PREFIX + toBase64url(concatBytes(counter, nonce, sealed));
  } finally {
    pt.fill(0);
    kek.fill(0);
  }
}

/**
 * The handset's check of a notification: authentic under its own static key and addressed to its
 * own device id (both inside the AEAD), and newer than the last counter it accepted. A text
 * sealed for another device fails authentication exactly like a forgery.
 */
export function openDynamicKeyNotification(
  staticKey: Uint8Array,
  deviceId: string,
  text: string,
  lastCounter: number,
): DynamicKeyNotification {
  if (!isManagementSms(text))
    throw new HandsafeError("management.notification_malformed", "not a management notification");
  const payload = fromBase64url(text.slice(NOTIFICATION_PREFIX.length), "notification");
  if (payload.length !== PAYLOAD_LENGTH)
    throw new HandsafeError("management.notification_malformed", "notification has the wrong length");
  const counterBytes = payload.subarray(0, 4);
  const nonce = payload.subarray(4, 4 + AEAD_NONCE_LENGTH);
  const sealed = payload.subarray(4 + AEAD_NONCE_LENGTH);
  const kek = notificationKek(staticKey, deviceId);
  let pt: Uint8Array;
  try {
    pt = chachaOpen(kek, nonce, sealed, notificationAad(deviceId, counterBytes));
  } catch (e) {
    if (isHandsafeError(e, "crypto.decrypt_failed"))
      throw new HandsafeError(
        "management.notification_forged",
        "the notification is not authentic for this device",
        { status: 403 },
      );
    throw e;
  } finally {
    kek.fill(0);
  }
  const counter = readU32(counterBytes, 0);
  if (counter <= lastCounter) {
    pt.fill(0);
    throw new HandsafeError(
      "management.notification_replayed",
      `notification ${counter} is not newer than the last accepted (${lastCounter})`,
      { status: 409 },
    );
  }
  const dynamicKey = new DynamicKey(pt.subarray(0, DYNAMIC_KEY_BYTES));
  const keyId = `dk_${toBase64url(pt.subarray(DYNAMIC_KEY_BYTES, DYNAMIC_KEY_BYTES + KEY_ID_BYTES))}`;
  const expiresS = readU32(pt, DYNAMIC_KEY_BYTES + KEY_ID_BYTES);
  const maxUses = readU32(pt, DYNAMIC_KEY_BYTES + KEY_ID_BYTES + 4);
  pt.fill(0);
  return {
    deviceId,
    keyId,
    dynamicKey,
    expiresAt: expiresS === 0 ? null : expiresS * 1000,
    maxUses: maxUses === 0 ? null : maxUses,
    counter,
  };
}

// ---------------------------------------------------------------------------------------------
// Dynamic-key policy and state.

export type DynamicKeyState = "active" | "expired" | "exhausted" | "superseded";

export interface DynamicKeyPolicy {
  profile?: string;
  maxUses?: number;
  ttlSeconds?: number;
}

export const DEFAULT_MAX_USES = 10;
export const DEFAULT_TTL_SECONDS = 86_400;
export const MAX_TTL_SECONDS = 30 * 86_400;
export const MAX_USES_LIMIT = 1_000_000;

export function resolvePolicy(p: DynamicKeyPolicy): {
  profile: string | null;
  maxUses: number;
  ttlSeconds: number;
} {
  const maxUses = p.maxUses ?? DEFAULT_MAX_USES;
  const ttlSeconds = p.ttlSeconds ?? DEFAULT_TTL_SECONDS;
  if (!Number.isSafeInteger(maxUses) || maxUses < 1 || maxUses > MAX_USES_LIMIT)
    throw new HandsafeError("management.invalid_policy", `maxUses must be 1–${MAX_USES_LIMIT}`);
  if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 60 || ttlSeconds > MAX_TTL_SECONDS)
    throw new HandsafeError("management.invalid_policy", `ttlSeconds must be 60–${MAX_TTL_SECONDS}`);
  if (p.profile !== undefined && (typeof p.profile !== "string" || !/^[a-z0-9._-]{1,64}$/.test(p.profile)))
    throw new HandsafeError("management.invalid_policy", "profile is 1–64 of a-z 0-9 . _ -");
  return { profile: p.profile ?? null, maxUses, ttlSeconds };
}

/** Why a use of a dynamic key was refused (null: it may be used). */
export function dynamicKeyRefusal(
  key: { state: DynamicKeyState; uses: number; maxUses: number; expiresAt: number },
  now: number,
): "expired" | "exhausted" | "superseded" | null {
  if (key.state === "superseded") return "superseded";
  if (key.state === "expired" || key.expiresAt <= now) return "expired";
  if (key.state === "exhausted" || key.uses >= key.maxUses) return "exhausted";
  return null;
}
