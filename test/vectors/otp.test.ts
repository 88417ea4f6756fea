import { describe, expect, it } from "vitest";
import { fromHex, toHex, utf8 } from "../../src/core/codec/bytes.ts";
import {
  dynamicTruncate,
  hotp,
  hotpDigest,
  type OtpHash,
  totp,
  totpCounter,
  verifyTotp,
} from "../../src/core/crypto/otp.ts";
import hotpVectors from "./hotp-rfc4226.json" with { type: "json" };
import totpVectors from "./totp-rfc6238.json" with { type: "json" };

const hotpSecret = utf8(hotpVectors.secretAscii);

describe("RFC 4226 Appendix D: HOTP with HMAC-SHA-1", () => {
  it("the secret is the ASCII string of the appendix", () => {
    expect(toHex(hotpSecret)).toBe(hotpVectors.secretHex);
  });

  for (const v of hotpVectors.cases)
    it(`count ${v.count}: HMAC, truncated value and ${hotpVectors.digits}-digit HOTP`, () => {
      const hs = hotpDigest(hotpSecret, v.count);
      expect(toHex(hs)).toBe(v.hmacSha1);
      const snum = dynamicTruncate(hs);
      expect(snum.toString(16)).toBe(v.truncatedHex);
      expect(snum).toBe(v.truncatedDecimal);
      expect(hotp(hotpSecret, v.count, { digits: hotpVectors.digits })).toBe(v.hotp);
      expect(hotp(hotpSecret, BigInt(v.count))).toBe(v.hotp); // 6 digits is the default
    });

  it("7 and 8 digits are the same truncated value mod 10^7 and 10^8 (§5.3)", () => {
    for (const v of hotpVectors.cases)
      for (const digits of [7, 8])
        expect(hotp(hotpSecret, v.count, { digits })).toBe(
          String(v.truncatedDecimal % 10 ** digits).padStart(digits, "0"),
        );
  });
});

describe("RFC 6238 Appendix B: TOTP with HMAC-SHA-1, -256 and -512 (erratum 2866 seeds)", () => {
  const seeds = totpVectors.seedsAscii as Record<OtpHash, string>;
  const options = { period: totpVectors.period, t0: totpVectors.t0, digits: totpVectors.digits };

  it("erratum 2866: one seed per hash, as long as its output", () => {
    expect([seeds.sha1, seeds.sha256, seeds.sha512].map((s) => utf8(s).length)).toEqual([20, 32, 64]);
  });

  for (const v of totpVectors.cases)
    it(`${v.utc} (${v.time} s) ${v.mode}: T = ${v.stepHex}, TOTP ${v.totp}`, () => {
      const hash = v.mode as OtpHash;
      const key = utf8(seeds[hash]);
      const step = totpCounter(v.time, options);
      expect(step.toString(16).toUpperCase().padStart(16, "0")).toBe(v.stepHex);
      expect(totp(key, v.time, { ...options, hash })).toBe(v.totp);
      // The same code is HOTP at counter T: TOTP adds only the clock (§4.2).
      expect(hotp(key, step, { digits: totpVectors.digits, hash })).toBe(v.totp);
      expect(verifyTotp(key, v.totp, v.time, { ...options, hash })).toBe(step);
    });

  it("a code is accepted one step late, not two, and the window can be closed", () => {
    const key = utf8(seeds.sha1);
    const v = totpVectors.cases.find((c) => c.time === 1111111109 && c.mode === "sha1")!;
    expect(verifyTotp(key, v.totp, v.time + 30, options)).toBe(totpCounter(v.time, options));
    expect(verifyTotp(key, v.totp, v.time + 30, { ...options, window: 0 })).toBeNull();
    expect(verifyTotp(key, v.totp, v.time + 60, options)).toBeNull();
    expect(verifyTotp(key, "00000000", v.time, options)).toBeNull();
  });
});

describe("HOTP / TOTP boundaries", () => {
  const key = utf8(hotpVectors.secretAscii);
  it("5 or 9 digits are otp.invalid_digits", () => {
    for (const digits of [5, 9, 6.5])
      expect(() => hotp(key, 0, { digits })).toThrow(expect.objectContaining({ code: "otp.invalid_digits" }));
  });
  it("a secret under 128 bits is crypto.invalid_key (RFC 4226 R6)", () => {
    expect(() => hotp(new Uint8Array(15), 0)).toThrow(
      expect.objectContaining({ code: "crypto.invalid_key" }),
    );
  });
  it("counters outside 0..2^64-1 are otp.invalid_counter; 2^64-1 itself works", () => {
    for (const c of [-1, 1.5, -1n, 1n << 64n])
      expect(() => hotp(key, c)).toThrow(expect.objectContaining({ code: "otp.invalid_counter" }));
    expect(hotp(key, (1n << 64n) - 1n)).toMatch(/^\d{6}$/);
  });
  it("a time before T0 or a step under 1 s is refused", () => {
    expect(() => totp(key, 10, { t0: 20 })).toThrow(expect.objectContaining({ code: "otp.invalid_time" }));
    expect(() => totp(key, 10, { period: 0 })).toThrow(
      expect.objectContaining({ code: "otp.invalid_period" }),
    );
  });
  it("dynamic truncation refuses a digest shorter than SHA-1's", () => {
    expect(() => dynamicTruncate(fromHex("00".repeat(19)))).toThrow(
      expect.objectContaining({ code: "otp.invalid_input" }),
    );
  });
});
