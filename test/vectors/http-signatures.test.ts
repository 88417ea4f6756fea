/**
 * RFC 9421 Appendix B.2.5 (hmac-sha256) and B.2.6 (ed25519) through the core API
 * (src/core/http-signatures): the signature base, Signature-Input and Signature byte for byte, and
 * the Ed25519 signature on both crypto backends (node:crypto and the browser's @noble).
 */
import { describe, expect, it } from "vitest";
import { fromHex, toHex, utf8 } from "../../src/core/codec/bytes.ts";
import { backend as nodeBackend } from "../../src/core/crypto/backend/node.ts";
import { backend as webBackend } from "../../src/core/crypto/backend/web.ts";
import {
  contentDigest,
  ed25519SigningKey,
  ed25519VerificationKey,
  hmacSha256Key,
  parseSignature,
  type SigningKey,
  type SignedRequestView,
  signatureBase,
  signBase,
  type VerificationKey,
  verifyBase,
} from "../../src/core/http-signatures/index.ts";
import {
  base64Encode,
  type Parameters,
  parseDictionary,
  serializeInnerList,
} from "../../src/core/http-signatures/structured-fields.ts";
import vectors from "./rfc9421.json" with { type: "json" };

const view: SignedRequestView = vectors.request;

function keysOf(v: (typeof vectors.signatures)[number]): {
  signing: SigningKey;
  verification: VerificationKey;
} {
  if (v.alg === "hmac-sha256") {
    const key = hmacSha256Key(new Uint8Array(Buffer.from(v.key.sharedSecretBase64!, "base64")));
    return { signing: key, verification: key };
  }
  return {
    signing: ed25519SigningKey(fromHex(v.key.seedHex!)),
    verification: ed25519VerificationKey(fromHex(v.key.publicKeyHex!)),
  };
}

const pemBytes = (pem: string) =>
  new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64"));

describe("RFC 9421 Appendix B.2 through the core API", () => {
  it("names its source", () => expect(vectors.source).toMatch(/RFC 9421/));

  for (const v of vectors.signatures) {
    const parameters = v.parameters as Parameters;
    const published = parseDictionary(v.signature).get(v.label);
    const signatureBytes =
      published?.kind === "item" && published.item.value instanceof Uint8Array
        ? published.item.value
        : new Uint8Array(0);

    it(`${v.name}: signature base and Signature-Input match exactly`, () => {
      const { base, signatureParams } = signatureBase(view, v.coveredComponents, parameters);
      expect(base).toBe(v.signatureBase);
      expect(`${v.label}=${signatureParams}`).toBe(v.signatureInput);
    });

    it(`${v.name}: we sign to the published Signature, and it verifies`, () => {
      const { signing, verification } = keysOf(v);
      expect(`${v.label}=:${base64Encode(signBase(signing, v.signatureBase))}:`).toBe(v.signature);
      expect(verifyBase(verification, v.signatureBase, signatureBytes)).toBe(true);
      expect(verifyBase(verification, `${v.signatureBase} `, signatureBytes)).toBe(false);
    });

    it(`${v.name}: the published headers parse and re-serialise to themselves`, () => {
      const input = parseDictionary(v.signatureInput).get(v.label);
      expect(input?.kind).toBe("inner");
      if (input?.kind !== "inner") return;
      expect(`${v.label}=${serializeInnerList(input.list)}`).toBe(v.signatureInput);
      expect(base64Encode(signatureBytes)).toBe(v.signature.slice(v.label.length + 2, -1));
    });

    it(`${v.name}: our strict profiles refuse it (no nonce, alg or tag: replayable by design of the example)`, () => {
      const profile = {
        label: v.label,
        alg: v.alg as "hmac-sha256" | "ed25519",
        tag: "t",
        requiredComponents: [],
        windowSeconds: 300,
        nonceBytes: 16,
      };
      expect(() =>
        parseSignature(profile, { "signature-input": v.signatureInput, signature: v.signature }),
      ).toThrow(expect.objectContaining({ code: "signature.malformed" }));
    });
  }

  const b26 = vectors.signatures.find((v) => v.alg === "ed25519")!;

  it("B.1.4: the raw seed and public key are the contents of the published PEMs (RFC 8410)", () => {
    expect(toHex(pemBytes(b26.key.privateKeyPem!).subarray(16))).toBe(b26.key.seedHex);
    expect(toHex(pemBytes(b26.key.publicKeyPem!).subarray(12))).toBe(b26.key.publicKeyHex);
  });

  for (const b of [nodeBackend, webBackend])
    it(`B.2.6 on the ${b.name} backend: same public key, same signature`, () => {
      const seed = fromHex(b26.key.seedHex!);
      expect(toHex(b.ed25519PublicKey(seed))).toBe(b26.key.publicKeyHex);
      const sig = b.ed25519Sign(seed, utf8(b26.signatureBase));
      expect(`${b26.label}=:${base64Encode(sig)}:`).toBe(b26.signature);
      expect(b.ed25519Verify(fromHex(b26.key.publicKeyHex!), utf8(b26.signatureBase), sig)).toBe(true);
    });

  for (const v of vectors.contentDigest)
    it(v.name, () => expect(contentDigest(utf8(v.body))).toBe(v.contentDigest));
});
