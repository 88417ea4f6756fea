/**
 * Outbound webhooks on both engines, against a real local HTTPS receiver (self-signed, trusted by
 * the dispatcher through its `ca` option). The clock is the test's: retries fall due when the test
 * moves it, and each pass is a `runOnce()`.
 */
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toBase64url } from "../../src/core/codec/base64url.ts";
import { toHex, utf8 } from "../../src/core/codec/bytes.ts";
import {
  enqueueWebhook,
  verifyWebhookSignature,
  WEBHOOK_RETRY_DELAYS_MS,
  WebhookDispatcher,
  type WebhookDispatcherOptions,
  webhookStatus,
} from "../../src/platform/notify/webhooks.ts";
import { claimWebhook } from "../../src/platform/notify/webhook-store.ts";
import { createMemoryReplayGuard } from "../../src/platform/replay.ts";
import { createSelfSignedCertificate, type ServerCertificate } from "../../src/platform/tls.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { startTestPlatform, type TestPlatform } from "./harness.ts";

const TAG = "handsafe/v1/test/webhook";
const SECRET = utf8("webhook-secret-MARKER-7f3a9c21e8d4b6");
const code = (c: string) => expect.objectContaining({ code: c });

interface Received {
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** An HTTPS receiver: answers each call with the next status of `answers` (200 when none is left). */
class Receiver {
  readonly requests: Received[] = [];
  answers: number[] = [];
  /** Milliseconds to wait before answering; Infinity: never answer. */
  delayMs = 0;
  responseBody: Buffer = Buffer.from("ok");
  /** Answer with a body that never ends (64 KiB chunks as fast as the caller reads them). */
  endless = false;
  /** Endless answers whose caller hung up. */
  cutShort = 0;
  private constructor(
    readonly server: Server,
    readonly base: string,
  ) {}

