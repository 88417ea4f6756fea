/**
 * §5 provisioning signals (docs/protocols/trustzone.md): what the server queues for a zone, MAC'd
 * with ZAK, and how the zone checks it; the CK_i a bind/renew carries, wrapped under ZAK. Pure;
 * re-exported by protocol.ts. `notAfter` is milliseconds since the epoch.
 */

import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { concatBytes, utf8 } from "../core/codec/bytes.ts";
import { canonicalJson } from "../core/codec/canonical-json.ts";
import { AEAD_NONCE_LENGTH, chachaOpen, chachaSeal } from "../core/crypto/aead.ts";
import { constantTimeEqual } from "../core/crypto/ct.ts";
import { hmacSha256 } from "../core/crypto/hash.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import {
  checkKey,
  checkZoneId,
  indexList,
  isPositiveInt,
  KEY_LENGTH,
  LABELS,
  MAX_CONTAINER_INDEX,
  MAX_ZONE_ID_BYTES,
  nonEmptyString,
  u32be,
  ZERO,
} from "./encoding.ts";

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
  const containers = indexList(s.containers);
  if (containers === undefined) throw signalInvalid("containers");
  const signal: ZoneSignal = {
    type: s.type as ZoneSignalType,
    zoneId: s.zoneId,
    epoch: s.epoch,
    seq: s.seq,
    containers,
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
