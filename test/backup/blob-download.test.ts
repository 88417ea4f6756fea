/**
 * Serving a blob whose stored bytes are not the row's: the store's header is checked before the
 * answer announces a length, and a body that ends short of (or runs past) that length throws, so
 * the connection drops instead of the client waiting for bytes that never come.
 */
import { describe, expect, it } from "vitest";
import { blobDamage, exactly } from "../../src/backup/blob-download.ts";
import { HandsafeError, isHandsafeError } from "../../src/core/errors.ts";
import type { BlobInfo, BlobStore } from "../../src/platform/blobs/types.ts";
import { parseRange } from "../../src/platform/http/range.ts";

const SHA = "ab".repeat(32);

function storeStat(stat: () => Promise<BlobInfo | undefined>): BlobStore {
  return { stat } as unknown as BlobStore;
}

async function drain(source: AsyncIterable<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const chunk of source) n += chunk.length;
  return n;
}

async function* chunks(...sizes: number[]) {
  for (const n of sizes) yield new Uint8Array(n);
}

describe("a blob file replaced or cut behind the service's back", () => {
  const expected = { size: 100, sha256: SHA };
  it("agrees: no damage", async () => {
    expect(
      await blobDamage(
        storeStat(async () => ({ key: "k", ...expected })),
        "k",
        expected,
      ),
    ).toBeUndefined();
  });
  it("gone, another size, another hash, an unreadable header: each named", async () => {
    expect(
      await blobDamage(
        storeStat(async () => undefined),
        "k",
        expected,
      ),
    ).toBe("missing");
    expect(
      await blobDamage(
        storeStat(async () => ({ key: "k", size: 99, sha256: SHA })),
        "k",
        expected,
      ),
    ).toBe("size");
    expect(
      await blobDamage(
        storeStat(async () => ({ key: "k", size: 100, sha256: "cd".repeat(32) })),
        "k",
        expected,
      ),
    ).toBe("sha256");
    const corrupt = storeStat(async () => {
      throw new HandsafeError("blob.corrupt", "bad header", { status: 500 });
    });
    expect(await blobDamage(corrupt, "k", expected)).toBe("unreadable");
  });
  it("a store failure that is not damage is not hidden", async () => {
    const failing = storeStat(async () => {
      throw new HandsafeError("blob.read_failed", "disk", { status: 500 });
    });
    await expect(blobDamage(failing, "k", expected)).rejects.toMatchObject({ code: "blob.read_failed" });
  });
});

describe("a body that changes while it streams", () => {
  it("exactly the announced length passes", async () => {
    expect(await drain(exactly(chunks(40, 60), 100, "bl_x"))).toBe(100);
  });
  it("fewer bytes than announced: backup.blob_damaged at the end", async () => {
    const e = await drain(exactly(chunks(40, 20), 100, "bl_x")).catch((x: unknown) => x);
    expect(isHandsafeError(e, "backup.blob_damaged")).toBe(true);
  });
  it("more bytes than announced: backup.blob_damaged before the extra bytes go out", async () => {
    let seen = 0;
    const e = await (async () => {
      for await (const c of exactly(chunks(60, 60), 100, "bl_x")) seen += c.length;
    })().catch((x: unknown) => x);
    expect(isHandsafeError(e, "backup.blob_damaged")).toBe(true);
    expect(seen).toBe(60);
  });
});

describe("Range (RFC 9110 §14.2)", () => {
  it("reads one bytes= range; refuses one past the end", () => {
    expect(parseRange("bytes=0-9", 100)).toEqual({ start: 0, end: 9 });
    expect(parseRange("bytes=-10", 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange("bytes=90-", 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange("bytes=100-", 100)).toBe("unsatisfiable");
    expect(parseRange("items=0-1", 100)).toBeUndefined();
  });
});
