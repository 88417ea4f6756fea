/**
 * The secure-messaging part of `handsafe demo`: a clinic texts a number that has no handset yet; the
 * phone installs the app and registers with a code the server texts (variant a), decrypts the waiting
 * message; a tablet on the same number registers with a code it texts itself (variant b); the next
 * message reaches both, each under its own key; a reply reaches the clinic's webhook, signed.
 *
 * The clinic's "system" is a small HTTP receiver on 127.0.0.1 that checks every webhook's RFC 9421
 * signature; the handsets' phone line is the built-in SMS centre (src/messaging/simulator.ts).
 * `runMessagingDemo` returns what happened so a test can check it against the server.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fromBase64url } from "../core/codec/base64url.ts";
import { fromUtf8 } from "../core/codec/bytes.ts";
import { HandsafeError } from "../core/errors.ts";
import type { ServerAddress } from "../handset/handset.ts";
import type { HttpClient } from "../handset/http-client.ts";
import { MemoryKeystore } from "../handset/keystore.ts";
import { MessagingApp, type OpenedMessage } from "../messaging/handset.ts";
import { LABELS } from "../messaging/protocol.ts";
import { OutboxLine } from "../handset/outbox-line.ts";
import { SimulatedMessagingHandset } from "../messaging/simulator.ts";
import { verifyWebhookSignature } from "../platform/notify/webhooks.ts";
import { adminClient, pinnedClient } from "./connect.ts";
import { randomMobileNumber } from "./demo-data.ts";

export interface MessagingDemoOptions {
  say?: (text: string) => void;
  /** How long to wait for the reply's webhook (default 20 s). */
  webhookTimeoutMs?: number;
}

export interface MessagingDemoResult {
  number: string;
  senderId: string;
  /** The clinic's API key, for checking the run through the sender API. */
  senderApiKey: string;
  firstMessageId: string;
  secondMessageId: string;
  phoneId: string;
  tabletId: string;
  /** What each handset decrypted, by message id. */
  opened: { phone: Record<string, string>; tablet: Record<string, string> };
  /** The webhook calls the clinic received, signature checked. */
  webhooks: Array<{ type: string; messageId: string; body?: unknown; verified: boolean }>;
  /** The reply as the clinic read it through the API. */
  replyText: string;
  waitingStatus: string;
  finalStatus: string;
}

interface WebhookCall {
  type: string;
  messageId: string;
  body?: unknown;
  verified: boolean;
}

