/**
 * Resumable download of a TUF target over the signed management channel (docs/protocols/
 * updates-contract.md §HTTP: the content route honours `Range: bytes=a-`).
 *
 * One request from the stored offset streams into the target verifier (length bound, hashes) and
 * into a PartialStore. When the connection breaks, the next attempt asks for `bytes=<stored size>-`.
 * The verifier keeps its state across reconnects within one call; a call that starts with bytes
 * already stored (a handset that restarted) re-feeds them to a fresh verifier first — the store is
 * never trusted, it only saves bandwidth. Nothing is decrypted until `finish` has passed, so the
 * bytes in the store are usable only after `downloadTarget` returns.
 *
 * A server that answers a resumed request with 200 (it ignored Range) is taken at its word: the
 * store is cleared and the full body from byte 0 is used. A 206 whose Content-Range does not start
 * at the asked offset or names another total is refused (updates.download_bad_range).
 */
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import type { TargetFile } from "./tuf/index.ts";
import { createTargetVerifier, type TargetVerifier } from "./tuf/index.ts";

/** Where the bytes of an unfinished download wait (keystore-free: they are ciphertext). */
export interface PartialStore {
  /** What the stored bytes belong to (the target's file name), or undefined when empty. */
  id(): Promise<string | undefined>;
  /** Empties the store and labels it for `id`. */
  start(id: string): Promise<void>;
  append(chunk: Uint8Array): Promise<void>;
  size(): Promise<number>;
  read(): AsyncIterable<Uint8Array>;
  clear(): Promise<void>;
}

export class MemoryPartialStore implements PartialStore {
  #id: string | undefined;
  #parts: Uint8Array[] = [];
  #size = 0;