  static async start(cert: ServerCertificate): Promise<Receiver> {
    let self: Receiver | undefined;
    const server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", async () => {
        const r = self!;
        r.requests.push({ url: req.url ?? "/", headers: req.headers, body: Buffer.concat(chunks) });
        const status = r.answers.shift() ?? 200;
        if (r.delayMs === Number.POSITIVE_INFINITY) return;
        if (r.delayMs > 0) await sleep(r.delayMs);
        res.writeHead(status, { "content-type": "text/plain" });
        if (!r.endless) {
          res.end(r.responseBody);
          return;
        }
        const chunk = Buffer.alloc(64 * 1024, 0x61);
        const pump = () => {
          while (!res.destroyed && res.write(chunk));
        };
        res.on("drain", pump);
        res.on("close", () => r.cutShort++);
        pump();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    self = new Receiver(server, `https://127.0.0.1:${port}`);
    return self;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

let cert: ServerCertificate;
let receiver: Receiver;
beforeAll(async () => {
  cert = await createSelfSignedCertificate();
  receiver = await Receiver.start(cert);
});
afterAll(() => receiver.close());

function dispatcherOf(node: TestPlatform, options: WebhookDispatcherOptions = {}): WebhookDispatcher {
  return new WebhookDispatcher(node.platform, { ca: cert.certPem, jitter: 0, ...options });
}

function enqueue(node: TestPlatform, body: unknown, url = `${receiver.base}/hooks/reply?sender=snd_1`) {
  return enqueueWebhook(node.platform, {
    url,
    body,
    secret: SECRET,
    keyId: "snd_1",
    tag: TAG,
    kind: "test.reply",
  });
}

/** The receiver's check, as a sender's system would run it. */
function verifyAt(node: TestPlatform, r: Received) {
  return verifyWebhookSignature({
    secret: SECRET,
    tag: TAG,
    url: `${receiver.base}${r.url}`,
    headers: r.headers,
    body: r.body,
    keyId: "snd_1",
    nowMs: node.now.ms,
  });
}

const pgOk = await postgresAvailable();

describe("webhook URLs", () => {
  it("must be https, except http to this machine; no credentials, no fragment", async () => {
    const node = await startTestPlatform("sqlite");
    try {
      for (const url of [
        "http://example.com/hook",
        "ftp://example.com/hook",
        "https://user:pw@example.com/hook",
        "https://example.com/hook#frag",
        "not a url",
      ])
        await expect(enqueue(node, {}, url)).rejects.toThrow(code("webhook.invalid_url"));
      for (const url of ["https://example.com/hook", "http://127.0.0.1:9/hook", "http://localhost:9/hook"])
        await expect(enqueue(node, {}, url)).resolves.toMatchObject({ id: expect.stringMatching(/^whk_/) });
      await expect(
        enqueueWebhook(node.platform, {
          url: "https://example.com/",
          body: {},
          secret: SECRET,
          keyId: "k",
          tag: TAG,
          kind: "Bad Kind",
        }),
      ).rejects.toThrow(code("webhook.invalid"));
      await expect(
        enqueueWebhook(node.platform, {
          url: "https://example.com/",
          body: {},
          secret: new Uint8Array(8),
          keyId: "k",
          tag: TAG,
          kind: "k",
        }),
      ).rejects.toThrow(code("webhook.invalid"));
    } finally {
      await node.close();
    }
  });
});

describe.each(databaseKinds)("webhooks on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("delivery", () => {
    let node: TestPlatform;
    beforeAll(async () => {
      node = await startTestPlatform(kind);
    });
    afterAll(() => node.close());

    /** Each test starts with an empty outbox and a receiver answering 200 at once. */
    const fresh = async () => {
      await node.platform.db.deleteFrom("webhook_outbox").execute();
      receiver.requests.length = 0;
      receiver.answers = [];
      receiver.delayMs = 0;
      receiver.responseBody = Buffer.from("ok");
      receiver.endless = false;
    };

    it("is delivered once, signed over method, target URI and body, and audited", async () => {
      await fresh();
      const d = dispatcherOf(node);
      const { id } = await enqueue(node, { type: "reply", messageId: "msg_1", text: "hello" });
      expect(await d.runOnce()).toBe(1);
      expect(receiver.requests).toHaveLength(1);
      const r = receiver.requests[0]!;
      expect(JSON.parse(r.body.toString("utf8"))).toEqual({
        type: "reply",
        messageId: "msg_1",
        text: "hello",
      });
      expect(r.headers["content-type"]).toBe("application/json");
      expect(r.headers["signature-input"]).toMatch(
        /^hs=\("@method" "@target-uri" "content-digest"\);created=1800000000;keyid="snd_1";nonce="[A-Za-z0-9_-]{22}";alg="hmac-sha256";tag="handsafe\/v1\/test\/webhook"$/,
      );
      expect(verifyAt(node, r)).toMatchObject({ keyId: "snd_1", created: 1_800_000_000 });
      expect(await webhookStatus(node.platform.db, id)).toMatchObject({
        state: "delivered",
        attempts: 1,
        lastStatus: 200,
        lastError: null,
        nextAttemptAt: null,
      });
      expect(await d.runOnce()).toBe(0);
      expect(receiver.requests).toHaveLength(1);
      const audit = await node.auditActions();
      expect(
        audit.filter((a) => a.action === "webhook.delivered" && a.subject === `webhook:${id}`),
      ).toHaveLength(1);
      expect(await node.auditOk()).toBe(true);
      const metrics = await node.platform.metrics.registry.metrics();
      expect(metrics).toMatch(/handsafe_webhook_attempts_total\{kind="test.reply",outcome="delivered"\} 1/);
    });

    it("answered 500 twice, then 200: delivered on the third try, each try freshly signed", async () => {
      await fresh();
      receiver.answers = [500, 500, 200];
      const d = dispatcherOf(node);
      const { id } = await enqueue(node, { n: 2 });
      const start = node.now.ms;
      expect(await d.runOnce()).toBe(1);
      expect(await webhookStatus(node.platform.db, id)).toMatchObject({
        state: "pending",
        attempts: 1,
        lastStatus: 500,
        lastError: "HTTP 500",
        nextAttemptAt: start + WEBHOOK_RETRY_DELAYS_MS[0]!,
      });
      expect(await d.runOnce()).toBe(0); // not due yet
      node.now.ms += WEBHOOK_RETRY_DELAYS_MS[0]!;
      expect(await d.runOnce()).toBe(1);
      expect((await webhookStatus(node.platform.db, id))?.attempts).toBe(2);
      node.now.ms += WEBHOOK_RETRY_DELAYS_MS[1]! - 1;
      expect(await d.runOnce()).toBe(0);
      node.now.ms += 1;
      expect(await d.runOnce()).toBe(1);
      expect(await webhookStatus(node.platform.db, id)).toMatchObject({
        state: "delivered",
        attempts: 3,
        lastStatus: 200,
      });
      expect(receiver.requests).toHaveLength(3);
      const nonces = new Set(receiver.requests.map((r) => verifyAt(node, r).nonce));
      expect(nonces.size).toBe(3);
    });

    it("a receiver that is down: tried 8 times with growing waits, then failed and audited", async () => {
      await fresh();
      const down = await Receiver.start(cert);
      const url = `${down.base}/hook`;
      await down.close();
      const events: string[] = [];
      const d = dispatcherOf(node, { onEvent: (e) => events.push(e.type) });
      const { id } = await enqueue(node, { n: 3 }, url);
      const waits: number[] = [];
      for (let i = 0; i < 8; i++) {
        expect(await d.runOnce()).toBe(1);
        const s = (await webhookStatus(node.platform.db, id))!;
        expect(s.attempts).toBe(i + 1);
        expect(s.lastStatus).toBeNull();
        expect(s.lastError).toMatch(/ECONNREFUSED/);
        if (s.nextAttemptAt !== null) {
          waits.push(s.nextAttemptAt - node.now.ms);
          node.now.ms = s.nextAttemptAt;
        }
      }
      expect(waits).toEqual([...WEBHOOK_RETRY_DELAYS_MS]);
      expect(waits[0]).toBe(1000);
      expect(waits.at(-1)).toBe(600_000);
      expect(await webhookStatus(node.platform.db, id)).toMatchObject({ state: "failed", attempts: 8 });
      node.now.ms += 3_600_000;
      expect(await d.runOnce()).toBe(0);
      expect(events).toEqual([...Array(7).fill("retry"), "failed"]);
      const failed = (await node.auditActions()).filter((a) => a.action === "webhook.failed");
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatchObject({ outcome: "error", subject: `webhook:${id}` });
      expect(failed[0]!.details).not.toContain("/hook"); // the host only: a path may carry a token
    });

    it("attack: a receiver whose certificate we do not trust gets nothing", async () => {
      await fresh();
      const d = new WebhookDispatcher(node.platform, { jitter: 0 }); // no `ca`: the system's CAs only
      const { id } = await enqueue(node, { n: 4 });
      expect(await d.runOnce()).toBe(1);
      expect(receiver.requests).toHaveLength(0);
      expect(await webhookStatus(node.platform.db, id)).toMatchObject({
        state: "pending",
        lastError: expect.stringMatching(/SELF_SIGNED|self.signed/i),
      });
    });

    it("an answer larger than 64 KiB is cut short and still counts; no answer in time is a failed try", async () => {
      await fresh();
      receiver.endless = true;
      receiver.cutShort = 0;
      const big = await enqueue(node, { n: 5 });
      const started = Date.now();
      expect(await dispatcherOf(node, { timeoutMs: 5000 }).runOnce()).toBe(1);
      expect(Date.now() - started).toBeLessThan(2000); // it hung up, it did not wait for the deadline
      expect((await webhookStatus(node.platform.db, big.id))?.state).toBe("delivered");
      for (let i = 0; i < 100 && receiver.cutShort === 0; i++) await sleep(10);
      expect(receiver.cutShort).toBe(1);
      receiver.endless = false;
      const d = dispatcherOf(node, { timeoutMs: 300 });
      receiver.delayMs = 1000;
      const slow = await enqueue(node, { n: 6 });
      const t0 = Date.now();
      expect(await d.runOnce()).toBe(1);
      expect(Date.now() - t0).toBeLessThan(1500);
      expect(await webhookStatus(node.platform.db, slow.id)).toMatchObject({
        state: "pending",
        lastError: expect.stringMatching(/ETIMEDOUT/),
      });
      await sleep(800); // let the receiver's late answer go nowhere
    });

    it("started, it delivers on its own timer (unref'd), and stops", async () => {
      await fresh();
      const d = dispatcherOf(node, { pollIntervalMs: 20 }).start();
      try {
        expect((d as unknown as { timer: NodeJS.Timeout }).timer.hasRef()).toBe(false);
        const { id } = await enqueue(node, { n: 9 });
        for (let i = 0; i < 200 && (await webhookStatus(node.platform.db, id))?.state !== "delivered"; i++)
          await sleep(10);
        expect((await webhookStatus(node.platform.db, id))?.state).toBe("delivered");
      } finally {
        await d.stop();
      }
      const later = await enqueue(node, { n: 10 });
      await sleep(100);
      expect((await webhookStatus(node.platform.db, later.id))?.state).toBe("pending");
    });

    it("a node stopping mid-call gives the row back untried; a lapsed lease is taken over", async () => {
      await fresh();
      receiver.delayMs = Number.POSITIVE_INFINITY;
      const d = dispatcherOf(node);
      const { id } = await enqueue(node, { n: 7 });
      const pass = d.runOnce();
      while (receiver.requests.length === 0) await sleep(10);
      await d.stop();
      await pass;
      expect(await webhookStatus(node.platform.db, id)).toMatchObject({ state: "pending", attempts: 0 });
      expect(await d.runOnce()).toBe(0); // a stopped dispatcher does nothing

      // A node claims the row and dies: after the lease, another node delivers it.
      receiver.requests.length = 0;
      receiver.delayMs = 0;
      const dead = await claimWebhook(
        node.platform.db,
        id,
        0,
        "dead-node",
        node.now.ms,
        node.now.ms + 60_000,
      );
      expect(dead?.state).toBe("sending");
      const other = dispatcherOf(node);
      expect(await other.runOnce()).toBe(0);
      node.now.ms += 60_000;
      expect(await other.runOnce()).toBe(1);
      expect(await webhookStatus(node.platform.db, id)).toMatchObject({ state: "delivered", attempts: 2 });
      expect(receiver.requests).toHaveLength(1);
    });

    // PostgreSQL: two nodes, each with its own pool. SQLite is the one-node engine: there the two
    // dispatchers share the node's connection, and their reads and claims interleave at each await.
    it("two dispatchers on one database never both deliver the same row", async () => {
      await fresh();
      receiver.delayMs = 15;
      const second =
        kind === "postgres" ? await startTestPlatform(kind, { shareDatabaseOf: node }) : undefined;
      try {
        const a = dispatcherOf(node, { batchSize: 4 });
        const b = dispatcherOf(second ?? node, { batchSize: 4 });
        const ids: string[] = [];
        for (let i = 0; i < 24; i++)
          ids.push((await enqueue(second && i % 2 ? second : node, { race: i })).id);
        let tries = 0;
        for (let round = 0; round < 20; round++) {
          const counts = await Promise.all([a.runOnce(), b.runOnce(), b.runOnce(), a.runOnce()]);
          tries += counts.reduce((x, y) => x + y, 0);
          const open = await node.platform.db
            .selectFrom("webhook_outbox")
            .select((eb) => eb.fn.countAll<number>().as("n"))
            .where("id", "in", ids)
            .where("state", "<>", "delivered")
            .executeTakeFirstOrThrow();
          if (Number(open.n) === 0) break;
        }
        const seen = receiver.requests.map(
          (r) => (JSON.parse(r.body.toString("utf8")) as { race: number }).race,
        );
        expect(seen.sort((p, q) => p - q)).toEqual([...Array(24).keys()]);
        for (const id of ids) expect((await webhookStatus(node.platform.db, id))?.attempts).toBe(1);
        expect(tries).toBe(24);
        expect(await node.auditOk()).toBe(true);
      } finally {
        await second?.close();
      }
    });

    it("the secret is never in the database in clear, and is gone once the call is done", async () => {
      await fresh();
      const marker = Buffer.from(SECRET);
      const forms = ["webhook-secret-MARKER", toHex(SECRET), marker.toString("base64"), toBase64url(SECRET)];
      const scan = async () => {
        const tables =
          kind === "sqlite"
            ? await sql<{ name: string }>`select name from sqlite_master where type = 'table'`.execute(
                node.platform.db,
              )
            : await sql<{
                name: string;
              }>`select tablename as name from pg_tables where schemaname = 'public'`.execute(
                node.platform.db,
              );
        let cells = 0;
        for (const { name } of tables.rows) {
          const rows = await sql<Record<string, unknown>>`select * from ${sql.table(name)}`.execute(
            node.platform.db,
          );
          for (const row of rows.rows)
            for (const value of Object.values(row)) {
              cells++;
              if (value instanceof Uint8Array) expect(Buffer.from(value).indexOf(marker)).toBe(-1);
              else for (const f of forms) expect(String(value)).not.toContain(f);
            }
        }
        expect(cells).toBeGreaterThan(10);
        if (kind === "sqlite") {
          const file = node.platform.config.databaseUrl.replace(/^sqlite:/, "");
          for (const path of [file, `${file}-wal`]) {
            let bytes: Buffer;
            try {
              bytes = readFileSync(path);
            } catch {
              continue;
            }
            expect(bytes.indexOf(marker)).toBe(-1);
          }
        }
      };
      const { id } = await enqueue(node, { n: 8 });
      const sealed = () =>
        node.platform.db
          .selectFrom("webhook_outbox")
          .select("sealed_secret")
          .where("id", "=", id)
          .executeTakeFirstOrThrow()
          .then((r: { sealed_secret: Uint8Array }) => r.sealed_secret.length);
      expect(await sealed()).toBeGreaterThan(SECRET.length);
      await scan();
      await dispatcherOf(node).runOnce();
      expect((await webhookStatus(node.platform.db, id))?.state).toBe("delivered");
      expect(await sealed()).toBe(0);
      await scan();
    });
  });
});

