/** Update content: encrypted once, as a STREAM of chunks; the content key wrapped per device. */
import { describe, expect, it } from "vitest";
import { concatBytes } from "../../src/core/codec/bytes.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import type { HandsafeError } from "../../src/core/errors.ts";
import {
  CHUNK_SIZE,
  ContentDecryptor,
  decryptContent,
  encryptContent,
  encryptContentToBytes,
  encryptedLength,
  generateContentKey,
  unwrapContentKey,
  wrapContentKey,
} from "../../src/updates/content.ts";

const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return undefined;
  } catch (e) {
    return (e as HandsafeError).code;
  }
};

describe("package content", () => {
  const key = generateContentKey();

  it.each([0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 17])(
    "round-trips %d bytes",
    async (n) => {
      const plain = randomBytes(n);
      const sealed = await encryptContentToBytes(key, plain);
      expect(sealed.length).toBe(encryptedLength(n));
      expect(decryptContent(key, sealed)).toEqual(plain);
    },
  );

  it("decrypts from arbitrary pieces, as a download arrives", async () => {
    const plain = randomBytes(5 * CHUNK_SIZE + 123);
    const sealed = await encryptContentToBytes(key, plain);
    const d = new ContentDecryptor(key);
    const out: Uint8Array[] = [];
    for (let i = 0; i < sealed.length; i += 7777) out.push(...d.update(sealed.subarray(i, i + 7777)));
    out.push(d.finish());
    expect(concatBytes(...out)).toEqual(plain);
  });

  it("encrypts a stream whose pieces do not align with chunks", async () => {
    const plain = randomBytes(2 * CHUNK_SIZE + 5);
    const pieces = [plain.subarray(0, 1000), plain.subarray(1000, 100_000), plain.subarray(100_000)];
    const parts: Uint8Array[] = [];
    for await (const p of encryptContent(key, pieces, plain.length)) parts.push(p);
    expect(decryptContent(key, concatBytes(...parts))).toEqual(plain);
  });

  describe("an attacker on the download path", () => {
    it("a flipped byte, a truncated or extended package, a wrong key: each refused", async () => {
      const plain = randomBytes(3 * CHUNK_SIZE);
      const sealed = await encryptContentToBytes(key, plain);
      const flipped = sealed.slice();
      flipped[CHUNK_SIZE + 100]! ^= 1;
      expect(codeOf(() => decryptContent(key, flipped))).toBe("updates.content_tampered");
      expect(codeOf(() => decryptContent(key, sealed.subarray(0, sealed.length - 1)))).toBe(
        "updates.content_truncated",
      );
      expect(codeOf(() => decryptContent(key, sealed.subarray(0, 18 + CHUNK_SIZE + 16)))).toBe(
        "updates.content_truncated",
      );
      expect(codeOf(() => decryptContent(key, concatBytes(sealed, new Uint8Array(1))))).toBe(
        "updates.content_truncated",
      );
      expect(codeOf(() => decryptContent(generateContentKey(), sealed))).toBe("updates.content_tampered");
    });

    it("chunks swapped or the header's length changed are refused", async () => {
      const sealed = await encryptContentToBytes(key, randomBytes(3 * CHUNK_SIZE));
      const c = CHUNK_SIZE + 16;
      const swapped = concatBytes(
        sealed.subarray(0, 18),
        sealed.subarray(18 + c, 18 + 2 * c),
        sealed.subarray(18, 18 + c),
        sealed.subarray(18 + 2 * c),
      );
      expect(codeOf(() => decryptContent(key, swapped))).toBe("updates.content_tampered");
      const header = sealed.slice();
      header[17]! ^= 1;
      expect(codeOf(() => decryptContent(key, header))).toMatch(/^updates\.content_(tampered|truncated)$/);
    });
  });

  describe("the content key wrapped per device", () => {
    const sessionKey = randomBytes(32);
    const ids = { deviceId: "dev_a", packageId: "pkg_1" };

    it("opens for the device and package it was wrapped for", () => {
      expect(unwrapContentKey(wrapContentKey(key, sessionKey, ids), sessionKey, ids)).toEqual(key);
    });

    it("a wrap for another device, another package or under another session key does not open", () => {
      const w = wrapContentKey(key, sessionKey, ids);
      expect(codeOf(() => unwrapContentKey(w, sessionKey, { ...ids, deviceId: "dev_b" }))).toBe(
        "updates.content_key_invalid",
      );
      expect(codeOf(() => unwrapContentKey(w, sessionKey, { ...ids, packageId: "pkg_2" }))).toBe(
        "updates.content_key_invalid",
      );
      expect(codeOf(() => unwrapContentKey(w, randomBytes(32), ids))).toBe("updates.content_key_invalid");
      expect(codeOf(() => unwrapContentKey(w.subarray(1), sessionKey, ids))).toBe(
        "updates.content_key_invalid",
      );
    });
  });
});
