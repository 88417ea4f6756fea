/**
 * Secure messaging over the SMS path's network adapters, on a real HTTPS server: the SMPP gateway
 * bound to a local SMSC (the smpp package's server over TCP) and the HTTP gateway posting to a local
 * fake provider, with its signed inbound webhook. For each: a sender posts to a number with no
 * handset and the SMSC / provider receives the app-link text (MT); one handset registers by the
 * server's code (variant a), read where the SMSC / provider received it; a second registers by its
 * own code (variant b), texted by the network to the service (deliver_sm / webhook, MO); the waiting
 * message opens on both. (The outbox, the built-in SMS centre, is flows.integration.test.ts's.)
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import smpp, { type PDU, type Session } from "smpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { utf8 } from "../../src/core/codec/bytes.ts";
import { isHandsafeError } from "../../src/core/errors.ts";
import type { MessagingApp } from "../../src/messaging/handset.ts";
import { MessagingSender } from "../../src/messaging/sender-client.ts";
import { codeOfText } from "../../src/messaging/simulator.ts";
import { signWebhook } from "../../src/platform/notify/sms/http.ts";
import { type MessagingHarness, startMessagingServer } from "./harness.ts";

const SERVICE = "+447911123456";
const SECRET = "sms-webhook-secret-0123456789";
const APP_LINK =
  /^(\w+) sent you a secure message\. Get the handsafe app: https:\/\/get\.handsafe\.example\/app - it expires \d{4}-\d\d-\d\d \d\d:\d\d UTC\.$/;

/** A text the network carried, as the test reads it at the SMSC / provider. */
interface CarriedText {
  from: string;
  to: string;
  text: string;
}

/** The network side of an adapter: what it received for a number, and a text from a number. */
interface Network {
  env: Record<string, string>;
  /** Texts the service sent (MT), in order. */
  received: CarriedText[];
  /** The handsafe server the network delivers MO texts to (the webhook needs its address). */
  attach(t: MessagingHarness): void;
  /** `from` texts `text` to `to` (MO); resolves once the service acknowledged it. */
  textService(from: string, text: string, to?: string): Promise<void>;
  stop(): Promise<void>;
}

const e164 = (digits: string) => `+${digits.replace(/^\+/, "")}`;

