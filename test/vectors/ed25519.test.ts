import { describe, expect, it } from "vitest";
import { fromHex, toHex, utf8 } from "../../src/core/codec/bytes.ts";
import { backend as nodeBackend } from "../../src/core/crypto/backend/node.ts";
import { backend as webBackend } from "../../src/core/crypto/backend/web.ts";
import { generateSigningKey, sign, signingPublicKey, verify } from "../../src/core/crypto/ed25519.ts";
import { sha512 } from "../../src/core/crypto/hash.ts";
import vectors from "./rfc8032-ed25519.json" with { type: "json" };

describe("RFC 8032 §7.1 Ed25519 through the public API", () => {
  for (const v of vectors.cases) {
    it(v.name, () => {
      const seed = fromHex(v.secretKey);
      const message = fromHex(v.message);
      expect(toHex(signingPublicKey(seed))).toBe(v.publicKey);
      expect(toHex(sign(seed, message))).toBe(v.signature);
      expect(verify(fromHex(v.publicKey), message, fromHex(v.signature))).toBe(true);
    });
  }

  it('TEST SHA(abc) signs SHA-512("abc")', () => {
    expect(toHex(sha512(utf8("abc")))).toBe(vectors.cases[4]!.message);
  });
});

for (const b of [nodeBackend, webBackend]) {
  describe(`RFC 8032 §7.1 Ed25519 on the ${b.name} backend`, () => {
    for (const v of vectors.cases) {
      it(v.name, () => {
        const seed = fromHex(v.secretKey);
        const message = fromHex(v.message);
        expect(toHex(b.ed25519PublicKey(seed))).toBe(v.publicKey);
        expect(toHex(b.ed25519Sign(seed, message))).toBe(v.signature);
        expect(b.ed25519Verify(fromHex(v.publicKey), message, fromHex(v.signature))).toBe(true);
      });
    }

    it("a forger's signature is false, never an exception", () => {
      const v = vectors.cases[2]!;
      const pub = fromHex(v.publicKey);
      const msg = fromHex(v.message);
      const sig = fromHex(v.signature);
      const flipped = sig.slice();
      flipped[0]! ^= 1;
      const sPlusL = sig.slice();
      sPlusL[63]! |= 0x80; // s ≥ L: non-canonical scalar
      expect(b.ed25519Verify(pub, msg, flipped)).toBe(false);
      expect(b.ed25519Verify(pub, msg, sPlusL)).toBe(false);
      expect(b.ed25519Verify(pub, utf8("another message"), sig)).toBe(false);
      expect(b.ed25519Verify(new Uint8Array(32).fill(0xff), msg, sig)).toBe(false);
      expect(b.ed25519Verify(pub.subarray(1), msg, sig)).toBe(false);
      expect(b.ed25519Verify(pub, msg, sig.subarray(1))).toBe(false);
      expect(b.ed25519Verify(pub, msg, new Uint8Array(64))).toBe(false);
    });
  });
}

describe("Ed25519 boundaries", () => {
  it("generated keys sign and verify, on both backends alike", () => {
    const { seed, publicKey } = generateSigningKey();
    const message = utf8("handsafe/v1/test");
    const signature = sign(seed, message);
    expect(verify(publicKey, message, signature)).toBe(true);
    expect(webBackend.ed25519Sign(seed, message)).toEqual(nodeBackend.ed25519Sign(seed, message));
  });

  it("keys of the wrong length are crypto.invalid_key; short signatures are false", () => {
    const bad = expect.objectContaining({ code: "crypto.invalid_key" });
    expect(() => sign(new Uint8Array(31), utf8("m"))).toThrow(bad);
    expect(() => signingPublicKey(new Uint8Array(64))).toThrow(bad);
    expect(() => verify(new Uint8Array(33), utf8("m"), new Uint8Array(64))).toThrow(bad);
    expect(verify(new Uint8Array(32), utf8("m"), new Uint8Array(63))).toBe(false);
  });
});
