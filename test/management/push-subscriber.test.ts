/**
 * The handset's push subscriber and the client's merged inbox, against a scripted transport: what it
 * signs, how it reads, when it gives up and when it tries again — and a key that comes by push ends
 * a wait on SMS without losing the SMS.
 */
import { afterEach, describe, expect, it } from "vitest";
import { utf8 } from "../../src/core/codec/bytes.ts";
import { formatComment } from "../../src/core/codec/sse.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import { HandsafeError } from "../../src/core/errors.ts";
import type {
  StreamingHttpTransport,
  StreamingResponse,
  TransportRequest,
} from "../../src/handset/http-client.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { embedded } from "../../src/management/device-wrapper.ts";
import { ManagementClient } from "../../src/management/handset.ts";
import {
  DynamicKey,
  derivePushAuthKey,
  newDeviceId,
  newKeyId,
  PUSH_SIGNATURE_TAG,
  parseRequestSignature,
  requestViewOfUrl,
  sealDynamicKeyNotification,
  verifyRequestSignature,
} from "../../src/management/protocol.ts";
import { PushSubscriber, type PushSubscriberEvent } from "../../src/management/push.ts";
import { notificationEvent, readyEvent } from "../../src/management/push-protocol.ts";
import { counterEntry } from "../../src/management/sms-processor.ts";
import { until } from "../helpers/wait.ts";

const BASE = "https://mgmt.example";
const staticKey = randomBytes(32);
const deviceId = newDeviceId();
const device = embedded({ deviceId, hardwareId: "490154203237518", model: "HS-1", staticKey });

type Script = (req: TransportRequest) => StreamingResponse;

/** Each request takes the next script; the body's pieces come, then it hangs until aborted. */
function scripted(scripts: Script[]) {
  const requests: TransportRequest[] = [];
  const transport: StreamingHttpTransport = {
    pin: undefined,
    send: () => Promise.reject(new Error("not used")),
    close() {},
    async stream(req) {
      requests.push(req);
      const script = scripts.shift();
      if (!script) throw new HandsafeError("transport.unreachable", "no server", { status: 0 });
      return script(req);
    },
  };
  return { transport, requests };
}

function sse(pieces: string[], opts: { status?: number; type?: string; end?: boolean } = {}): Script {
  return (req) => ({
    status: opts.status ?? 200,
    headers: { "content-type": opts.type ?? "text/event-stream; charset=utf-8" },
    body: (async function* () {
      for (const p of pieces) yield utf8(p);
      if (opts.end) return;
      await new Promise((_, reject) => {
        const abort = () => reject(new HandsafeError("transport.aborted", "aborted", { status: 0 }));
        if (req.signal?.aborted) abort();
        req.signal?.addEventListener("abort", abort);
      });
    })(),
  });
}

const ready = (id = deviceId, keepAliveMs = 1000) => readyEvent({ deviceId: id, keepAliveMs });

function seal(counter: number) {
  const keyId = newKeyId();
  const text = sealDynamicKeyNotification(staticKey, {
    deviceId,
    keyId,
    dynamicKey: DynamicKey.generate(),
    expiresAt: null,
    maxUses: null,
    counter,
  });
  return { keyId, text, counter };
}

const open: PushSubscriber[] = [];
afterEach(async () => {
  for (const p of open.splice(0)) await p.close();
});

function subscriber(transport: StreamingHttpTransport, keystore = new MemoryKeystore()) {
  const events: PushSubscriberEvent[] = [];
  const client = new ManagementClient({
    baseUrl: BASE,
    transport,
    device,
    keystore,
    nextSms: () => new Promise(() => {}),
  });
  const push = new PushSubscriber({
    baseUrl: BASE,
    transport,
    device,
    keystore,
    deliver: (m) => client.receive(m),
    minRetryMs: 10,
    maxRetryMs: 40,
    onEvent: (e) => events.push(e),
  }).start();
  open.push(push);
  return { push, events, client, keystore };
}

