/**
 * Update benchmarks, handset side (docs/protocols/updates.md), each next to a ceiling measured in
 * the same run:
 *
 * - Verification of a 256 MiB download as the handset does it: the ciphertext arrives in 64 KiB
 *   pieces and goes through downloadTarget (TUF length bound + streamed SHA-256 against the signed
 *   target). Ceiling: node:crypto SHA-256 over the same pieces arriving the same way (an async
 *   iterator, as a response body) — verification is that hash plus bookkeeping, so the goal is
 *   ≥ 90 % of it. The verifier alone in a plain loop is compared with the hash in a plain loop.
 * - The whole handset pipeline, for information: verify, then decrypt (ContentDecryptor) and hash
 *   the image (ImageDigest, checked against imageSha256). Ceiling: the same three passes on bare
 *   node:crypto (SHA-256, one ChaCha20-Poly1305 open per sealed chunk, SHA-256) over the same bytes.
 *   This ratio moves with the process's state (≈ 0.85 in a fresh process, lower after the other
 *   benchmarks): ContentDecryptor copies every piece (concatBytes, then slice) and the bare loop
 *   does not, so it pays for allocation and garbage collection that the ceiling never makes.
 * - Delta size: a 16 MiB image with 5 % of its bytes rewritten in a few runs, diffed with
 *   fossil-delta (src/updates/delta.ts). Ceiling: the full image; the ratio is delta / full.
 *
 * The server side (downloads by 50 handsets, notification fan-out) is in updates-server.ts.
 */
import { createDecipheriv, createHash, randomFillSync } from "node:crypto";
import {
  CHUNK_SIZE,
  ContentDecryptor,
  encryptContent,
  encryptedLength,
  generateContentKey,
  HEADER_LENGTH,
} from "../src/updates/content.ts";
import { applyImageDelta, createImageDelta } from "../src/updates/delta.ts";
import { downloadTarget, type PartialStore } from "../src/updates/download.ts";
import { ImageDigest } from "../src/updates/slots.ts";
import { createTargetVerifier, type TargetFile } from "../src/updates/tuf/index.ts";
import { bestOfRounds, mbPerSecond, timed, timedAsync } from "./timing.ts";
import type { BenchResult } from "./types.ts";
import { benchUpdateServer } from "./updates-server.ts";

const MiB = 1024 * 1024;
const IMAGE_BYTES = 256 * MiB;
/** What a network read hands over at a time. */
const PIECE_BYTES = 64 * 1024;
const ROUNDS = 5;
const PIPELINE_ROUNDS = 3;
const TAG_BYTES = 16;

const DELTA_IMAGE_BYTES = 16 * MiB;
const DELTA_CHANGED_SHARE = 0.05;
const DELTA_RUNS = 8;

/** Views of `bytes` in `size`-byte pieces (no copies). */
function piecesOf(bytes: Uint8Array, size = PIECE_BYTES): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; at += size) out.push(bytes.subarray(at, at + size));
  return out;
}

/**
 * Stands in for the handset's flash: it keeps the views it is given (the bytes already live in
 * the benchmark's one buffer), so neither verification nor decryption pays for a copy that a
 * real handset would make to storage, and memory stays at one image.
 */
class ViewPartialStore implements PartialStore {
  #id: string | undefined;
  #parts: Uint8Array[] = [];
  #size = 0;
  async id(): Promise<string | undefined> {
    return this.#id;
  }
  async start(id: string): Promise<void> {
    this.#id = id;
    this.#parts = [];
    this.#size = 0;
  }
  async append(chunk: Uint8Array): Promise<void> {
    this.#parts.push(chunk);
    this.#size += chunk.length;
  }
  async size(): Promise<number> {
    return this.#size;
  }
  async *read(): AsyncIterable<Uint8Array> {
    yield* this.#parts;
  }
  async clear(): Promise<void> {
    await this.start("");
    this.#id = undefined;
  }
}

interface Package {
  contentKey: Uint8Array;
  ciphertext: Uint8Array;
  target: TargetFile;
  imageSha256: string;
}

/** A random 256 MiB image, encrypted as a package; the plaintext is never held whole. */
async function makePackage(): Promise<Package> {
  const contentKey = generateContentKey();
  const ciphertext = new Uint8Array(encryptedLength(IMAGE_BYTES));
  const image = createHash("sha256");
  function* plaintext(): Generator<Uint8Array> {
    for (let at = 0; at < IMAGE_BYTES; at += CHUNK_SIZE) {
      const chunk = randomFillSync(new Uint8Array(Math.min(CHUNK_SIZE, IMAGE_BYTES - at)));
      image.update(chunk);
      yield chunk;
    }
  }
  let at = 0;
  for await (const part of encryptContent(contentKey, plaintext(), IMAGE_BYTES)) {
    ciphertext.set(part, at);
    at += part.length;
  }
  if (at !== ciphertext.length) throw new Error(`package is ${at} bytes, expected ${ciphertext.length}`);
  const digest = createHash("sha256");
  for (const p of piecesOf(ciphertext)) digest.update(p);
  return {
    contentKey,
    ciphertext,
    target: { length: ciphertext.length, hashes: { sha256: digest.digest("hex") } },
    imageSha256: image.digest("hex"),
  };
}

