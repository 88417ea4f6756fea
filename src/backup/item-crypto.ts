/**
 * One backup item as an age v1 file (docs/protocols/backup.md §3): `header || payload`, where
 * `payload = nonce(16) || STREAM chunks`, with the item's metadata sealed under a key derived from
 * the file key. Pure: bytes and async iterables in and out, no I/O.
 *
 * Sealing is deterministic once the file key and payload nonce are drawn (`newItemKeys`), so the same
 * plaintext seals to the same bytes each time: a large item is sealed once while it is uploaded (the
 * pass's SHA-256 is declared at completion), and again when an upload resumes — each pass holding one
 * 64 KiB chunk.
 */
import { AGE_ERRORS, ageError } from "../core/age/errors.ts";
import { encodeHeader, type Header, parseHeader, verifyHeaderMac } from "../core/age/format.ts";
import { ByteReader } from "../core/age/reader.ts";
import { FILE_KEY_LENGTH, type Stanza } from "../core/age/stanza.ts";
import {
  CHUNK_SIZE,
  decryptPayload,
  encryptPayload,
  PAYLOAD_NONCE_LENGTH,
  payloadKey,
  SEALED_CHUNK_SIZE,
} from "../core/age/stream.ts";
import { X25519Recipient } from "../core/age/x25519-recipient.ts";
import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { chachaOpen, chachaSeal } from "../core/crypto/aead.ts";
import { createStreamHash } from "../core/crypto/hash.ts";
import { hkdfSha256 } from "../core/crypto/hkdf.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import { agePayloadSize, LABELS } from "./protocol.ts";

/** HKDF info of the metadata key (§3 step 3). */
export const ITEM_NAME_LABEL = LABELS.itemName;
const ZERO_NONCE = new Uint8Array(12);

/** What a module must do to open an item: the UnlockedIdentity of handset/identity-module.ts fits. */
export interface ItemUnwrapper {
  unwrapFileKey(stanzas: readonly Stanza[]): Uint8Array | undefined;
}

/**
 * `HMAC-SHA256(content-hash key, plaintext)`, fed as the plaintext streams by. `update` copies what
 * it is given; when it returns a promise (the hashing runs behind, on another thread) the caller
 * awaits it before the next update. `release` drops a hasher that will not be digested.
 */
export interface ContentHasher {
  update(data: Uint8Array): Promise<void> | undefined;
  digest(): Promise<Uint8Array>;
  release(): void;
}

/** The sealed metadata's plaintext. */
export interface ItemMetadata {
  path: string;
  modifiedAt: string;
  contentType?: string;
}

/** The secrets of one item's ciphertext; the file key must not outlive the backup run. */
export interface ItemKeys {
  readonly fileKey: Uint8Array;
  readonly nonce: Uint8Array;
}

export function newItemKeys(): ItemKeys {
  return { fileKey: randomBytes(FILE_KEY_LENGTH), nonce: randomBytes(PAYLOAD_NONCE_LENGTH) };
}

/** The age header wrapping `fileKey` for each `age1…` recipient (fresh ephemeral shares each time). */
export function itemHeader(fileKey: Uint8Array, recipients: readonly string[]): Uint8Array {
  if (recipients.length === 0)
    throw new HandsafeError("backup.no_recipients", "an item needs at least one recipient", { status: 400 });
  const stanzas: Stanza[] = [];
  for (const r of new Set(recipients)) stanzas.push(...new X25519Recipient(r).wrap(fileKey));
  return encodeHeader(stanzas, fileKey);
}

/** Payload bytes (nonce + sealed chunks) for `size` bytes of plaintext (age v1 §Payload). */
export const payloadLength = agePayloadSize;

export interface PayloadDigest {
  /** Plaintext bytes. */
  size: number;
  /** HMAC-SHA256 under the content-hash key (if a hasher was given). */
  hash?: Uint8Array;
  /** Payload bytes and their SHA-256 (the blob's). */
  payloadSize: number;
  payloadSha256: Uint8Array;
}

/**
 * Seals `plaintext` to the payload: yields the nonce, then one sealed chunk at a time. `done` is
 * called once the last chunk was yielded with the sizes and digests of this pass.
 */
