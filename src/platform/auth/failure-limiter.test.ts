import { describe, expect, it } from "vitest";
import type { HandsafeError } from "../../core/errors.ts";
import { FailureLimiter } from "./failure-limiter.ts";

const codeOf = (fn: () => void) => {
  try {
    fn();
    return undefined;
  } catch (e) {
    return (e as HandsafeError).code;
  }
};

describe("password guessing spread over addresses or accounts", () => {
  it("one account tried from many addresses is locked after its limit", () => {
    let now = 0;
    const l = new FailureLimiter({ perAccount: 3, perAddress: 100, windowMs: 1000 }, () => now);
    for (let i = 0; i < 3; i++) {
      expect(codeOf(() => l.check("a@x", `10.0.0.${i}`))).toBeUndefined();
      l.fail("a@x", `10.0.0.${i}`);
    }
    expect(codeOf(() => l.check("a@x", "10.0.0.99"))).toBe("auth.locked_out");
    expect(codeOf(() => l.check("b@x", "10.0.0.99"))).toBeUndefined();
    now = 1000;
    expect(codeOf(() => l.check("a@x", "10.0.0.99"))).toBeUndefined();
  });

  it("one address trying many accounts is locked after its limit", () => {
    const l = new FailureLimiter({ perAccount: 100, perAddress: 5, windowMs: 1000 }, () => 0);
    for (let i = 0; i < 5; i++) l.fail(`user${i}@x`, "10.0.0.1");
    expect(codeOf(() => l.check("new@x", "10.0.0.1"))).toBe("auth.locked_out");
    expect(codeOf(() => l.check("new@x", "10.0.0.2"))).toBeUndefined();
  });

  it("a success clears the account's count", () => {
    const l = new FailureLimiter({ perAccount: 2, perAddress: 100, windowMs: 1000 }, () => 0);
    l.fail("a@x", "1");
    l.succeed("a@x");
    l.fail("a@x", "1");
    expect(codeOf(() => l.check("a@x", "1"))).toBeUndefined();
  });
});