  async id(): Promise<string | undefined> {
    return this.#id;
  }
  async start(id: string): Promise<void> {
    this.#parts = [];
    this.#size = 0;
    this.#id = id;
  }
  async append(chunk: Uint8Array): Promise<void> {
    if (this.#id === undefined)
      throw new HandsafeError("updates.partial_not_started", "start the partial store before appending");
    this.#parts.push(chunk.slice());
    this.#size += chunk.length;
  }
  async size(): Promise<number> {
    return this.#size;
  }
  async *read(): AsyncIterable<Uint8Array> {
    for (const p of [...this.#parts]) yield p.slice();
  }
  async clear(): Promise<void> {
    this.#parts = [];
    this.#size = 0;
    this.#id = undefined;
  }
}

/** One ranged GET: `headers` carries the Range header; the body streams. */
export type RangeFetch = (
  headers: Record<string, string>,
) => Promise<{ status: number; headers: Record<string, string>; body: AsyncIterable<Uint8Array> }>;

export interface DownloadProgress {
  received: number;
  total: number;
  /** 0–100, whole numbers. */
  percent: number;
}

export interface DownloadOptions {
  fetch: RangeFetch;
  /** The trusted targets metadata of what is downloaded. */
  target: TargetFile;
  /** Labels the partial store (the consistent-snapshot file name: it holds the digest). */
  id: string;
  partial: PartialStore;
  onProgress?: (p: DownloadProgress) => void;
  /** Requests in all, the first included (default 5). */
  maxAttempts?: number;
  /** Wait before attempt n (n ≥ 2): retryDelayMs × 2^(n-2), default 500 ms. */
  retryDelayMs?: number;
  sleep?: (ms: number) => Promise<void>;
}

export interface DownloadResult {
  /** Requests made. */
  attempts: number;
  /** Bytes that were already stored when the call began. */
  resumedFrom: number;
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+)$/;

function badRange(message: string): HandsafeError {
  return new HandsafeError("updates.download_bad_range", message, { status: 502 });
}

/** A failure worth another attempt: the connection broke, or the server had a passing problem. */
function retryable(e: unknown): boolean {
  return isHandsafeError(e) && (e.status === 0 || e.status >= 500) && !e.code.startsWith("tuf.");
}

/**
 * Downloads `target` into `partial` and verifies it (tuf.length_mismatch / tuf.hash_mismatch).
 * On a verification failure the store is cleared: bad bytes are never resumed from.
 */
export async function downloadTarget(options: DownloadOptions): Promise<DownloadResult> {
  const { target, partial, id } = options;
  const maxAttempts = options.maxAttempts ?? 5;
  const delay = options.retryDelayMs ?? 500;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const total = target.length;
  let lastPercent = -1;
  const progress = (received: number) => {
    const percent = total === 0 ? 100 : Math.floor((received * 100) / total);
    if (percent === lastPercent && received !== total) return;
    lastPercent = percent;
    options.onProgress?.({ received, total, percent });
  };

  const fresh = async (): Promise<TargetVerifier> => {
    await partial.start(id);
    return createTargetVerifier(target);
  };

  // Re-feed what an earlier run stored; anything over the length bound or for another target goes.
  let verifier = createTargetVerifier(target);
  if ((await partial.id()) !== id || (await partial.size()) > total) verifier = await fresh();
  else
    for await (const chunk of partial.read()) {
      try {
        verifier.update(chunk);
      } catch {
        verifier = await fresh();
        break;
      }
    }
  const resumedFrom = verifier.received;
  progress(verifier.received);

  /** One request from the current offset; returns when its body ends (or throws). */
  const fetchOnce = async (): Promise<void> => {
    const offset = verifier.received;
    const res = await options.fetch(offset > 0 ? { range: `bytes=${offset}-` } : {});
    let declared: number | undefined;
    if (res.status === 206) {
      const m = CONTENT_RANGE.exec(res.headers["content-range"] ?? "");
      if (!m)
        throw badRange(`a 206 without a usable Content-Range (${res.headers["content-range"] ?? "none"})`);
      const [first, last, size] = [Number(m[1]), Number(m[2]), Number(m[3])];
      if (first !== offset || last < first)
        throw badRange(`asked for bytes from ${offset}, the server sent ${first}-${last}`);
      if (size !== total || last !== size - 1)
        throw badRange(`the server's file is ${size} bytes (to ${last}); the target is ${total}`);
      declared = last - first + 1;
    } else if (res.status === 200) {
      // The whole file from byte 0 (Range ignored): start over rather than splice it onto the store.
      if (offset > 0) verifier = await fresh();
      const length = Number(res.headers["content-length"]);
      if (res.headers["content-length"] !== undefined && Number.isSafeInteger(length)) declared = length;
    } else if (res.status === 416) {
      throw badRange(`the server refused bytes from ${offset} (416): its file is not this target`);
    } else {
      throw new HandsafeError("updates.download_failed", `the content request answered HTTP ${res.status}`, {
        status: 502,
      });
    }
    const start = verifier.received;
    for await (const chunk of res.body) {
      if (chunk.length === 0) continue;
      verifier.update(chunk); // tuf.length_mismatch past the target's length: endless data stops here
      await partial.append(chunk);
      progress(verifier.received);
    }
    // Ended before what its headers announced: the connection was cut, resume from what arrived.
    if (declared !== undefined && verifier.received - start < declared) return;
    // Ended where the server meant it to: a file shorter than the target is refused now.
    if (verifier.received < total) verifier.finish();
  };

  let attempts = 0;
  try {
    while (verifier.received < total) {
      if (attempts >= maxAttempts)
        throw new HandsafeError(
          "updates.download_incomplete",
          `the download stopped at ${verifier.received} of ${total} bytes after ${attempts} attempts`,
          { status: 0 },
        );
      attempts++;
      if (attempts > 1) await sleep(delay * 2 ** (attempts - 2));
      try {
        await fetchOnce();
      } catch (e) {
        if (!retryable(e) || attempts >= maxAttempts) throw e;
      }
    }
    verifier.finish();
  } catch (e) {
    if (isHandsafeError(e) && (e.code.startsWith("tuf.") || e.code === "updates.download_bad_range"))
      await partial.clear();
    throw e;
  }
  return { attempts, resumedFrom };
}