/** The clinic's endpoint: keeps each call and whether its signature held. */
async function startReceiver(secret: () => Uint8Array | undefined, keyId: () => string | undefined) {
  const calls: WebhookCall[] = [];
  const waiters: Array<() => void> = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = new Uint8Array(Buffer.concat(chunks));
      const url = `http://${req.headers.host}${req.url}`;
      let verified = false;
      try {
        const s = secret();
        if (s) {
          verifyWebhookSignature({
            secret: s,
            tag: LABELS.webhookTag,
            url,
            headers: req.headers,
            body,
            ...(keyId() ? { keyId: keyId()! } : {}),
          });
          verified = true;
        }
      } catch {
        verified = false;
      }
      let payload: { type?: string; messageId?: string; body?: unknown } = {};
      try {
        payload = JSON.parse(fromUtf8(body)) as typeof payload;
      } catch {
        // Kept as an unverified call with no type.
      }
      calls.push({
        type: String(payload.type ?? "?"),
        messageId: String(payload.messageId ?? ""),
        ...(payload.body === undefined ? {} : { body: payload.body }),
        verified,
      });
      for (const w of waiters.splice(0)) w();
      res.writeHead(verified ? 204 : 401).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/clinic/replies`,
    calls,
    async waitFor(match: (c: WebhookCall) => boolean, timeoutMs: number): Promise<WebhookCall> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = calls.find(match);
        if (found) return found;
        const left = deadline - Date.now();
        if (left <= 0)
          throw new HandsafeError("demo.no_webhook", "the clinic's webhook was not called in time", {
            status: 0,
          });
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.min(left, 500));
          waiters.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function textOf(m: OpenedMessage): string {
  return m.body.type === "text" ? m.body.text : `[${m.body.mediaType} attachment]`;
}

export async function runMessagingDemo(
  admin: HttpClient,
  server: ServerAddress,
  options: MessagingDemoOptions = {},
): Promise<MessagingDemoResult> {
  const say = options.say ?? ((t: string) => process.stdout.write(`${t}\n`));
  const step = (n: string, text: string) => say(`\n${n}. ${text}`);
  const number = randomMobileNumber();
  let webhookSecret: Uint8Array | undefined;
  let senderId: string | undefined;
  const receiver = await startReceiver(
    () => webhookSecret,
    () => senderId,
  );
  const clients: HttpClient[] = [];
  let replyText = "";
  try {
    step("M1", "A clinic becomes a sender: an API key and a webhook secret, each shown once. Its system");
    say("   receives replies and receipts on a webhook and checks every call's RFC 9421 signature.");
    const { body: created } = await admin.post<{ id: string; apiKey: string; webhookSecret: string }>(
      "/v1/admin/senders",
      { name: "Riverside Clinic", webhookUrl: receiver.url },
    );
    senderId = created.id;
    webhookSecret = fromBase64url(created.webhookSecret, "webhookSecret");
    const clinic = adminClient(server, created.apiKey);
    clients.push(clinic);
    say(`   sender ${created.id}, webhook ${receiver.url}`);

    step("M2", `The clinic posts a message for ${number}, a number with no handset yet.`);
    const first = (
      await clinic.post<{ id: string; status: string }>("/v1/messages", {
        to: number,
        body: { type: "text", text: "Your appointment with Dr. Okafor (cardiology) is on 3 March, 09:40." },
        expiresInSeconds: 86_400,
      })
    ).body;
    const phoneLine = new OutboxLine(admin, number);
    const invitation = await phoneLine.nextText(() => true);
    say(`   status ${first.status}: the message waits, sealed under the server's envelope key`);
    say(`   the number gets a text: "${invitation.text}"`);

    step("M3", "The phone installs the app (its keys come from the CSPRNG, never from the number) and");
    say("   registers with a code the server texts to it; the waiting message is sealed to its key.");
    const phoneHttp = pinnedClient(server);
    clients.push(phoneHttp);
    const phoneApp = await MessagingApp.open({ http: phoneHttp, keystore: new MemoryKeystore() });
    const phone = new SimulatedMessagingHandset(phoneApp, phoneLine);
    const phoneId = await phone.registerByServerCode("phone");
    const phoneInbox = await phoneApp.pull();
    const opened = { phone: {} as Record<string, string>, tablet: {} as Record<string, string> };
    for (const m of phoneInbox.messages) {
      opened.phone[m.id] = textOf(m);
      say(`   phone ${phoneId} decrypts: "${textOf(m)}"`);
      await phoneApp.ack(m.id);
      await phoneApp.read(m.id);
    }

    step("M4", "A tablet on the same number registers the other way: it texts its own code from the");
    say("   number to the service and sends the same code over HTTPS; the server matches the two.");
    const tabletHttp = pinnedClient(server);
    clients.push(tabletHttp);
    const tabletApp = await MessagingApp.open({ http: tabletHttp, keystore: new MemoryKeystore() });
    const tablet = new SimulatedMessagingHandset(tabletApp, new OutboxLine(admin, number));
    const tabletId = await tablet.registerByHandsetCode("tablet");
    say(`   tablet ${tabletId} registered`);

    step("M5", "The clinic's next message is sealed to both handsets, each under its own key.");
    const second = (
      await clinic.post<{ id: string; status: string }>("/v1/messages", {
        to: number,
        body: { type: "text", text: "Please bring your last ECG. Reply YES to confirm." },
      })
    ).body;
    for (const [name, app] of [
      ["phone", phoneApp],
      ["tablet", tabletApp],
    ] as const) {
      const { messages } = await app.pull();
      for (const m of messages.filter((x) => x.id === second.id)) {
        opened[name][m.id] = textOf(m);
        say(`   ${name.padEnd(6)} decrypts: "${textOf(m)}"`);
        await app.ack(m.id);
      }
    }

    step("M6", "The phone replies. The clinic's webhook is told (signed with its secret; no message text");
    say("   travels in a webhook), and the clinic fetches the reply with its API key.");
    await phoneApp.reply(second.id, { type: "text", text: "YES" });
    const reply = await receiver.waitFor(
      (c) => c.type === "reply" && c.messageId === second.id,
      options.webhookTimeoutMs ?? 20_000,
    );
    say(`   webhook: a reply to ${reply.messageId}, signature ${reply.verified ? "verified" : "BAD"}`);
    const { body: replies } = await clinic.get<{ replies: Array<{ body: { type: string; text?: string } }> }>(
      `/v1/messages/${second.id}/replies`,
    );
    replyText = replies.replies.map((r) => r.body.text ?? `[${r.body.type}]`).join(", ");
    say(`   the clinic reads the reply: "${replyText}"`);
    const status = (
      await clinic.get<{ status: string; deliveries: Array<{ deviceType: string; state: string }> }>(
        `/v1/messages/${first.id}`,
      )
    ).body;
    say(
      `   first message: ${status.status} — ${status.deliveries.map((d) => `${d.deviceType} ${d.state}`).join(", ")}`,
    );
    const { body: audit } = await admin.get<{ ok: boolean; count?: number }>("/v1/admin/audit/verify");
    if (!audit.ok) throw new HandsafeError("demo.audit_broken", "the audit chain does not verify");
    say(`   audit chain verified, ${audit.count} records`);
    return {
      number,
      senderId: created.id,
      senderApiKey: created.apiKey,
      firstMessageId: first.id,
      secondMessageId: second.id,
      phoneId,
      tabletId,
      opened,
      webhooks: receiver.calls,
      replyText,
      waitingStatus: first.status,
      finalStatus: status.status,
    };
  } finally {
    for (const c of clients) c.close();
    await receiver.close();
  }
}
