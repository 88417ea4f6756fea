/**
 * Counts failed sign-ins per account and per client address, and refuses further tries past a
 * limit until the window ends — password guessing is bounded however the attacker spreads it
 * (many addresses at one account, or one address over many accounts). Counters live in this
 * process's memory: with several server nodes each node counts alone (Redis-backed counters are
 * the scale-out step, docs/threat-model.md).
 */
import { HandsafeError } from "../../core/errors.ts";

export interface FailureLimits {
  perAccount: number;
  perAddress: number;
  windowMs: number;
}

export const DEFAULT_FAILURE_LIMITS: FailureLimits = {
  perAccount: 20,
  perAddress: 100,
  windowMs: 15 * 60_000,
};

interface Window {
  count: number;
  until: number;
}

export class FailureLimiter {
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly limits: FailureLimits = DEFAULT_FAILURE_LIMITS,
    private readonly clock: () => number = Date.now,
  ) {}

  private current(key: string): Window | undefined {
    const w = this.windows.get(key);
    if (w && w.until <= this.clock()) {
      this.windows.delete(key);
      return undefined;
    }
    return w;
  }

  /** Throws auth.locked_out (429) when either counter is spent; call before checking a password. */
  check(account: string, address: string): void {
    const a = this.current(`account:${account}`);
    const b = this.current(`address:${address}`);
    const spent = (a && a.count >= this.limits.perAccount) || (b && b.count >= this.limits.perAddress);
    if (spent)
      throw new HandsafeError("auth.locked_out", "too many failed sign-ins: try again later", {
        status: 429,
        details: {
          retryAfterSeconds: Math.ceil((Math.max(a?.until ?? 0, b?.until ?? 0) - this.clock()) / 1000),
        },
      });
  }

  fail(account: string, address: string): void {
    for (const key of [`account:${account}`, `address:${address}`]) {
      const w = this.current(key);
      if (w) w.count++;
      else this.windows.set(key, { count: 1, until: this.clock() + this.limits.windowMs });
    }
    if (this.windows.size > 100_000) this.sweep();
  }

  /** A success clears the account's count (not the address's: one good password proves little there). */
  succeed(account: string): void {
    this.windows.delete(`account:${account}`);
  }

  private sweep(): void {
    const now = this.clock();
    for (const [k, w] of this.windows) if (w.until <= now) this.windows.delete(k);
  }
}
