import { backend as defaultBackend } from "#crypto-backend";
import { concatBytes, utf8 } from "../codec/bytes.ts";
import { HandsafeError, isHandsafeError } from "../errors.ts";
import type { CryptoBackend } from "./backend/types.ts";
import {
  checkPrivateKey,
  EMPTY,
  encap,
  HPKE_KEM_ID,
  type HpkeRecipientKey,
  i2osp2,
  labeledExpand,
  labeledExtract,
  labelPrefix,
  N_H,
  openFailed,
  recipientKeyOf,
} from "./hpke-kem.ts";

/**
 * HPKE, RFC 9180, with one suite: DHKEM(X25519, HKDF-SHA256) (kem 0x0020), HKDF-SHA256 (kdf 0x0001),
 * ChaCha20-Poly1305 (aead 0x0003); modes base (0x00) and psk (0x01). Section numbers are RFC 9180's.
 *
 * Composed only from the synchronous backend primitives — X25519, HMAC-SHA256 (HKDF is two lines of
 * it, RFC 5869 §2.2-2.3) and ChaCha20-Poly1305 — so the same code runs on node:crypto on the server and
 * on @noble/* in a browser. Every function that needs a primitive takes an optional backend last.
 * The labeled HKDF (§4) and the KEM (§4.1) are in hpke-kem.ts; this file holds the key schedule,
 * the contexts and the setup and single-shot APIs, and re-exports the KEM's public names.
 *
 * Failures, by side:
 * - sender: a recipient key that is not 32 bytes, or whose DH output is all zeros (a low-order point,
 *   §7.1.4 / RFC 7748 §6.1), is `hpke.invalid_public_key`;
 * - recipient: anything wrong with what arrived — enc of the wrong length or low order, ciphertext
 *   too short, tampered, or under another key, info or aad — is `hpke.open_failed`, one code with no
 *   detail (no oracle);
 * - a private key of the wrong length is `crypto.invalid_key` (a caller's bug, not an attack).
 */

export {
  deriveHpkeKeyPair,
  generateHpkeKeyPair,
  HPKE_ENC_LENGTH,
  HPKE_KEM_ID,
  HPKE_PRIVATE_KEY_LENGTH,
  HPKE_PUBLIC_KEY_LENGTH,
  type HpkeKeyPair,
  type HpkeRecipientKey,
  hpkeRecipientKey,
  isValidHpkePublicKey,
} from "./hpke-kem.ts";

/** §7.2, §7.3 identifiers of the suite's KDF and AEAD (the KEM's, §7.1, is in hpke-kem.ts). */
export const HPKE_KDF_ID = 0x0001;
export const HPKE_AEAD_ID = 0x0003;

/** §7.3 Nk, Nn, Nt of ChaCha20-Poly1305. */
const N_K = 32;
const N_N = 12;
export const HPKE_TAG_LENGTH = 16;
/** §5.3: an exported secret is at most 255·Nh bytes (the HKDF-Expand limit). */
export const HPKE_EXPORT_MAX_LENGTH = 255 * N_H;
/** §5.1.2: a PSK MUST have at least 32 bytes of entropy. */
export const HPKE_PSK_MIN_LENGTH = 32;

const MODE_BASE = 0x00;
const MODE_PSK = 0x01;
type Mode = typeof MODE_BASE | typeof MODE_PSK;

/** §5.1: suite_id = concat("HPKE", I2OSP(kem_id, 2), I2OSP(kdf_id, 2), I2OSP(aead_id, 2)). */
const HPKE_SUITE_ID = concatBytes(
  utf8("HPKE"),
  i2osp2(HPKE_KEM_ID),
  i2osp2(HPKE_KDF_ID),
  i2osp2(HPKE_AEAD_ID),
);

const LABEL = {
  pskIdHash: labelPrefix(HPKE_SUITE_ID, "psk_id_hash"),
  infoHash: labelPrefix(HPKE_SUITE_ID, "info_hash"),
  secret: labelPrefix(HPKE_SUITE_ID, "secret"),
  key: labelPrefix(HPKE_SUITE_ID, "key"),
  baseNonce: labelPrefix(HPKE_SUITE_ID, "base_nonce"),
  exp: labelPrefix(HPKE_SUITE_ID, "exp"),
  sec: labelPrefix(HPKE_SUITE_ID, "sec"),
};

// ---- §5.1 key schedule ----------------------------------------------------------------------

interface KeySchedule {
  keyScheduleContext: Uint8Array;
  secret: Uint8Array;
  key: Uint8Array;
  baseNonce: Uint8Array;
  exporterSecret: Uint8Array;
}

/** LabeledExtract("", "psk_id_hash", "") is the same for every base-mode context: computed once. */
let emptyPskIdHash: Uint8Array | undefined;

