import { describe, expect, it } from "vitest";
import { type Aim, aimMet, aimText } from "../../bench/types.ts";

describe("bench aims", () => {
  it.each<[string, Aim, string, number[], number[]]>([
    ["a floor: met at or above it", { issue: 4, min: 0.7 }, "≥ 0.70", [0.7, 0.71], [0.69]],
    ["a cap: met at or below it", { issue: 5, max: 1 }, "≤ 1.00", [0.91, 1], [1.02]],
  ])("%s", (_, aim, text, met, missed) => {
    expect(aimText(aim)).toBe(text);
    for (const r of met) expect(aimMet(aim, r)).toBe(true);
    for (const r of missed) expect(aimMet(aim, r)).toBe(false);
  });
});
