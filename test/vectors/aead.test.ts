import { describe, expect, it } from "vitest";
import { concatBytes, fromHex, toHex, utf8 } from "../../src/core/codec/bytes.ts";
import {
  aesGcmOpen,
  aesGcmSeal,
  chachaOpen,
  chachaSeal,
  chachaSealDetached,
} from "../../src/core/crypto/aead.ts";
import { backend as nodeBackend } from "../../src/core/crypto/backend/node.ts";
import type { CryptoBackend } from "../../src/core/crypto/backend/types.ts";
import { backend as webBackend } from "../../src/core/crypto/backend/web.ts";
import gcmVectors from "./aes256gcm.json" with { type: "json" };
import chachaVectors from "./rfc8439-chacha.json" with { type: "json" };

type Seal = (key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad?: Uint8Array) => Uint8Array;
type Open = (key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad?: Uint8Array) => Uint8Array;

interface Suite {
  name: string;
  vectors: typeof gcmVectors.cases;
  seal: Seal;
  open: Open;
}

const backends: CryptoBackend[] = [nodeBackend, webBackend];
const suites: Suite[] = [
  {
    name: "AES-256-GCM (GCM spec, public API)",
    vectors: gcmVectors.cases,
    seal: aesGcmSeal,
    open: aesGcmOpen,
  },
  {
    name: "ChaCha20-Poly1305 (RFC 8439, public API)",
    vectors: chachaVectors.cases,
    seal: chachaSeal,
    open: chachaOpen,
  },
  {
    // The STREAM chunks of age (core/age/stream.ts) are sealed in this form.
    name: "ChaCha20-Poly1305 (RFC 8439, public API, detached ciphertext and tag)",
    vectors: chachaVectors.cases,
    seal: (key, nonce, plaintext, aad) => concatBytes(...chachaSealDetached(key, nonce, plaintext, aad)),
    open: chachaOpen,
  },
  {
    name: "ChaCha20-Poly1305 (RFC 8439, node backend, detached ciphertext and tag)",
    vectors: chachaVectors.cases,
    seal: (key, nonce, plaintext, aad) =>
      concatBytes(...nodeBackend.chacha20poly1305SealDetached!(key, nonce, plaintext, aad)),
    open: nodeBackend.chacha20poly1305Open,
  },
  ...backends.flatMap((b): Suite[] => [
    {
      name: `AES-256-GCM (GCM spec, ${b.name} backend)`,
      vectors: gcmVectors.cases,
      seal: b.aes256gcmSeal,
      open: b.aes256gcmOpen,
    },
    {
      name: `ChaCha20-Poly1305 (RFC 8439, ${b.name} backend)`,
      vectors: chachaVectors.cases,
      seal: b.chacha20poly1305Seal,
      open: b.chacha20poly1305Open,
    },
  ]),
];

const decryptFailed = expect.objectContaining({ code: "crypto.decrypt_failed" });

for (const suite of suites) {
  describe(suite.name, () => {
    for (const v of suite.vectors) {
      it(v.name, () => {
        const key = fromHex(v.key);
        const nonce = fromHex(v.nonce);
        const aad = fromHex(v.aad);
        const sealed = suite.seal(key, nonce, fromHex(v.plaintext), aad);
        expect(toHex(sealed)).toBe(v.ciphertext + v.tag);
        expect(toHex(suite.open(key, nonce, sealed, aad))).toBe(v.plaintext);
      });
    }

    describe("an attacker who tampers with the sealed message", () => {
      const v = suite.vectors[suite.vectors.length - 1]!;
      const key = fromHex(v.key);
      const nonce = fromHex(v.nonce);
      const aad = fromHex(v.aad);
      const sealed = fromHex(v.ciphertext + v.tag);

      it("flips a ciphertext bit", () => {
        const t = sealed.slice();
        t[0]! ^= 0x01;
        expect(() => suite.open(key, nonce, t, aad)).toThrow(decryptFailed);
      });
      it("flips a tag bit", () => {
        const t = sealed.slice();
        t[t.length - 1]! ^= 0x80;
        expect(() => suite.open(key, nonce, t, aad)).toThrow(decryptFailed);
      });
      it("changes or drops the associated data", () => {
        expect(() => suite.open(key, nonce, sealed, concatBytes(aad, utf8("!")))).toThrow(decryptFailed);
        expect(() => suite.open(key, nonce, sealed)).toThrow(decryptFailed);
      });
      it("truncates the tag or sends less than a tag", () => {
        expect(() => suite.open(key, nonce, sealed.subarray(0, sealed.length - 4), aad)).toThrow(
          decryptFailed,
        );
        expect(() => suite.open(key, nonce, sealed.subarray(0, 15), aad)).toThrow(decryptFailed);
      });
      it("replays it under another nonce", () => {
        const other = nonce.slice();
        other[11]! ^= 1;
        expect(() => suite.open(key, other, sealed, aad)).toThrow(decryptFailed);
      });
    });
  });
}

describe("AEAD boundaries", () => {
  it("wrong key or nonce lengths are typed errors", () => {
    const ok = new Uint8Array(32);
    for (const [seal, open] of [
      [aesGcmSeal, aesGcmOpen],
      [chachaSeal, chachaOpen],
    ] as const) {
      expect(() => seal(new Uint8Array(16), new Uint8Array(12), ok)).toThrow(
        expect.objectContaining({ code: "crypto.invalid_key" }),
      );
      expect(() => open(ok, new Uint8Array(8), ok)).toThrow(
        expect.objectContaining({ code: "crypto.invalid_nonce" }),
      );
    }
  });

  it("both backends seal identically and open each other's output", () => {
    const key = nodeBackend.randomBytes(32);
    const nonce = nodeBackend.randomBytes(12);
    const plaintext = nodeBackend.randomBytes(5_000);
    const aad = utf8("handsafe/v1/test");
    const a = nodeBackend.chacha20poly1305Seal(key, nonce, plaintext, aad);
    expect(webBackend.chacha20poly1305Seal(key, nonce, plaintext, aad)).toEqual(a);
    expect(webBackend.chacha20poly1305Open(key, nonce, a, aad)).toEqual(plaintext);
    const g = webBackend.aes256gcmSeal(key, nonce, plaintext, aad);
    expect(nodeBackend.aes256gcmOpen(key, nonce, g, aad)).toEqual(plaintext);
  });
});
