/**
 * The handset's identity module (WIM), docs/protocols/backup.md §1: one age X25519 identity `s`, sealed
 * in the keystore under a PIN and under a PUK, from which the account key, the content-hash key and
 * the item-id key are derived. Behaves as a SIM card: 3 PIN tries, then the PUK; 10 PUK tries, then
 * both sealed copies are erased. Isomorphic (no node:* imports), like keystore.ts.
 */
import { scryptAsync } from "@noble/hashes/scrypt.js";
import { decryptBytes, encryptBytes } from "../core/age/age.ts";
import { armor, dearmor } from "../core/age/armor.ts";
import { encodeIdentity, encodeRecipient, parseIdentity } from "../core/age/keys.ts";
import { SCRYPT_DEFAULT_LOG_N, ScryptIdentity, ScryptRecipient } from "../core/age/scrypt-recipient.ts";
import type { AgeIdentity, Stanza } from "../core/age/stanza.ts";
import { X25519Identity } from "../core/age/x25519-recipient.ts";
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { concatBytes, fromUtf8, lengthPrefixed, utf8 } from "../core/codec/bytes.ts";
import { chachaOpen, chachaSeal } from "../core/crypto/aead.ts";
import { sign, signingPublicKey } from "../core/crypto/ed25519.ts";
import { createHash, hmacSha256, sha256 } from "../core/crypto/hash.ts";
import { hkdfSha256 } from "../core/crypto/hkdf.ts";
import { generateNumericCode } from "../core/crypto/otp.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { x25519PublicKey } from "../core/crypto/x25519.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import type { Ed25519SigningKey } from "../core/http-signatures/algorithms.ts";
import type { Keystore } from "./keystore.ts";

// ---- labels (backup.md §1) ---------------------------------------------------------------------

export const ACCOUNT_KEY_LABEL = "handsafe/v1/backup/account-key";
export const CONTENT_HASH_LABEL = "handsafe/v1/backup/content-hash";
export const ITEM_ID_LABEL = "handsafe/v1/backup/item-id";
/** scrypt salt prefix and AEAD associated data of the two sealed copies of `s`. */
export const PIN_SEAL_LABEL = "handsafe/v1/wim/pin-seal";
export const PUK_SEAL_LABEL = "handsafe/v1/wim/puk-seal";
export const CARD_IMAGE_COMMENT = "# handsafe identity module card image v1";

export const PIN_TRIES = 3;
export const PUK_TRIES = 10;
/** backup.md §1: N = 2^15, r = 8, p = 1 for the PIN and PUK wrapping keys. */
export const WIM_SCRYPT_LOG_N = 15;
const DEFAULT_SLOT = "wim";
const SECRET_LENGTH = 32;
const SALT_LENGTH = 16;
const PIN_PATTERN = /^[0-9]{4,8}$/;
const PUK_PATTERN = /^[0-9]{8}$/;
/** Each wrapping key seals one value under a fresh salt, so the nonce is fixed. */
const ZERO_NONCE = new Uint8Array(12);
const ITEM_ID_BYTES = 18;
const RECORD_VERSION = 1;

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
  /** Streaming HMAC-SHA256 with the content-hash key (native SHA-256 on Node). */
  contentHasher(): { update(data: Uint8Array): void; digest(): Uint8Array };
  /** `it_` + base64url(HMAC-SHA256(item-id key, path)[0..18]). */
  itemId(path: string): string;
  /** Wipes the unlocked secrets; every later call throws wim.locked. */
  lock(): void;
}

/** What the keystore holds: the public half in clear, `s` sealed twice; both seals null once dead. */
interface Sealed {
  salt: Uint8Array;
  box: Uint8Array;
}
interface WimRecord {
  recipient: string;
  accountPublicKey: Uint8Array;
  logN: number;
  pinTriesLeft: number;
  pukTriesLeft: number;
  pin: Sealed | null;
  puk: Sealed | null;
}

// ---- errors -------------------------------------------------------------------------------------

