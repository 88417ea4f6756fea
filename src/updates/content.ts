/**
 * Update content encryption (docs/protocols/updates.md §Content). A package is encrypted once,
 * with a random 256-bit content key, as a stream of 64 KiB chunks; the content key is wrapped for
 * each device under that device's content session key, so only a handset holding both halves of
 * its management key (static + dynamic) can open the package.
 *
 *   package  = header || chunk_0 || … || chunk_n
 *   header   = "HSPKG1" (6 bytes) || chunk size (u32 BE) || plaintext length (u64 BE)
 *   chunk_i  = ChaCha20-Poly1305(content key, nonce_i, plaintext_i, aad = header)
 *   nonce_i  = i as 11-byte big-endian || 0x01 for the last chunk, else 0x00
 *
 * This is the STREAM construction age uses: chunks cannot be reordered, dropped, duplicated or
 * truncated without an open failing, and the last chunk is marked. The ciphertext is what the
 * TUF target hashes cover, so a download is verified before a byte is decrypted.
 */
import { concatBytes, lengthPrefixed, utf8 } from "../core/codec/bytes.ts";
import { chachaOpen, chachaSeal } from "../core/crypto/aead.ts";
import { hkdfSha256 } from "../core/crypto/hkdf.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";

export const CONTENT_MAGIC = "HSPKG1";
export const CHUNK_SIZE = 64 * 1024;
export const HEADER_LENGTH = 6 + 4 + 8;
const TAG = 16;
const WRAP_LABEL = "handsafe/v1/updates/content-key-wrap";

export function encryptedLength(plaintextLength: number, chunkSize = CHUNK_SIZE): number {
  const chunks = Math.max(1, Math.ceil(plaintextLength / chunkSize));
  return HEADER_LENGTH + plaintextLength + chunks * TAG;
}

function header(plaintextLength: number, chunkSize: number): Uint8Array {
  const h = new Uint8Array(HEADER_LENGTH);
  h.set(utf8(CONTENT_MAGIC), 0);
  const view = new DataView(h.buffer);
  view.setUint32(6, chunkSize);
  view.setBigUint64(10, BigInt(plaintextLength));
  return h;
}

function nonce(index: number, last: boolean): Uint8Array {
  const n = new Uint8Array(12);
  let i = index;
  for (let p = 10; p >= 0 && i > 0; p--) {
    n[p] = i & 0xff;
    i = Math.floor(i / 256);
  }
  n[11] = last ? 1 : 0;
  return n;
}

export function generateContentKey(): Uint8Array {
  return randomBytes(32);
}

/**
 * Encrypts a stream of plaintext whose total length is known up front (it is in the header).
 * Yields the header, then one ciphertext chunk per 64 KiB of input; memory stays at one chunk.
 */
export async function* encryptContent(
  key: Uint8Array,
  plaintext: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  plaintextLength: number,
  chunkSize = CHUNK_SIZE,
): AsyncGenerator<Uint8Array> {
  const h = header(plaintextLength, chunkSize);
  yield h;
  const totalChunks = Math.max(1, Math.ceil(plaintextLength / chunkSize));
  let index = 0;
  let seen = 0;
  let pending: Uint8Array = new Uint8Array(0);
  for await (const piece of plaintext) {
    seen += piece.length;
    if (seen > plaintextLength)
      throw new HandsafeError("updates.content_length", "more plaintext than the declared length");
    // Walk a large piece by offset; only the leftover (< one chunk) is copied.
    const data = pending.length === 0 ? piece : concatBytes(pending, piece);
    let at = 0;
    while (data.length - at >= chunkSize && index < totalChunks - 1) {
      yield chachaSeal(key, nonce(index, false), data.subarray(at, at + chunkSize), h);
      at += chunkSize;
      index++;
    }
    pending = data.slice(at);
  }
  if (seen !== plaintextLength)
    throw new HandsafeError("updates.content_length", "less plaintext than the declared length");
  yield chachaSeal(key, nonce(index, true), pending, h);
}

/**
 * Streaming decryption: feed ciphertext in any pieces with `update`, receive plaintext chunks as
 * they open; `finish` checks that the stream ended exactly after the marked last chunk.
 */
export class ContentDecryptor {
  private header: Uint8Array | undefined;
  private chunkSize = 0;
  private plaintextLength = 0;
  private totalChunks = 0;
  private index = 0;
  private buffer: Uint8Array = new Uint8Array(0);
  private produced = 0;

  constructor(private readonly key: Uint8Array) {}