function pskIdHashOf(via: CryptoBackend, pskId: Uint8Array): Uint8Array {
  if (pskId.length > 0) return labeledExtract(via, EMPTY, LABEL.pskIdHash, pskId);
  if (emptyPskIdHash === undefined) emptyPskIdHash = labeledExtract(via, EMPTY, LABEL.pskIdHash, EMPTY);
  return emptyPskIdHash;
}

function bytesOf(what: string, value: string | Uint8Array | undefined): Uint8Array {
  if (value === undefined) return EMPTY;
  if (typeof value === "string") return utf8(value);
  if (value instanceof Uint8Array) return value;
  throw new HandsafeError("hpke.invalid_input", `HPKE ${what} must be bytes or a string`);
}

function plaintextOf(value: Uint8Array): Uint8Array {
  if (value instanceof Uint8Array) return value;
  throw new HandsafeError("hpke.invalid_input", "HPKE plaintext must be bytes");
}

function aadOf(value: Uint8Array | undefined): Uint8Array {
  if (value === undefined || value instanceof Uint8Array) return value ?? EMPTY;
  throw new HandsafeError("hpke.invalid_input", "HPKE aad must be bytes");
}

function checkPsk(psk: Uint8Array, pskId: Uint8Array): void {
  // §5.1 VerifyPSKInputs: psk mode needs both; §5.1.2: at least 32 bytes of entropy.
  if (!(psk instanceof Uint8Array) || psk.length < HPKE_PSK_MIN_LENGTH)
    throw new HandsafeError("hpke.invalid_psk", `HPKE psk must be at least ${HPKE_PSK_MIN_LENGTH} bytes`);
  if (!(pskId instanceof Uint8Array) || pskId.length === 0)
    throw new HandsafeError("hpke.invalid_psk", "HPKE psk_id must not be empty");
}

/** §5.1 KeySchedule(mode, shared_secret, info, psk, psk_id); psk inputs already checked. */
function keySchedule(
  via: CryptoBackend,
  mode: Mode,
  sharedSecret: Uint8Array,
  info: Uint8Array,
  psk: Uint8Array,
  pskId: Uint8Array,
): KeySchedule {
  const pskIdHash = pskIdHashOf(via, pskId);
  const infoHash = labeledExtract(via, EMPTY, LABEL.infoHash, info);
  const keyScheduleContext = concatBytes(new Uint8Array([mode]), pskIdHash, infoHash);
  const secret = labeledExtract(via, sharedSecret, LABEL.secret, psk);
  return {
    keyScheduleContext,
    secret,
    key: labeledExpand(via, secret, LABEL.key, keyScheduleContext, N_K),
    baseNonce: labeledExpand(via, secret, LABEL.baseNonce, keyScheduleContext, N_N),
    exporterSecret: labeledExpand(via, secret, LABEL.exp, keyScheduleContext, N_H),
  };
}

// ---- §5.2 encryption contexts, §5.3 secret export -------------------------------------------

/** A sender's context (§5.2): seals messages in order, each under the next sequence number. */
export interface HpkeSenderContext {
  /** The number of the next message; starts at 0. */
  readonly sequenceNumber: number;
  seal(plaintext: Uint8Array, aad?: Uint8Array): Uint8Array;
  /** §5.3 Export(exporter_context, L). */
  export(exporterContext: string | Uint8Array, length: number): Uint8Array;
  toJSON(): { hpke: "sender"; sequenceNumber: number };
}

/** A recipient's context (§5.2): opens messages in the order they were sealed. */
export interface HpkeRecipientContext {
  /** The number of the next message expected; a failed open does not advance it. */
  readonly sequenceNumber: number;
  open(ciphertext: Uint8Array, aad?: Uint8Array): Uint8Array;
  export(exporterContext: string | Uint8Array, length: number): Uint8Array;
  toJSON(): { hpke: "recipient"; sequenceNumber: number };
}

class Context {
  readonly #key: Uint8Array;
  readonly #baseNonce: Uint8Array;
  readonly #exporterSecret: Uint8Array;
  readonly #via: CryptoBackend;
  #seq = 0;

  constructor(schedule: KeySchedule, via: CryptoBackend) {
    this.#key = schedule.key;
    this.#baseNonce = schedule.baseNonce;
    this.#exporterSecret = schedule.exporterSecret;
    schedule.secret.fill(0);
    this.#via = via;
  }

  get sequenceNumber(): number {
    return this.#seq;
  }

