import { backend as defaultBackend } from "#crypto-backend";
import { concatBytes, toHex, utf8 } from "../codec/bytes.ts";
import { HandsafeError, isHandsafeError } from "../errors.ts";
import type { CryptoBackend } from "./backend/types.ts";

/**
 * HPKE, RFC 9180, with one suite: DHKEM(X25519, HKDF-SHA256) (kem 0x0020), HKDF-SHA256 (kdf 0x0001),
 * ChaCha20-Poly1305 (aead 0x0003); modes base (0x00) and psk (0x01). Section numbers are RFC 9180's.
 *
 * Composed only from the synchronous backend primitives — X25519, HMAC-SHA256 (HKDF is two lines of
 * it, RFC 5869 §2.2-2.3) and ChaCha20-Poly1305 — so the same code runs on node:crypto on the server and
 * on @noble/* in a browser. Every function that needs a primitive takes an optional backend last.
 *
 * Failures, by side:
 * - sender: a recipient key that is not 32 bytes, or whose DH output is all zeros (a low-order point,
 *   §7.1.4 / RFC 7748 §6.1), is `hpke.invalid_public_key`;
 * - recipient: anything wrong with what arrived — enc of the wrong length or low order, ciphertext
 *   too short, tampered, or under another key, info or aad — is `hpke.open_failed`, one code with no
 *   detail (no oracle);
 * - a private key of the wrong length is `crypto.invalid_key` (a caller's bug, not an attack).
 */

/** §7.1, §7.2, §7.3 identifiers of the one suite. */
export const HPKE_KEM_ID = 0x0020;
export const HPKE_KDF_ID = 0x0001;
export const HPKE_AEAD_ID = 0x0003;

/** §7.1 Table 2: Nsecret, Nenc, Npk, Nsk of DHKEM(X25519, HKDF-SHA256). */
export const HPKE_ENC_LENGTH = 32;
export const HPKE_PUBLIC_KEY_LENGTH = 32;
export const HPKE_PRIVATE_KEY_LENGTH = 32;
const N_SECRET = 32;
/** §7.2 Nh of HKDF-SHA256; §7.3 Nk, Nn, Nt of ChaCha20-Poly1305. */
const N_H = 32;
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

const EMPTY = new Uint8Array(0);
/** RFC 5869 §2.2: an absent salt is HashLen zero bytes. */
const ZERO_SALT = new Uint8Array(N_H);
/** RFC 7748 §4.1: the base point u = 9. X25519(sk, 9) is sk's public key. */
const BASE_POINT = Uint8Array.from({ length: 32 }, (_, i) => (i === 0 ? 9 : 0));

// ---- §4 labeled HKDF ------------------------------------------------------------------------

function i2osp2(n: number): Uint8Array {
  return new Uint8Array([(n >> 8) & 0xff, n & 0xff]);
}

/** §4.1: suite_id = concat("KEM", I2OSP(kem_id, 2)) for the KEM's own derivations. */
const KEM_SUITE_ID = concatBytes(utf8("KEM"), i2osp2(HPKE_KEM_ID));
/** §5.1: suite_id = concat("HPKE", I2OSP(kem_id, 2), I2OSP(kdf_id, 2), I2OSP(aead_id, 2)). */
const HPKE_SUITE_ID = concatBytes(
  utf8("HPKE"),
  i2osp2(HPKE_KEM_ID),
  i2osp2(HPKE_KDF_ID),
  i2osp2(HPKE_AEAD_ID),
);

/** The fixed head of every labeled input: "HPKE-v1" || suite_id || label (§4). */
function labelPrefix(suiteId: Uint8Array, label: string): Uint8Array {
  return concatBytes(utf8("HPKE-v1"), suiteId, utf8(label));
}

const LABEL = {
  eaePrk: labelPrefix(KEM_SUITE_ID, "eae_prk"),
  sharedSecret: labelPrefix(KEM_SUITE_ID, "shared_secret"),
  dkpPrk: labelPrefix(KEM_SUITE_ID, "dkp_prk"),
  sk: labelPrefix(KEM_SUITE_ID, "sk"),
  pskIdHash: labelPrefix(HPKE_SUITE_ID, "psk_id_hash"),
  infoHash: labelPrefix(HPKE_SUITE_ID, "info_hash"),
  secret: labelPrefix(HPKE_SUITE_ID, "secret"),
  key: labelPrefix(HPKE_SUITE_ID, "key"),
  baseNonce: labelPrefix(HPKE_SUITE_ID, "base_nonce"),
  exp: labelPrefix(HPKE_SUITE_ID, "exp"),
  sec: labelPrefix(HPKE_SUITE_ID, "sec"),
};

