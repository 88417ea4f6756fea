import { describe, expect, it } from "vitest";
import { aimMet, aimText } from "../../bench/types.ts";

describe("bench aims", () => {
  it("a floor is met at or above it, missed below", () => {
    const aim = { issue: 4, min: 0.7 };
    expect(aimMet(aim, 0.7)).toBe(true);
    expect(aimMet(aim, 0.71)).toBe(true);
    expect(aimMet(aim, 0.69)).toBe(false);
    expect(aimText(aim)).toBe("≥ 0.70");
  });

  it("a cap is met at or below it, missed above", () => {
    const aim = { issue: 5, max: 1 };
    expect(aimMet(aim, 0.91)).toBe(true);
    expect(aimMet(aim, 1)).toBe(true);
    expect(aimMet(aim, 1.02)).toBe(false);
    expect(aimText(aim)).toBe("≤ 1.00");
  });
});
