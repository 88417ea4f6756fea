/**
 * The handset's identity module (WIM), docs/protocols/backup.md §1: one age X25519 identity `s`, sealed
 * in the keystore under a PIN and under a PUK, from which the account key, the content-hash key and
 * the item-id key are derived. Behaves as a SIM card: 3 PIN tries, then the PUK; 10 PUK tries, then
 * both sealed copies are erased. Isomorphic (no node:* imports), like keystore.ts.
 *
 * The parts: wim-record.ts (the keystore record, the PIN/PUK seals, the card image text) and
 * unlocked-identity.ts (what an unlocked module can do without handing out `s`).
 */

import { accountIdOf, LABELS } from "../backup/protocol.ts";
import { decryptBytes, encryptBytes } from "../core/age/age.ts";
import { armor, dearmor } from "../core/age/armor.ts";
import { encodeRecipient } from "../core/age/keys.ts";
import { SCRYPT_DEFAULT_LOG_N, ScryptIdentity, ScryptRecipient } from "../core/age/scrypt-recipient.ts";
import type { AgeIdentity } from "../core/age/stanza.ts";
import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { signingPublicKey } from "../core/crypto/ed25519.ts";
import { generateNumericCode } from "../core/crypto/otp.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { x25519PublicKey } from "../core/crypto/x25519.ts";
import { isHandsafeError } from "../core/errors.ts";
import type { Keystore } from "./keystore.ts";
import { deriveKey, type UnlockedIdentity, unlockIdentity } from "./unlocked-identity.ts";
import {
  cardInvalid,
  cardText,
  checkLogN,
  checkPin,
  checkPuk,
  dead,
  decodeRecord,
  encodeRecord,
  openSealed,
  PIN_SEAL_LABEL,
  PIN_TRIES,
  PUK_SEAL_LABEL,
  PUK_TRIES,
  parseCardText,
  SECRET_LENGTH,
  seal,
  WIM_SCRYPT_LOG_N,
  type WimRecord,
  wimError,
} from "./wim-record.ts";

export { accountIdOf } from "../backup/protocol.ts";
export type { UnlockedIdentity } from "./unlocked-identity.ts";
export {
  CARD_IMAGE_COMMENT,
  PIN_SEAL_LABEL,
  PIN_TRIES,
  PUK_SEAL_LABEL,
  PUK_TRIES,
  WIM_SCRYPT_LOG_N,
} from "./wim-record.ts";

// ---- labels (backup.md §1) ---------------------------------------------------------------------

export const ACCOUNT_KEY_LABEL = LABELS.accountKey;
export const CONTENT_HASH_LABEL = LABELS.contentHash;
export const ITEM_ID_LABEL = LABELS.itemId;

const DEFAULT_SLOT = "wim";

// ---- types --------------------------------------------------------------------------------------

export interface WimState {
  pinTriesLeft: number;
  pukTriesLeft: number;
  status: "ready" | "pin_blocked" | "dead";
}

export interface CreateOptions {
  pin: string;
  /** Generated (8 uniform CSPRNG digits) and returned when omitted. */
  puk?: string;
  /** The keystore entry, default "wim". */
  name?: string;
  /** log2 of scrypt's N for the PIN/PUK keys: 15 (the spec) unless a test asks for less (10..20). */
  scryptLogN?: number;
}

// ---- the module ---------------------------------------------------------------------------------

export class IdentityModule {
  readonly #keystore: Keystore;
  readonly #name: string;
  readonly recipient: string;
  readonly accountPublicKey: Uint8Array;
  readonly accountId: string;
  /** Operations on the try counters run one at a time, so two concurrent checks cannot share a try. */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(keystore: Keystore, name: string, record: WimRecord) {
    this.#keystore = keystore;
    this.#name = name;
    this.recipient = record.recipient;
    this.accountPublicKey = record.accountPublicKey;
    this.accountId = accountIdOf(record.accountPublicKey);
  }

  static async create(
    keystore: Keystore,
    opts: CreateOptions,
  ): Promise<{ module: IdentityModule; puk: string }> {
    return IdentityModule.#install(keystore, randomBytes(SECRET_LENGTH), opts);
  }