/** §4 LabeledExtract(salt, label, ikm) = HKDF-Extract(salt, "HPKE-v1" || suite_id || label || ikm). */
function labeledExtract(
  via: CryptoBackend,
  salt: Uint8Array,
  label: Uint8Array,
  ikm: Uint8Array,
): Uint8Array {
  return via.hmacSha256(salt.length === 0 ? ZERO_SALT : salt, concatBytes(label, ikm));
}

/**
 * §4 LabeledExpand(prk, label, info, L) = HKDF-Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id ||
 * label || info, L), with HKDF-Expand's T(i) = HMAC(prk, T(i-1) || info || i) (RFC 5869 §2.3).
 */
function labeledExpand(
  via: CryptoBackend,
  prk: Uint8Array,
  label: Uint8Array,
  info: Uint8Array,
  length: number,
): Uint8Array {
  const labeledInfo = concatBytes(i2osp2(length), label, info);
  const out = new Uint8Array(length);
  let t: Uint8Array = EMPTY;
  for (let i = 1, offset = 0; offset < length; i++, offset += N_H) {
    t = via.hmacSha256(prk, concatBytes(t, labeledInfo, new Uint8Array([i])));
    out.set(t.subarray(0, Math.min(N_H, length - offset)), offset);
  }
  return out;
}

// ---- §4.1 DHKEM(X25519, HKDF-SHA256) --------------------------------------------------------

export interface HpkeKeyPair {
  privateKey: Uint8Array;
  publicKey: Uint8Array;
}

type Multiplier = (u: Uint8Array) => Uint8Array;

function checkPrivateKey(what: string, key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== HPKE_PRIVATE_KEY_LENGTH)
    throw new HandsafeError("crypto.invalid_key", `${what} must be ${HPKE_PRIVATE_KEY_LENGTH} bytes`);
}

function invalidPublicKey(): HandsafeError {
  return new HandsafeError(
    "hpke.invalid_public_key",
    "HPKE recipient public key is not a usable X25519 key (wrong length or low order)",
  );
}

function openFailed(): HandsafeError {
  return new HandsafeError("hpke.open_failed", "HPKE ciphertext could not be opened");
}

/**
 * §4.1 DH(sk, pk) with the KEM's failure: §7.1.4 says DH() MUST fail on an all-zero output, and both
 * backends throw crypto.invalid_point rather than return it.
 */
function dh(times: Multiplier, u: Uint8Array, failure: () => HandsafeError): Uint8Array {
  try {
    return times(u);
  } catch (e) {
    throw isHandsafeError(e, "crypto.invalid_point") ? failure() : e;
  }
}

/** §4.1 ExtractAndExpand(dh, kem_context). */
function extractAndExpand(via: CryptoBackend, dh: Uint8Array, kemContext: Uint8Array): Uint8Array {
  const eaePrk = labeledExtract(via, EMPTY, LABEL.eaePrk, dh);
  const sharedSecret = labeledExpand(via, eaePrk, LABEL.sharedSecret, kemContext, N_SECRET);
  eaePrk.fill(0);
  return sharedSecret;
}

/**
 * §7.1.3 DeriveKeyPair(ikm) for X25519: sk = LabeledExpand(LabeledExtract("", "dkp_prk", ikm), "sk", "", 32).
 * sk is returned as derived, unclamped like the Appendix A vectors' skRm; X25519 clamps it at every use
 * (RFC 7748 §5), so the clamping of §7.1.2's SerializePrivateKey changes no result.
 */
export function deriveHpkeKeyPair(ikm: Uint8Array, via: CryptoBackend = defaultBackend): HpkeKeyPair {
  // §7.1.3: ikm SHOULD be at least Nsk bytes long with Nsk bytes of entropy; we require the length.
  if (!(ikm instanceof Uint8Array) || ikm.length < HPKE_PRIVATE_KEY_LENGTH)
    throw new HandsafeError(
      "crypto.invalid_key",
      `DeriveKeyPair ikm must be at least ${HPKE_PRIVATE_KEY_LENGTH} bytes`,
    );
  const dkpPrk = labeledExtract(via, EMPTY, LABEL.dkpPrk, ikm);
  const privateKey = labeledExpand(via, dkpPrk, LABEL.sk, EMPTY, HPKE_PRIVATE_KEY_LENGTH);
  dkpPrk.fill(0);
  return { privateKey, publicKey: via.x25519PublicKey(privateKey) };
}

