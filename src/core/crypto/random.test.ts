import { describe, expect, it } from "vitest";
import { fromBase64url } from "../codec/base64url.ts";
import { backend as nodeBackend } from "./backend/node.ts";
import { backend as webBackend } from "./backend/web.ts";
import { randomBytes, randomToken } from "./random.ts";

describe("randomness", () => {
  it("gives the requested length, as plain Uint8Array, on both backends", () => {
    for (const b of [nodeBackend, webBackend]) {
      for (const n of [0, 1, 32, 65_536, 65_537]) {
        const out = b.randomBytes(n);
        expect(out).toHaveLength(n);
        expect(Object.getPrototypeOf(out)).toBe(Uint8Array.prototype);
      }
      expect(b.randomBytes(32)).not.toEqual(b.randomBytes(32));
    }
  });

  it("never hands out the same pooled bytes twice, across pool refills", () => {
    // 4 KiB pool: 2,000 draws of 16 bytes refill it several times; any repeat is a reuse.
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) seen.add(Buffer.from(nodeBackend.randomBytes(16)).toString("hex"));
    expect(seen.size).toBe(2000);
    // Odd sizes that straddle a refill still come out full length and not all zero.
    for (let i = 0; i < 300; i++) {
      const out = nodeBackend.randomBytes(1 + (i % 250));
      expect(out).toHaveLength(1 + (i % 250));
      if (out.length >= 16) expect(out.some((b) => b !== 0)).toBe(true);
    }
  });

  it("randomToken is base64url of `bytes` random bytes", () => {
    expect(fromBase64url(randomToken())).toHaveLength(32);
    expect(fromBase64url(randomToken(12))).toHaveLength(12);
    expect(randomToken()).not.toBe(randomToken());
  });

  it("refuses impossible lengths with crypto.invalid_length", () => {
    for (const n of [-1, 1.5, Number.NaN])
      expect(() => randomBytes(n)).toThrow(expect.objectContaining({ code: "crypto.invalid_length" }));
  });
});
