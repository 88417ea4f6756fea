import { scrypt } from "@noble/hashes/scrypt.js";
import { concatBytes, utf8 } from "../codec/bytes.ts";
import { chachaOpen, chachaSeal } from "../crypto/aead.ts";
import { randomBytes } from "../crypto/random.ts";
import { isHandsafeError } from "../errors.ts";
import { decodeBase64, encodeBase64 } from "./base64.ts";
import { AGE_ERRORS, ageError } from "./errors.ts";
import { type AgeIdentity, type AgeRecipient, FILE_KEY_LENGTH, type Stanza } from "./stanza.ts";

/**
 * age v1 §scrypt recipient stanza: `-> scrypt <base64(salt, 16 bytes)> <log2 N>`, body =
 * ChaCha20-Poly1305(wrap key, 12 zero bytes, file key), wrap key = scrypt(passphrase,
 * "age-encryption.org/v1/scrypt" || salt, N = 2^logN, r = 8, p = 1, 32 bytes).
 * A passphrase file has this one stanza and no other (checked by `assertScryptAlone`).
 */

export const SCRYPT_STANZA_TYPE = "scrypt";
export const SCRYPT_SALT_LABEL = "age-encryption.org/v1/scrypt";
export const SCRYPT_SALT_LENGTH = 16;
/** age's default work factor for encryption (about 1 s, 256 MiB in the Go implementation). */
export const SCRYPT_DEFAULT_LOG_N = 18;
/**
 * The largest work factor an identity accepts by default, as age does: 2^22 · 1 KiB = 4 GiB of
 * memory. A header chooses its own cost, so the reader must bound it (age v1 §scrypt: "SHOULD").
 */
export const SCRYPT_DEFAULT_MAX_LOG_N = 22;
/** The largest work factor we let anyone ask for: above this noble's buffers cannot be allocated. */
const SCRYPT_LIMIT_LOG_N = 22;
const SCRYPT_R = 8;
const SCRYPT_P = 1;
const BODY_LENGTH = FILE_KEY_LENGTH + 16;
/** The wrap key is derived from a fresh salt for each file, so the nonce is fixed to zeros. */
const ZERO_NONCE = new Uint8Array(12);
/** age v1: the work factor is a decimal integer without sign or leading zeros. */
const WORK_FACTOR = /^[1-9][0-9]*$/;

function checkLogN(logN: number, what: string): void {
  if (!Number.isInteger(logN) || logN < 1 || logN > SCRYPT_LIMIT_LOG_N)
    throw ageError(AGE_ERRORS.keyInvalid, `${what} must be a whole number in 1..${SCRYPT_LIMIT_LOG_N}`);
}

function checkPassphrase(passphrase: string): Uint8Array {
  if (typeof passphrase !== "string" || passphrase.length === 0)
    throw ageError(AGE_ERRORS.keyInvalid, "an age passphrase must be a non-empty string");
  return utf8(passphrase);
}

function wrapKey(passphrase: Uint8Array, salt: Uint8Array, logN: number): Uint8Array {
  const N = 2 ** logN;
  return scrypt(passphrase, concatBytes(utf8(SCRYPT_SALT_LABEL), salt), {
    N,
    r: SCRYPT_R,
    p: SCRYPT_P,
    dkLen: 32,
    // 128 · r · (N + p) bytes of working memory, plus noble's bookkeeping; noble's default cap is 1 GiB.
    maxmem: 2 ** (logN + 11) + 2 ** 20,
  });
}

/**
 * age v1 §scrypt: "If an scrypt stanza is present, it MUST be the only stanza in the header." Checked
 * on both sides, and by `decrypt` before any identity runs, so an X25519 identity cannot open a
 * header that mixes the two.
 */
export function assertScryptAlone(stanzas: readonly Stanza[]): void {
  if (stanzas.length > 1 && stanzas.some((s) => s.args[0] === SCRYPT_STANZA_TYPE))
    throw ageError(AGE_ERRORS.scryptNotAlone, "an scrypt stanza must be the only stanza in the header");
}

export class ScryptRecipient implements AgeRecipient {
  readonly #passphrase: Uint8Array;
  readonly logN: number;

  constructor(passphrase: string, logN = SCRYPT_DEFAULT_LOG_N) {
    this.#passphrase = checkPassphrase(passphrase);
    checkLogN(logN, "scrypt work factor");
    this.logN = logN;
  }

  wrap(fileKey: Uint8Array): Stanza[] {
    const salt = randomBytes(SCRYPT_SALT_LENGTH);
    const key = wrapKey(this.#passphrase, salt, this.logN);
    return [
      {
        args: [SCRYPT_STANZA_TYPE, encodeBase64(salt), String(this.logN)],
        body: chachaSeal(key, ZERO_NONCE, fileKey),
      },
    ];
  }

  toJSON(): string {
    return "[ScryptRecipient redacted]";
  }
}

export class ScryptIdentity implements AgeIdentity {
  readonly #passphrase: Uint8Array;
  readonly maxLogN: number;

  constructor(passphrase: string, maxLogN = SCRYPT_DEFAULT_MAX_LOG_N) {
    this.#passphrase = checkPassphrase(passphrase);
    checkLogN(maxLogN, "scrypt maximum work factor");
    this.maxLogN = maxLogN;
  }

  unwrap(stanzas: readonly Stanza[]): Uint8Array | undefined {
    const stanza = stanzas.find((s) => s.args[0] === SCRYPT_STANZA_TYPE);
    if (stanza === undefined) return undefined;
    assertScryptAlone(stanzas);
    if (stanza.args.length !== 3)
      throw ageError(AGE_ERRORS.stanzaMalformed, "scrypt stanza must have exactly two arguments");
    const salt = decodeBase64(stanza.args[1]!);
    if (salt === undefined || salt.length !== SCRYPT_SALT_LENGTH)
      throw ageError(AGE_ERRORS.stanzaMalformed, "scrypt salt must be canonical base64 of 16 bytes");
    const workFactor = stanza.args[2]!;
    if (!WORK_FACTOR.test(workFactor))
      throw ageError(
        AGE_ERRORS.stanzaMalformed,
        "scrypt work factor must be a decimal number without leading zeros",
      );
    // Compared as a string length first, so a huge number never becomes an imprecise float.
    if (workFactor.length > 2 || Number(workFactor) > this.maxLogN)
      throw ageError(
        AGE_ERRORS.scryptWorkFactorTooHigh,
        `scrypt work factor ${workFactor.slice(0, 20)} is above the limit ${this.maxLogN}`,
      );
    // Checked before the (costly) scrypt and the decryption, against partitioning oracles.
    if (stanza.body.length !== BODY_LENGTH)
      throw ageError(AGE_ERRORS.stanzaMalformed, `scrypt stanza body must be ${BODY_LENGTH} bytes`);
    const key = wrapKey(this.#passphrase, salt, Number(workFactor));
    try {
      return chachaOpen(key, ZERO_NONCE, stanza.body);
    } catch (e) {
      if (isHandsafeError(e, "crypto.decrypt_failed")) return undefined; // wrong passphrase
      throw e;
    } finally {
      key.fill(0);
    }
  }

  toJSON(): string {
    return "[ScryptIdentity redacted]";
  }
}