/** A local SMSC: takes submit_sm (reassembling UDH-concatenated parts), sends deliver_sm. */
async function startSmsc(): Promise<Network> {
  const received: CarriedText[] = [];
  const sessions: Session[] = [];
  const parts = new Map<string, Map<number, string>>();
  let nextId = 1;
  const server = smpp.createServer({}, (session) => {
    sessions.push(session);
    session.on("error", () => {});
    session.on("bind_transceiver", (pdu: PDU) => {
      const ok = pdu.system_id === "handsafe" && pdu.password === "secret";
      session.send(pdu.response(ok ? {} : { command_status: smpp.errors["ESME_RINVPASWD"] }));
    });
    session.on("submit_sm", (pdu: PDU) => {
      const from = e164(String(pdu.source_addr));
      const to = e164(String(pdu.destination_addr));
      const message = pdu.short_message as { message: string; udh?: Buffer[] };
      const udh = message.udh?.[0];
      if (udh && udh[0] === 0x00 && udh[3]! > 1) {
        const key = `${to}|${udh[2]}|${udh[3]}`;
        const set = parts.get(key) ?? new Map<number, string>();
        set.set(udh[4]!, message.message);
        parts.set(key, set);
        if (set.size === udh[3]) {
          parts.delete(key);
          const text = [...set.entries()]
            .sort(([a], [b]) => a - b)
            .map(([, p]) => p)
            .join("");
          received.push({ from, to, text });
        }
      } else received.push({ from, to, text: message.message });
      session.send(pdu.response({ message_id: `smsc-${nextId++}` }));
    });
    session.on("enquire_link", (pdu: PDU) => session.send(pdu.response()));
    session.on("unbind", (pdu: PDU) => {
      session.send(pdu.response());
      session.close();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    env: {
      HANDSAFE_SMS_GATEWAY: "smpp",
      HANDSAFE_SMPP_URL: `smpp://127.0.0.1:${port}`,
      HANDSAFE_SMPP_SYSTEM_ID: "handsafe",
      HANDSAFE_SMPP_PASSWORD: "secret",
    },
    received,
    attach() {}, // the ESME binds to us: deliver_sm goes over its session
    textService: (from, text, to = SERVICE) =>
      new Promise((resolve, reject) => {
        const s = sessions.at(-1);
        if (!s) return reject(new Error("no ESME bound"));
        s.deliver_sm(
          {
            source_addr_ton: 1,
            source_addr_npi: 1,
            source_addr: from.slice(1),
            dest_addr_ton: 1,
            dest_addr_npi: 1,
            destination_addr: to.slice(1),
            short_message: text,
          },
          (resp: PDU) =>
            resp.command_status === 0
              ? resolve()
              : reject(new Error(`deliver_sm_resp status ${resp.command_status}`)),
        );
      }),
    stop: () =>
      new Promise((resolve) => {
        for (const s of sessions) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A fake commercial SMS API: POST {from,to,text} with the bearer token → {id}. */
async function startProvider(): Promise<Network> {
  const received: CarriedText[] = [];
  let nextId = 1;
  let server: MessagingHarness | undefined;
  const provider: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.url !== "/send" || req.headers.authorization !== "Bearer provider-token") {
        res.writeHead(401, { "content-type": "application/json" }).end('{"error":"unauthorised"}');
        return;
      }
      received.push(JSON.parse(Buffer.concat(chunks).toString("utf8")) as CarriedText);
      res
        .writeHead(202, { "content-type": "application/json" })
        .end(JSON.stringify({ id: `prov-${nextId++}` }));
    });
  });
  await new Promise<void>((resolve) => provider.listen(0, "127.0.0.1", resolve));
  return {
    env: {
      HANDSAFE_SMS_GATEWAY: "http",
      HANDSAFE_SMS_HTTP_URL: `http://127.0.0.1:${(provider.address() as AddressInfo).port}/send`,
      HANDSAFE_SMS_HTTP_TOKEN: "provider-token",
      HANDSAFE_SMS_WEBHOOK_SECRET: SECRET,
    },
    received,
    attach(t) {
      server = t;
    },
    // The provider calls the server's webhook, signing the exact bytes it sends (the client sends
    // UTF-8 of JSON.stringify of its json).
    async textService(from, text, to = SERVICE) {
      if (!server) throw new Error("no server attached");
      const json = { id: `in-${nextId++}`, from, to, text };
      const ts = Math.floor(Date.now() / 1000);
      await server.anonymous.request("POST", "/v1/sms/inbound", {
        json,
        headers: {
          "x-handsafe-timestamp": String(ts),
          "x-handsafe-signature": signWebhook(SECRET, ts, utf8(JSON.stringify(json))),
        },
      });
    },
    stop: () =>
      new Promise((resolve) => {
        provider.closeAllConnections();
        provider.close(() => resolve());
      }),
  };
}

function until<T>(find: () => T | undefined, what: string, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const poll = () => {
      const found = find();
      if (found !== undefined) return resolve(found);
      if (Date.now() > deadline) return reject(new Error(`${what}: not in time`));
      setTimeout(poll, 20);
    };
    poll();
  });
}

const adapters = [
  { name: "smpp (SMPP 3.4 to a local SMSC, deliver_sm in)", start: startSmsc, textFirst: true },
  { name: "http (a provider's API out, its signed webhook in)", start: startProvider, textFirst: false },
] as const;