function wimError(code: string, message: string, status: number, details?: Record<string, unknown>) {
  return new HandsafeError(code, message, { status, ...(details ? { details } : {}) });
}
const locked = () => wimError("wim.locked", "the identity module is locked", 403);
const dead = () => wimError("wim.dead", "the identity module is dead: its secret was erased", 403);

function checkPin(pin: string): void {
  if (typeof pin !== "string" || !PIN_PATTERN.test(pin))
    throw wimError("wim.pin_format", "a PIN is 4 to 8 decimal digits", 400);
}
function checkPuk(puk: string): void {
  if (typeof puk !== "string" || !PUK_PATTERN.test(puk))
    throw wimError("wim.pin_format", "a PUK is 8 decimal digits", 400);
}
function checkLogN(logN: number): void {
  if (!Number.isInteger(logN) || logN < 10 || logN > 20)
    throw wimError("wim.record_invalid", "the WIM scrypt work factor must be 10..20", 500);
}

// ---- derivations (backup.md §1 table) -----------------------------------------------------------

function derive(secret: Uint8Array, label: string): Uint8Array {
  // HKDF-SHA256, salt empty, 32 bytes.
  return hkdfSha256(secret, undefined, label, 32);
}

export function accountIdOf(accountPublicKey: Uint8Array): string {
  return `acct_${toBase64url(sha256(accountPublicKey)).slice(0, 22)}`;
}

async function sealingKey(code: string, salt: Uint8Array, label: string, logN: number): Promise<Uint8Array> {
  return scryptAsync(utf8(code), concatBytes(utf8(label), salt), { N: 2 ** logN, r: 8, p: 1, dkLen: 32 });
}

/** The associated data binds a sealed copy to its role and to the module's public identity. */
const sealAad = (label: string, recipient: string) => lengthPrefixed(utf8(label), utf8(recipient));

async function seal(
  secret: Uint8Array,
  code: string,
  label: string,
  record: Pick<WimRecord, "logN" | "recipient">,
) {
  const salt = randomBytes(SALT_LENGTH);
  const key = await sealingKey(code, salt, label, record.logN);
  try {
    return { salt, box: chachaSeal(key, ZERO_NONCE, secret, sealAad(label, record.recipient)) };
  } finally {
    key.fill(0);
  }
}

/** `s`, or undefined when `code` is wrong. The AEAD check is the comparison: no early exit on the code. */
async function openSealed(sealed: Sealed, code: string, label: string, record: WimRecord) {
  const key = await sealingKey(code, sealed.salt, label, record.logN);
  try {
    const secret = chachaOpen(key, ZERO_NONCE, sealed.box, sealAad(label, record.recipient));
    if (secret.length !== SECRET_LENGTH || encodeRecipient(x25519PublicKey(secret)) !== record.recipient)
      throw wimError("wim.record_invalid", "the sealed secret does not match the module's recipient", 500);
    return secret;
  } catch (e) {
    if (isHandsafeError(e, "crypto.decrypt_failed")) return undefined;
    throw e;
  } finally {
    key.fill(0);
  }
}

// ---- the keystore record ------------------------------------------------------------------------

function encodeRecord(r: WimRecord): Uint8Array {
  const sealed = (s: Sealed | null) =>
    s === null ? null : { salt: toBase64url(s.salt), box: toBase64url(s.box) };
  return utf8(
    JSON.stringify({
      v: RECORD_VERSION,
      recipient: r.recipient,
      accountPublicKey: toBase64url(r.accountPublicKey),
      logN: r.logN,
      pinTriesLeft: r.pinTriesLeft,
      pukTriesLeft: r.pukTriesLeft,
      pin: sealed(r.pin),
      puk: sealed(r.puk),
    }),
  );
}

