import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { lengthPrefixed, utf8 } from "../codec/bytes.ts";
import { codeMac, codesEqual, generateNumericCode } from "./otp.ts";

describe("generateNumericCode", () => {
  it("gives exactly `digits` decimal digits, for every allowed length", () => {
    for (let digits = 6; digits <= 20; digits++)
      for (let i = 0; i < 50; i++)
        expect(generateNumericCode(digits)).toMatch(new RegExp(`^[0-9]{${digits}}$`));
  });

  it("refuses fewer than 6 or more than 20 digits with otp.invalid_digits", () => {
    for (const digits of [0, 5, 21, 6.5, Number.NaN])
      expect(() => generateNumericCode(digits)).toThrow(
        expect.objectContaining({ code: "otp.invalid_digits" }),
      );
  });

  // 40 000 codes of 8 digits: each position's digit counts, and the pooled counts, against a uniform
  // distribution. The bound 46.4 is the chi-square quantile for 9 degrees of freedom at p ≈ 5·10⁻⁷, so
  // a correct generator fails about once in 200 000 runs of the 9 checks. byte % 10 without rejection
  // (digits 0-5 at 26/256, 6-9 at 25/256) has a pooled non-centrality of ≈ 117 and is caught nearly always.
  it("is uniform per position and pooled, leading zeros included (chi-square, p = 1e-6)", () => {
    const n = 40_000;
    const digits = 8;
    const counts = Array.from({ length: digits + 1 }, () => new Array<number>(10).fill(0));
    for (let i = 0; i < n; i++) {
      const code = generateNumericCode(digits);
      for (let p = 0; p < digits; p++) {
        const d = code.charCodeAt(p) - 48;
        counts[p]![d]!++;
        counts[digits]![d]!++;
      }
    }
    const chiSquare = (row: number[]) => {
      const total = row.reduce((a, c) => a + c, 0);
      return row.reduce((a, c) => a + (c - total / 10) ** 2 / (total / 10), 0);
    };
    for (const row of counts) expect(chiSquare(row)).toBeLessThan(46.4);
    // Distinct codes: 2 000 draws from 10^8 collide at all with probability ≈ 2 %; allow a few.
    const seen = new Set(Array.from({ length: 2000 }, () => generateNumericCode(8)));
    expect(seen.size).toBeGreaterThan(1990);
  });
});

describe("codeMac: how a server stores a code it sent", () => {
  const key = new Uint8Array(32).fill(7);
  const context = "handsafe/v1/messaging/otp\u0000reg_1";

  it("is HMAC-SHA256(key, lengthPrefixed(context, code)), checked against node:crypto", () => {
    const want = createHmac("sha256", key)
      .update(lengthPrefixed(utf8(context), utf8("12345678")))
      .digest();
    expect(codeMac(key, context, "12345678")).toEqual(new Uint8Array(want));
  });

  describe("an attacker who reuses a stored MAC elsewhere", () => {
    it("another code, context or key gives another MAC", () => {
      const mac = codeMac(key, context, "12345678");
      expect(codesEqual(mac, codeMac(key, context, "12345679"))).toBe(false);
      expect(codesEqual(mac, codeMac(key, "handsafe/v1/messaging/otp\u0000reg_2", "12345678"))).toBe(false);
      expect(codesEqual(mac, codeMac(new Uint8Array(32).fill(8), context, "12345678"))).toBe(false);
      expect(codesEqual(mac, codeMac(key, utf8(context), "12345678"))).toBe(true);
    });
    it("moving a digit between context and code changes the MAC (the parts are framed)", () => {
      expect(codesEqual(codeMac(key, "ctx1", "234567"), codeMac(key, "ctx", "1234567"))).toBe(false);
    });
  });

  it("refuses a short key, a malformed code and an empty context", () => {
    expect(() => codeMac(new Uint8Array(31), context, "123456")).toThrow(
      expect.objectContaining({ code: "crypto.invalid_key" }),
    );
    for (const code of ["12345", "12345a", " 123456", "1".repeat(21), ""])
      expect(() => codeMac(key, context, code)).toThrow(
        expect.objectContaining({ code: "otp.invalid_code" }),
      );
    expect(() => codeMac(key, "", "123456")).toThrow(expect.objectContaining({ code: "otp.invalid_input" }));
  });
});

describe("codesEqual", () => {
  it("compares strings and bytes, any difference or length mismatch is false", () => {
    expect(codesEqual("12345678", "12345678")).toBe(true);
    expect(codesEqual("12345678", "12345679")).toBe(false);
    expect(codesEqual("12345678", "1234567")).toBe(false);
    expect(codesEqual(utf8("123456"), "123456")).toBe(true);
    expect(codesEqual(new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false);
  });
});
