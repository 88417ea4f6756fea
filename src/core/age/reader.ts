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

export class ByteReader {
  readonly #chunks: AsyncIterator<Uint8Array>;
  #pending: Uint8Array = new Uint8Array(0);
  #done = false;

  constructor(source: ByteSource) {
    this.#chunks = chunksOf(source)[Symbol.asyncIterator]();
  }

  /** Pulls one more non-empty source chunk into `#pending`; false at the end of the source. */
  async #fill(): Promise<boolean> {
    while (!this.#done) {
      const next = await this.#chunks.next();
      if (next.done) {
        this.#done = true;
        return false;
      }
      if (next.value.length === 0) continue;
      this.#pending = this.#pending.length === 0 ? next.value : concat(this.#pending, next.value);
      return true;
    }
    return false;
  }

  /** Exactly `n` bytes, or fewer only when the source ends first. */
  async read(n: number): Promise<Uint8Array> {
    while (this.#pending.length < n && (await this.#fill()));
    const out = this.#pending.slice(0, Math.min(n, this.#pending.length));
    this.#pending = this.#pending.subarray(out.length);
    return out;
  }

  /**
   * Up to and including the next LF, or `undefined` when the source ends first or the line would
   * exceed `max` bytes (the caller decides which failure that is; `tooLong` tells them apart).
   */
  async readLine(max: number): Promise<{ line?: Uint8Array; tooLong: boolean }> {
    let scanned = 0;
    for (;;) {
      const lf = this.#pending.indexOf(0x0a, scanned);
      if (lf >= 0) {
        if (lf + 1 > max) return { tooLong: true };
        const line = this.#pending.slice(0, lf + 1);
        this.#pending = this.#pending.subarray(lf + 1);
        return { line, tooLong: false };
      }
      scanned = this.#pending.length;
      if (scanned >= max) return { tooLong: true };
      if (!(await this.#fill())) return { tooLong: false };
    }
  }

  /** True when no byte is left (pulls from the source to find out). */
  async atEnd(): Promise<boolean> {
    return this.#pending.length === 0 && !(await this.#fill());
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
