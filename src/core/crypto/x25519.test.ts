import { describe, expect, it } from "vitest";
import { fromHex, toHex } from "../codec/bytes.ts";
import { backend as nodeBackend } from "./backend/node.ts";
import { backend as webBackend } from "./backend/web.ts";
import { generateX25519, x25519, x25519PublicKey } from "./x25519.ts";

// RFC 7748 §5.2 (the two single-step vectors) and §6.1 (Alice's and Bob's keys). The second u is
// also given with bit 255 cleared (…a413, the form used by the RFC's Python reference): X25519
// must ignore that bit, so both forms give the same output.
const RFC7748_5_2 = [
  {
    scalar: "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
    u: "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
    out: "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
  },
  {
    scalar: "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
    u: "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
    out: "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
  },
  {
    scalar: "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
    u: "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a413",
    out: "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
  },
];

for (const b of [nodeBackend, webBackend]) {
  describe(`X25519 on the ${b.name} backend`, () => {
    it("RFC 7748 §5.2 vectors, bit 255 of u ignored", () => {
      for (const v of RFC7748_5_2) expect(toHex(b.x25519(fromHex(v.scalar), fromHex(v.u)))).toBe(v.out);
    });

    it("x25519KeyPair: RFC 7748 §6.1's public keys and shared secret from one import each", () => {
      const alice = b.x25519KeyPair(
        fromHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
      );
      const bob = b.x25519KeyPair(
        fromHex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
      );
      expect(toHex(alice.publicKey)).toBe("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
      expect(toHex(bob.publicKey)).toBe("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
      const shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
      expect(toHex(alice.times(bob.publicKey))).toBe(shared);
      expect(toHex(bob.times(alice.publicKey))).toBe(shared);
      expect(() => alice.times(new Uint8Array(32))).toThrow(
        expect.objectContaining({ code: "crypto.invalid_point" }),
      );
    });

    it("an attacker's all-zero or low-order u is crypto.invalid_point, never a zero secret", () => {
      const scalar = b.randomBytes(32);
      const p = "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"; // u = p ≡ 0
      for (const u of ["00".repeat(32), `01${"00".repeat(31)}`, p])
        expect(() => b.x25519(scalar, fromHex(u))).toThrow(
          expect.objectContaining({ code: "crypto.invalid_point" }),
        );
    });

    it("agrees with the other backend on random keys", () => {
      const a = b.randomBytes(32);
      const c = b.randomBytes(32);
      expect(nodeBackend.x25519PublicKey(a)).toEqual(webBackend.x25519PublicKey(a));
      expect(b.x25519(a, b.x25519PublicKey(c))).toEqual(b.x25519(c, b.x25519PublicKey(a)));
    });
  });
}

describe("X25519 public API", () => {
  it("two key pairs share a secret", () => {
    const alice = generateX25519();
    const bob = generateX25519();
    expect(x25519PublicKey(alice.privateKey)).toEqual(alice.publicKey);
    expect(toHex(x25519(alice.privateKey, bob.publicKey))).toBe(
      toHex(x25519(bob.privateKey, alice.publicKey)),
    );
  });

  it("wrong lengths are crypto.invalid_key", () => {
    const bad = expect.objectContaining({ code: "crypto.invalid_key" });
    expect(() => x25519(new Uint8Array(31), new Uint8Array(32))).toThrow(bad);
    expect(() => x25519(new Uint8Array(32), new Uint8Array(33))).toThrow(bad);
    expect(() => x25519PublicKey(new Uint8Array(0))).toThrow(bad);
  });
});