  static async open(keystore: Keystore, name = DEFAULT_SLOT): Promise<IdentityModule> {
    const bytes = await keystore.get(name);
    if (bytes === undefined)
      throw wimError("wim.missing", `no identity module in keystore entry ${name}`, 404);
    return new IdentityModule(keystore, name, decodeRecord(bytes));
  }

  /** Opens a card image (binary or armored age file) with its passphrase and installs it under a new PIN/PUK. */
  static async importCard(
    keystore: Keystore,
    card: Uint8Array | string,
    passphrase: string,
    opts: CreateOptions,
  ): Promise<{ module: IdentityModule; puk: string }> {
    checkPin(opts.pin);
    if (opts.puk !== undefined) checkPuk(opts.puk);
    if (typeof passphrase !== "string" || passphrase.length === 0)
      throw wimError("wim.passphrase_invalid", "a card image passphrase is a non-empty string", 401);
    const bytes = typeof card === "string" ? utf8(card) : card;
    let file: Uint8Array = bytes;
    if (fromUtf8Lossy(bytes.subarray(0, 64)).trimStart().startsWith("-----BEGIN")) {
      try {
        file = dearmor(bytes);
      } catch (e) {
        throw cardInvalid("bad armor", e);
      }
    }
    const inner = new ScryptIdentity(passphrase);
    let passphraseFile = false;
    const identity: AgeIdentity = {
      unwrap(stanzas) {
        passphraseFile = stanzas.some((s) => s.args[0] === "scrypt");
        return inner.unwrap(stanzas);
      },
    };
    let text: string;
    try {
      text = fromUtf8(await decryptBytes([identity], file));
    } catch (e) {
      if (isHandsafeError(e, "age.no_match") && passphraseFile)
        throw wimError("wim.passphrase_invalid", "the passphrase does not open this card image", 401);
      throw cardInvalid(isHandsafeError(e) ? e.code : "not UTF-8", e);
    }
    return IdentityModule.#install(keystore, parseCardText(text), opts);
  }

