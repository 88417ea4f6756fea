/**
 * The push channel's pure parts and its hub: SSE framing both ways, the push authentication key
 * and its signature profile, streams per device, keep-alives and lifetimes.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { randomBytes } from "../../src/core/crypto/random.ts";
import {
  DynamicKey,
  derivePushAuthKey,
  deriveSessionKey,
  deviceOfPushKeyId,
  LABELS,
  newDeviceId,
  notificationKek,
  PUSH_SIGNATURE_TAG,
  parseRequestSignature,
  pushKeyId,
  SIGNATURE_TAG,
  signRequest,
} from "../../src/management/protocol.ts";
import { PushHub } from "../../src/platform/notify/push-hub.ts";
import { notificationEvent, parseReady, readyEvent } from "../../src/management/push-protocol.ts";
import { formatComment, formatEvent, SseParser } from "../../src/core/codec/sse.ts";

describe("SSE framing", () => {
  it("reads back what the server writes, cut at any byte", () => {
    const text =
      readyEvent({ deviceId: "dev_AAAAAAAAAAAAAAAA", keepAliveMs: 15000 }) +
      formatComment("keep-alive") +
      notificationEvent({ text: "HSM1:abc", counter: 7 }) +
      formatEvent({ data: "two\nlines" });
    for (let cut = 0; cut <= text.length; cut++) {
      const p = new SseParser();
      const events = [...p.push(text.slice(0, cut)), ...p.push(text.slice(cut))];
      expect(events).toEqual([
        { event: "ready", data: '{"deviceId":"dev_AAAAAAAAAAAAAAAA","keepAliveMs":15000}' },
        { event: "notification", data: "HSM1:abc", id: "7" },
        { event: "message", data: "two\nlines" },
      ]);
    }
  });

  it("takes CRLF, CR and LF line ends, a BOM, fields without a space, and ignores unknown fields", () => {
    const p = new SseParser();
    expect(p.push("\uFEFFevent:a\r\ndata:1\r\nfoo: bar\r\rdata: 2\ndata\n\n")).toEqual([
      { event: "a", data: "1" },
      { event: "message", data: "2\n" },
    ]);
  });

  it("a block without data dispatches nothing; retry is read", () => {
    const p = new SseParser();
    expect(p.push("event: x\n\nretry: 500\ndata: y\n\n")).toEqual([
      { event: "message", data: "y", retry: 500 },
    ]);
  });

  it("attack: an endless line is cut off, with the code the protocol names", () => {
    expect(() => new SseParser(100).push(`data: ${"A".repeat(200)}`)).toThrow(
      expect.objectContaining({ code: "sse.malformed" }),
    );
    expect(() => new SseParser(100, "management.push_malformed").push(`data: ${"A".repeat(200)}`)).toThrow(
      expect.objectContaining({ code: "management.push_malformed" }),
    );
  });

  it("a field cannot smuggle a line break", () => {
    expect(() => formatEvent({ event: "a\nb", data: "" })).toThrow(
      expect.objectContaining({ code: "sse.malformed" }),
    );
    expect(() => formatEvent({ id: "1\r", data: "" })).toThrow(
      expect.objectContaining({ code: "sse.malformed" }),
    );
  });

  it("the ready event is read strictly", () => {
    expect(parseReady('{"deviceId":"dev_AAAAAAAAAAAAAAAA","keepAliveMs":1}')).toEqual({
      deviceId: "dev_AAAAAAAAAAAAAAAA",
      keepAliveMs: 1,
    });
    for (const bad of ["", "[]", '{"deviceId":"x","keepAliveMs":1}', '{"deviceId":"dev_AAAAAAAAAAAAAAAA"}'])
      expect(() => parseReady(bad)).toThrow(expect.objectContaining({ code: "management.push_malformed" }));
  });
});

describe("push authentication key", () => {
  const staticKey = randomBytes(32);
  const deviceId = newDeviceId();

  it("comes from the static key alone, and differs per device and from every other key", () => {
    const k = derivePushAuthKey(staticKey, deviceId).reveal();
    expect(k.length).toBe(32);
    expect(derivePushAuthKey(staticKey, deviceId).reveal()).toEqual(k);
    expect(derivePushAuthKey(staticKey, newDeviceId()).reveal()).not.toEqual(k);
    expect(derivePushAuthKey(randomBytes(32), deviceId).reveal()).not.toEqual(k);
    expect(notificationKek(staticKey, deviceId)).not.toEqual(k);
    const d = DynamicKey.generate();
    expect(deriveSessionKey(staticKey, d, deviceId, "requests").reveal()).not.toEqual(k);
    expect(LABELS.pushAuth).toBe("handsafe/v1/management/push-auth");
    expect(JSON.stringify({ k: derivePushAuthKey(staticKey, deviceId) })).toBe('{"k":"[redacted key]"}');
  });

  it("names the device in a keyid that no dynamic key id can take", () => {
    expect(pushKeyId(deviceId)).toBe(`push:${deviceId}`);
    expect(deviceOfPushKeyId(pushKeyId(deviceId))).toBe(deviceId);
    for (const bad of ["dk_AAAAAAAAAAAAAAAA", "push:", "push:dev_short", `push:${deviceId}x`, deviceId])
      expect(deviceOfPushKeyId(bad)).toBeUndefined();
  });

  it("attack: a signature of one profile is refused by the other (tag)", () => {
    const url = "https://h.example/v1/management/push";
    const push = signRequest(
      randomBytes(32),
      { method: "GET", url },
      { keyId: "push:x", tag: PUSH_SIGNATURE_TAG },
    );
    const normal = signRequest(randomBytes(32), { method: "GET", url }, { keyId: "dk_x" });
    expect(parseRequestSignature(push, PUSH_SIGNATURE_TAG).keyId).toBe("push:x");
    expect(() => parseRequestSignature(push)).toThrow(
      expect.objectContaining({ code: "signature.malformed" }),
    );
    expect(() => parseRequestSignature(normal, PUSH_SIGNATURE_TAG)).toThrow(
      expect.objectContaining({ code: "signature.malformed" }),
    );
    expect(parseRequestSignature(normal, SIGNATURE_TAG).keyId).toBe("dk_x");
  });
});

describe("push hub", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  function read(stream: NodeJS.ReadableStream): string[] {
    const chunks: string[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c.toString()));
    return chunks;
  }

  it("writes to every stream of a device, tracks presence, ends the oldest past the cap", async () => {
    const presence: Array<[string, boolean]> = [];
    const hub = new PushHub({
      keepAliveMs: 1000,
      maxStreamMs: 60_000,
      maxStreamsPerDevice: 2,
      onPresence: (d, c) => presence.push([d, c]),
    });
    const a1 = hub.open("dev_a");
    const a2 = hub.open("dev_a");
    const r1 = read(a1.stream);
    const r2 = read(a2.stream);
    expect(hub.send("dev_a", "x")).toBe(2);
    expect(hub.send("dev_b", "x")).toBe(0);
    const a3 = hub.open("dev_a");
    await new Promise((r) => setImmediate(r));
    expect(a1.stream.writableEnded).toBe(true);
    expect(hub.send("dev_a", "y")).toBe(2);
    a2.stream.destroy();
    a3.stream.destroy();
    await new Promise((r) => setImmediate(r));
    expect(hub.isConnected("dev_a")).toBe(false);
    expect(presence).toEqual([
      ["dev_a", true],
      ["dev_a", false],
    ]);
    expect(r1.join("")).toBe("x");
    expect(r2.join("")).toBe("xy");
    hub.closeAll();
  });

  it("keeps streams busy with comments and ends them after their lifetime", async () => {
    vi.useFakeTimers();
    let now = 0;
    const hub = new PushHub({
      keepAliveMs: 1000,
      maxStreamMs: 2500,
      maxStreamsPerDevice: 2,
      clock: () => now,
    });
    const c = hub.open("dev_a");
    const got = read(c.stream);
    now = 1000;
    vi.advanceTimersByTime(1000);
    now = 2000;
    vi.advanceTimersByTime(1000);
    expect(got.join("")).toBe(": keep-alive\n\n: keep-alive\n\n");
    now = 3000;
    vi.advanceTimersByTime(1000);
    expect(c.stream.writableEnded).toBe(true);
    hub.closeAll();
  });

  it("a stream that does not read is dropped, not buffered without end", () => {
    const hub = new PushHub({ keepAliveMs: 1000, maxStreamMs: 60_000, maxStreamsPerDevice: 2 });
    const c = hub.open("dev_a");
    const big = "z".repeat(40 * 1024);
    expect(c.write(big)).toBe(true);
    expect(c.write(big)).toBe(true);
    expect(c.write(big)).toBe(false);
    expect(c.stream.destroyed).toBe(true);
    hub.closeAll();
  });
});
