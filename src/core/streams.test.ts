import { describe, expect, it } from "vitest";
import { WRITE_DEPTH, WriteBehind } from "./streams.ts";

/** A positional "file" in memory whose writes finish when told to (or fail). */
function slowFile() {
  const bytes: number[] = [];
  const pending: Array<{ finish(): void; fail(e: Error): void; position: number; length: number }> = [];
  const writeAt = (data: Uint8Array, position: number) =>
    new Promise<void>((resolve, reject) => {
      const copy = [...data];
      pending.push({
        position,
        length: data.length,
        finish() {
          copy.forEach((b, i) => {
            bytes[position + i] = b;
          });
          resolve();
        },
        fail: reject,
      });
    });
  return { bytes, pending, writeAt };
}

const tick = () => new Promise((r) => setImmediate(r));

describe("WriteBehind", () => {
  it("gathers pieces into batches, one write in flight (depth 2), told in order", async () => {
    const file = slowFile();
    const done: number[] = [];
    const behind = new WriteBehind(file.writeAt, 10, (n) => done.push(n), 4, 2);
    // The caller reuses its piece at once: the bytes were copied.
    const piece = new Uint8Array([1, 2, 3]);
    await behind.write(piece);
    piece.set([4, 5, 6]);
    const second = behind.write(piece); // fills the first batch (1 2 3 4): sent, nothing before it
    await second;
    expect(file.pending.map((p) => [p.position, p.length])).toEqual([[10, 4]]);
    piece.set([7, 8, 9]);
    // Fills the second batch (5 6 7 8): sent, then waits for the first.
    let third = false;
    const t = behind.write(piece).then(() => (third = true));
    await tick();
    expect(file.pending.map((p) => [p.position, p.length])).toEqual([
      [10, 4],
      [14, 4],
    ]);
    expect(third).toBe(false);
    file.pending[0]!.finish();
    await t;
    expect(done).toEqual([4]);
    const settled = behind.settle(); // 9 left: sent; then all awaited
    await tick();
    file.pending[1]!.finish();
    await tick();
    file.pending[2]!.finish();
    await settled;
    expect(done).toEqual([4, 4, 1]);
    expect(file.bytes.slice(10)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it("after a failed write it writes nothing more, tells nothing more, and says why", async () => {
    const file = slowFile();
    const done: number[] = [];
    const behind = new WriteBehind(file.writeAt, 0, (n) => done.push(n), 2, 2);
    await behind.write(new Uint8Array([1, 2])); // batch 1 out
    const w = behind.write(new Uint8Array([3, 4])); // batch 2 out, waits for 1
    await tick();
    file.pending[0]!.fail(new Error("disk full"));
    await expect(w).rejects.toThrow("disk full");
    await expect(behind.write(new Uint8Array([5]))).rejects.toThrow("an earlier write failed");
    // settle() still waits for the write that was out, so none lands after the caller moves on.
    let settledYet = false;
    const s = behind.settle().then(
      () => (settledYet = true),
      () => (settledYet = true),
    );
    await tick();
    expect(settledYet).toBe(false);
    file.pending[1]!.finish();
    await s;
    expect(file.pending).toHaveLength(2);
    expect(done).toEqual([]);
  });

  it("by default keeps WRITE_DEPTH - 1 writes out, waits for the oldest before reusing its buffer, and completes them in order", async () => {
    const file = slowFile();
    const done: number[] = [];
    const behind = new WriteBehind(file.writeAt, 0, (n) => done.push(n), 2);
    // Batches 1..WRITE_DEPTH-1 go out without waiting.
    for (let i = 0; i < WRITE_DEPTH - 1; i++) await behind.write(new Uint8Array([i, i]));
    expect(file.pending).toHaveLength(WRITE_DEPTH - 1);
    // The last buffer fills and goes out too; the next to fill is the first one's, still out.
    let waited = false;
    const w = behind.write(new Uint8Array([9, 9])).then(() => (waited = true));
    await tick();
    expect(file.pending).toHaveLength(WRITE_DEPTH);
    expect(waited).toBe(false);
    // The second completes first: nothing is told before the first.
    file.pending[1]!.finish();
    await tick();
    expect(done).toEqual([]);
    expect(waited).toBe(false);
    file.pending[0]!.finish();
    await w;
    expect(done).toEqual([2]);
    await behind.write(new Uint8Array([7])); // into the first buffer again
    // settle() sends that last partial batch at once; then it waits for everything still out.
    const s = behind.settle();
    expect(file.pending).toHaveLength(WRITE_DEPTH + 1);
    for (const p of file.pending.slice(2)) p.finish();
    await s;
    expect(done).toEqual(Array.from({ length: WRITE_DEPTH }, () => 2).concat([1]));
    const expected = Array.from({ length: WRITE_DEPTH - 1 }, (_, i) => [i, i])
      .flat()
      .concat([9, 9, 7]);
    expect(file.bytes).toEqual(expected);
  });

  it("settle() sends what is gathered even when no batch filled", async () => {
    const file = slowFile();
    const behind = new WriteBehind(file.writeAt, 0);
    await behind.write(new Uint8Array([9, 8, 7]));
    expect(file.pending).toHaveLength(0);
    const s = behind.settle();
    await tick();
    file.pending[0]!.finish();
    await s;
    expect(file.bytes).toEqual([9, 8, 7]);
  });
});
