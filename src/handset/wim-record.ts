/**
 * What the identity module keeps in the keystore (docs/protocols/backup.md §1): the public half in
 * clear and `s` sealed twice with ChaCha20-Poly1305 — under scrypt(PIN) and under scrypt(PUK), each
 * with its own salt and label — plus the try counters; and the card image's text (an age identity
 * file). Isomorphic (no node:* imports).
 */
import { scryptAsync } from "@noble/hashes/scrypt.js";
import { encodeIdentity, encodeRecipient, parseIdentity } from "../core/age/keys.ts";
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { concatBytes, fromUtf8, lengthPrefixed, utf8 } from "../core/codec/bytes.ts";
import { chachaOpen, chachaSeal } from "../core/crypto/aead.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { x25519PublicKey } from "../core/crypto/x25519.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";

/** scrypt salt prefix and AEAD associated data of the two sealed copies of `s`. */
export const PIN_SEAL_LABEL = "handsafe/v1/wim/pin-seal";
export const PUK_SEAL_LABEL = "handsafe/v1/wim/puk-seal";
export const CARD_IMAGE_COMMENT = "# handsafe identity module card image v1";

export const PIN_TRIES = 3;
export const PUK_TRIES = 10;
/** backup.md §1: N = 2^15, r = 8, p = 1 for the PIN and PUK wrapping keys. */
export const WIM_SCRYPT_LOG_N = 15;
export const SECRET_LENGTH = 32;
const SALT_LENGTH = 16;
const PIN_PATTERN = /^[0-9]{4,8}$/;
const PUK_PATTERN = /^[0-9]{8}$/;
/** Each wrapping key seals one value under a fresh salt, so the nonce is fixed. */
const ZERO_NONCE = new Uint8Array(12);
const RECORD_VERSION = 1;

/** What the keystore holds: the public half in clear, `s` sealed twice; both seals null once dead. */
export interface Sealed {
  salt: Uint8Array;
  box: Uint8Array;
}
export interface WimRecord {
  recipient: string;
  accountPublicKey: Uint8Array;
  logN: number;
  pinTriesLeft: number;
  pukTriesLeft: number;
  pin: Sealed | null;
  puk: Sealed | null;
}

export function wimError(code: string, message: string, status: number, details?: Record<string, unknown>) {
  return new HandsafeError(code, message, { status, ...(details ? { details } : {}) });
}
export const dead = () => wimError("wim.dead", "the identity module is dead: its secret was erased", 403);

export function checkPin(pin: string): void {
  if (typeof pin !== "string" || !PIN_PATTERN.test(pin))
    throw wimError("wim.pin_format", "a PIN is 4 to 8 decimal digits", 400);
}
export function checkPuk(puk: string): void {
  if (typeof puk !== "string" || !PUK_PATTERN.test(puk))
    throw wimError("wim.pin_format", "a PUK is 8 decimal digits", 400);
}
export function checkLogN(logN: number): void {
  if (!Number.isInteger(logN) || logN < 10 || logN > 20)
    throw wimError("wim.record_invalid", "the WIM scrypt work factor must be 10..20", 500);
}

// ---- sealing ------------------------------------------------------------------------------------

async function sealingKey(code: string, salt: Uint8Array, label: string, logN: number): Promise<Uint8Array> {
  return scryptAsync(utf8(code), concatBytes(utf8(label), salt), { N: 2 ** logN, r: 8, p: 1, dkLen: 32 });
}

/** The associated data binds a sealed copy to its role and to the module's public identity. */
const sealAad = (label: string, recipient: string) => lengthPrefixed(utf8(label), utf8(recipient));

export async function seal(
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
export async function openSealed(sealed: Sealed, code: string, label: string, record: WimRecord) {
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

export function encodeRecord(r: WimRecord): Uint8Array {
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

export function decodeRecord(bytes: Uint8Array): WimRecord {
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

export function cardText(secret: Uint8Array, recipient: string): string {
  return `${CARD_IMAGE_COMMENT}\n# public key: ${recipient}\n${encodeIdentity(secret)}\n`;
}

export const cardInvalid = (why: string, cause?: unknown) =>
  new HandsafeError("wim.card_invalid", `not a card image: ${why}`, { status: 422, cause });

/** The one `AGE-SECRET-KEY-1…` line of an age identity file; `#` comments and empty lines ignored. */
export function parseCardText(text: string): Uint8Array {
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
