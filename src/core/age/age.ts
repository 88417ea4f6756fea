import { randomBytes } from "../crypto/random.ts";
import { AGE_ERRORS, ageError } from "./errors.ts";
import { encodeHeader, parseHeader, readHeaderBytes, verifyHeaderMac } from "./format.ts";
import { ByteReader, type ByteSource, chunksOf } from "./reader.ts";
import { assertScryptAlone } from "./scrypt-recipient.ts";
import { type AgeIdentity, type AgeRecipient, FILE_KEY_LENGTH, type Stanza } from "./stanza.ts";
import { decryptPayload, encryptPayload, PAYLOAD_NONCE_LENGTH, payloadKey } from "./stream.ts";
import { X25519Identity, X25519Recipient } from "./x25519-recipient.ts";

/**
 * Whole-file age v1 encryption and decryption over streams: `header || nonce || STREAM payload`.
 * Strings are taken as `age1…` recipients / `AGE-SECRET-KEY-1…` identities; a passphrase is given as
 * a ScryptRecipient / ScryptIdentity (scrypt-recipient.ts), and is then the file's only recipient.
 */

function toRecipient(r: AgeRecipient | string): AgeRecipient {
  return typeof r === "string" ? new X25519Recipient(r) : r;
}

function toIdentity(i: AgeIdentity | string): AgeIdentity {
  return typeof i === "string" ? new X25519Identity(i) : i;
}

/** Yields the age file: first the header and nonce, then one sealed chunk at a time. */
export async function* encrypt(
  recipients: readonly (AgeRecipient | string)[],
  plaintext: ByteSource,
): AsyncGenerator<Uint8Array> {
  if (recipients.length === 0) throw ageError(AGE_ERRORS.keyInvalid, "age needs at least one recipient");
  const fileKey = randomBytes(FILE_KEY_LENGTH);
  const stanzas: Stanza[] = [];
  for (const r of recipients) stanzas.push(...toRecipient(r).wrap(fileKey));
  assertScryptAlone(stanzas);
  const nonce = randomBytes(PAYLOAD_NONCE_LENGTH);
  yield encodeHeader(stanzas, fileKey);
  yield nonce;
  yield* encryptPayload(payloadKey(fileKey, nonce), chunksOf(plaintext));
}

/**
 * Yields the plaintext a chunk at a time. The header is checked entirely (stanzas, identity, MAC)
 * before the first byte is yielded; a chunk is yielded only once it authenticates; the file is
 * whole only if the generator finishes without throwing.
 */
export async function* decrypt(
  identities: readonly (AgeIdentity | string)[],
  ciphertext: ByteSource,
): AsyncGenerator<Uint8Array> {
  const ids = identities.map(toIdentity);
  const reader = new ByteReader(ciphertext);
  const header = parseHeader(await readHeaderBytes(reader));
  // Before any identity runs: an X25519 identity must not open a header that mixes in scrypt.
  assertScryptAlone(header.stanzas);
  let fileKey: Uint8Array | undefined;
  for (const id of ids) {
    fileKey = id.unwrap(header.stanzas);
    if (fileKey !== undefined) break;
  }
  if (fileKey === undefined) throw ageError(AGE_ERRORS.noMatch, "no identity matches any recipient stanza");
  verifyHeaderMac(header, fileKey);
  const nonce = await reader.read(PAYLOAD_NONCE_LENGTH);
  if (nonce.length < PAYLOAD_NONCE_LENGTH)
    throw ageError(AGE_ERRORS.nonceMissing, "age file ends before its payload nonce");
  yield* decryptPayload(payloadKey(fileKey, nonce), reader);
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let length = 0;
  for await (const c of chunks) {
    parts.push(c);
    length += c.length;
  }
  const out = new Uint8Array(length);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** encrypt() into one buffer, for small data. */
export function encryptBytes(
  recipients: readonly (AgeRecipient | string)[],
  plaintext: Uint8Array,
): Promise<Uint8Array> {
  return collect(encrypt(recipients, plaintext));
}

/** decrypt() into one buffer, for small data. */
export function decryptBytes(
  identities: readonly (AgeIdentity | string)[],
  ciphertext: ByteSource,
): Promise<Uint8Array> {
  return collect(decrypt(identities, ciphertext));
}
