import { describe, expect, it } from "vitest";
import { fromHex, toHex, utf8 } from "../../src/core/codec/bytes.ts";
import { backend as nodeBackend } from "../../src/core/crypto/backend/node.ts";
import { backend as webBackend } from "../../src/core/crypto/backend/web.ts";
import { hkdfExpand, hkdfExtract, hkdfSha256 } from "../../src/core/crypto/hkdf.ts";
import vectors from "./rfc5869.json" with { type: "json" };

describe("RFC 5869 Appendix A (SHA-256 cases) through hkdfSha256", () => {
  for (const v of vectors.cases) {
    it(v.name, () => {
      const ikm = fromHex(v.ikm);
      const salt = fromHex(v.salt);
      const info = fromHex(v.info);
      expect(toHex(hkdfExtract(ikm, salt))).toBe(v.prk);
      expect(toHex(hkdfExpand(fromHex(v.prk), info, v.length))).toBe(v.okm);
      expect(toHex(hkdfSha256(ikm, salt, info, v.length))).toBe(v.okm);
    });
  }

  // HKDF-Extract is one HMAC-SHA256 (RFC 5869 §2.2), so the same vectors check both backends' HMAC.
  for (const b of [nodeBackend, webBackend]) {
    it(`PRK = HMAC-SHA256(salt, IKM) on the ${b.name} backend`, () => {
      for (const v of vectors.cases) {
        const salt = v.salt === "" ? new Uint8Array(32) : fromHex(v.salt);
        expect(toHex(b.hmacSha256(salt, fromHex(v.ikm)))).toBe(v.prk);
      }
    });
  }
});

describe("HKDF boundaries", () => {
  it("a string info is its UTF-8 bytes", () => {
    const ikm = fromHex(vectors.cases[0]!.ikm);
    expect(hkdfSha256(ikm, undefined, "handsafe/v1/test", 32)).toEqual(
      hkdfSha256(ikm, new Uint8Array(0), utf8("handsafe/v1/test"), 32),
    );
  });

  it("refuses lengths outside 1..255·32 with crypto.invalid_length", () => {
    for (const length of [0, -1, 255 * 32 + 1, 1.5])
      expect(() => hkdfSha256(new Uint8Array(32), undefined, "x", length)).toThrow(
        expect.objectContaining({ code: "crypto.invalid_length" }),
      );
    expect(hkdfSha256(new Uint8Array(32), undefined, "x", 255 * 32)).toHaveLength(255 * 32);
  });
});
