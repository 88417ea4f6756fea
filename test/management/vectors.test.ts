/** RFC 9421 Appendix B.2.5 and RFC 9530: our signature base, serialisation and MAC byte for byte. */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { utf8 } from "../../src/core/codec/bytes.ts";
import { hmacSha256 } from "../../src/core/crypto/hash.ts";
import { contentDigest, signatureBase } from "../../src/management/signature.ts";
import {
  base64Encode,
  type Parameters,
  parseDictionary,
  serializeInnerList,
} from "../../src/management/structured-fields.ts";

const vectors = JSON.parse(readFileSync(new URL("./vectors/rfc9421.json", import.meta.url), "utf8")) as {
  source: string;
  hmacSha256: Array<{
    name: string;
    label: string;
    sharedSecretBase64: string;
    request: {
      method: string;
      scheme: string;
      authority: string;
      path: string;
      query: string;
      headers: Record<string, string>;
    };
    coveredComponents: string[];
    parameters: Parameters;
    signatureBase: string;
    signatureInput: string;
    signature: string;
  }>;
  contentDigest: Array<{ name: string; body: string; contentDigest: string }>;
};

describe("RFC 9421 vectors", () => {
  it("names its source", () => expect(vectors.source).toMatch(/RFC 9421/));

  for (const v of vectors.hmacSha256) {
    it(`${v.name}: signature base, Signature-Input and Signature match exactly`, () => {
      const { base, signatureParams } = signatureBase(v.request, v.coveredComponents, v.parameters);
      expect(base).toBe(v.signatureBase);
      expect(`${v.label}=${signatureParams}`).toBe(v.signatureInput);
      const key = new Uint8Array(Buffer.from(v.sharedSecretBase64, "base64"));
      const mac = hmacSha256(key, utf8(base));
      expect(`${v.label}=:${base64Encode(mac)}:`).toBe(v.signature);
    });

    it(`${v.name}: the published headers parse and re-serialise to themselves`, () => {
      const input = parseDictionary(v.signatureInput).get(v.label);
      expect(input?.kind).toBe("inner");
      if (input?.kind !== "inner") return;
      expect(`${v.label}=${serializeInnerList(input.list)}`).toBe(v.signatureInput);
      const sig = parseDictionary(v.signature).get(v.label);
      expect(
        sig?.kind === "item" && sig.item.value instanceof Uint8Array && base64Encode(sig.item.value),
      ).toBe(v.signature.slice(v.label.length + 2, -1));
    });
  }

  for (const v of vectors.contentDigest)
    it(v.name, () => expect(contentDigest(utf8(v.body))).toBe(v.contentDigest));
});