  update(piece: Uint8Array): Uint8Array[] {
    // Only the leftover (less than one chunk) is ever copied: a large piece is walked by offset,
    // so the cost stays linear whatever size the pieces come in.
    const data = this.buffer.length === 0 ? piece : concatBytes(this.buffer, piece);
    let at = 0;
    const out: Uint8Array[] = [];
    if (!this.header) {
      if (data.length < HEADER_LENGTH) {
        this.buffer = data.slice();
        return out;
      }
      this.readHeader(data.subarray(0, HEADER_LENGTH));
      at = HEADER_LENGTH;
    }
    const full = this.chunkSize + TAG;
    while (this.index < this.totalChunks - 1 && data.length - at >= full) {
      out.push(this.open(data.subarray(at, at + full), false));
      at += full;
    }
    this.buffer = data.slice(at);
    return out;
  }

  finish(): Uint8Array {
    if (!this.header)
      throw new HandsafeError("updates.content_truncated", "the package ends inside its header");
    if (this.index !== this.totalChunks - 1)
      throw new HandsafeError("updates.content_truncated", "the package ends before its last chunk");
    const lastLength = this.plaintextLength - (this.totalChunks - 1) * this.chunkSize;
    if (this.buffer.length !== lastLength + TAG)
      throw new HandsafeError("updates.content_truncated", "the last chunk has the wrong length");
    const last = this.open(this.buffer, true);
    this.buffer = new Uint8Array(0);
    if (this.produced !== this.plaintextLength)
      throw new HandsafeError("updates.content_truncated", "the package is shorter than it says");
    return last;
  }

  private readHeader(h: Uint8Array): void {
    const magic = new TextDecoder().decode(h.subarray(0, 6));
    if (magic !== CONTENT_MAGIC)
      throw new HandsafeError("updates.content_malformed", "not a handsafe package");
    const view = new DataView(h.buffer, h.byteOffset, h.byteLength);
    this.chunkSize = view.getUint32(6);
    const length = view.getBigUint64(10);
    if (
      this.chunkSize < 1024 ||
      this.chunkSize > 16 * 1024 * 1024 ||
      length > BigInt(Number.MAX_SAFE_INTEGER)
    )
      throw new HandsafeError("updates.content_malformed", "implausible package header");
    this.plaintextLength = Number(length);
    this.totalChunks = Math.max(1, Math.ceil(this.plaintextLength / this.chunkSize));
    this.header = h.slice();
  }

  private open(sealed: Uint8Array, last: boolean): Uint8Array {
    let plain: Uint8Array;
    try {
      plain = chachaOpen(this.key, nonce(this.index, last), sealed, this.header);
    } catch {
      throw new HandsafeError("updates.content_tampered", `package chunk ${this.index} does not open`, {
        status: 422,
      });
    }
    this.index++;
    this.produced += plain.length;
    return plain;
  }
}

/** One-shot helpers for small packages and tests. */
export async function encryptContentToBytes(key: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of encryptContent(key, [plaintext], plaintext.length)) parts.push(p);
  return concatBytes(...parts);
}

export function decryptContent(key: Uint8Array, ciphertext: Uint8Array): Uint8Array {
  const d = new ContentDecryptor(key);
  const parts = d.update(ciphertext);
  parts.push(d.finish());
  return concatBytes(...parts);
}

// --- the content key, wrapped per device ---------------------------------------------------------

function wrapKey(contentSessionKey: Uint8Array, deviceId: string, packageId: string): Uint8Array {
  return hkdfSha256(contentSessionKey, lengthPrefixed(utf8(deviceId), utf8(packageId)), WRAP_LABEL, 32);
}

/**
 * Wraps a package's content key for one device under its content session key; the device id and
 * package id are bound in (key derivation and associated data), so a wrap made for another device
 * or package does not open.
 */
export function wrapContentKey(
  contentKey: Uint8Array,
  contentSessionKey: Uint8Array,
  ids: { deviceId: string; packageId: string },
): Uint8Array {
  const n = randomBytes(12);
  const aad = lengthPrefixed(utf8(WRAP_LABEL), utf8(ids.deviceId), utf8(ids.packageId));
  return concatBytes(
    n,
    chachaSeal(wrapKey(contentSessionKey, ids.deviceId, ids.packageId), n, contentKey, aad),
  );
}

export function unwrapContentKey(
  wrapped: Uint8Array,
  contentSessionKey: Uint8Array,
  ids: { deviceId: string; packageId: string },
): Uint8Array {
  if (wrapped.length !== 12 + 32 + TAG)
    throw new HandsafeError("updates.content_key_invalid", "a wrapped content key is 60 bytes");
  const aad = lengthPrefixed(utf8(WRAP_LABEL), utf8(ids.deviceId), utf8(ids.packageId));
  try {
    return chachaOpen(
      wrapKey(contentSessionKey, ids.deviceId, ids.packageId),
      wrapped.subarray(0, 12),
      wrapped.subarray(12),
      aad,
    );
  } catch {
    throw new HandsafeError(
      "updates.content_key_invalid",
      "the content key is not wrapped for this device and package (or the session key is wrong)",
      { status: 403 },
    );
  }
}
