import { describe, expect, it } from "vitest";
import { utf8 } from "./bytes.ts";
import { base64Standard, base64Url } from "./base64.ts";

// RFC 4648 §10, padding removed.
const RFC4648 = [
  ["", ""],
  ["f", "Zg"],
  ["fo", "Zm8"],
  ["foo", "Zm9v"],
  ["foob", "Zm9vYg"],
  ["fooba", "Zm9vYmE"],
  ["foobar", "Zm9vYmFy"],
] as const;

describe("unpadded base64", () => {
  it("encodes and decodes the RFC 4648 §10 vectors in both alphabets", () => {
    for (const [plain, encoded] of RFC4648) {
      expect(base64Standard.encode(utf8(plain))).toBe(encoded);
      expect(base64Url.encode(utf8(plain))).toBe(encoded);
      expect(base64Standard.decode(encoded)).toEqual(utf8(plain));
    }
  });

  it("keeps the alphabets apart", () => {
    const bytes = Uint8Array.of(0xfb, 0xff, 0xbf);
    expect(base64Standard.encode(bytes)).toBe("+/+/");
    expect(base64Url.encode(bytes)).toBe("-_-_");
    expect(base64Standard.decode("-_-_")).toBeUndefined();
    expect(base64Url.decode("+/+/")).toBeUndefined();
  });

  it("refuses padding, whitespace, impossible lengths and non-canonical trailing bits", () => {
    // "Zh" and "Zm9" set unused low bits of their last character: "Zg" and "Zm8" are the only encodings.
    for (const bad of ["Zg==", "Zm9v\n", " Zg", "Z", "Zh", "Zm9", "Zm8="]) {
      expect(base64Url.decode(bad), bad).toBeUndefined();
      expect(base64Standard.decode(bad), bad).toBeUndefined();
    }
  });

  it("round-trips every length up to 70 bytes", () => {
    for (let n = 0; n <= 70; n++) {
      const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff);
      expect(base64Url.decode(base64Url.encode(bytes))).toEqual(bytes);
      expect(base64Standard.decode(base64Standard.encode(bytes))).toEqual(bytes);
    }
  });

  it("encodes as Node's own base64 does (less its padding), up to a 64 KiB payload", () => {
    for (const n of [71, 255, 256, 1000, 65_568]) {
      const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 131 + (i >> 8)) & 0xff);
      const node = Buffer.from(bytes);
      expect(base64Standard.encode(bytes)).toBe(node.toString("base64").replace(/=+$/, ""));
      expect(base64Url.encode(bytes)).toBe(node.toString("base64url"));
    }
  });
});
