/**
 * A cap on texts to one number, so neither a bug nor an attacker driving our API can flood a
 * handset (or our SMS bill). A sliding one-hour window per destination number.
 *
 * The counters live in this process's memory: with N server nodes the effective limit is up to
 * N × perNumberPerHour, and a restart forgets them (docs/protocols/sms.md, "Rate limits").
 */
import { HandsafeError } from "../../../core/errors.ts";
import { normalisePhoneNumber } from "./phone.ts";
import type { SmsGateway } from "./types.ts";

const HOUR_MS = 60 * 60 * 1000;
/** Above this many tracked numbers, stale ones are swept on the next send. */
const SWEEP_THRESHOLD = 10_000;

export interface SendLimiterOptions {
  perNumberPerHour: number;
  clock?: () => number;
}

/** Wraps gateways: `limit(gateway)` is the same gateway whose send() refuses past the limit. */
export type SendLimiter = <G extends SmsGateway>(gateway: G) => G;

export function createSendLimiter(options: SendLimiterOptions): SendLimiter {
  const { perNumberPerHour } = options;
  if (!Number.isSafeInteger(perNumberPerHour) || perNumberPerHour < 1)
    throw new HandsafeError("config.invalid", "perNumberPerHour must be a whole number ≥ 1", { status: 500 });
  const clock = options.clock ?? Date.now;
  const sent = new Map<string, number[]>();

  function recent(number: string, now: number): number[] {
    const times = (sent.get(number) ?? []).filter((t) => t > now - HOUR_MS);
    if (times.length === 0) sent.delete(number);
    else sent.set(number, times);
    return times;
  }

  function take(number: string): void {
    const now = clock();
    if (sent.size > SWEEP_THRESHOLD) for (const n of [...sent.keys()]) recent(n, now);
    const times = recent(number, now);
    if (times.length >= perNumberPerHour) {
      const retryAfterMs = times[0]! + HOUR_MS - now;
      throw new HandsafeError(
        "sms.rate_limited",
        `at most ${perNumberPerHour} texts an hour to one number; retry in ${Math.ceil(retryAfterMs / 1000)} s`,
        { status: 429, details: { retryAfterMs } },
      );
    }
    times.push(now);
    sent.set(number, times);
  }

  return <G extends SmsGateway>(gateway: G): G => {
    const limited: G = {
      ...gateway,
      async send(to: string, text: string) {
        // Count by the normalised number, so "+44 7911 123456" and "+447911123456" share a budget.
        take(normalisePhoneNumber(to));
        return gateway.send(to, text);
      },
    };
    const inner = gateway.sendInTransaction;
    if (inner !== undefined)
      limited.sendInTransaction = async (trx, to, text) => {
        take(normalisePhoneNumber(to));
        return inner.call(gateway, trx, to, text);
      };
    return limited;
  };
}