/** §4 GenerateKeyPair(): 32 CSPRNG bytes (X25519 clamps them, RFC 7748 §5). */
export function generateHpkeKeyPair(via: CryptoBackend = defaultBackend): HpkeKeyPair {
  const privateKey = via.randomBytes(HPKE_PRIVATE_KEY_LENGTH);
  return { privateKey, publicKey: via.x25519PublicKey(privateKey) };
}

/**
 * The u-coordinates of the points of small order on Curve25519 and its twist (RFC 7748 §6.1's
 * concern), canonical or not: 0, 1, the two of order 8, p-1, p, p+1. X25519 with any of them
 * (bit 255 ignored, RFC 7748 §5) gives the all-zero secret that §7.1.4 forbids.
 */
const LOW_ORDER_U = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

/**
 * True when `publicKey` can receive HPKE messages: 32 bytes and not a low-order point. For checking a
 * key where it enters (a registration), without a DH; `hpkeSeal` refuses the same keys anyway.
 */
export function isValidHpkePublicKey(publicKey: Uint8Array): boolean {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== HPKE_PUBLIC_KEY_LENGTH) return false;
  const masked = publicKey.slice();
  masked[31]! &= 0x7f; // RFC 7748 §5: bit 255 is ignored
  return !LOW_ORDER_U.includes(toHex(masked));
}

/**
 * §4.1 Encap(pkR). `ephemeralPrivateKey` exists for the RFC's test vectors only (via hpkeInternals):
 * a fixed ephemeral key with the same recipient and info repeats the AEAD key and nonce.
 */
function encap(
  via: CryptoBackend,
  recipientPublicKey: Uint8Array,
  ephemeralPrivateKey?: Uint8Array,
): { sharedSecret: Uint8Array; enc: Uint8Array } {
  if (!(recipientPublicKey instanceof Uint8Array) || recipientPublicKey.length !== HPKE_PUBLIC_KEY_LENGTH)
    throw invalidPublicKey();
  const skE = ephemeralPrivateKey ?? via.randomBytes(HPKE_PRIVATE_KEY_LENGTH);
  checkPrivateKey("HPKE ephemeral private key", skE);
  // One import of skE for both multiplications: on node an import costs about one multiplication.
  const times = via.x25519Multiplier(skE);
  if (ephemeralPrivateKey === undefined) skE.fill(0);
  const enc = times(BASE_POINT); // SerializePublicKey(pkE)
  const z = dh(times, recipientPublicKey, invalidPublicKey);
  const sharedSecret = extractAndExpand(via, z, concatBytes(enc, recipientPublicKey));
  z.fill(0);
  return { sharedSecret, enc };
}

/**
 * A recipient's private key, imported once: opening with it costs one X25519 multiplication instead
 * of three on node (import, public key, DH). Opaque: the key lives in a private field, and JSON or
 * logging shows the public key only.
 */
export interface HpkeRecipientKey {
  readonly publicKey: Uint8Array;
  toJSON(): { hpke: "recipient-key"; publicKey: string };
}

class RecipientKey implements HpkeRecipientKey {
  readonly publicKey: Uint8Array;
  readonly #times: Multiplier;

  constructor(times: Multiplier, publicKey: Uint8Array) {
    this.#times = times;
    this.publicKey = publicKey;
  }

  /** §4.1 Decap(enc, skR): DH(skR, pkE); a low-order enc is an open failure like any other. */
  decap(via: CryptoBackend, enc: Uint8Array): Uint8Array {
    if (!(enc instanceof Uint8Array) || enc.length !== HPKE_ENC_LENGTH) throw openFailed();
    const z = dh(this.#times, enc, openFailed);
    const sharedSecret = extractAndExpand(via, z, concatBytes(enc, this.publicKey));
    z.fill(0);
    return sharedSecret;
  }

  toJSON(): { hpke: "recipient-key"; publicKey: string } {
    return { hpke: "recipient-key", publicKey: toHex(this.publicKey) };
  }
}

/** Imports an X25519 private key for opening (see HpkeRecipientKey). */
export function hpkeRecipientKey(
  privateKey: Uint8Array,
  via: CryptoBackend = defaultBackend,
): HpkeRecipientKey {
  checkPrivateKey("HPKE recipient private key", privateKey);
  const times = via.x25519Multiplier(privateKey);
  return new RecipientKey(times, times(BASE_POINT));
}

function recipientKeyOf(recipient: Uint8Array | HpkeRecipientKey, via: CryptoBackend): RecipientKey {
  if (recipient instanceof RecipientKey) return recipient;
  if (recipient instanceof Uint8Array) return hpkeRecipientKey(recipient, via) as RecipientKey;
  throw new HandsafeError("crypto.invalid_key", "HPKE recipient key must be 32 bytes or an HpkeRecipientKey");
}

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
