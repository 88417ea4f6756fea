import { describe, expect, it } from "vitest";
import { isHandsafeError } from "../../src/core/errors.ts";
import {
  encodeGsm7,
  findConcatInfo,
  MAX_TEXT_LENGTH,
  segmentForSmpp,
} from "../../src/platform/notify/sms/text.ts";

describe("SMPP segmentation (3GPP TS 23.038 / 23.040)", () => {
  it("encodes the GSM default alphabet one septet per octet, extension characters escaped", () => {
    expect([...encodeGsm7("@A€{")!]).toEqual([0x00, 0x41, 0x1b, 0x65, 0x1b, 0x28]);
    expect(encodeGsm7("✓")).toBeUndefined();
  });

  it("sends 160 GSM characters as one SMS, 161 as two parts of ≤ 153", () => {
    expect(segmentForSmpp("a".repeat(160), 7)).toMatchObject({ dataCoding: 0, esmClass: 0 });
    expect(segmentForSmpp("a".repeat(160), 7).parts).toHaveLength(1);
    const two = segmentForSmpp("a".repeat(161), 7);
    expect(two.esmClass).toBe(0x40);
    expect(two.parts.map((p) => p.length)).toEqual([6 + 153, 6 + 8]);
    expect([...two.parts[1]!.subarray(0, 6)]).toEqual([0x05, 0x00, 0x03, 7, 2, 2]);
  });

  it("sends 70 UCS-2 characters as one SMS, 71 as two parts of ≤ 67", () => {
    expect(segmentForSmpp("✓".repeat(70), 1).parts).toHaveLength(1);
    const two = segmentForSmpp("✓".repeat(71), 1);
    expect(two.dataCoding).toBe(8);
    expect(two.parts.map((p) => p.length)).toEqual([6 + 134, 6 + 8]);
  });

  it("never cuts an escape pair or a surrogate pair across parts", () => {
    const gsm = segmentForSmpp(`${"a".repeat(152)}€bbbbbbb`, 1); // 161 septets: two parts
    expect(gsm.parts[0]!.length).toBe(6 + 152);
    expect([...gsm.parts[1]!.subarray(6, 9)]).toEqual([0x1b, 0x65, 0x62]);
    const ucs = segmentForSmpp(`${"✓".repeat(66)}😀xxxx`, 1); // 72 UTF-16 units: two parts
    expect(ucs.parts[0]!.length).toBe(6 + 132);
    expect(ucs.parts[1]!.length).toBe(6 + 12);
  });

  it("refuses empty and over-long texts", () => {
    for (const [text, code] of [
      ["", "sms.text_empty"],
      ["a".repeat(MAX_TEXT_LENGTH + 1), "sms.text_too_long"],
    ] as const) {
      try {
        segmentForSmpp(text, 0);
        expect.unreachable();
      } catch (e) {
        expect(isHandsafeError(e, code)).toBe(true);
      }
    }
  });

  it("reads 8-bit and 16-bit concatenation headers, and ignores nonsense", () => {
    expect(findConcatInfo([Uint8Array.of(0x00, 3, 9, 2, 1)])).toEqual({
      reference: 9,
      total: 2,
      sequence: 1,
    });
    expect(findConcatInfo([Uint8Array.of(0x08, 4, 1, 2, 3, 3)])).toEqual({
      reference: 258,
      total: 3,
      sequence: 3,
    });
    expect(findConcatInfo([Uint8Array.of(0x00, 3, 9, 2, 3)])).toBeUndefined();
    expect(findConcatInfo([Uint8Array.of(0x24, 1, 1)])).toBeUndefined();
  });
});