/** The ceiling: node:crypto SHA-256 over the pieces, nothing else. */
function plainSha256(pieces: Uint8Array[]): string {
  const h = createHash("sha256");
  for (const p of pieces) h.update(p);
  return h.digest("hex");
}

/** The ceiling of the streamed form: the same hash over the pieces as they arrive from a stream. */
async function plainSha256Streamed(pieces: Uint8Array[]): Promise<string> {
  const h = createHash("sha256");
  for await (const p of arriving(pieces)) h.update(p);
  return h.digest("hex");
}

/** The pieces as a network body hands them over. */
async function* arriving(pieces: Uint8Array[]): AsyncGenerator<Uint8Array> {
  yield* pieces;
}

/** The TUF verifier alone, fed synchronously. */
function verifyWithVerifier(target: TargetFile, pieces: Uint8Array[]): void {
  const v = createTargetVerifier(target);
  for (const p of pieces) v.update(p);
  v.finish();
}

/** What the handset runs on download: downloadTarget over a body that arrives in pieces. */
async function verifyAsDownload(
  target: TargetFile,
  pieces: Uint8Array[],
  store: PartialStore,
): Promise<void> {
  await downloadTarget({
    target,
    id: "bench.hspkg",
    partial: store,
    maxAttempts: 1,
    fetch: async () => ({
      status: 200,
      headers: { "content-length": String(target.length) },
      body: arriving(pieces),
    }),
  });
}

/** After verification: decrypt what the store holds and check the image as the updater does. */
async function decryptAndCheck(pkg: Package, store: PartialStore): Promise<void> {
  const decryptor = new ContentDecryptor(pkg.contentKey);
  const digest = new ImageDigest();
  for await (const chunk of store.read()) for (const p of decryptor.update(chunk)) digest.update(p);
  digest.update(decryptor.finish());
  if (digest.length !== IMAGE_BYTES || digest.hex() !== pkg.imageSha256)
    throw new Error("the decrypted image does not match its hash");
}

/**
 * The pipeline's ceiling: the same primitives without the stream's bookkeeping — SHA-256 of the
 * ciphertext, then each sealed chunk opened in place (content.ts nonces: index, last flag), then
 * SHA-256 of the plaintext.
 */
