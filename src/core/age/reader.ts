/**
 * Pulls bytes from an async iterable of chunks, holding only what the caller asked for plus at
 * most one source chunk: this is what keeps decryption in bounded memory.
 */
export type ByteSource = Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

function isAsyncIterable(x: unknown): x is AsyncIterable<Uint8Array> {
  return typeof x === "object" && x !== null && Symbol.asyncIterator in x;
}

export async function* chunksOf(source: ByteSource): AsyncGenerator<Uint8Array> {
  if (source instanceof Uint8Array) {
    if (source.length > 0) yield source;
    return;
  }
  if (isAsyncIterable(source)) {
    for await (const c of source) yield c;
    return;
  }
  for (const c of source) yield c;
}

/**
 * Reads exact byte counts across source chunks. Pending bytes are kept as the source's own chunks
 * (a queue, an offset into the first), so a read copies each byte at most once: a read that one
 * chunk holds is a view of it, one that spans chunks is assembled into a new array. (Joining the
 * pending bytes on every pull copied a 64 KiB STREAM chunk two to four times over when the
 * source delivers 16 KiB TLS records.) What a read returns may share memory with the source's
 * chunks: callers read it, never write to it.
 */
export class ByteReader {
  readonly #chunks: AsyncIterator<Uint8Array>;
  /** Pending bytes: `#queue[0]` from `#offset` on, then the rest whole. */
  #queue: Uint8Array[] = [];
  #offset = 0;
  #length = 0;
  #done = false;

  constructor(source: ByteSource) {
    this.#chunks = chunksOf(source)[Symbol.asyncIterator]();
  }

  /** Pulls one more non-empty source chunk into the queue; false at the end of the source. */
  async #fill(): Promise<boolean> {
    while (!this.#done) {
      const next = await this.#chunks.next();
      if (next.done) {
        this.#done = true;
        return false;
      }
      if (next.value.length === 0) continue;
      this.#queue.push(next.value);
      this.#length += next.value.length;
      return true;
    }
    return false;
  }

  /** Takes the first `n` pending bytes (n <= #length): a view when one chunk holds them. */
  #take(n: number): Uint8Array {
    const first = this.#queue[0];
    if (first === undefined || n === 0) return new Uint8Array(0);
    if (first.length - this.#offset >= n) {
      const out = first.subarray(this.#offset, this.#offset + n);
      this.#advance(n);
      return out;
    }
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const chunk = this.#queue[0]!;
      const piece = chunk.subarray(
        this.#offset,
        this.#offset + Math.min(n - at, chunk.length - this.#offset),
      );
      out.set(piece, at);
      at += piece.length;
      this.#advance(piece.length);
    }
    return out;
  }

  /** Drops `n` bytes that lie in the first chunk. */
  #advance(n: number): void {
    this.#offset += n;
    this.#length -= n;
    if (this.#offset === this.#queue[0]!.length) {
      this.#queue.shift();
      this.#offset = 0;
    }
  }

  /** Exactly `n` bytes, or fewer only when the source ends first. */
  async read(n: number): Promise<Uint8Array> {
    while (this.#length < n && (await this.#fill()));
    return this.#take(Math.min(n, this.#length));
  }

  /**
   * Up to and including the next LF, or `undefined` when the source ends first or the line would
   * exceed `max` bytes (the caller decides which failure that is; `tooLong` tells them apart).
   */
  async readLine(max: number): Promise<{ line?: Uint8Array; tooLong: boolean }> {
    // Scans chunk by chunk from where the last pass stopped; the line is taken once its LF is seen.
    let scanned = 0;
    let chunkIndex = 0;
    let chunkStart = this.#offset;
    for (;;) {
      while (chunkIndex < this.#queue.length) {
        const chunk = this.#queue[chunkIndex]!;
        const lf = chunk.indexOf(0x0a, chunkStart);
        if (lf >= 0) {
          const length = scanned + (lf - chunkStart) + 1;
          if (length > max) return { tooLong: true };
          return { line: this.#take(length).slice(), tooLong: false };
        }
        scanned += chunk.length - chunkStart;
        chunkIndex++;
        chunkStart = 0;
      }
      if (scanned >= max) return { tooLong: true };
      if (!(await this.#fill())) return { tooLong: false };
    }
  }

  /** True when no byte is left (pulls from the source to find out). */
  async atEnd(): Promise<boolean> {
    return this.#length === 0 && !(await this.#fill());
  }
}