export async function* sealPayload(
  keys: ItemKeys,
  plaintext: AsyncIterable<Uint8Array>,
  options: { hasher?: ContentHasher; done?: (digest: PayloadDigest) => void } = {},
): AsyncGenerator<Uint8Array> {
  // The payload's SHA-256 is for `done` (the upload declares it): without one, no hashing pass.
  // Both hashes run on a worker thread for a long item (core/crypto hash lanes), beside the sealing.
  const sha = options.done ? createStreamHash("sha256") : undefined;
  const hasher = options.hasher;
  let size = 0;
  let payloadSize = 0;
  const counted = (async function* () {
    for await (const piece of plaintext) {
      size += piece.length;
      const wait = hasher?.update(piece);
      if (wait) await wait;
      yield piece;
    }
  })();
  try {
    sha?.update(keys.nonce);
    payloadSize += keys.nonce.length;
    yield keys.nonce;
    for await (const chunk of encryptPayload(payloadKey(keys.fileKey, keys.nonce), counted)) {
      const wait = sha?.update(chunk);
      if (wait) await wait;
      payloadSize += chunk.length;
      yield chunk;
    }
    const hash = await hasher?.digest();
    if (sha) {
      const payloadSha256 = await sha.digest();
      options.done?.({ size, payloadSize, payloadSha256, ...(hash ? { hash } : {}) });
    }
  } finally {
    // A pass stopped early (an upload cut off, a consumer gone): its hashes are dropped.
    hasher?.release();
    sha?.release();
  }
}

// --- metadata (§3 step 3) ----------------------------------------------------------------------

function nameKey(fileKey: Uint8Array): Uint8Array {
  return hkdfSha256(fileKey, undefined, ITEM_NAME_LABEL, 32);
}

/** ChaCha20-Poly1305(HKDF(fileKey, item-name), zero nonce, aad = itemId) over the metadata JSON. */
export function sealName(fileKey: Uint8Array, itemId: string, metadata: ItemMetadata): Uint8Array {
  const json: ItemMetadata = { path: metadata.path, modifiedAt: metadata.modifiedAt };
  if (metadata.contentType !== undefined) json.contentType = metadata.contentType;
  return chachaSeal(nameKey(fileKey), ZERO_NONCE, utf8(JSON.stringify(json)), utf8(itemId));
}

/** Opens the metadata (`backup.name_invalid` when it does not authenticate or is not the JSON shape). */
export function openName(fileKey: Uint8Array, itemId: string, sealed: Uint8Array): ItemMetadata {
  let value: unknown;
  try {
    value = JSON.parse(fromUtf8(chachaOpen(nameKey(fileKey), ZERO_NONCE, sealed, utf8(itemId))));
  } catch (e) {
    throw new HandsafeError("backup.name_invalid", `the metadata of ${itemId} does not open`, {
      status: 422,
      cause: e,
    });
  }
  const m = value as Record<string, unknown>;
  if (
    typeof m !== "object" ||
    m === null ||
    typeof m["path"] !== "string" ||
    typeof m["modifiedAt"] !== "string" ||
    (m["contentType"] !== undefined && typeof m["contentType"] !== "string")
  )
    throw new HandsafeError("backup.name_invalid", `the metadata of ${itemId} is not {path, modifiedAt}`, {
      status: 422,
    });
  return {
    path: m["path"],
    modifiedAt: m["modifiedAt"],
    ...(typeof m["contentType"] === "string" ? { contentType: m["contentType"] } : {}),
  };
}

// --- sealing one item ------------------------------------------------------------------------

export interface SealItemInput {
  itemId: string;
  metadata: ItemMetadata;
  recipients: readonly string[];
  /** A fresh plaintext stream on each call (the item may be sealed more than once). */
  plaintext: () => AsyncIterable<Uint8Array>;
  /** A fresh content hasher on each call. */
  hasher: () => ContentHasher;
  keys?: ItemKeys;
}

export interface SealedItem {
  itemId: string;
  keys: ItemKeys;
  header: Uint8Array;
  name: Uint8Array;
  /** Seals the payload again (same bytes each time), from payload byte `offset` on. */
  payload(offset?: number, done?: (digest: PayloadDigest) => void): AsyncIterable<Uint8Array>;
}

export function sealItem(input: SealItemInput): SealedItem {
  const keys = input.keys ?? newItemKeys();
  return {
    itemId: input.itemId,
    keys,
    header: itemHeader(keys.fileKey, input.recipients),
    name: sealName(keys.fileKey, input.itemId, input.metadata),
    payload: (offset = 0, done) => {
      const stream = sealPayload(keys, input.plaintext(), {
        hasher: input.hasher(),
        ...(done ? { done } : {}),
      });
      return offset === 0 ? stream : skipBytes(stream, offset);
    },
  };
}

/** Drops the first `n` bytes of a stream. */
export async function* skipBytes(source: AsyncIterable<Uint8Array>, n: number): AsyncGenerator<Uint8Array> {
  let left = n;
  for await (const chunk of source) {
    if (left >= chunk.length) {
      left -= chunk.length;
      continue;
    }
    yield left > 0 ? chunk.subarray(left) : chunk;
    left = 0;
  }
}

