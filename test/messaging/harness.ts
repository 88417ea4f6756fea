import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { fromBase64url } from "../../src/core/codec/base64url.ts";
import { type HttpClient, withHeaders } from "../../src/handset/http-client.ts";
import { type Keystore, MemoryKeystore } from "../../src/handset/keystore.ts";
import { OutboxLine } from "../../src/handset/outbox-line.ts";
import { MessagingApp } from "../../src/messaging/handset.ts";
import { SimulatedMessagingHandset } from "../../src/messaging/simulator.ts";
import type { RunningServer } from "../../src/platform/server.ts";
import { createSelfSignedCertificate, type ServerCertificate } from "../../src/platform/tls.ts";
import type { DatabaseKind } from "../helpers/databases.ts";
import { type Clock, movableClock, startTestServer } from "../helpers/server.ts";

export type { Clock };

export interface TestSender {
  id: string;
  apiKey: string;
  webhookSecret: Uint8Array;
  /** Pinned client with the sender's API key. */
  http: HttpClient;
}

export interface MessagingHarness {
  server: RunningServer;
  admin: HttpClient;
  clock: Clock;
  anonymous: HttpClient;
  dataDir: string;
  sender(name: string, webhookUrl?: string): Promise<TestSender>;
  /** A fresh app (a memory keystore unless given) on a number's line. */
  handset(number: string, keystore?: Keystore): Promise<SimulatedMessagingHandset>;
  /** A client authenticated with any bearer string (another sender's key, garbage). */
  bearer(token: string): HttpClient;
  phone(number: string): OutboxLine;
  close(): Promise<void>;
}

export async function startMessagingServer(
  kind: DatabaseKind,
  options: { env?: Record<string, string>; webhookCa?: string } = {},
): Promise<MessagingHarness> {
  const clock = movableClock();
  const t = await startTestServer(
    kind,
    {
      HANDSAFE_MESSAGING_REGISTRATION_RATE_LIMIT: "0",
      HANDSAFE_SMS_PER_NUMBER_PER_HOUR: "0",
      HANDSAFE_MESSAGING_APP_URL: "https://get.handsafe.example/app",
      ...options.env,
    },
    { clock: () => clock.ms, ...(options.webhookCa ? { webhookCa: options.webhookCa } : {}) },
  );
  const { server, dataDir } = t;
  const client = t.client;
  const admin = withHeaders(client(), { authorization: `Bearer ${server.adminToken}` });
  const phone = (number: string) => new OutboxLine(admin, number, { timeoutMs: 10_000 });
  return {
    server,
    admin,
    clock,
    dataDir,
    anonymous: client(),
    phone,
    bearer: (token) => withHeaders(client(), { authorization: `Bearer ${token}` }),
    async sender(name, webhookUrl) {
      const { body } = await admin.post<{ id: string; apiKey: string; webhookSecret: string }>(
        "/v1/admin/senders",
        { name, ...(webhookUrl ? { webhookUrl } : {}) },
      );
      return {
        id: body.id,
        apiKey: body.apiKey,
        webhookSecret: fromBase64url(body.webhookSecret),
        http: withHeaders(client(), { authorization: `Bearer ${body.apiKey}` }),
      };
    },
    async handset(number, keystore = new MemoryKeystore()) {
      const app = await MessagingApp.open({ http: client(), keystore, clock: () => clock.ms });
      return new SimulatedMessagingHandset(app, phone(number));
    },
    close: () => t.close(),
  };
}

export interface ReceivedCall {
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A local HTTPS webhook receiver (self-signed; the dispatcher trusts it through `ca`). */
export class WebhookReceiver {
  readonly calls: ReceivedCall[] = [];
  private waiters: Array<() => void> = [];

  private constructor(
    readonly server: Server,
    readonly base: string,
    readonly cert: ServerCertificate,
  ) {}

  static async start(): Promise<WebhookReceiver> {
    const cert = await createSelfSignedCertificate();
    let self: WebhookReceiver | undefined;
    const server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        self!.calls.push({ url: req.url ?? "/", headers: req.headers, body: Buffer.concat(chunks) });
        res.writeHead(200, { "content-type": "text/plain" }).end("ok");
        for (const w of self!.waiters.splice(0)) w();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    self = new WebhookReceiver(server, `https://127.0.0.1:${(server.address() as AddressInfo).port}`, cert);
    return self;
  }

  /** Resolves with the first call whose JSON body `match` accepts. */
  async waitFor(
    match: (body: Record<string, unknown>) => boolean,
    timeoutMs = 15_000,
  ): Promise<ReceivedCall> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.calls.find((c) =>
        match(JSON.parse(c.body.toString("utf8")) as Record<string, unknown>),
      );
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no matching webhook call (got ${this.calls.length})`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
