import { describe, expect, it } from "vitest";
import { ByteReader } from "../../src/core/age/reader.ts";

const bytes = (n: number, from = 0) => Uint8Array.from({ length: n }, (_, i) => (from + i) % 251);
/** `data` cut at the given lengths, as an async source (the last piece takes the rest). */
async function* pieces(data: Uint8Array, cuts: number[]): AsyncGenerator<Uint8Array> {
  let at = 0;
  for (const n of cuts) {
    yield data.subarray(at, at + n);
    at += n;
  }
  if (at < data.length) yield data.subarray(at);
}

describe("ByteReader", () => {
  it("reads exact counts across any chunking, with empty chunks in between", async () => {
    const data = bytes(70_000);
    for (const cuts of [[70_000], [1, 1, 1], [16_384, 16_384, 0, 16_384, 0], [65_551, 2], [3, 65_549, 100]]) {
      const reader = new ByteReader(pieces(data, cuts));
      const got: Uint8Array[] = [];
      for (const n of [16, 65_552, 10_000]) got.push(await reader.read(n));
      expect(got.map((g) => g.length)).toEqual([16, 65_552, 70_000 - 16 - 65_552]);
      expect(Buffer.concat(got).equals(Buffer.from(data))).toBe(true);
      expect(await reader.atEnd()).toBe(true);
      expect((await reader.read(5)).length).toBe(0);
    }
  });

  it("answers a read one chunk holds with a view of it, and copies only a read across chunks", async () => {
    const data = bytes(100);
    const reader = new ByteReader(pieces(data, [60, 40]));
    const inOne = await reader.read(50);
    expect(inOne.buffer).toBe(data.buffer);
    const across = await reader.read(20);
    expect(across.buffer).not.toBe(data.buffer);
    expect([...across]).toEqual([...data.subarray(50, 70)]);
  });

  it("reads lines across chunks, and refuses one longer than the limit", async () => {
    const text = new TextEncoder().encode("age-encryption.org/v1\n-> X25519 abc\nrest");
    const reader = new ByteReader(pieces(text, [3, 5, 0, 20]));
    expect(new TextDecoder().decode((await reader.readLine(100)).line)).toBe("age-encryption.org/v1\n");
    expect(await reader.readLine(10)).toEqual({ tooLong: true });
    expect(new TextDecoder().decode((await reader.readLine(100)).line)).toBe("-> X25519 abc\n");
    expect(await reader.readLine(100)).toEqual({ tooLong: false });
    expect(new TextDecoder().decode(await reader.read(10))).toBe("rest");
  });

  it("stops scanning for a line at the limit without pulling the whole source", async () => {
    let pulled = 0;
    async function* endless(): AsyncGenerator<Uint8Array> {
      for (;;) {
        pulled++;
        yield new Uint8Array(1024).fill(0x41);
      }
    }
    const reader = new ByteReader(endless());
    expect(await reader.readLine(4096)).toEqual({ tooLong: true });
    expect(pulled).toBeLessThanOrEqual(5);
  });
});