function bareVerifyAndDecrypt(pkg: Package, pieces: Uint8Array[]): void {
  if (plainSha256(pieces) !== pkg.target.hashes["sha256"]) throw new Error("ciphertext hash mismatch");
  const { ciphertext, contentKey } = pkg;
  const header = ciphertext.subarray(0, HEADER_LENGTH);
  const image = createHash("sha256");
  const chunks = Math.ceil(IMAGE_BYTES / CHUNK_SIZE);
  const nonce = Buffer.alloc(12);
  let at = HEADER_LENGTH;
  for (let i = 0; i < chunks; i++) {
    const last = i === chunks - 1;
    const plainLength = last ? IMAGE_BYTES - i * CHUNK_SIZE : CHUNK_SIZE;
    nonce.fill(0);
    nonce.writeUIntBE(i, 5, 6);
    nonce[11] = last ? 1 : 0;
    const decipher = createDecipheriv("chacha20-poly1305", contentKey, nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(header, { plaintextLength: plainLength });
    decipher.setAuthTag(ciphertext.subarray(at + plainLength, at + plainLength + TAG_BYTES));
    image.update(decipher.update(ciphertext.subarray(at, at + plainLength)));
    decipher.final();
    at += plainLength + TAG_BYTES;
  }
  if (image.digest("hex") !== pkg.imageSha256) throw new Error("bare decryption: image hash mismatch");
}

async function benchVerification(): Promise<BenchResult[]> {
  const pkg = await makePackage();
  const pieces = piecesOf(pkg.ciphertext);
  const bytes = pkg.ciphertext.length;
  const store = new ViewPartialStore();
  const best = await bestOfRounds(ROUNDS, {
    sha: async () => timed(() => void plainSha256(pieces)),
    shaStreamed: () => timedAsync(async () => void (await plainSha256Streamed(pieces))),
    verifier: async () => timed(() => verifyWithVerifier(pkg.target, pieces)),
    download: () => timedAsync(() => verifyAsDownload(pkg.target, pieces, store)),
  });
  const pipelineBest = await bestOfRounds(PIPELINE_ROUNDS, {
    bare: async () => timed(() => bareVerifyAndDecrypt(pkg, pieces)),
    pipeline: () =>
      timedAsync(async () => {
        await verifyAsDownload(pkg.target, pieces, store);
        await decryptAndCheck(pkg, store);
      }),
  });
  await store.clear();
  const vs = (name: string, ms: number, ceilingName: string, ceilingMs: number): BenchResult => {
    const value = mbPerSecond(bytes, ms);
    const ceiling = mbPerSecond(bytes, ceilingMs);
    return {
      name,
      value,
      unit: "MB/s",
      ceiling: { name: ceilingName, value: ceiling },
      ratio: value / ceiling,
    };
  };
  const bare = mbPerSecond(bytes, pipelineBest.bare);
  const pipeline = mbPerSecond(bytes, pipelineBest.pipeline);
  return [
    {
      ...vs(
        "verify 256 MiB download: downloadTarget (TUF length + SHA-256)",
        best.download,
        "node:crypto SHA-256 of the same streamed pieces",
        best.shaStreamed,
      ),
      aim: { issue: 3, min: 0.9 },
    },
    vs(
      "verify 256 MiB: createTargetVerifier alone, in a plain loop",
      best.verifier,
      "node:crypto SHA-256, same pieces, plain loop",
      best.sha,
    ),
    {
      name: "handset pipeline 256 MiB: verify + decrypt + image hash, for information",
      value: pipeline,
      unit: "MB/s",
      ceiling: { name: "node:crypto SHA-256 + ChaCha20-Poly1305 + SHA-256", value: bare },
      ratio: pipeline / bare,
    },
  ];
}

// --- delta --------------------------------------------------------------------------------------

/** xorshift32: the same bytes on every run, so the delta size is comparable between runs. */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/**
 * Firmware-like bytes: 32-bit words drawn mostly from a small vocabulary (opcodes, addresses)
 * with random immediates, some fully random stretches (tables, compressed assets) and zero
 * padding: compressible like machine code, with no long repeats for fossil to match by accident.
 */
function firmwareLike(size: number, next: () => number): Uint8Array {
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  const vocabulary = Array.from({ length: 4096 }, () => next());
  let at = 0;
  while (at + 4 <= size) {
    const kind = next() % 100;
    const words = 16 + (next() % 240);
    for (let w = 0; w < words && at + 4 <= size; w++, at += 4) {
      if (kind < 70) view.setUint32(at, (vocabulary[next() % 4096]! & 0xffffff00) | (next() & 0xff));
      else if (kind < 92) view.setUint32(at, next());
      // else: zero padding
    }
  }
  return out;
}

/** `image` with DELTA_CHANGED_SHARE of its bytes rewritten in DELTA_RUNS scattered runs. */
function patched(image: Uint8Array, next: () => number): { image: Uint8Array; changed: number } {
  const out = image.slice();
  const runLength = Math.floor((image.length * DELTA_CHANGED_SHARE) / DELTA_RUNS);
  const region = Math.floor(image.length / DELTA_RUNS);
  const fresh = firmwareLike(runLength * DELTA_RUNS, next);
  let changed = 0;
  for (let r = 0; r < DELTA_RUNS; r++) {
    const start = r * region + (next() % (region - runLength));
    out.set(fresh.subarray(r * runLength, (r + 1) * runLength), start);
    for (let i = start; i < start + runLength; i++) if (out[i] !== image[i]) changed++;
  }
  return { image: out, changed };
}

function benchDelta(): BenchResult[] {
  const next = prng(0x5eed);
  const oldImage = firmwareLike(DELTA_IMAGE_BYTES, next);
  const { image: newImage, changed } = patched(oldImage, next);
  let delta: Uint8Array = new Uint8Array(0);
  const createMs = timed(() => {
    delta = createImageDelta(oldImage, newImage);
  });
  let rebuilt: Uint8Array = new Uint8Array(0);
  const applyMs = timed(() => {
    rebuilt = applyImageDelta(oldImage, delta);
  });
  if (Buffer.compare(rebuilt, newImage) !== 0) throw new Error("the delta does not rebuild the image");
  const percentChanged = ((changed / DELTA_IMAGE_BYTES) * 100).toFixed(1);
  const full = DELTA_IMAGE_BYTES / 1024;
  return [
    {
      name: `delta size, 16 MiB image, ${percentChanged} % of bytes changed in ${DELTA_RUNS} runs`,
      value: delta.length / 1024,
      unit: "KiB",
      ceiling: { name: "the full image (KiB)", value: full },
      ratio: delta.length / 1024 / full,
    },
    {
      name: "delta creation (fossil-delta), for information",
      value: mbPerSecond(DELTA_IMAGE_BYTES, createMs),
      unit: "MB/s",
    },
    {
      name: "delta application + checksum, for information",
      value: mbPerSecond(DELTA_IMAGE_BYTES, applyMs),
      unit: "MB/s",
    },
  ];
}

export async function benchUpdates(): Promise<BenchResult[]> {
  const verification = await benchVerification();
  const delta = benchDelta();
  const server = await benchUpdateServer();
  return [...verification, ...server, ...delta];
}
