import { describe, expect, it } from "vitest";
import { TIME_PREFIX_LENGTH, timePrefix } from "./time-prefix.ts";

describe("timePrefix", () => {
  it("is 9 base-36 digits whose byte order is time order", () => {
    const times = [0, 1, 35, 36, 1_800_000_000_000, 1_800_000_000_001, 36 ** 9 - 1];
    const prefixes = times.map(timePrefix);
    for (const p of prefixes) expect(p).toMatch(/^[0-9a-z]{9}$/);
    expect(prefixes[0]).toBe("000000000");
    expect(parseInt(prefixes[4]!, 36)).toBe(1_800_000_000_000);
    const sorted = [...prefixes].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    expect(sorted).toEqual(prefixes);
    expect(TIME_PREFIX_LENGTH).toBe(9);
  });

  it("refuses what it cannot write in 9 digits", () => {
    for (const bad of [-1, 1.5, 36 ** 9, Number.NaN]) expect(() => timePrefix(bad)).toThrow(RangeError);
  });
});
