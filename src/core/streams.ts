/**
 * Streaming helpers free of I/O, shared by the blob store and the handset's data stores.
 */
import { concatBytes } from "./codec/bytes.ts";

/** Bytes gathered per write: one syscall per MiB, not one per 64 KiB piece of a stream. */
export const WRITE_BATCH_BYTES = 1024 * 1024;

/**
 * Buffers per WriteBehind: up to three writes out while the fourth fills. With two (one out), a
 * 1 GiB seal into the blob store waited on its writes about 8% longer (bench/backup-child.ts seal-store,
 * 8 interleaved runs: 2.70 s against 2.51 s median; eight buffers were no faster than four).
 */
export const WRITE_DEPTH = 4;

/**
 * Writes a stream's pieces at consecutive positions through `writeAt` (say, a file's positional
 * write) in writes of `batch` bytes, with up to `depth - 1` writes in flight while the next batch
 * is gathered.
 *
 * - write() copies the piece into one of `depth` buffers of its own (so the caller may reuse its
 *   piece at once), and when a buffer is full sends it, returning once the buffer to fill next is
 *   free again (the oldest write out completed) — at most `depth - 1` writes wait at any time;
 * - settle() sends what is gathered and returns once every write completed;
 * - `done(n)` is told of each completed write, in order.
 *
 * The buffers are allocated as first needed and refilled: no fresh megabyte (and no page faults)
 * per batch. After a failed write nothing more is written and that failure is thrown by write() or
 * settle(); the caller must still settle() before touching the file, so no write lands after it.
 */
export class WriteBehind {
  #position: number;
  /** The writes sent and not yet completed, oldest first; each holds one of the slots. */
  readonly #inFlight: Array<{ writing: Promise<void>; length: number }> = [];
  #failed = false;
  readonly #slots: Array<Uint8Array | undefined>;
  #current = 0;
  #filled = 0;

  constructor(
    private readonly writeAt: (bytes: Uint8Array, position: number) => Promise<void>,
    position: number,
    private readonly done: (n: number) => void = () => {},
    private readonly batch = WRITE_BATCH_BYTES,
    depth = WRITE_DEPTH,
  ) {
    this.#position = position;
    this.#slots = Array.from({ length: Math.max(2, depth) }, () => undefined);
  }

  async write(piece: Uint8Array): Promise<void> {
    if (this.#failed) throw new Error("an earlier write failed");
    for (let at = 0; at < piece.length; ) {
      let slot = this.#slots[this.#current];
      if (slot === undefined) {
        slot = new Uint8Array(this.batch);
        this.#slots[this.#current] = slot;
      }
      const n = Math.min(slot.length - this.#filled, piece.length - at);
      slot.set(piece.subarray(at, at + n), this.#filled);
      this.#filled += n;
      at += n;
      if (this.#filled === slot.length) await this.#send();
    }
  }

  async settle(): Promise<void> {
    if (this.#filled > 0 && !this.#failed) await this.#send();
    while (this.#inFlight.length > 0) await this.#complete(this.#inFlight.shift()!);
  }

  /** Sends the current buffer and moves to the next, once the write that last held it completed. */
  async #send(): Promise<void> {
    const bytes = this.#slots[this.#current]!.subarray(0, this.#filled);
    const writing = this.writeAt(bytes, this.#position);
    // A rejection is observed by #complete; never left unhandled meanwhile.
    writing.catch(() => {});
    this.#position += bytes.length;
    this.#inFlight.push({ writing, length: bytes.length });
    this.#current = (this.#current + 1) % this.#slots.length;
    this.#filled = 0;
    if (this.#inFlight.length === this.#slots.length) await this.#complete(this.#inFlight.shift()!);
  }

  async #complete(w: { writing: Promise<void>; length: number }): Promise<void> {
    try {
      await w.writing;
    } catch (e) {
      this.#failed = true;
      throw e;
    }
    if (!this.#failed) this.done(w.length);
  }
}

/**
 * The first bytes of an error answer's body, at most `max` (the pieces that fit whole): its status is
 * what matters, so a body cut short or failing midway only loses its message, never throws.
 */
export async function errorBodyPrefix(body: AsyncIterable<Uint8Array>, max: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let size = 0;
  try {
    for await (const piece of body) {
      if (size + piece.length > max) break;
      parts.push(piece);
      size += piece.length;
    }
  } catch {
    // kept: what came before the failure
  }
  return concatBytes(...parts);
}