function decodeRecord(bytes: Uint8Array): WimRecord {
  try {
    const j = JSON.parse(fromUtf8(bytes));
    const sealed = (s: { salt: string; box: string } | null): Sealed | null =>
      s === null ? null : { salt: fromBase64url(s.salt), box: fromBase64url(s.box) };
    const tries = (n: unknown, max: number) => {
      if (!Number.isInteger(n) || (n as number) < 0 || (n as number) > max) throw new Error("tries");
      return n as number;
    };
    if (j.v !== RECORD_VERSION || typeof j.recipient !== "string") throw new Error("version");
    checkLogN(j.logN);
    return {
      recipient: j.recipient,
      accountPublicKey: fromBase64url(j.accountPublicKey),
      logN: j.logN,
      pinTriesLeft: tries(j.pinTriesLeft, PIN_TRIES),
      pukTriesLeft: tries(j.pukTriesLeft, PUK_TRIES),
      pin: sealed(j.pin),
      puk: sealed(j.puk),
    };
  } catch (e) {
    throw new HandsafeError("wim.record_invalid", "the identity module's keystore entry is malformed", {
      status: 500,
      cause: e,
    });
  }
}

// ---- card image ---------------------------------------------------------------------------------

function cardText(secret: Uint8Array, recipient: string): string {
  return `${CARD_IMAGE_COMMENT}\n# public key: ${recipient}\n${encodeIdentity(secret)}\n`;
}

const cardInvalid = (why: string, cause?: unknown) =>
  new HandsafeError("wim.card_invalid", `not a card image: ${why}`, { status: 422, cause });

/** The one `AGE-SECRET-KEY-1…` line of an age identity file; `#` comments and empty lines ignored. */
function parseCardText(text: string): Uint8Array {
  const keys: string[] = [];
  let publicKey: string | undefined;
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("# public key: ")) publicKey = line.slice("# public key: ".length);
    else if (line.startsWith("#")) continue;
    else keys.push(line);
  }
  if (keys.length !== 1) throw cardInvalid("it must hold exactly one AGE-SECRET-KEY-1 line");
  let secret: Uint8Array;
  try {
    secret = parseIdentity(keys[0]!);
  } catch (e) {
    throw cardInvalid("its key line is not an age X25519 identity", e);
  }
  if (publicKey !== undefined && publicKey !== encodeRecipient(x25519PublicKey(secret)))
    throw cardInvalid("its public key comment does not match its identity");
  return secret;
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
    const seed = derive(secret, ACCOUNT_KEY_LABEL);
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
      return unlocked(secret, this.recipient, this.accountPublicKey, this.accountId);
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

// ---- the unlocked identity ----------------------------------------------------------------------

/** HMAC-SHA256 (RFC 2104) over the incremental SHA-256 of the crypto backend: native speed on Node. */
function streamingHmac(key: Uint8Array, isLocked: () => boolean) {
  const pad = (byte: number) => {
    const block = new Uint8Array(64);
    block.set(key); // the derived keys are 32 bytes, shorter than the 64-byte block
    for (let k = 0; k < 64; k++) block[k]! ^= byte;
    return block;
  };
  const inner = createHash("sha256");
  const ipad = pad(0x36);
  inner.update(ipad);
  ipad.fill(0);
  let opad: Uint8Array | undefined = pad(0x5c);
  return {
    update(data: Uint8Array): void {
      if (isLocked()) throw locked();
      if (opad === undefined)
        throw new HandsafeError("internal", "contentHasher: digest() was called", { status: 500 });
      inner.update(data);
    },
    digest(): Uint8Array {
      if (isLocked()) throw locked();
      if (opad === undefined)
        throw new HandsafeError("internal", "contentHasher: digest() was called", { status: 500 });
      const outer = createHash("sha256");
      outer.update(opad);
      outer.update(inner.digest());
      opad.fill(0);
      opad = undefined;
      return outer.digest();
    },
  };
}

function unlocked(
  secret: Uint8Array,
  recipient: string,
  accountPublicKey: Uint8Array,
  accountId: string,
): UnlockedIdentity {
  const seed = derive(secret, ACCOUNT_KEY_LABEL);
  const contentKey = derive(secret, CONTENT_HASH_LABEL);
  const itemKey = derive(secret, ITEM_ID_LABEL);
  // X25519Identity keeps a reference to `secret`, so lock() wipes its copy too.
  const x25519 = new X25519Identity(secret);
  let isLocked = false;
  const live = () => {
    if (isLocked) throw locked();
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
      for (const k of [secret, seed, contentKey, itemKey]) k.fill(0);
    },
  };
}
