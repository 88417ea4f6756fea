import { describe, expect, it } from "vitest";
import { isHandsafeError } from "../../src/core/errors.ts";
import { loadSmsConfig } from "../../src/platform/notify/sms/index.ts";
import { createSendLimiter } from "../../src/platform/notify/sms/limiter.ts";
import { isE164, normalisePhoneNumber } from "../../src/platform/notify/sms/phone.ts";
import type { SmsGateway } from "../../src/platform/notify/sms/types.ts";

function fails(work: () => unknown, code: string): void {
  try {
    work();
  } catch (e) {
    expect(isHandsafeError(e, code), String(e)).toBe(true);
    return;
  }
  expect.unreachable(`expected ${code}`);
}

describe("E.164 normalisation", () => {
  it("writes numbers as E.164", () => {
    expect(normalisePhoneNumber("+44 7911 123456")).toBe("+447911123456");
    expect(normalisePhoneNumber("07911 123456", "GB")).toBe("+447911123456");
    expect(normalisePhoneNumber("06 12 34 56 78", "FR")).toBe("+33612345678");
    expect(isE164("+447911123456")).toBe(true);
    expect(isE164("+44 7911 123456")).toBe(false);
  });

  it.each([
    ["+447700900123", undefined], // an Ofcom drama range: possible but not assigned
    ["07911 123456", undefined], // national form without a country
    ["+1", undefined],
    ["not a number", undefined],
    ["+4479111234567890123", undefined],
    ["x".repeat(41), undefined],
    ["07911 123456", "ZZ"],
  ])("refuses %j (country %s) with phone.invalid", (input, country) => {
    fails(() => normalisePhoneNumber(input, country), "phone.invalid");
  });
});

describe("a sender floods one number", () => {
  function counting(): SmsGateway & { sent: string[] } {
    const sent: string[] = [];
    return {
      kind: "outbox",
      sent,
      async send(to) {
        sent.push(to);
        return { id: String(sent.length) };
      },
      onInbound() {},
      async close() {},
    };
  }

  it("refuses past perNumberPerHour with sms.rate_limited (429) until the hour has passed", async () => {
    let now = 1_000_000;
    const inner = counting();
    const gateway = createSendLimiter({ perNumberPerHour: 2, clock: () => now })(inner);
    await gateway.send("+447911123456", "a");
    await gateway.send("+44 7911 123456", "b"); // the same number, written differently
    const e = await gateway.send("+447911123456", "c").catch((x: unknown) => x);
    expect(isHandsafeError(e, "sms.rate_limited")).toBe(true);
    expect((e as { status: number }).status).toBe(429);
    await gateway.send("+33612345678", "other numbers are not affected");
    now += 60 * 60 * 1000 + 1;
    await gateway.send("+447911123456", "d");
    expect(inner.sent).toHaveLength(4);
    expect(gateway.kind).toBe("outbox");
  });
});

describe("SMS settings", () => {
  it("defaults to the outbox", () => {
    expect(loadSmsConfig({})).toMatchObject({ kind: "outbox", perNumberPerHour: 10 });
  });

  it("reads SMPP and HTTP settings", () => {
    expect(
      loadSmsConfig({
        HANDSAFE_SMS_GATEWAY: "smpp",
        HANDSAFE_SMS_SERVICE_NUMBER: "+447911123456",
        HANDSAFE_SMPP_URL: "smpp://smsc:2775",
        HANDSAFE_SMPP_SYSTEM_ID: "handsafe",
        HANDSAFE_SMPP_PASSWORD: "pw",
      }),
    ).toMatchObject({ kind: "smpp", serviceNumber: "+447911123456", url: "smpp://smsc:2775" });
    fails(() => loadSmsConfig({ HANDSAFE_SMS_GATEWAY: "http" }), "config.invalid");
    fails(() => loadSmsConfig({ HANDSAFE_SMS_GATEWAY: "carrier-pigeon" }), "config.invalid");
    fails(() => loadSmsConfig({ HANDSAFE_SMS_SERVICE_NUMBER: "12" }), "config.invalid");
    fails(() => loadSmsConfig({ HANDSAFE_SMS_PER_NUMBER_PER_HOUR: "-1" }), "config.invalid");
  });
});
