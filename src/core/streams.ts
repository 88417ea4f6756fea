/**
 * Streaming helpers free of I/O, shared by the blob store and the handset's data stores: gathering a
 * stream's chunks into large writes, and keeping one write in flight while the next is prepared.
 */

/** Bytes gathered per write: one syscall per MiB, not one per 64 KiB chunk of a stream. */
export const WRITE_BATCH_BYTES = 1024 * 1024;

/**
 * The same bytes in pieces of WRITE_BATCH_BYTES (a chunk that large passes as it is). When the source
 * fails, what was gathered is still yielded before the failure is passed on: an append keeps every
 * byte it received, as it did chunk by chunk.
 */
export async function* coalesce(
  source: AsyncIterable<Uint8Array>,
  size = WRITE_BATCH_BYTES,
): AsyncGenerator<Uint8Array> {
  let buffer: Uint8Array | undefined;
  let filled = 0;
  try {
    for await (const chunk of source) {
      if (filled === 0 && chunk.length >= size) {
        yield chunk;
        continue;
      }
      for (let at = 0; at < chunk.length; ) {
        buffer ??= new Uint8Array(size);
        const n = Math.min(size - filled, chunk.length - at);
        buffer.set(chunk.subarray(at, at + n), filled);
        filled += n;
        at += n;
        if (filled === size) {
          const full = buffer;
          buffer = undefined;
          filled = 0;
          yield full;
        }
      }
    }
  } catch (e) {
    if (filled > 0) {
      const rest = buffer!.subarray(0, filled);
      filled = 0;
      yield rest;
    }
    throw e;
  }
  if (filled > 0) yield buffer!.subarray(0, filled);
}

/**
 * Writes chunks at consecutive positions (through `writeAt`, say a file's positional write) with
 * one write in flight: write() copies the chunk and
 * returns once the write before it completed (so the caller prepares the next chunk while this one
 * is written, and may reuse its own buffer at once), settle()
 * once all did. `done(n)` is told of each completed write in order. After a failed write, nothing
 * more is written and the failure is thrown by that write() or settle(); the caller must still
 * settle() before touching the file, so no write lands after it.
 */
export class WriteBehind {
  #position: number;
  #inFlight: { writing: Promise<void>; length: number } | undefined;
  #failed = false;
  readonly #slots: Array<Uint8Array | undefined> = [undefined, undefined];
  #next = 0;

  constructor(
    private readonly writeAt: (bytes: Uint8Array, position: number) => Promise<void>,
    position: number,
    private readonly done: (n: number) => void = () => {},
  ) {
    this.#position = position;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.#failed) throw new Error("an earlier write failed");
    // The caller may reuse its chunk once this returns: the bytes go out from one of two buffers
    // of our own, the one whose write completed before the previous call returned.
    let slot = this.#slots[this.#next];
    if (slot === undefined || slot.length < chunk.length) {
      slot = new Uint8Array(Math.max(chunk.length, WRITE_BATCH_BYTES));
      this.#slots[this.#next] = slot;
    }
    this.#next ^= 1;
    const own = slot.subarray(0, chunk.length);
    own.set(chunk);
    const writing = this.writeAt(own, this.#position);
    // A rejection is observed by settle(); never left unhandled meanwhile.
    writing.catch(() => {});
    this.#position += chunk.length;
    const before = this.#inFlight;
    this.#inFlight = { writing, length: chunk.length };
    if (before) await this.#complete(before);
  }

  async settle(): Promise<void> {
    const last = this.#inFlight;
    this.#inFlight = undefined;
    if (last) await this.#complete(last);
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