describe("push subscriber", () => {
  it("signs with the push key (static key only), sends its last counter, and stores pushed keys", async () => {
    const n = seal(4);
    const { transport, requests } = scripted([
      sse([ready(), formatComment("keep-alive"), notificationEvent(n)]),
    ]);
    const keystore = new MemoryKeystore();
    await keystore.put(counterEntry(deviceId), utf8("3"));
    const { push, events } = subscriber(transport, keystore);
    await push.connected();
    await until(() => events.some((e) => e.kind === "key"));
    expect(events).toEqual([{ kind: "connected" }, { kind: "key", keyId: n.keyId, counter: 4 }]);

    const req = requests[0]!;
    expect(req.url).toBe(`${BASE}/v1/management/push`);
    expect(req.headers["last-event-id"]).toBe("3");
    const parsed = parseRequestSignature(req.headers, PUSH_SIGNATURE_TAG);
    expect(parsed.keyId).toBe(`push:${deviceId}`);
    const key = derivePushAuthKey(staticKey, deviceId).reveal();
    expect(() =>
      verifyRequestSignature(parsed, requestViewOfUrl("GET", req.url, req.headers), key, {
        nowMs: Date.now(),
        body: undefined,
      }),
    ).not.toThrow();
  });

  it("skips a forged or replayed event and keeps reading", async () => {
    const n = seal(2);
    const forged = `${n.text.slice(0, 40)}${n.text[40] === "A" ? "B" : "A"}${n.text.slice(41)}`;
    const { transport } = scripted([
      sse([
        ready(),
        notificationEvent(n),
        notificationEvent(n),
        notificationEvent({ text: forged, counter: 3 }),
      ]),
    ]);
    const { events } = subscriber(transport);
    await until(() => events.length >= 4);
    expect(events.map((e) => (e.kind === "refused" ? e.error.code : e.kind))).toEqual([
      "connected",
      "key",
      "management.notification_replayed",
      "management.notification_forged",
    ]);
  });

  it("a silent stream is dropped after 3 keep-alive periods and opened again", async () => {
    const { transport, requests } = scripted([sse([ready(deviceId, 20)]), sse([ready(deviceId, 1000)])]);
    const { events } = subscriber(transport);
    await until(() => events.filter((e) => e.kind === "connected").length === 2);
    const dropped = events.find((e) => e.kind === "disconnected");
    expect(dropped).toMatchObject({ error: { code: "transport.timeout" } });
    expect(requests).toHaveLength(2);
  });

  it("refuses a stream for another device, or one that is not an event stream, and tries again", async () => {
    const { transport } = scripted([
      sse([ready(newDeviceId())]),
      sse(["{}"], { type: "application/json", end: true }),
      sse([ready()]),
    ]);
    const { push, events } = subscriber(transport);
    await push.connected();
    expect(
      events
        .filter((e) => e.kind === "disconnected")
        .map((e) => (e.kind === "disconnected" ? e.error?.code : "")),
    ).toEqual(["management.push_malformed", "management.push_malformed"]);
  });

  it("retries a 503 and a server that hung up; stops on a 401 with the server's code", async () => {
    const refusal = (status: number, code: string) =>
      sse([JSON.stringify({ error: { code, message: "no" } })], {
        status,
        type: "application/json",
        end: true,
      });
    const { transport } = scripted([
      refusal(503, "server.not_ready"),
      sse([ready()], { end: true }),
      refusal(401, "signature.stale"),
    ]);
    const { push, events } = subscriber(transport);
    await expect(push.connected()).resolves.toBeUndefined();
    await until(() => push.state === "stopped");
    expect(events.map((e) => e.kind)).toEqual(["disconnected", "connected", "disconnected", "stopped"]);
    await expect(push.connected()).rejects.toMatchObject({ code: "signature.stale", status: 401 });
  });

  it("close() during a reconnect wait returns at once and stops for good", async () => {
    const { transport, requests } = scripted([]);
    const push = new PushSubscriber({
      baseUrl: BASE,
      transport,
      device,
      keystore: new MemoryKeystore(),
      deliver: async () => ({ kind: "ignored" }),
      minRetryMs: 60_000,
    }).start();
    await until(() => push.state === "waiting");
    const started = Date.now();
    await push.close();
    expect(Date.now() - started).toBeLessThan(1000);
    expect(push.state).toBe("closed");
    expect(requests).toHaveLength(1);
    await expect(push.connected()).rejects.toMatchObject({ code: "management.push_closed" });
  });
});

describe("ManagementClient: one wait, two channels", () => {
  it("a pushed key ends a wait on SMS; the SMS that comes later is kept for the next wait", async () => {
    let deliverSms: ((sms: { from: string; text: string }) => void) | undefined;
    let pulls = 0;
    const client = new ManagementClient({
      baseUrl: BASE,
      transport: scripted([]).transport,
      device,
      keystore: new MemoryKeystore(),
      nextSms: () => {
        pulls++;
        return new Promise((resolve) => {
          deliverSms = resolve;
        });
      },
    });
    const pushed = seal(1);
    const texted = seal(2);
    const waiting = client.awaitDynamicKey();
    await new Promise((r) => setTimeout(r, 5));
    await client.receive({ from: "push", text: pushed.text });
    expect(await waiting).toBe(pushed.keyId);
    deliverSms!({ from: "+1", text: texted.text });
    expect(await client.awaitDynamicKey()).toBe(texted.keyId);
    expect(pulls).toBe(1); // one outstanding SMS read at a time: the text was not read twice
  });

  it("an SMS wait that fails still fails (nothing else arrived)", async () => {
    const client = new ManagementClient({
      baseUrl: BASE,
      transport: scripted([]).transport,
      device,
      keystore: new MemoryKeystore(),
      nextSms: () => Promise.reject(new Error("no SMS")),
    });
    await expect(client.awaitDynamicKey()).rejects.toThrow("no SMS");
  });
});
