/**
 * The BlobStore contract (src/platform/blobs/types.ts), run against every store: the filesystem one
 * (filesystem.test.ts) and the S3 one against a local s3rver (s3.test.ts).
 */
import { createHash, randomBytes } from "node:crypto";
import { beforeEach, describe, expect, it } from "vitest";
import { type HandsafeError, isHandsafeError } from "../../src/core/errors.ts";
import type { BlobStore } from "../../src/platform/blobs/types.ts";

export interface ContractStore {
  store: BlobStore;
  /** A fresh store object on the same storage: what a restarted server (or another node) sees. */
  reopen(): BlobStore;
}

const MiB = 1024 * 1024;

export async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of it) parts.push(chunk);
  return Buffer.concat(parts);
}

/** The error a call fails with (a HandsafeError, else the test fails); undefined when it succeeds. */
export async function failure(work: () => Promise<unknown>): Promise<HandsafeError | undefined> {
  try {
    await work();
    return undefined;
  } catch (e) {
    if (isHandsafeError(e)) return e;
    throw e;
  }
}

async function code(work: () => Promise<unknown>): Promise<string | undefined> {
  return (await failure(work))?.code;
}

/** `data` as a stream of chunks of `size` bytes (the last shorter). */
async function* inChunks(data: Uint8Array, size: number): AsyncIterable<Uint8Array> {
  for (let at = 0; at < data.length; at += size) yield data.subarray(at, Math.min(data.length, at + size));
}

/** Yields `data` in chunks, then fails like a dropped connection. */
async function* cutOff(data: Uint8Array, size: number): AsyncIterable<Uint8Array> {
  yield* inChunks(data, size);
  throw new Error("connection reset by peer");
}

const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

export interface ContractOptions {
  /**
   * The store keeps every byte an append received before its source failed (the interface also
   * allows dropping back to an earlier consistent point).
   */
  keepsBytesOfFailedAppend?: boolean;
}