  static async #install(keystore: Keystore, secret: Uint8Array, opts: CreateOptions) {
    checkPin(opts.pin);
    if (opts.puk !== undefined) checkPuk(opts.puk);
    const logN = opts.scryptLogN ?? WIM_SCRYPT_LOG_N;
    checkLogN(logN);
    const name = opts.name ?? DEFAULT_SLOT;
    if ((await keystore.get(name)) !== undefined)
      throw wimError("wim.exists", `keystore entry ${name} already holds an identity module`, 409);
    const puk = opts.puk ?? generateNumericCode(8);
    const seed = deriveKey(secret, ACCOUNT_KEY_LABEL);
    const base = { recipient: encodeRecipient(x25519PublicKey(secret)), logN };
    const record: WimRecord = {
      ...base,
      accountPublicKey: signingPublicKey(seed),
      pinTriesLeft: PIN_TRIES,
      pukTriesLeft: PUK_TRIES,
      pin: await seal(secret, opts.pin, PIN_SEAL_LABEL, base),
      puk: await seal(secret, puk, PUK_SEAL_LABEL, base),
    };
    seed.fill(0);
    secret.fill(0);
    await keystore.put(name, encodeRecord(record));
    return { module: new IdentityModule(keystore, name, record), puk };
  }

  #serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(op, op);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #load(): Promise<WimRecord> {
    const bytes = await this.#keystore.get(this.#name);
    if (bytes === undefined)
      throw wimError("wim.missing", `no identity module in keystore entry ${this.#name}`, 404);
    const record = decodeRecord(bytes);
    if (record.recipient !== this.recipient)
      throw wimError("wim.missing", `keystore entry ${this.#name} holds another identity module`, 404);
    return record;
  }

  #store(record: WimRecord): Promise<void> {
    return this.#keystore.put(this.#name, encodeRecord(record));
  }

  async state(): Promise<WimState> {
    const r = await this.#load();
    const status = r.pin === null || r.puk === null ? "dead" : r.pinTriesLeft === 0 ? "pin_blocked" : "ready";
    return { pinTriesLeft: r.pinTriesLeft, pukTriesLeft: r.pukTriesLeft, status };
  }

  /**
   * Checks the PIN, spending one try that is stored before the check and given back after a success,
   * so a check cut short (power, crash, a thrown error) is a spent try. Returns `s` and the record.
   */
  async #verifyPin(pin: string): Promise<{ secret: Uint8Array; record: WimRecord }> {
    checkPin(pin);
    const record = await this.#load();
    if (record.pin === null || record.puk === null) throw dead();
    if (record.pinTriesLeft === 0)
      throw wimError("wim.pin_blocked", "the PIN is blocked: unblock it with the PUK", 403);
    record.pinTriesLeft -= 1;
    await this.#store(record);
    const secret = await openSealed(record.pin, pin, PIN_SEAL_LABEL, record);
    if (secret === undefined) {
      const triesLeft = record.pinTriesLeft;
      if (triesLeft === 0)
        throw wimError("wim.pin_blocked", "wrong PIN; the PIN is now blocked: unblock it with the PUK", 403, {
          triesLeft,
        });
      throw wimError("wim.pin_invalid", `wrong PIN, ${triesLeft} tries left`, 403, { triesLeft });
    }
    record.pinTriesLeft = PIN_TRIES;
    await this.#store(record);
    return { secret, record };
  }

  unlock(pin: string): Promise<UnlockedIdentity> {
    return this.#serial(async () => {
      const { secret } = await this.#verifyPin(pin);
      return unlockIdentity(secret, this.recipient, this.accountPublicKey, this.accountId);
    });
  }

  /** The PUK resets the PIN (blocked or not). Ten wrong PUKs erase both sealed copies: the module is dead. */
  unblock(puk: string, newPin: string): Promise<void> {
    return this.#serial(async () => {
      checkPuk(puk);
      checkPin(newPin);
      const record = await this.#load();
      if (record.pin === null || record.puk === null || record.pukTriesLeft === 0) throw dead();
      record.pukTriesLeft -= 1;
      await this.#store(record);
      const secret = await openSealed(record.puk, puk, PUK_SEAL_LABEL, record);
      if (secret === undefined) {
        const triesLeft = record.pukTriesLeft;
        if (triesLeft > 0)
          throw wimError("wim.puk_invalid", `wrong PUK, ${triesLeft} tries left`, 403, { triesLeft });
        record.pin = null;
        record.puk = null;
        await this.#store(record);
        throw dead();
      }
      try {
        record.pin = await seal(secret, newPin, PIN_SEAL_LABEL, record);
      } finally {
        secret.fill(0);
      }
      record.pinTriesLeft = PIN_TRIES;
      record.pukTriesLeft = PUK_TRIES;
      await this.#store(record);
    });
  }

  async changePin(oldPin: string, newPin: string): Promise<void> {
    checkPin(newPin);
    return this.#serial(async () => {
      const { secret, record } = await this.#verifyPin(oldPin);
      try {
        record.pin = await seal(secret, newPin, PIN_SEAL_LABEL, record);
      } finally {
        secret.fill(0);
      }
      await this.#store(record);
    });
  }

  /** The card image: an age file to an scrypt passphrase recipient holding the age identity file. */
  async exportCard(
    pin: string,
    passphrase: string,
    opts: { armor?: boolean; logN?: number } = {},
  ): Promise<Uint8Array> {
    if (typeof passphrase !== "string" || passphrase.length === 0)
      throw wimError("wim.passphrase_invalid", "a card image passphrase is a non-empty string", 401);
    const recipient = new ScryptRecipient(passphrase, opts.logN ?? SCRYPT_DEFAULT_LOG_N);
    return this.#serial(async () => {
      const { secret } = await this.#verifyPin(pin);
      const text = utf8(cardText(secret, this.recipient));
      secret.fill(0);
      try {
        const file = await encryptBytes([recipient], text);
        return opts.armor ? utf8(armor(file)) : file;
      } finally {
        text.fill(0);
      }
    });
  }

  erase(): Promise<void> {
    return this.#serial(() => this.#keystore.delete(this.#name));
  }

  toJSON(): { identityModule: string } {
    return { identityModule: this.accountId };
  }
}

function fromUtf8Lossy(bytes: Uint8Array): string {
  return new TextDecoder("utf-8").decode(bytes);
}