/** The whole payload as one buffer, for inline items (≤ 64 KiB of plaintext). */
export async function collectBytes(
  source: AsyncIterable<Uint8Array>,
  max = Number.MAX_SAFE_INTEGER,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let length = 0;
  for await (const c of source) {
    length += c.length;
    if (length > max)
      throw new HandsafeError("backup.too_large", `more than ${max} bytes where at most that was expected`, {
        status: 422,
      });
    parts.push(c);
  }
  const out = new Uint8Array(length);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// --- opening one item --------------------------------------------------------------------------

/**
 * Parses the header, unwraps the file key with the module and verifies the header MAC:
 * `backup.not_a_recipient` when no stanza is for this module; age.* for a malformed or altered header.
 */
export function unwrapItemKey(
  headerBytes: Uint8Array,
  unlocked: ItemUnwrapper,
): { header: Header; fileKey: Uint8Array } {
  const header = parseHeader(headerBytes);
  const fileKey = unlocked.unwrapFileKey(header.stanzas);
  if (fileKey === undefined)
    throw new HandsafeError("backup.not_a_recipient", "this identity is not a recipient of the item", {
      status: 403,
    });
  verifyHeaderMac(header, fileKey);
  return { header, fileKey };
}

/**
 * Opens a payload (nonce + STREAM chunks), yielding plaintext chunk by chunk as each authenticates;
 * the plaintext is whole only when the generator returns (age.* otherwise).
 */
export async function* openPayload(
  fileKey: Uint8Array,
  payload: AsyncIterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  const reader = new ByteReader(payload);
  const nonce = await reader.read(PAYLOAD_NONCE_LENGTH);
  if (nonce.length < PAYLOAD_NONCE_LENGTH)
    throw ageError(AGE_ERRORS.nonceMissing, "age file ends before its payload nonce");
  yield* decryptPayload(payloadKey(fileKey, nonce), reader);
}

export interface OpenedItem {
  metadata: ItemMetadata;
  fileKey: Uint8Array;
  /**
   * The plaintext, streamed. When it ends without throwing, every tag authenticated, and the size and
   * (given an `expected.hash` and a hasher) the HMAC hash matched: otherwise it throws
   * `backup.size_mismatch` / `backup.hash_mismatch` / age.* after the last chunk.
   */
  plaintext: AsyncIterable<Uint8Array>;
}

export function openItem(input: {
  itemId: string;
  header: Uint8Array;
  name: Uint8Array;
  payload: AsyncIterable<Uint8Array>;
  unlocked: ItemUnwrapper;
  expected?: { size?: number; hash?: Uint8Array; hasher?: ContentHasher };
}): OpenedItem {
  const { fileKey } = unwrapItemKey(input.header, input.unlocked);
  const metadata = openName(fileKey, input.itemId, input.name);
  const expected = input.expected ?? {};
  const plaintext = (async function* () {
    let size = 0;
    try {
      for await (const chunk of openPayload(fileKey, input.payload)) {
        size += chunk.length;
        if (expected.size !== undefined && size > expected.size)
          throw new HandsafeError("backup.size_mismatch", `${input.itemId} is longer than listed`, {
            status: 422,
          });
        const wait = expected.hasher?.update(chunk);
        if (wait) await wait;
        yield chunk;
      }
      if (expected.size !== undefined && size !== expected.size)
        throw new HandsafeError("backup.size_mismatch", `${input.itemId} is not the listed size`, {
          status: 422,
        });
      if (expected.hash !== undefined && expected.hasher !== undefined) {
        const actual = await expected.hasher.digest();
        if (!bytesEqual(actual, expected.hash))
          throw new HandsafeError("backup.hash_mismatch", `${input.itemId} does not hash to the listed hash`, {
            status: 422,
          });
      }
    } finally {
      expected.hasher?.release();
    }
  })();
  return { metadata, fileKey, plaintext };
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

// --- sharing (§7) ----------------------------------------------------------------------------

/**
 * A new header for `recipients` around the same file key: parse, unwrap with the module, verify the
 * MAC (an altered header is not re-signed), wrap for the new recipients, MAC. The payload is untouched.
 */
export function rewrapHeader(
  headerBytes: Uint8Array,
  unlocked: ItemUnwrapper,
  recipients: readonly string[],
): Uint8Array {
  const { fileKey } = unwrapItemKey(headerBytes, unlocked);
  try {
    return itemHeader(fileKey, recipients);
  } finally {
    fileKey.fill(0);
  }
}

/** True for the errors that mean "this item is damaged" rather than a failure of ours. */
export function isDamage(e: unknown): e is HandsafeError {
  return (
    isHandsafeError(e) &&
    (e.code.startsWith("age.") ||
      e.code === "backup.hash_mismatch" ||
      e.code === "backup.size_mismatch" ||
      e.code === "backup.name_invalid" ||
      e.code === "backup.blob_mismatch" ||
      e.code === "backup.blob_damaged" ||
      e.code === "backup.blob_missing" ||
      e.code === "backup.not_a_recipient" ||
      e.code === "backup.item_path_invalid" ||
      e.code === "backup.record_invalid")
  );
}

export { CHUNK_SIZE, SEALED_CHUNK_SIZE };
