import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  createLaneHash,
  hashLaneStats,
  hashWorkerWanted,
  LANE_RING_BYTES,
} from "../../src/core/crypto/backend/hash-lanes.ts";
import { createStreamHash } from "../../src/core/crypto/hash.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** Feeds `data` in pieces of the given sizes (cycled), awaiting each update that asks to wait. */
async function laneDigest(
  algorithm: "sha256" | "sha512",
  data: Uint8Array,
  pieces: number[],
): Promise<string> {
  const h = createLaneHash(algorithm);
  for (let at = 0, i = 0; at < data.length; i++) {
    const n = Math.min(pieces[i % pieces.length]!, data.length - at);
    const wait = h.update(data.subarray(at, at + n));
    if (wait) await wait;
    at += n;
  }
  return Buffer.from(await h.digest()).toString("hex");
}

const reference = (algorithm: string, data: Uint8Array) => createHash(algorithm).update(data).digest("hex");

// vitest.config.ts sets HANDSAFE_HASH_WORKER=on: the worker serves here whatever the cores.
describe("whether the hash worker is used", () => {
  it("follows HANDSAFE_HASH_WORKER, and unset, wants three cores or more", () => {
    expect(hashWorkerWanted("on", 1)).toBe(true);
    expect(hashWorkerWanted("off", 64)).toBe(false);
    expect(hashWorkerWanted(undefined, 2)).toBe(false);
    expect(hashWorkerWanted(undefined, 3)).toBe(true);
    expect(hashWorkerWanted("", 8)).toBe(true);
  });
});

describe("hash lanes (worker-thread SHA-256 / SHA-512)", () => {
  it("gives node:crypto's digest for every length around the inline limit and the ring size", async () => {
    const ring = LANE_RING_BYTES;
    for (const size of [
      0,
      1,
      256 * KiB - 1,
      256 * KiB,
      256 * KiB + 1,
      MiB,
      ring - 1,
      ring,
      ring + 1,
      2 * ring + 3,
    ]) {
      const data = randomBytes(size);
      for (const algorithm of ["sha256", "sha512"] as const) {
        for (const pieces of [[64 * KiB], [1, 7, 65_537, 3 * KiB], [3 * MiB]])
          expect(await laneDigest(algorithm, data, pieces), `${algorithm} ${size} ${pieces}`).toBe(
            reference(algorithm, data),
          );
      }
    }
  }, 60_000);

  it("copies what it is given: the caller may reuse its buffer as soon as update returns", async () => {
    const data = randomBytes(2 * MiB);
    const h = createLaneHash("sha256");
    const scratch = new Uint8Array(64 * KiB);
    for (let at = 0; at < data.length; at += scratch.length) {
      scratch.set(data.subarray(at, at + scratch.length));
      const wait = h.update(scratch);
      if (wait) await wait;
      scratch.fill(0xa5);
    }
    expect(Buffer.from(await h.digest()).toString("hex")).toBe(reference("sha256", data));
  });

  it("makes a caller that is ahead of the worker wait instead of holding more than its ring", async () => {
    const h = createLaneHash("sha256");
    const data = randomBytes(2 * LANE_RING_BYTES);
    const wait = h.update(data);
    expect(wait).toBeInstanceOf(Promise);
    expect(() => h.update(data)).toThrow(/previous update/);
    await expect(h.digest()).rejects.toThrow(/last update/);
    await wait;
    expect(Buffer.from(await h.digest()).toString("hex")).toBe(reference("sha256", data));
  });

  it("serves more streams at once than it has lanes, each with its own digest", async () => {
    const before = hashLaneStats();
    const inputs = Array.from({ length: 24 }, (_, i) => randomBytes(300 * KiB + i * 4099));
    const got = await Promise.all(inputs.map((d, i) => laneDigest(i % 2 ? "sha512" : "sha256", d, [40_000])));
    expect(got).toEqual(inputs.map((d, i) => reference(i % 2 ? "sha512" : "sha256", d)));
    const after = hashLaneStats();
    // 16 lanes at most; the streams past them were hashed inline, and none was refused.
    expect(after.laned - before.laned).toBeGreaterThanOrEqual(16);
    expect(after.laned - before.laned + after.inline - before.inline).toBe(24);
  });

  it("drops a released stream without disturbing the others, and refuses use after the end", async () => {
    const a = createLaneHash("sha256");
    await a.update(randomBytes(600 * KiB));
    a.release();
    a.release();
    expect(() => a.update(new Uint8Array(1))).toThrow(/after digest\(\) or release\(\)/);
    const data = randomBytes(700 * KiB);
    expect(await laneDigest("sha256", data, [64 * KiB])).toBe(reference("sha256", data));
    const b = createLaneHash("sha256");
    b.update(new Uint8Array(3));
    await b.digest();
    await expect(b.digest()).rejects.toThrow(/twice/);
  });

  it("is what createStreamHash gives on node", async () => {
    const data = randomBytes(MiB + 17);
    const before = hashLaneStats().laned;
    const h = createStreamHash("sha256");
    const wait = h.update(data);
    if (wait) await wait;
    expect(Buffer.from(await h.digest()).toString("hex")).toBe(reference("sha256", data));
    expect(hashLaneStats().laned).toBe(before + 1);
  });

  it("a stream the worker cannot hash fails with a typed error, whenever it is awaited; the others go on", async () => {
    // Past the ring: the error reaches an update that waits for room.
    const waiting = createLaneHash("no-such-hash" as "sha256");
    await expect(waiting.update(randomBytes(LANE_RING_BYTES + MiB))).rejects.toMatchObject({
      code: "internal",
    });
    // Within the ring: the error comes while nothing waits, and is kept for the digest.
    const quiet = createLaneHash("no-such-hash" as "sha256");
    expect(quiet.update(randomBytes(300 * KiB))).toBeUndefined();
    await new Promise((r) => setTimeout(r, 100));
    await expect(quiet.digest()).rejects.toMatchObject({ code: "internal" });
    // The worker dropped those two lanes only: the next stream still goes to it.
    const laned = hashLaneStats().laned;
    const data = randomBytes(MiB);
    expect(await laneDigest("sha256", data, [64 * KiB])).toBe(reference("sha256", data));
    expect(hashLaneStats().laned).toBe(laned + 1);
  });
});