describe.each(adapters)("secure messaging over the $name", ({ start, textFirst }) => {
  let network: Network;
  let t: MessagingHarness;
  let clinic: MessagingSender;
  const number = "+447911123501";

  beforeAll(async () => {
    network = await start();
    t = await startMessagingServer("sqlite", {
      env: { ...network.env, HANDSAFE_SMS_SERVICE_NUMBER: SERVICE },
    });
    network.attach(t);
    const { body } = await t.admin.post<{ apiKey: string }>("/v1/admin/senders", { name: "Clinic" });
    clinic = new MessagingSender(t.anonymous, body.apiKey);
  }, 20_000);
  afterAll(async () => {
    await t?.close();
    await network?.stop();
  });

  const textsTo = (to: string) => network.received.filter((r) => r.to === to);

  it("the app link goes out as MT; a handset registers by the server's code, another by its own", async () => {
    expect(t.server.sms.kind).toBe(network.env["HANDSAFE_SMS_GATEWAY"]);
    const sent = await clinic.send(number, { type: "text", text: "Your results are ready" });
    expect(sent.status).toBe("waiting_registration");

    // MT: the notice with the app link reaches the network, from the service number.
    const notice = await until(() => textsTo(number)[0], "the app-link text");
    expect(notice.from).toBe(SERVICE);
    expect(notice.text).toMatch(APP_LINK);
    expect(APP_LINK.exec(notice.text)?.[1]).toBe("Clinic");

    // (a): the server's code arrives at the network as MT; the test reads it there and confirms.
    const phone = (await t.handset(number)).app;
    const started = await phone.startRegistration({ phoneNumber: number, deviceType: "pixel-9" });
    expect(started.state).toBe("pending");
    const codeText = await until(
      () => textsTo(number).find((r) => codeOfText(r.text) !== undefined),
      "the code text",
    );
    expect(codeText.from).toBe(SERVICE);
    expect(codeText.text).toMatch(/^Your handsafe code is [0-9]{8}\. It expires in 5 minutes\.$/);
    const phoneId = await phone.confirmRegistration(codeOfText(codeText.text)!);
    expect(phoneId).toBe(started.handsetId);
    expect((await clinic.status(sent.id)).status).toBe("queued");

    // (b): the handset's own code, texted from the number through the network (MO) to the service number.
    const tablet = (await t.handset(number)).app;
    const { code, text, to } = await tablet.prepareHandsetCode();
    expect(to).toBe(SERVICE);
    expect(text).toBe(`HSREG ${code}`);
    let tabletId: string;
    if (textFirst) {
      await network.textService(number, text, to);
      const answer = await tablet.registerWithHandsetCode({ phoneNumber: number, deviceType: "tablet" });
      expect(answer.state).toBe("confirmed");
      tabletId = answer.handsetId;
    } else {
      const answer = await tablet.registerWithHandsetCode({ phoneNumber: number, deviceType: "tablet" });
      expect(answer.state).toBe("pending");
      await network.textService(number, text, to);
      tabletId = await tablet.awaitRegistration({ timeoutMs: 5000, pollMs: 20 });
      expect(tabletId).toBe(answer.handsetId);
    }
    expect((await tablet.registrationStatus()).state).toBe("confirmed");
    expect(tabletId).not.toBe(phoneId);

    // The waiting message opens on both handsets, each under its own key.
    const opened = async (app: MessagingApp) => {
      const { messages, refused } = await app.pull();
      expect(refused).toEqual([]);
      expect(messages.map((m) => [m.id, m.to, m.body])).toEqual([
        [sent.id, number, { type: "text", text: "Your results are ready" }],
      ]);
      await app.ack(sent.id);
    };
    await opened(phone);
    await opened(tablet);
    const status = await clinic.status(sent.id);
    expect(status.status).toBe("delivered");
    expect(status.deliveries.map((d) => [d.handsetId, d.deviceType, d.state]).sort()).toEqual(
      [
        [phoneId, "pixel-9", "delivered"],
        [tabletId, "tablet", "delivered"],
      ].sort(),
    );
    // Nothing else went out to the number: the notice and one code.
    expect(textsTo(number)).toHaveLength(2);
  });

  it("an MO text with a wrong code, or from another number, confirms nothing", async () => {
    const other = "+447911123502";
    const app = (await t.handset(other)).app;
    const { text, to } = await app.prepareHandsetCode();
    const answer = await app.registerWithHandsetCode({ phoneNumber: other, deviceType: "pixel-9" });
    expect(answer.state).toBe("pending");
    // The same code from a number that is not the one registering, and another code from the right one.
    await network.textService("+447911123503", text, to);
    const wrong = text.replace(/[0-9]$/, (d) => String((Number(d) + 1) % 10));
    await network.textService(other, wrong, to);
    expect((await app.registrationStatus()).state).toBe("pending");
  });

  it.runIf(textFirst === false)(
    "an inbound webhook that is not signed with the secret is refused",
    async () => {
      const body = { from: number, to: SERVICE, text: "HSREG 12345678" };
      const ts = Math.floor(Date.now() / 1000);
      const e = await t.anonymous
        .request("POST", "/v1/sms/inbound", {
          json: body,
          headers: {
            "x-handsafe-timestamp": String(ts),
            "x-handsafe-signature": signWebhook("not-the-secret-0123456789", ts, utf8(JSON.stringify(body))),
          },
        })
        .catch((x: unknown) => x);
      expect(isHandsafeError(e, "sms.signature_invalid")).toBe(true);
    },
  );
});
