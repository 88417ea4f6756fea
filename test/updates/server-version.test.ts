import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { parseRange } from "../../src/platform/http/range.ts";
import { applyImageDelta, createImageDelta } from "../../src/updates/delta.ts";
import { checkVersionRange, compareVersions, parseVersion, satisfies } from "../../src/updates/version.ts";

const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return "no error";
};

describe("versions", () => {
  it("compares numerically part by part, missing parts are 0", () => {
    expect(compareVersions("1.10.0", "1.9.9")).toBe(1);
    expect(compareVersions("1.2", "1.2.0")).toBe(0);
    expect(compareVersions("1.2.0.1", "1.2")).toBe(1);
    expect(compareVersions("0.9", "1")).toBe(-1);
    expect(parseVersion("2.0.13")).toEqual([2, 0, 13]);
  });

  it("refuses what is not dotted numbers", () => {
    for (const bad of [
      "",
      "1.",
      ".1",
      "1..2",
      "v1.2",
      "1.2-beta",
      "01.2",
      "1.2.3.4.5.6.7.8.9",
      " 1.2",
      "1e3",
    ])
      expect(
        code(() => parseVersion(bad)),
        bad,
      ).toBe("updates.invalid_version");
  });

  it("satisfies an inclusive range with open ends", () => {
    expect(satisfies("1.2.0", { min: "1.2", max: "1.3" })).toBe(true);
    expect(satisfies("1.3.0", { min: "1.2", max: "1.3" })).toBe(true);
    expect(satisfies("1.3.1", { min: "1.2", max: "1.3" })).toBe(false);
    expect(satisfies("1.1.9", { min: "1.2" })).toBe(false);
    expect(satisfies("9.9", { max: "10" })).toBe(true);
    expect(satisfies("9.9", undefined)).toBe(true);
    expect(code(() => checkVersionRange({ min: "2", max: "1" }))).toBe("updates.invalid_version_range");
  });
});

describe("byte ranges (RFC 9110 §14.1.2)", () => {
  it("reads a-, a-b, -n; ignores what it cannot read; 416 past the end", () => {
    expect(parseRange(undefined, 100)).toBeUndefined();
    expect(parseRange("bytes=10-", 100)).toEqual({ start: 10, end: 99 });
    expect(parseRange("bytes=10-19", 100)).toEqual({ start: 10, end: 19 });
    expect(parseRange("bytes=90-500", 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange("bytes=-10", 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange("bytes=100-", 100)).toBe("unsatisfiable");
    expect(parseRange("bytes=0-1,5-6", 100)).toBeUndefined();
    expect(parseRange("items=0-1", 100)).toBeUndefined();
    expect(parseRange("bytes=5-1", 100)).toBeUndefined();
  });
});

describe("deltas", () => {
  it("a delta applies to its old image and to no other", () => {
    const old = new Uint8Array(randomBytes(200_000));
    const next = old.slice();
    for (let i = 0; i < next.length; i += 1000) next[i] = 0xaa;
    const delta = createImageDelta(old, next);
    expect(delta.length).toBeLessThan(next.length / 5);
    expect(applyImageDelta(old, delta)).toEqual(next);
    const other = old.slice();
    other[50_001] = other[50_001]! ^ 0xff;
    expect(code(() => applyImageDelta(other, delta))).toBe("updates.delta_invalid");
  });
});