describe("verifyWebhookSignature, as a receiver uses it", () => {
  const now = { ms: 1_800_000_000_000 };
  let sample: Received;
  beforeAll(async () => {
    const p = await startTestPlatform("sqlite", { now });
    try {
      receiver.requests.length = 0;
      receiver.answers = [];
      receiver.delayMs = 0;
      await enqueue(p, { type: "receipt", status: "read" });
      await dispatcherOf(p).runOnce();
      sample = receiver.requests[0]!;
    } finally {
      await p.close();
    }
  });

  const check = (over: Partial<Parameters<typeof verifyWebhookSignature>[0]> = {}) =>
    verifyWebhookSignature({
      secret: SECRET,
      tag: TAG,
      url: `${receiver.base}${sample.url}`,
      headers: sample.headers,
      body: sample.body,
      nowMs: now.ms,
      ...over,
    });

  it("accepts the genuine call, and a replay guard refuses it the second time", async () => {
    const v = check();
    const replay = createMemoryReplayGuard(() => now.ms);
    expect(await replay.claim(`webhook:${v.keyId}`, v.nonce, v.rememberNonceUntil)).toBe(true);
    expect(await replay.claim(`webhook:${v.keyId}`, v.nonce, v.rememberNonceUntil)).toBe(false);
    expect(v.rememberNonceUntil).toBe(now.ms + 301_000);
  });
  it("attack: another secret", () =>
    expect(() => check({ secret: utf8("another-secret-of-32-bytes-xxxxx") })).toThrow(
      code("signature.invalid"),
    ));
  it("attack: a changed body", () =>
    expect(() => check({ body: Buffer.from(sample.body.toString().replace("read", "sent")) })).toThrow(
      code("signature.digest_mismatch"),
    ));
  it("attack: sent on to another URL", () =>
    expect(() => check({ url: `${receiver.base}/hooks/other?sender=snd_1` })).toThrow(
      code("signature.invalid"),
    ));
  it("attack: another profile's tag", () =>
    expect(() => check({ tag: "handsafe/v1/other" })).toThrow(code("signature.malformed")));
  it("attack: another sender's keyid", () =>
    expect(() => check({ keyId: "snd_2" })).toThrow(code("signature.unknown_key")));
  it("attack: replayed after the window", () =>
    expect(() => check({ nowMs: now.ms + 301_000 })).toThrow(code("signature.stale")));
  it("attack: no signature", () =>
    expect(() => check({ headers: { ...sample.headers, signature: undefined } })).toThrow(
      code("signature.missing"),
    ));
  it("headers in any case", () => {
    const upper = Object.fromEntries(Object.entries(sample.headers).map(([k, v]) => [k.toUpperCase(), v]));
    expect(() => check({ headers: upper })).not.toThrow();
  });
});
