/**
 * The secure zone's sealed persistence (docs/protocols/trustzone.md §2, §6). In the keystore:
 *
 *   zone/huk           the hardware unique key, 32 random bytes, created once, never wiped
 *   zone/state         nonce(12) ‖ AES-256-GCM(SSK, nonce, JSON ZoneRecord, aad)   — ZMK, keys, map, log
 *   zone/pkg/<i>/<h>   nonce(12) ‖ AES-256-GCM(SSK, nonce, sealed package, aad)    — h = b64url(SHA-256(name))
 *
 * with SSK = HKDF(HUK, "handsafe/v1/trustzone/storage") and aad = "handsafe/v1/trustzone/storage-record"
 * ‖ 0 ‖ entry name (UTF-8), so a record cannot be moved to another entry. Packages arrive already
 * sealed under CK_i by their manager, so they are wrapped twice and storage never sees a plaintext
 * package, a ZMK or a container key.
 *
 * Not covered (as keystore.ts): someone who can write the keystore can roll an entry back. The HUK
 * sits in the keystore beside what it protects — a simulator's stand-in for a fused hardware key.
 */

import { toBase64url } from "../core/codec/base64url.ts";
import { concatBytes, fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { AEAD_NONCE_LENGTH, aesGcmOpen, aesGcmSeal } from "../core/crypto/aead.ts";
import { sha256 } from "../core/crypto/hash.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import { deriveStorageKey, KEY_LENGTH, LABELS } from "../trustzone/protocol.ts";
import type { Keystore } from "./keystore.ts";
import type { ZoneLogRecord } from "./secure-zone-log.ts";

export const HUK_ENTRY = "zone/huk";
export const STATE_ENTRY = "zone/state";
export const PACKAGE_PREFIX = "zone/pkg/";

export type ContainerState = "free" | "bound" | "locked";

export interface ContainerRecord {
  index: number;
  state: ContainerState;
  occupant: string | null;
  jti: string | null;
  notAfter: number | null;
  maxAttempts: number;
  attemptsLeft: number;
  /** base64url KC of the key that opens it: FK_i while free, CK_i while bound. */
  keyCheck: string;
  /** base64url CK_i while bound (relay proofs are HMACs under it). */
  ck: string | null;
  /** name → sealed size. */
  packages: Record<string, number>;
  /** Bumped on every bind/renew/free/lock: an open handle of an older generation is dead. */
  generation: number;
}

export interface Personalisation {
  zoneId: string;
  epoch: number;
  zmk: string;
  userInfo: string;
  trustZonePublicKeys: Record<string, string>;
  lastSeq: number;
}

export interface ZoneRecord extends ZoneLogRecord {
  version: 1;
  containerCount: number;
  /** A re-personalisation must carry an epoch at least this (a factory reset raises it). */
  minEpoch: number;
  personalisation: Personalisation | null;
  containers: ContainerRecord[];
}

function recordAad(entry: string): Uint8Array {
  return concatBytes(utf8(LABELS.storageRecord), new Uint8Array([0]), utf8(entry));
}

export function sealRecord(ssk: Uint8Array, entry: string, plaintext: Uint8Array): Uint8Array {
  const nonce = randomBytes(AEAD_NONCE_LENGTH);
  return concatBytes(nonce, aesGcmSeal(ssk, nonce, plaintext, recordAad(entry)));
}

/** The record's plaintext, or `zone.corrupt` (wrong HUK, another entry's record, tampered). */
export function openRecord(ssk: Uint8Array, entry: string, sealed: Uint8Array): Uint8Array {
  try {
    if (sealed.length < AEAD_NONCE_LENGTH + 16) throw new Error("short");
    return aesGcmOpen(
      ssk,
      sealed.subarray(0, AEAD_NONCE_LENGTH),
      sealed.subarray(AEAD_NONCE_LENGTH),
      recordAad(entry),
    );
  } catch (cause) {
    throw new HandsafeError("zone.corrupt", `zone record ${entry} does not open`, { status: 500, cause });
  }
}

export function packageEntry(index: number, name: string): string {
  return `${PACKAGE_PREFIX}${index}/${toBase64url(sha256(utf8(name)))}`;
}

/** The zone's keystore entries, every one sealed under SSK. */
export class SealedZoneStore {
  private constructor(
    readonly keystore: Keystore,
    readonly ssk: Uint8Array,
  ) {}

  /** Opens the store (creating the HUK on first use) and the saved record, if any. */
  static async open(keystore: Keystore): Promise<{ store: SealedZoneStore; record: ZoneRecord | undefined }> {
    let huk = await keystore.get(HUK_ENTRY);
    if (huk === undefined) {
      huk = randomBytes(KEY_LENGTH);
      await keystore.put(HUK_ENTRY, huk);
    }
    if (huk.length !== KEY_LENGTH)
      throw new HandsafeError("zone.corrupt", "zone HUK has the wrong length", { status: 500 });
    const ssk = deriveStorageKey(huk);
    huk.fill(0);
    const store = new SealedZoneStore(keystore, ssk);
    const sealed = await keystore.get(STATE_ENTRY);
    if (sealed === undefined) return { store, record: undefined };
    const record = JSON.parse(fromUtf8(openRecord(ssk, STATE_ENTRY, sealed))) as ZoneRecord;
    return { store, record };
  }

  async save(record: ZoneRecord): Promise<void> {
    await this.keystore.put(STATE_ENTRY, sealRecord(this.ssk, STATE_ENTRY, utf8(JSON.stringify(record))));
  }

  async putPackage(index: number, name: string, sealed: Uint8Array): Promise<void> {
    const entry = packageEntry(index, name);
    await this.keystore.put(entry, sealRecord(this.ssk, entry, sealed));
  }

  async getPackage(index: number, name: string): Promise<Uint8Array | undefined> {
    const entry = packageEntry(index, name);
    const stored = await this.keystore.get(entry);
    return stored === undefined ? undefined : openRecord(this.ssk, entry, stored);
  }

  async deletePackage(index: number, name: string): Promise<void> {
    await this.keystore.delete(packageEntry(index, name));
  }

  /** Every package of container `index`, or of every container when omitted. */
  async wipePackages(index?: number): Promise<void> {
    const prefix = index === undefined ? PACKAGE_PREFIX : `${PACKAGE_PREFIX}${index}/`;
    for (const name of await this.keystore.list(prefix)) await this.keystore.delete(name);
  }
}
