import { describe, expect, it } from "vitest";
import { canonicalJson } from "../../src/core/codec/canonical-json.ts";

describe("canonical JSON", () => {
  it("sorts keys by UTF-16 code unit (RFC 8785 §3.2.3's example)", () => {
    const keys = ["\u20ac", "\r", "\ufb33", "1", "\ud83d\ude00", "\u0080", "\u00f6"];
    const doc = Object.fromEntries(keys.map((k, i) => [k, i]));
    expect(canonicalJson(doc)).toBe(
      `{"\\r":1,"1":3,"\u0080":5,"\u00f6":6,"\u20ac":0,"\ud83d\ude00":4,"\ufb33":2}`,
    );
  });

  it("writes no whitespace, drops undefined members, nests, and keeps array order", () => {
    expect(canonicalJson({ b: [3, { z: null, a: true }], a: "x", c: undefined, d: false })).toBe(
      '{"a":"x","b":[3,{"a":true,"z":null}],"d":false}',
    );
    expect(canonicalJson({})).toBe("{}");
    expect(canonicalJson({ only: undefined })).toBe("{}");
    expect(canonicalJson([])).toBe("[]");
    expect(canonicalJson('quote " and \\ and \u0001')).toBe(JSON.stringify('quote " and \\ and \u0001'));
  });

  it("refuses what it cannot write the same way everywhere", () => {
    for (const bad of [1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, () => 1, Symbol("s"), 10n])
      expect(() => canonicalJson({ v: bad })).toThrow(TypeError);
  });
});
