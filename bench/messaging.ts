/**
 * Accepted messages per second over HTTPS, next to the same server's ceiling for "one authenticated
 * request + one durable insert", measured in the same run with the same clients and concurrency.
 *
 * - messages: POST /v1/messages to numbers with no handset — sender API key checked, body validated,
 *   the message sealed at rest under the envelope key and stored, the "a message waits" text stored
 *   in the outbox, audited. Also, for information, to a number with one registered handset (an HPKE
 *   seal instead of the invitation).
 * - ceiling: a route added to the same server (StartOptions.extend) that authenticates the sender
 *   exactly as /v1/messages does and inserts one row — the least any accepted message must cost.
 */
import { adminClient } from "../src/cli/connect.ts";
import type { HttpClient } from "../src/handset/http-client.ts";
import { MemoryKeystore } from "../src/handset/keystore.ts";
import { createNodeHttpClient } from "../src/handset/node-transport.ts";
import { OutboxLine } from "../src/handset/outbox-line.ts";
import { MessagingApp } from "../src/messaging/handset.ts";
import { SimulatedMessagingHandset } from "../src/messaging/simulator.ts";
import { bearerToken } from "../src/platform/auth/guard.ts";
import { CEILING_PATH, startCeilingServer } from "./ceiling-route.ts";
import { bestRates } from "./timing.ts";
import type { BenchResult } from "./types.ts";

const CONCURRENCY = 8;
/** Rounds of each measurement, the best of each kept (timing.ts bestRates). */
const ROUNDS = 4;
const ROUND_MS = 1000;

let numberSeq = 0;
/** A fresh valid German mobile number per message (+49 151 …), so every one is "unregistered". */
const nextNumber = () => `+49151${String(10_000_000 + (numberSeq++ % 89_999_999)).slice(-8)}`;

export async function benchMessaging(): Promise<BenchResult[]> {
  const { server, close } = await startCeilingServer(
    "msg",
    { HANDSAFE_SMS_PER_NUMBER_PER_HOUR: "0", HANDSAFE_MESSAGING_REGISTRATION_RATE_LIMIT: "0" },
    (running, request) => running.messaging.service.authenticateSender(bearerToken(request), request.ip),
  );
  const clients: HttpClient[] = [];
  try {
    const admin = adminClient(server, server.adminToken!);
    clients.push(admin);
    const { body: sender } = await admin.post<{ apiKey: string }>("/v1/admin/senders", { name: "Bench" });
    const senders = Array.from({ length: CONCURRENCY }, () => {
      const c = adminClient(server, sender.apiKey);
      clients.push(c);
      return c;
    });
    const text = { type: "text", text: "Your test results are ready: please call the clinic. ".repeat(3) };

    // One registered handset, for the "registered" figure.
    const number = "+4915199999999";
    const phoneHttp = createNodeHttpClient({ baseUrl: server.url, pin: server.pin });
    clients.push(phoneHttp);
    const app = await MessagingApp.open({ http: phoneHttp, keystore: new MemoryKeystore() });
    await new SimulatedMessagingHandset(app, new OutboxLine(admin, number)).registerByServerCode("phone");

    const post = (c: HttpClient, to: string) => c.post("/v1/messages", { to, body: text });
    // Warm both paths.
    for (const c of senders) {
      await post(c, nextNumber());
      await c.post(CEILING_PATH, { to: nextNumber(), body: text });
    }
    const { ceiling, unregistered, registered } = await bestRates(ROUNDS, ROUND_MS, {
      ceiling: senders.map((c) => () => c.post(CEILING_PATH, { to: nextNumber(), body: text })),
      unregistered: senders.map((c) => () => post(c, nextNumber())),
      registered: senders.map((c) => () => post(c, number)),
    });
    const bound = { name: "authenticated request + one insert, same server", value: ceiling };
    return [
      { name: "ceiling: sender-authenticated request + 1 insert", value: ceiling, unit: "req/s" },
      {
        name: `messages accepted, no handset yet (sealed at rest, ${CONCURRENCY} clients)`,
        value: unregistered,
        unit: "msg/s",
        ceiling: bound,
        ratio: unregistered / ceiling,
        aim: { issue: 4, min: 0.7 },
      },
      {
        name: "messages accepted, 1 registered handset (HPKE), for information",
        value: registered,
        unit: "msg/s",
        ceiling: bound,
        ratio: registered / ceiling,
      },
    ];
  } finally {
    for (const c of clients) c.close();
    await close();
  }
}