  /** §5.2 ComputeNonce(seq) = base_nonce XOR I2OSP(seq, Nn). */
  #nonce(): Uint8Array {
    // §5.2 IncrementSeq raises MessageLimitReachedError at 2^96-1; a JS number stops at 2^53-1 first.
    if (this.#seq >= Number.MAX_SAFE_INTEGER)
      throw new HandsafeError("hpke.message_limit_reached", "HPKE context has sealed its last message");
    const nonce = this.#baseNonce.slice();
    for (let i = N_N - 1, s = this.#seq; s > 0; i--, s = Math.floor(s / 256)) nonce[i]! ^= s % 256;
    return nonce;
  }

  protected sealNext(plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
    const sealed = this.#via.chacha20poly1305Seal(this.#key, this.#nonce(), plaintext, aad);
    this.#seq++;
    return sealed;
  }

  protected openNext(ciphertext: Uint8Array, aad: Uint8Array): Uint8Array {
    if (!(ciphertext instanceof Uint8Array) || ciphertext.length < HPKE_TAG_LENGTH) throw openFailed();
    let plaintext: Uint8Array;
    try {
      plaintext = this.#via.chacha20poly1305Open(this.#key, this.#nonce(), ciphertext, aad);
    } catch (e) {
      if (isHandsafeError(e, "crypto.decrypt_failed")) throw openFailed();
      throw e;
    }
    this.#seq++; // §5.2: only a successful open advances the sequence number
    return plaintext;
  }

  export(exporterContext: string | Uint8Array, length: number): Uint8Array {
    if (!Number.isSafeInteger(length) || length < 1 || length > HPKE_EXPORT_MAX_LENGTH)
      throw new HandsafeError(
        "crypto.invalid_length",
        `HPKE export length must be 1..${HPKE_EXPORT_MAX_LENGTH} bytes, got ${length}`,
      );
    const context = bytesOf("exporter context", exporterContext);
    return labeledExpand(this.#via, this.#exporterSecret, LABEL.sec, context, length);
  }
}

class SenderContext extends Context implements HpkeSenderContext {
  seal(plaintext: Uint8Array, aad?: Uint8Array): Uint8Array {
    return this.sealNext(plaintextOf(plaintext), aadOf(aad));
  }
  toJSON(): { hpke: "sender"; sequenceNumber: number } {
    return { hpke: "sender", sequenceNumber: this.sequenceNumber };
  }
}

class RecipientContext extends Context implements HpkeRecipientContext {
  open(ciphertext: Uint8Array, aad?: Uint8Array): Uint8Array {
    return this.openNext(ciphertext, aadOf(aad));
  }
  toJSON(): { hpke: "recipient"; sequenceNumber: number } {
    return { hpke: "recipient", sequenceNumber: this.sequenceNumber };
  }
}

// ---- §5.1.1, §5.1.2 setup -------------------------------------------------------------------

function setupS(
  via: CryptoBackend,
  mode: Mode,
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
  psk: Uint8Array,
  pskId: Uint8Array,
  ephemeralPrivateKey?: Uint8Array,
): { enc: Uint8Array; context: HpkeSenderContext } {
  const { sharedSecret, enc } = encap(via, recipientPublicKey, ephemeralPrivateKey);
  const schedule = keySchedule(via, mode, sharedSecret, info, psk, pskId);
  sharedSecret.fill(0);
  return { enc, context: new SenderContext(schedule, via) };
}

function setupR(
  via: CryptoBackend,
  mode: Mode,
  recipient: Uint8Array | HpkeRecipientKey,
  enc: Uint8Array,
  info: Uint8Array,
  psk: Uint8Array,
  pskId: Uint8Array,
): HpkeRecipientContext {
  const sharedSecret = recipientKeyOf(recipient, via).decap(via, enc);
  const schedule = keySchedule(via, mode, sharedSecret, info, psk, pskId);
  sharedSecret.fill(0);
  return new RecipientContext(schedule, via);
}

/** §5.1.1 SetupBaseS(pkR, info): a fresh ephemeral key, the `enc` to send, and the sender context. */
export function setupBaseS(
  recipientPublicKey: Uint8Array,
  info?: string | Uint8Array,
  via: CryptoBackend = defaultBackend,
): { enc: Uint8Array; context: HpkeSenderContext } {
  return setupS(via, MODE_BASE, recipientPublicKey, bytesOf("info", info), EMPTY, EMPTY);
}

/**
 * §5.1.1 SetupBaseR(enc, skR, info), key first like `hpkeOpen`. The recipient is the raw private key
 * or one imported with `hpkeRecipientKey`.
 */
export function setupBaseR(
  recipient: Uint8Array | HpkeRecipientKey,
  enc: Uint8Array,
  info?: string | Uint8Array,
  via: CryptoBackend = defaultBackend,
): HpkeRecipientContext {
  return setupR(via, MODE_BASE, recipient, enc, bytesOf("info", info), EMPTY, EMPTY);
}

/** §5.1.2 SetupPSKS(pkR, info, psk, psk_id): base mode plus a pre-shared key both sides hold. */
export function setupPskS(
  recipientPublicKey: Uint8Array,
  info: string | Uint8Array | undefined,
  psk: Uint8Array,
  pskId: Uint8Array,
  via: CryptoBackend = defaultBackend,
): { enc: Uint8Array; context: HpkeSenderContext } {
  checkPsk(psk, pskId);
  return setupS(via, MODE_PSK, recipientPublicKey, bytesOf("info", info), psk, pskId);
}

/** §5.1.2 SetupPSKR(enc, skR, info, psk, psk_id). */
export function setupPskR(
  recipient: Uint8Array | HpkeRecipientKey,
  enc: Uint8Array,
  info: string | Uint8Array | undefined,
  psk: Uint8Array,
  pskId: Uint8Array,
  via: CryptoBackend = defaultBackend,
): HpkeRecipientContext {
  checkPsk(psk, pskId);
  return setupR(via, MODE_PSK, recipient, enc, bytesOf("info", info), psk, pskId);
}

// ---- §6.1 single-shot APIs ------------------------------------------------------------------

export interface HpkeMessageOptions {
  /** Application-supplied context binding the key (§5.1), e.g. "handsafe/v1/messaging/message". */
  info?: string | Uint8Array;
  /** Associated data authenticated with the message, not encrypted. */
  aad?: Uint8Array;
}

export interface HpkeSealed {
  /** The encapsulated ephemeral public key (32 bytes): send it with the ciphertext. */
  enc: Uint8Array;
  /** ChaCha20-Poly1305 ciphertext || 16-byte tag. */
  ciphertext: Uint8Array;
}

/** §6.1 SealBase(pkR, info, aad, pt): encrypts one message to the holder of pkR's private key. */
export function hpkeSeal(
  recipientPublicKey: Uint8Array,
  plaintext: Uint8Array,
  options: HpkeMessageOptions = {},
  via: CryptoBackend = defaultBackend,
): HpkeSealed {
  const { enc, context } = setupBaseS(recipientPublicKey, options.info, via);
  return { enc, ciphertext: context.seal(plaintext, options.aad) };
}

/** §6.1 OpenBase(enc, skR, info, aad, ct): the plaintext, or `hpke.open_failed`. */
export function hpkeOpen(
  recipient: Uint8Array | HpkeRecipientKey,
  enc: Uint8Array,
  ciphertext: Uint8Array,
  options: HpkeMessageOptions = {},
  via: CryptoBackend = defaultBackend,
): Uint8Array {
  return setupBaseR(recipient, enc, options.info, via).open(ciphertext, options.aad);
}

// ---- test-only entry points -----------------------------------------------------------------

/** §5.1 VerifyPSKInputs for the test entry points: psk mode when either PSK input is given. */
function modeFor(psk: Uint8Array, pskId: Uint8Array): Mode {
  if (psk.length === 0 && pskId.length === 0) return MODE_BASE;
  checkPsk(psk, pskId);
  return MODE_PSK;
}

/**
 * For test/vectors only (RFC 9180 Appendix A fixes the ephemeral key and lists intermediate values).
 * Deliberately not exported from core/crypto/index.ts: a fixed ephemeral key repeats key and nonce.
 */
export const hpkeInternals = {
  /** §4.1 Encap with a given skE. */
  encap(
    recipientPublicKey: Uint8Array,
    ephemeralPrivateKey: Uint8Array,
    via: CryptoBackend = defaultBackend,
  ): { sharedSecret: Uint8Array; enc: Uint8Array } {
    return encap(via, recipientPublicKey, ephemeralPrivateKey);
  },
  /** §4.1 Decap. */
  decap(
    recipient: Uint8Array | HpkeRecipientKey,
    enc: Uint8Array,
    via: CryptoBackend = defaultBackend,
  ): Uint8Array {
    return recipientKeyOf(recipient, via).decap(via, enc);
  },
  /** §5.1 KeySchedule, with its intermediate values; psk and pskId empty for base mode. */
  keySchedule(
    sharedSecret: Uint8Array,
    info: Uint8Array,
    psk: Uint8Array = EMPTY,
    pskId: Uint8Array = EMPTY,
    via: CryptoBackend = defaultBackend,
  ): KeySchedule {
    return keySchedule(via, modeFor(psk, pskId), sharedSecret, info, psk, pskId);
  },
  /** §5.1.1 / §5.1.2 SetupBaseS / SetupPSKS with a given skE. */
  setupSender(
    recipientPublicKey: Uint8Array,
    info: Uint8Array,
    ephemeralPrivateKey: Uint8Array,
    psk: Uint8Array = EMPTY,
    pskId: Uint8Array = EMPTY,
    via: CryptoBackend = defaultBackend,
  ): { enc: Uint8Array; context: HpkeSenderContext } {
    checkPrivateKey("HPKE ephemeral private key", ephemeralPrivateKey);
    return setupS(via, modeFor(psk, pskId), recipientPublicKey, info, psk, pskId, ephemeralPrivateKey);
  },
};
