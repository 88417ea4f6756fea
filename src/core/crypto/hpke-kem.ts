import { backend as defaultBackend } from "#crypto-backend";
import { concatBytes, toHex, utf8 } from "../codec/bytes.ts";
import { HandsafeError, isHandsafeError } from "../errors.ts";
import type { CryptoBackend } from "./backend/types.ts";

/**
 * The KEM half of HPKE (RFC 9180): the labeled HKDF of §4, which the key schedule in hpke.ts shares,
 * and DHKEM(X25519, HKDF-SHA256) of §4.1 — Encap/Decap, DeriveKeyPair, key validation and imported
 * recipient keys. Section numbers are RFC 9180's.
 *
 * Internal to core/crypto: import from hpke.ts, which re-exports the public names. The other exports
 * (`encap` with a fixed ephemeral key, the labeled HKDF) are for hpke.ts only.
 */

/** §7.1 identifier of the suite's KEM. */
export const HPKE_KEM_ID = 0x0020;

/** §7.1 Table 2: Nsecret, Nenc, Npk, Nsk of DHKEM(X25519, HKDF-SHA256). */
export const HPKE_ENC_LENGTH = 32;
export const HPKE_PUBLIC_KEY_LENGTH = 32;
export const HPKE_PRIVATE_KEY_LENGTH = 32;
const N_SECRET = 32;
/** §7.2 Nh of HKDF-SHA256. */
export const N_H = 32;

export const EMPTY = new Uint8Array(0);
/** RFC 5869 §2.2: an absent salt is HashLen zero bytes. */
const ZERO_SALT = new Uint8Array(N_H);
/** RFC 7748 §4.1: the base point u = 9. X25519(sk, 9) is sk's public key. */

// ---- §4 labeled HKDF ------------------------------------------------------------------------

export function i2osp2(n: number): Uint8Array {
  return new Uint8Array([(n >> 8) & 0xff, n & 0xff]);
}

/** §4.1: suite_id = concat("KEM", I2OSP(kem_id, 2)) for the KEM's own derivations. */
const KEM_SUITE_ID = concatBytes(utf8("KEM"), i2osp2(HPKE_KEM_ID));

/** The fixed head of every labeled input: "HPKE-v1" || suite_id || label (§4). */
export function labelPrefix(suiteId: Uint8Array, label: string): Uint8Array {
  return concatBytes(utf8("HPKE-v1"), suiteId, utf8(label));
}

const LABEL = {
  eaePrk: labelPrefix(KEM_SUITE_ID, "eae_prk"),
  sharedSecret: labelPrefix(KEM_SUITE_ID, "shared_secret"),
  dkpPrk: labelPrefix(KEM_SUITE_ID, "dkp_prk"),
  sk: labelPrefix(KEM_SUITE_ID, "sk"),
};

/** §4 LabeledExtract(salt, label, ikm) = HKDF-Extract(salt, "HPKE-v1" || suite_id || label || ikm). */
export function labeledExtract(
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
export function labeledExpand(
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

export function checkPrivateKey(what: string, key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== HPKE_PRIVATE_KEY_LENGTH)
    throw new HandsafeError("crypto.invalid_key", `${what} must be ${HPKE_PRIVATE_KEY_LENGTH} bytes`);
}

function invalidPublicKey(): HandsafeError {
  return new HandsafeError(
    "hpke.invalid_public_key",
    "HPKE recipient public key is not a usable X25519 key (wrong length or low order)",
  );
}

export function openFailed(): HandsafeError {
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
export function encap(
  via: CryptoBackend,
  recipientPublicKey: Uint8Array,
  ephemeralPrivateKey?: Uint8Array,
): { sharedSecret: Uint8Array; enc: Uint8Array } {
  if (!(recipientPublicKey instanceof Uint8Array) || recipientPublicKey.length !== HPKE_PUBLIC_KEY_LENGTH)
    throw invalidPublicKey();
  const skE = ephemeralPrivateKey ?? via.randomBytes(HPKE_PRIVATE_KEY_LENGTH);
  checkPrivateKey("HPKE ephemeral private key", skE);
  // One import of skE gives pkE and the agreement: two multiplications (on node the import derives
  // the public key anyway).
  const { publicKey: enc, times } = via.x25519KeyPair(skE); // enc = SerializePublicKey(pkE)
  if (ephemeralPrivateKey === undefined) skE.fill(0);
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

export class RecipientKey implements HpkeRecipientKey {
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
  const { publicKey, times } = via.x25519KeyPair(privateKey);
  return new RecipientKey(times, publicKey);
}

export function recipientKeyOf(recipient: Uint8Array | HpkeRecipientKey, via: CryptoBackend): RecipientKey {
  if (recipient instanceof RecipientKey) return recipient;
  if (recipient instanceof Uint8Array) return hpkeRecipientKey(recipient, via) as RecipientKey;
  throw new HandsafeError("crypto.invalid_key", "HPKE recipient key must be 32 bytes or an HpkeRecipientKey");
}
