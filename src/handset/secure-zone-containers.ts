/**
 * The secure zone's container records (docs/protocols/trustzone.md §2, §6): what a free and a bound
 * container hold, the checks every way in makes before any key comparison (locked, expired), the
 * size limits of a put, and the all-or-nothing plan of a bind/renew signal. Pure functions over the
 * records secure-zone-store.ts seals; secure-zone.ts applies them.
 */

import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { HandsafeError } from "../core/errors.ts";
import {
  checkPackageName,
  checkZoneId,
  deriveFreeContainerKey,
  KEY_LENGTH,
  keyCheck,
  keyMatchesCheck,
  MAX_CONTAINER_BYTES,
  MAX_PACKAGE_BYTES,
  MAX_PACKAGES_PER_CONTAINER,
  unwrapSignalKey,
  type ZoneSignal,
} from "../trustzone/protocol.ts";
import type { ContainerRecord, Personalisation } from "./secure-zone-store.ts";
import type { ContainerView, ZoneBundle } from "./secure-zone-types.ts";

/** Wrong keys a free container (the master's) tolerates before it locks. */
export const FREE_CONTAINER_ATTEMPTS = 5;

export interface KeyedPlanStep {
  i: number;
  ck: Uint8Array;
  /** false: the server's bind confirms a handset-placement bind (same token, same key). */
  rebind: boolean;
}

export function zoneError(code: string, message: string, status = 403): HandsafeError {
  return new HandsafeError(code, message, { status });
}

export function freeRecord(index: number, uk: Uint8Array | null, generation: number): ContainerRecord {
  return {
    index,
    state: "free",
    occupant: null,
    jti: null,
    notAfter: null,
    maxAttempts: FREE_CONTAINER_ATTEMPTS,
    attemptsLeft: FREE_CONTAINER_ATTEMPTS,
    keyCheck: uk ? toBase64url(keyCheck(deriveFreeContainerKey(uk, index))) : "",
    ck: null,
    packages: {},
    generation,
  };
}

/** Locked and expired containers open for nobody; checked before any key comparison. */
export function usableContainer(c: ContainerRecord, now: number): ContainerRecord {
  if (c.state === "locked") throw zoneError("zone.locked", `container ${c.index} is locked`, 423);
  if (c.state === "bound" && c.notAfter !== null && now >= c.notAfter)
    throw zoneError("zone.expired", `container ${c.index} has expired`);
  return c;
}

/** Binds container record `c` to CK_i for a manager (its FK_i check replaced: the master's key no longer opens it). */
export function bindRecord(
  c: ContainerRecord,
  ck: Uint8Array,
  managerId: string,
  jti: string,
  notAfter: number,
  maxAttempts: number,
): void {
  Object.assign(c, {
    state: "bound",
    occupant: managerId,
    jti,
    notAfter,
    maxAttempts,
    attemptsLeft: maxAttempts,
    keyCheck: toBase64url(keyCheck(ck)),
    ck: toBase64url(ck),
    generation: c.generation + 1,
  } satisfies Partial<ContainerRecord>);
}

/** bind / renew: every check first (all keys unwrap, every state fits), then the changes. */
export function planKeyed(
  containers: readonly ContainerRecord[],
  s: ZoneSignal,
  zak: Uint8Array,
  p: Personalisation,
): KeyedPlanStep[] {
  return s.containers.map((i) => {
    const c = containers[i]!;
    const ck = unwrapSignalKey(zak, p.zoneId, p.epoch, i, s.keys![String(i)]!);
    if (s.type === "bind") {
      // Handset placement already bound it: the server's bind for the same token only confirms.
      const confirms =
        c.state === "bound" && c.jti === s.jti && keyMatchesCheck(ck, fromBase64url(c.keyCheck));
      if (c.state !== "free" && !confirms)
        throw zoneError("zone.signal_invalid", `container ${i} is not free`, 409);
      return { i, ck, rebind: !confirms };
    }
    if (c.state !== "bound" || c.occupant !== s.managerId)
      throw zoneError("zone.signal_invalid", `container ${i} is not bound to ${s.managerId}`, 409);
    return { i, ck, rebind: true };
  });
}

/** A put's limits: 1..MAX_PACKAGE_BYTES per package, MAX_PACKAGES_PER_CONTAINER, MAX_CONTAINER_BYTES. */
export function checkPackageFits(c: ContainerRecord, name: string, sealed: Uint8Array): void {
  checkPackageName(name);
  if (!(sealed instanceof Uint8Array) || sealed.length === 0 || sealed.length > MAX_PACKAGE_BYTES)
    throw zoneError("zone.full", `a package is 1..${MAX_PACKAGE_BYTES} bytes`, 413);
  const others = Object.entries(c.packages).filter(([n]) => n !== name);
  if (others.length >= MAX_PACKAGES_PER_CONTAINER)
    throw zoneError("zone.full", "container holds too many packages", 413);
  if (others.reduce((a, [, n]) => a + n, 0) + sealed.length > MAX_CONTAINER_BYTES)
    throw zoneError("zone.full", "container is full", 413);
}

export function decodePackage(text: string): Uint8Array {
  try {
    return fromBase64url(text, "package");
  } catch {
    throw zoneError("zone.relay_invalid", "package is not base64url", 400);
  }
}

/** A provisioning bundle, checked (`zone.invalid_bundle`), as the record the zone keeps. */
export function personalisationOf(bundle: ZoneBundle, minEpoch: number): Personalisation {
  checkZoneId(bundle.zoneId);
  if (!(bundle.zmk instanceof Uint8Array) || bundle.zmk.length !== KEY_LENGTH)
    throw zoneError("zone.invalid_bundle", "ZMK must be 32 bytes", 400);
  if (!Number.isInteger(bundle.epoch) || bundle.epoch < minEpoch)
    throw zoneError("zone.invalid_bundle", `epoch must be at least ${minEpoch}`, 400);
  if (typeof bundle.userInfo !== "string" || bundle.userInfo.length === 0)
    throw zoneError("zone.invalid_bundle", "user info is required", 400);
  const pins: Record<string, string> = {};
  for (const [kid, key] of Object.entries(bundle.trustZonePublicKeys ?? {})) {
    if (!(key instanceof Uint8Array) || key.length !== 32)
      throw zoneError("zone.invalid_bundle", "trust-zone keys must be 32-byte Ed25519 keys", 400);
    pins[kid] = toBase64url(key);
  }
  if (Object.keys(pins).length === 0) throw zoneError("zone.invalid_bundle", "no trust-zone key to pin", 400);
  return {
    zoneId: bundle.zoneId,
    epoch: bundle.epoch,
    zmk: toBase64url(bundle.zmk),
    userInfo: bundle.userInfo,
    trustZonePublicKeys: pins,
    lastSeq: 0,
  };
}

/** The carrier's view of one container: occupant, limits, expiry, attempts, sizes — never contents or keys. */
export function containerView(c: ContainerRecord): ContainerView {
  const sizes = Object.values(c.packages);
  return {
    index: c.index,
    state: c.state,
    occupant: c.occupant,
    jti: c.jti,
    notAfter: c.notAfter,
    maxAttempts: c.maxAttempts,
    attemptsLeft: c.attemptsLeft,
    packages: sizes.length,
    bytes: sizes.reduce((a, b) => a + b, 0),
  };
}
