/** The HTTP gateway against a real local provider (node:http), and its webhook's signature checks. */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isHandsafeError } from "../../src/core/errors.ts";
import { createHttpGateway, signWebhook } from "../../src/platform/notify/sms/http.ts";

const SECRET = "webhook-secret-0123456789";
const SERVICE = "+447911123456";
const HANDSET = "+33612345678";

interface Received {
  headers: IncomingMessage["headers"];
  body: unknown;
}
let server: Server;
let baseUrl: string;
const received: Received[] = [];
/** What the provider answers for a path. */
const answers: Record<string, { status: number; body: string }> = {
  "/ok": { status: 202, body: JSON.stringify({ id: "prov-1" }) },
  "/refuse": { status: 400, body: JSON.stringify({ error: "bad number" }) },
  "/down": { status: 503, body: "" },
  "/noid": { status: 200, body: "{}" },
};

beforeAll(async () => {
  server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on("data", (c: Buffer) => parts.push(c));
    req.on("end", () => {
      received.push({ headers: req.headers, body: JSON.parse(Buffer.concat(parts).toString("utf8")) });
      const answer = answers[req.url ?? ""] ?? { status: 404, body: "" };
      res.writeHead(answer.status, { "content-type": "application/json" }).end(answer.body);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

function gateway(path: string, clock = () => Date.now()) {
  return createHttpGateway({
    sendUrl: `${baseUrl}${path}`,
    token: "tok_123",
    serviceNumber: SERVICE,
    webhookSecret: SECRET,
    clock,
  });
}

async function code(work: () => unknown): Promise<string | undefined> {
  try {
    await work();
  } catch (e) {
    if (isHandsafeError(e)) return e.code;
    throw e;
  }
  return undefined;
}

describe("HTTP gateway: sending", () => {
  it("POSTs {from,to,text} with the bearer token and returns the provider's id", async () => {
    received.length = 0;
    expect(await gateway("/ok").send("+33 6 12 34 56 78", "Your code is 123456")).toEqual({ id: "prov-1" });
    expect(received).toHaveLength(1);
    expect(received[0]!.headers.authorization).toBe("Bearer tok_123");
    expect(received[0]!.headers["content-type"]).toBe("application/json");
    expect(received[0]!.body).toEqual({ from: SERVICE, to: HANDSET, text: "Your code is 123456" });
  });

  it("maps the provider's refusals and outages to stable codes", async () => {
    expect(await code(() => gateway("/refuse").send(HANDSET, "x"))).toBe("sms.send_failed");
    expect(await code(() => gateway("/noid").send(HANDSET, "x"))).toBe("sms.send_failed");
    expect(await code(() => gateway("/down").send(HANDSET, "x"))).toBe("sms.unavailable");
    const closed = createHttpGateway({
      sendUrl: "http://127.0.0.1:1/x",
      token: "t",
      serviceNumber: SERVICE,
      webhookSecret: SECRET,
    });
    expect(await code(() => closed.send(HANDSET, "x"))).toBe("sms.unavailable");
    expect(await code(() => gateway("/ok").send("12", "x"))).toBe("phone.invalid");
  });
});

describe("HTTP gateway: the inbound webhook", () => {
  const now = 1_800_000_000_000;
  const body = Buffer.from(JSON.stringify({ id: "in-1", from: HANDSET, to: SERVICE, text: "STOP" }));
  const signed = (b: Uint8Array, ts = now / 1000) => ({
    "x-handsafe-timestamp": String(ts),
    "x-handsafe-signature": signWebhook(SECRET, ts, b),
  });

  it("accepts a correctly signed, fresh request", () => {
    const sms = gateway("/ok", () => now).verifyAndParseInbound(signed(body), body);
    expect(sms).toEqual({ id: "in-1", from: HANDSET, to: SERVICE, text: "STOP", at: now });
  });

  it("hands the text to the inbound handler", async () => {
    const g = gateway("/ok", () => now);
    expect(await code(() => g.receiveWebhook(signed(body), body))).toBe("sms.no_handler");
    const texts: string[] = [];
    g.onInbound(async (sms) => {
      texts.push(sms.text);
    });
    const other = Buffer.from(JSON.stringify({ from: HANDSET, text: "HELP" }));
    await g.receiveWebhook(signed(other), other);
    expect(texts).toEqual(["HELP"]);
  });

  describe("an attacker forges or replays webhook calls", () => {
    it("no signature → sms.signature_invalid", async () => {
      expect(await code(() => gateway("/ok", () => now).verifyAndParseInbound({}, body))).toBe(
        "sms.signature_invalid",
      );
    });

    it("a signature made with another secret → sms.signature_invalid", async () => {
      const headers = {
        "x-handsafe-timestamp": String(now / 1000),
        "x-handsafe-signature": signWebhook("another-secret-0123456", now / 1000, body),
      };
      expect(await code(() => gateway("/ok", () => now).verifyAndParseInbound(headers, body))).toBe(
        "sms.signature_invalid",
      );
    });

    it("a body changed after signing → sms.signature_invalid", async () => {
      const changed = Buffer.from(body.toString().replace("STOP", "YES!"));
      expect(await code(() => gateway("/ok", () => now).verifyAndParseInbound(signed(body), changed))).toBe(
        "sms.signature_invalid",
      );
    });

    it("a timestamp moved to look fresh → sms.signature_invalid (the timestamp is signed)", async () => {
      const old = signed(body, now / 1000 - 3600);
      const headers = { ...old, "x-handsafe-timestamp": String(now / 1000) };
      expect(await code(() => gateway("/ok", () => now).verifyAndParseInbound(headers, body))).toBe(
        "sms.signature_invalid",
      );
    });

    it("a request older or newer than 5 minutes → sms.signature_expired", async () => {
      const g = gateway("/ok", () => now);
      expect(await code(() => g.verifyAndParseInbound(signed(body, now / 1000 - 301), body))).toBe(
        "sms.signature_expired",
      );
      expect(await code(() => g.verifyAndParseInbound(signed(body, now / 1000 + 301), body))).toBe(
        "sms.signature_expired",
      );
      expect(g.verifyAndParseInbound(signed(body, now / 1000 - 299), body).text).toBe("STOP");
    });

    it("the same signed request twice → sms.replayed", async () => {
      const g = gateway("/ok", () => now);
      g.verifyAndParseInbound(signed(body), body);
      expect(await code(() => g.verifyAndParseInbound(signed(body), body))).toBe("sms.replayed");
    });

    it("malformed headers and bodies are refused with their codes", async () => {
      const g = gateway("/ok", () => now);
      const h = signed(body);
      expect(
        await code(() => g.verifyAndParseInbound({ ...h, "x-handsafe-signature": "sha1=abc" }, body)),
      ).toBe("sms.signature_invalid");
      expect(await code(() => g.verifyAndParseInbound({ ...h, "x-handsafe-timestamp": "soon" }, body))).toBe(
        "sms.signature_invalid",
      );
      const notJson = Buffer.from("not json");
      expect(await code(() => g.verifyAndParseInbound(signed(notJson), notJson))).toBe(
        "request.malformed_json",
      );
      const badFrom = Buffer.from(JSON.stringify({ from: "123", text: "x" }));
      expect(await code(() => g.verifyAndParseInbound(signed(badFrom), badFrom))).toBe("phone.invalid");
      const elsewhere = Buffer.from(JSON.stringify({ from: HANDSET, to: "+4915112345678", text: "x" }));
      expect(await code(() => g.verifyAndParseInbound(signed(elsewhere), elsewhere))).toBe(
        "sms.unknown_recipient",
      );
    });
  });
});