export function describeBlobStoreContract(
  name: string,
  open: () => Promise<ContractStore>,
  options: ContractOptions = {},
): void {
  describe(`${name} blob store: the BlobStore contract`, () => {
    let store: BlobStore;
    let reopen: () => BlobStore;
    beforeEach(async () => {
      ({ store, reopen } = await open());
    });

    it("put/get/stat/delete, from bytes and from a stream", async () => {
      const data = randomBytes(100_000);
      const info = await store.put("c/one", data);
      expect(info).toEqual({ key: "c/one", size: data.length, sha256: sha256(data) });
      expect(await store.stat("c/one")).toEqual(info);
      expect((await collect(store.get("c/one"))).equals(data)).toBe(true);
      expect(await store.put("c/two", inChunks(data, 777))).toEqual({ ...info, key: "c/two" });
      expect((await collect(store.get("c/two"))).equals(data)).toBe(true);

      await store.put("c/one", Buffer.from("replaced"));
      expect((await collect(store.get("c/one"))).toString()).toBe("replaced");
      expect((await store.stat("c/one"))?.size).toBe(8);

      await store.delete("c/one");
      await store.delete("c/one");
      expect(await store.stat("c/one")).toBeUndefined();
      expect(await code(() => collect(store.get("c/one")))).toBe("blob.not_found");
      expect(await store.stat("c/two")).toEqual({ ...info, key: "c/two" });
      expect(await store.stat("c")).toBeUndefined();
    });

    it("an empty blob", async () => {
      expect(await store.put("empty", new Uint8Array(0))).toEqual({
        key: "empty",
        size: 0,
        sha256: sha256(new Uint8Array(0)),
      });
      expect((await collect(store.get("empty"))).length).toBe(0);
      expect(await code(() => collect(store.get("empty", { start: 0 })))).toBe("blob.range_not_satisfiable");
    });

    it("ranges with HTTP semantics", async () => {
      await store.put("r", Buffer.from("0123456789"));
      const read = async (range: { start: number; end?: number }) =>
        (await collect(store.get("r", range))).toString();
      expect(await read({ start: 2, end: 4 })).toBe("234");
      expect(await read({ start: 7 })).toBe("789");
      expect(await read({ start: 9, end: 9 })).toBe("9");
      expect(await read({ start: 0, end: 100 })).toBe("0123456789");
      for (const range of [
        { start: 10 },
        { start: 100, end: 200 },
        { start: 3, end: 2 },
        { start: -1 },
        { start: 1.5 },
      ]) {
        const e = await failure(() => collect(store.get("r", range)));
        expect(e?.code, JSON.stringify(range)).toBe("blob.range_not_satisfiable");
        expect(e?.status).toBe(416);
      }
      expect(await code(() => collect(store.get("missing", { start: 0 })))).toBe("blob.not_found");
    });

    it("a put whose source fails leaves the old blob and no new one", async () => {
      await store.put("f/old", Buffer.from("previous"));
      expect(await code(() => store.put("f/old", cutOff(randomBytes(1000), 100)))).toBe("blob.write_failed");
      expect((await collect(store.get("f/old"))).toString()).toBe("previous");
      expect(await code(() => store.put("f/new", cutOff(randomBytes(1000), 100)))).toBe("blob.write_failed");
      expect(await store.stat("f/new")).toBeUndefined();
      expect(await code(() => store.put("f/bad", ["text"] as unknown as AsyncIterable<Uint8Array>))).toBe(
        "blob.invalid_data",
      );
    });

    it("streams a 20 MiB put in, and ranges across its parts out", async () => {
      const data = randomBytes(20 * MiB + 12345);
      const info = await store.put("big/blob", inChunks(data, 1_300_000));
      expect(info).toEqual({ key: "big/blob", size: data.length, sha256: sha256(data) });
      expect(await store.stat("big/blob")).toEqual(info);
      const hash = createHash("sha256");
      let size = 0;
      for await (const chunk of store.get("big/blob")) {
        hash.update(chunk);
        size += chunk.length;
      }
      expect(size).toBe(data.length);
      expect(hash.digest("hex")).toBe(info.sha256);
      const start = 8 * MiB - 100;
      const across = await collect(store.get("big/blob", { start, end: start + 199 }));
      expect(across.equals(data.subarray(start, start + 200))).toBe(true);
      const tail = await collect(store.get("big/blob", { start: data.length - 5, end: data.length * 2 }));
      expect(tail.equals(data.subarray(data.length - 5))).toBe(true);
    }, 20_000);

    describe("a caller smuggles a path in a key or an upload id", () => {
      const badKeys = [
        "../escape",
        "a/../../b",
        "/etc/passwd",
        "a//b",
        "a/",
        ".hidden",
        "a/.tmp-x",
        "a b",
        "é",
        "",
      ];
      it.each(badKeys)("key %j → blob.invalid_key", async (key) => {
        expect(await code(() => store.put(key, Buffer.from("x")))).toBe("blob.invalid_key");
        expect(await code(() => collect(store.get(key)))).toBe("blob.invalid_key");
        expect(await code(() => store.stat(key))).toBe("blob.invalid_key");
        expect(await code(() => store.delete(key))).toBe("blob.invalid_key");
      });
      it.each(["a/b", "..", ".uploads", "x y", "", "../up"])(
        "upload id %j → blob.invalid_key",
        async (id) => {
          expect(await code(() => store.uploads.begin(id))).toBe("blob.invalid_key");
          expect(await code(() => store.uploads.append(id, 0, Buffer.from("x")))).toBe("blob.invalid_key");
          expect(await code(() => store.uploads.length(id))).toBe("blob.invalid_key");
          expect(await code(() => store.uploads.complete(id, "k"))).toBe("blob.invalid_key");
          expect(await code(() => store.uploads.abort(id))).toBe("blob.invalid_key");
        },
      );
      it("complete to a bad key → blob.invalid_key, and the upload stays", async () => {
        await store.uploads.begin("u1");
        await store.uploads.append("u1", 0, Buffer.from("abc"));
        expect(await code(() => store.uploads.complete("u1", "../x"))).toBe("blob.invalid_key");
        expect(await store.uploads.length("u1")).toBe(3);
      });
    });

    describe("uploads", () => {
      it("begin, append in pieces across parts, length, complete", async () => {
        const data = randomBytes(19 * MiB + 3);
        const cuts = [0, 3 * MiB, 10 * MiB + 1, 10 * MiB + 2, 18 * MiB, data.length];
        await store.uploads.begin("backup1");
        expect(await store.uploads.length("backup1")).toBe(0);
        for (let i = 0; i + 1 < cuts.length; i++) {
          const [from, to] = [cuts[i]!, cuts[i + 1]!];
          expect(
            await store.uploads.append("backup1", from, inChunks(data.subarray(from, to), 1 * MiB + 7)),
          ).toBe(to);
          expect(await store.uploads.length("backup1")).toBe(to);
        }
        await store.uploads.begin("backup1"); // idempotent: keeps the bytes
        expect(await store.uploads.length("backup1")).toBe(data.length);
        const info = await store.uploads.complete("backup1", "backups/dev_1/full");
        expect(info).toEqual({ key: "backups/dev_1/full", size: data.length, sha256: sha256(data) });
        expect(await store.stat("backups/dev_1/full")).toEqual(info);
        expect((await collect(store.get("backups/dev_1/full"))).equals(data)).toBe(true);
        expect(await store.uploads.length("backup1")).toBeUndefined();
        expect(await code(() => store.uploads.complete("backup1", "again"))).toBe("blob.upload_not_found");
      }, 20_000);

      it("small and empty uploads; an empty append; complete replaces a blob", async () => {
        await store.put("small", Buffer.from("old"));
        await store.uploads.begin("s");
        expect(await store.uploads.append("s", 0, Buffer.from("hello "))).toBe(6);
        expect(await store.uploads.append("s", 6, new Uint8Array(0))).toBe(6);
        expect(await store.uploads.append("s", 6, inChunks(Buffer.from("world"), 2))).toBe(11);
        expect(await store.uploads.complete("s", "small")).toEqual({
          key: "small",
          size: 11,
          sha256: sha256(Buffer.from("hello world")),
        });
        expect((await collect(store.get("small"))).toString()).toBe("hello world");

        await store.uploads.begin("e");
        expect(await store.uploads.complete("e", "e/empty")).toEqual({
          key: "e/empty",
          size: 0,
          sha256: sha256(new Uint8Array(0)),
        });
        expect((await collect(store.get("e/empty"))).length).toBe(0);
      });

      it("an append at the wrong offset → blob.offset_mismatch (409) with the length", async () => {
        await store.uploads.begin("o");
        await store.uploads.append("o", 0, Buffer.from("12345"));
        for (const offset of [0, 4, 6, 1e9, -1, 2.5]) {
          const e = await failure(() => store.uploads.append("o", offset, Buffer.from("x")));
          expect(e?.code, String(offset)).toBe("blob.offset_mismatch");
          expect(e?.status).toBe(409);
          expect(e?.details).toEqual({ length: 5 });
        }
        expect(await store.uploads.length("o")).toBe(5);
        // Two appends racing at one offset: one wins, the other is told the new length.
        const results = await Promise.allSettled([
          store.uploads.append("o", 5, Buffer.from("a")),
          store.uploads.append("o", 5, Buffer.from("b")),
        ]);
        expect(results.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
        const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
        expect(isHandsafeError(lost.reason, "blob.offset_mismatch")).toBe(true);
        expect(await store.uploads.length("o")).toBe(6);
      });

      it("unknown uploads: append and complete → blob.upload_not_found (404), length undefined, abort a no-op", async () => {
        const e = await failure(() => store.uploads.append("nope", 0, Buffer.from("x")));
        expect([e?.code, e?.status]).toEqual(["blob.upload_not_found", 404]);
        const c = await failure(() => store.uploads.complete("nope", "k"));
        expect([c?.code, c?.status]).toEqual(["blob.upload_not_found", 404]);
        expect(await store.uploads.length("nope")).toBeUndefined();
        await store.uploads.abort("nope");
        expect(await store.stat("k")).toBeUndefined();
      });

      it("resumes after an append whose source fails midway", async () => {
        const data = randomBytes(14 * MiB + 5);
        await store.uploads.begin("cut");
        await store.uploads.append("cut", 0, data.subarray(0, 1000));
        const sent = 11 * MiB + 17; // past one 8 MiB part
        const e = await failure(() =>
          store.uploads.append("cut", 1000, cutOff(data.subarray(1000, sent), 1 * MiB)),
        );
        expect(e?.code).toBe("blob.write_failed");
        const kept = await store.uploads.length("cut");
        // Kept: every byte received, or back to a consistent point — never more than was sent.
        expect(kept).toBeDefined();
        expect(kept!).toBeGreaterThanOrEqual(1000);
        expect(kept!).toBeLessThanOrEqual(sent);
        if (options.keepsBytesOfFailedAppend) expect(kept).toBe(sent);
        expect(e?.details).toEqual({ length: kept });
        expect(await store.uploads.append("cut", kept!, inChunks(data.subarray(kept!), 3 * MiB))).toBe(
          data.length,
        );
        const info = await store.uploads.complete("cut", "resumed");
        expect(info).toEqual({ key: "resumed", size: data.length, sha256: sha256(data) });
        expect((await collect(store.get("resumed"))).equals(data)).toBe(true);
      }, 20_000);

      it("a fresh store object (a restart, another node) continues and completes an upload", async () => {
        const data = randomBytes(9 * MiB + 11);
        await store.uploads.begin("restart");
        await store.uploads.append("restart", 0, inChunks(data.subarray(0, 8 * MiB + 5), MiB));
        const after = reopen();
        expect(await after.uploads.length("restart")).toBe(8 * MiB + 5);
        await after.uploads.begin("restart");
        expect(await after.uploads.append("restart", 8 * MiB + 5, data.subarray(8 * MiB + 5))).toBe(
          data.length,
        );
        // The first store object's view is stale: the offset check still holds.
        expect(await code(() => store.uploads.append("restart", 8 * MiB + 5, Buffer.from("x")))).toBe(
          "blob.offset_mismatch",
        );
        const info = await after.uploads.complete("restart", "restarted/blob");
        expect(info).toEqual({ key: "restarted/blob", size: data.length, sha256: sha256(data) });
        expect(await store.stat("restarted/blob")).toEqual(info);
        expect((await collect(store.get("restarted/blob"))).equals(data)).toBe(true);
      }, 20_000);

      it("abort drops the upload and its bytes", async () => {
        await store.uploads.begin("ab");
        await store.uploads.append("ab", 0, randomBytes(9 * MiB));
        await store.uploads.abort("ab");
        expect(await store.uploads.length("ab")).toBeUndefined();
        expect(await code(() => store.uploads.append("ab", 9 * MiB, Buffer.from("x")))).toBe(
          "blob.upload_not_found",
        );
        expect(await code(() => store.uploads.complete("ab", "k"))).toBe("blob.upload_not_found");
        await store.uploads.abort("ab");
        // The id can start over.
        await store.uploads.begin("ab");
        expect(await store.uploads.length("ab")).toBe(0);
        await store.uploads.append("ab", 0, Buffer.from("fresh"));
        expect((await store.uploads.complete("ab", "k")).size).toBe(5);
        expect((await collect(store.get("k"))).toString()).toBe("fresh");
      }, 20_000);

      it("uploads are invisible as blobs", async () => {
        await store.uploads.begin("hidden");
        await store.uploads.append("hidden", 0, Buffer.from("x"));
        expect(await store.stat("hidden")).toBeUndefined();
        expect(await code(() => collect(store.get("hidden")))).toBe("blob.not_found");
      });
    });
  });
}
