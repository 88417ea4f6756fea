/**
 * Secure messaging end to end on a real HTTPS server, on both databases: a sender posts for a
 * number; the number gets a text; apps (the real SDK over pinned HTTPS) register by either variant,
 * pull, open, acknowledge, read and reply; the sender sees receipts and replies on its HTTPS webhook,
 * signed. Then retention, and a scan of every table and file for the plaintext.
 */
import { dirname } from "node:path";
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toBase64url } from "../../src/core/codec/base64url.ts";
import { utf8 } from "../../src/core/codec/bytes.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { LABELS } from "../../src/messaging/protocol.ts";
import { MessagingSender } from "../../src/messaging/sender-client.ts";
import { MessagingService } from "../../src/messaging/server.ts";
import type { MessagingTables } from "../../src/messaging/store.ts";
import { sweepMessaging } from "../../src/messaging/sweeper.ts";
import { verifyWebhookSignature } from "../../src/platform/notify/webhooks.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { type MessagingHarness, startMessagingServer, type TestSender, WebhookReceiver } from "./harness.ts";
import { findMarkers } from "./scan.ts";

const pgOk = await postgresAvailable();
const MARKER = "PLAINTEXT-MARKER-c41f7e29a0";
const ATTACHMENT_MARKER = "ATTACHMENT-MARKER-5be18d3f";
const REPLY_MARKER = "REPLY-MARKER-7d02e6b9c1";
const RETENTION_SECONDS = 3600;

interface Status {
  id: string;
  status: string;
  deliveries: Array<{
    handsetId: string;
    deviceType: string;
    state: string;
    deliveredAt?: number;
    readAt?: number;
  }>;
  replies: number;
  createdAt: number;
}

describe.each(databaseKinds)("secure messaging end to end on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let t: MessagingHarness;
    let receiver: WebhookReceiver;
    let clinic: TestSender;
    let db: Kysely<MessagingTables>;
    const attachment = toBase64url(new Uint8Array([...utf8(ATTACHMENT_MARKER), ...randomBytes(64)]));

    beforeAll(async () => {
      receiver = await WebhookReceiver.start();
      t = await startMessagingServer(kind, {
        webhookCa: receiver.cert.certPem,
        env: { HANDSAFE_MESSAGE_RETENTION: String(RETENTION_SECONDS) },
      });
      db = t.server.platform.db;
      clinic = await t.sender("Clinic", `${receiver.base}/hooks/clinic`);
    }, 60_000);
    afterAll(async () => {
      await t?.close();
      await receiver?.close();
    });

    const send = async (to: string, body: unknown, extra: Record<string, unknown> = {}, headers = {}) =>
      (
        await clinic.http.post<{ id: string; status: string }>(
          "/v1/messages",
          { to, body, ...extra },
          { headers },
        )
      ).body;
    const status = async (id: string) => (await clinic.http.get<Status>(`/v1/messages/${id}`)).body;
    const envelope = async (id: string) =>
      (
        await db
          .selectFrom("messaging_messages")
          .select("sealed_envelope")
          .where("id", "=", id)
          .executeTakeFirstOrThrow()
      ).sealed_envelope;
    const webhookBody = (call: { body: Buffer }) =>
      JSON.parse(call.body.toString("utf8")) as Record<string, unknown>;

    it("an unregistered number gets the app link; registering by the server's code brings the message", async () => {
      const number = "+447911123401";
      const sent = await send(number, { type: "text", text: `Your results: ${MARKER}` });
      expect(sent.status).toBe("waiting_registration");
      // The id's time prefix is the message's createdAt, from the server's clock (a test clock
      // here, fixed at the harness's start), not the wall clock at the moment of sending.
      expect(parseInt(sent.id.slice(4, 13), 36)).toBe((await status(sent.id)).createdAt);
      const h = await t.handset(number);
      const texts = await h.phone.texts();
      expect(texts).toHaveLength(1);
      expect(texts[0]!.text).toMatch(
        /^Clinic sent you a secure message\. Get the handsafe app: https:\/\/get\.handsafe\.example\/app - it expires \d{4}-\d\d-\d\d \d\d:\d\d UTC\.$/,
      );

      const handsetId = await h.registerByServerCode("pixel-9");
      expect((await status(sent.id)).status).toBe("queued");
      const { messages, refused } = await h.app.pull();
      expect(refused).toEqual([]);
      expect(messages).toHaveLength(1);
      expect(messages[0]).toMatchObject({
        id: sent.id,
        to: number,
        senderId: clinic.id,
        senderName: "Clinic",
        body: { type: "text", text: `Your results: ${MARKER}` },
        state: "pending",
      });

      expect(await envelope(sent.id)).not.toBeNull();
      await h.app.ack(sent.id);
      // every active handset of the number acknowledged: only the HPKE ciphertext is left
      expect(await envelope(sent.id)).toBeNull();
      await h.app.ack(sent.id); // twice is fine
      let s = await status(sent.id);
      expect(s.status).toBe("delivered");
      expect(s.deliveries).toEqual([
        { handsetId, deviceType: "pixel-9", state: "delivered", deliveredAt: expect.any(Number) },
      ]);
      expect(await h.app.fetchInbox()).toEqual([]);

      await h.app.read(sent.id);
      s = await status(sent.id);
      expect(s.status).toBe("read");
      expect(s.deliveries[0]).toMatchObject({ state: "read", readAt: expect.any(Number) });

      for (const wanted of ["delivered", "read"]) {
        const call = await receiver.waitFor((b) => b["messageId"] === sent.id && b["status"] === wanted);
        expect(webhookBody(call)).toEqual({
          type: "receipt",
          messageId: sent.id,
          status: wanted,
          handsetId,
          at: expect.any(Number),
        });
        expect(
          verifyWebhookSignature({
            secret: clinic.webhookSecret,
            tag: LABELS.webhookTag,
            url: `${receiver.base}${call.url}`,
            headers: call.headers,
            body: call.body,
            keyId: clinic.id,
            nowMs: t.clock.ms,
          }).keyId,
        ).toBe(clinic.id);
      }
    });

    it("registering by the handset's own code, the text first: confirmed at once; a message waits with a text", async () => {
      const number = "+447911123402";
      const h = await t.handset(number);
      const handsetId = await h.registerByHandsetCode("iphone-15", { textFirst: true });
      expect(handsetId).toBe(h.app.handsetId);
      expect(h.app.registered).toBe(true);

      const sent = await send(number, { type: "attachment", mediaType: "application/pdf", data: attachment });
      expect(sent.status).toBe("queued");
      const texts = await h.phone.texts();
      expect(texts.map((x) => x.text)).toEqual([
        "Clinic sent you a secure message. Open handsafe to read it.",
      ]);
      const { messages } = await h.app.pull();
      expect(messages.map((m) => m.body)).toEqual([
        { type: "attachment", mediaType: "application/pdf", data: attachment },
      ]);

      // a second message within 10 minutes: no second text
      await send(number, { type: "text", text: MARKER });
      expect(await h.phone.texts()).toEqual([]);
    });

    it("registering by the handset's own code, HTTPS first: the text completes it", async () => {
      const number = "+447911123403";
      const sent = await send(number, { type: "text", text: MARKER });
      const h = await t.handset(number);
      const handsetId = await h.registerByHandsetCode("fairphone-5", { textFirst: false });
      expect(handsetId).toMatch(/^mh_/);
      const { messages } = await h.app.pull();
      expect(messages.map((m) => m.id)).toEqual([sent.id]);
    });

    it("a second handset on the same number gets the next message, sealed to its own key", async () => {
      const number = "+447911123404";
      const a = await t.handset(number);
      const aId = await a.registerByServerCode("pixel-9");
      const first = await send(number, { type: "text", text: MARKER });
      await a.app.ack(first.id);
      expect(await envelope(first.id)).toBeNull();

      const b = await t.handset(number);
      const bId = await b.registerByHandsetCode("tablet", { textFirst: true });
      expect(bId).not.toBe(aId);
      // the first message was erased from the envelope before b came: b never gets it
      expect(await b.app.fetchInbox()).toEqual([]);

      const second = await send(number, { type: "text", text: `second ${MARKER}` });
      const [fromA, fromB] = [await a.app.fetchInbox(), await b.app.fetchInbox()];
      expect(fromA.map((m) => m.id)).toEqual([second.id]);
      expect(fromB.map((m) => m.id)).toEqual([second.id]);
      expect(fromA[0]!.ciphertext).not.toBe(fromB[0]!.ciphertext);
      expect((await b.app.open(fromB[0]!)).body).toEqual({ type: "text", text: `second ${MARKER}` });

      await a.app.ack(second.id);
      expect(await envelope(second.id)).not.toBeNull(); // b has not acknowledged yet
      await b.app.read(second.id);
      expect(await envelope(second.id)).toBeNull();
      const s = await status(second.id);
      expect(s.status).toBe("read");
      expect(s.deliveries.map((d) => [d.handsetId, d.deviceType, d.state]).sort()).toEqual(
        [
          [aId, "pixel-9", "delivered"],
          [bId, "tablet", "read"],
        ].sort(),
      );
    });

    it("re-registration seals the waiting messages again to the new key; a replacing handset takes them over", async () => {
      const number = "+447911123405";
      const h = await t.handset(number);
      const id = await h.registerByServerCode("pixel-9");
      const waiting = await send(number, { type: "text", text: MARKER });
      const before = (await h.app.fetchInbox())[0]!;

      // the same app proves the number again with a fresh encryption key: same handset id
      expect(await h.registerByServerCode("pixel-9")).toBe(id);
      const after = (await h.app.fetchInbox())[0]!;
      expect(after.id).toBe(waiting.id);
      expect(after.ciphertext).not.toBe(before.ciphertext);
      expect((await h.app.open(after)).body).toEqual({ type: "text", text: MARKER });

      // a new phone (new keys) replaces the old one while proving the number
      const replacement = await t.handset(number);
      const newId = await replacement.registerByHandsetCode("pixel-10", { textFirst: true, replaces: id });
      const { messages } = await replacement.app.pull();
      expect(messages.map((m) => m.id)).toEqual([waiting.id]);
      const s = await status(waiting.id);
      expect(Object.fromEntries(s.deliveries.map((d) => [d.handsetId, d.state]))).toEqual({
        [id]: "replaced",
        [newId]: "pending",
      });
      // the replaced handset's key no longer opens anything
      await expect(h.app.fetchInbox()).rejects.toMatchObject({ code: "signature.unknown_key", status: 401 });
    });

    it("an app reopened from its keystore is still registered and opens what came meanwhile", async () => {
      const number = "+447911123412";
      const keystore = new MemoryKeystore();
      const first = await t.handset(number, keystore);
      const id = await first.registerByServerCode("pixel-9");
      const sent = await send(number, { type: "text", text: MARKER });
      const again = await t.handset(number, keystore);
      expect(again.app.handsetId).toBe(id);
      expect(again.app.registered).toBe(true);
      expect(again.app.phoneNumber).toBe(number);
      expect((await again.app.pull()).messages.map((m) => m.id)).toEqual([sent.id]);
    });

    it("a reply reaches the sender's HTTPS webhook, signed; the sender reads it with its API key", async () => {
      const number = "+447911123406";
      const h = await t.handset(number);
      const handsetId = await h.registerByServerCode("pixel-9");
      const sent = await send(number, { type: "text", text: "Can you come on Tuesday?" });
      await h.app.pull();
      const { id: replyId } = await h.app.reply(sent.id, { type: "text", text: `Yes ${REPLY_MARKER}` });
      expect(replyId).toMatch(/^rpl_/);

      const call = await receiver.waitFor((b) => b["type"] === "reply" && b["replyId"] === replyId);
      expect(call.url).toBe("/hooks/clinic");
      const verified = verifyWebhookSignature({
        secret: clinic.webhookSecret,
        tag: LABELS.webhookTag,
        url: `${receiver.base}${call.url}`,
        headers: call.headers,
        body: call.body,
        keyId: clinic.id,
        nowMs: t.clock.ms,
      });
      expect(verified.keyId).toBe(clinic.id);
      // the webhook says a reply waits; its body is read over the sender API, never stored in clear
      expect(webhookBody(call)).toEqual({
        type: "reply",
        messageId: sent.id,
        replyId,
        from: number,
        handsetId,
        at: expect.any(Number),
      });
      const { body } = await clinic.http.get<{ replies: Array<{ id: string; body: unknown }> }>(
        `/v1/messages/${sent.id}/replies`,
      );
      expect(body.replies).toEqual([
        {
          id: replyId,
          handsetId,
          at: expect.any(Number),
          body: { type: "text", text: `Yes ${REPLY_MARKER}` },
        },
      ]);
      expect((await status(sent.id)).replies).toBe(1);
      // a tampered call does not verify
      expect(() =>
        verifyWebhookSignature({
          secret: clinic.webhookSecret,
          tag: LABELS.webhookTag,
          url: `${receiver.base}${call.url}`,
          headers: call.headers,
          body: Buffer.from(call.body.toString("utf8").replace(number, "+447911999999")),
          nowMs: t.clock.ms,
        }),
      ).toThrow(expect.objectContaining({ code: "signature.digest_mismatch" }));
    });

    it("the same Idempotency-Key from the same sender is one message; another sender's key is its own", async () => {
      const number = "+447911123407";
      const key = { "idempotency-key": "order-42" };
      const first = await send(number, { type: "text", text: MARKER }, {}, key);
      const again = await clinic.http.post<{ id: string }>(
        "/v1/messages",
        { to: number, body: { type: "text", text: "something else" } },
        { headers: key },
      );
      expect(again.body.id).toBe(first.id);
      expect(again.headers["idempotent-replayed"]).toBe("true");
      const bank = await t.sender("Bank");
      const other = await bank.http.post<{ id: string }>(
        "/v1/messages",
        { to: number, body: { type: "text", text: MARKER } },
        { headers: key },
      );
      expect(other.body.id).not.toBe(first.id);
      // concurrent duplicates still make one
      const ids = await Promise.all(
        Array.from({ length: 5 }, () =>
          clinic.http.post<{ id: string }>(
            "/v1/messages",
            { to: number, body: { type: "text", text: MARKER } },
            { headers: { "idempotency-key": "burst-1" } },
          ),
        ),
      );
      expect(new Set(ids.map((r) => r.body.id)).size).toBe(1);
      const rows = await db
        .selectFrom("messaging_messages")
        .select("id")
        .where("sender_id", "=", clinic.id)
        .where("idempotency_key", "in", ["order-42", "burst-1"])
        .execute();
      expect(rows).toHaveLength(2);
    });

    it("an undelivered message expires: purged once (two sweepers at a time), reported `expired`", async () => {
      const number = "+447911123408";
      const sent = await send(number, { type: "text", text: MARKER }, { expiresInSeconds: 60 });
      const queued = "+447911123409";
      const h = await t.handset(queued);
      await h.registerByServerCode("pixel-9");
      const queuedMessage = await send(queued, { type: "text", text: MARKER }, { expiresInSeconds: 60 });
      t.clock.advance(61_000);
      const second = new MessagingService(t.server.platform, t.server.messaging.service.deps);
      const reports = await Promise.all([sweepMessaging(t.server.messaging.service), sweepMessaging(second)]);
      expect(reports[0]!.expired + reports[1]!.expired).toBe(2);
      for (const id of [sent.id, queuedMessage.id]) {
        expect((await status(id)).status).toBe("expired");
        expect(await envelope(id)).toBeNull();
        await receiver.waitFor((b) => b["messageId"] === id && b["status"] === "expired");
      }
      const deliveries = await db
        .selectFrom("messaging_deliveries")
        .select(["state", "ciphertext"])
        .where("message_id", "=", queuedMessage.id)
        .execute();
      expect(deliveries).toEqual([{ state: "expired", ciphertext: null }]);
      expect(await h.app.fetchInbox()).toEqual([]);
      // a handset registering now finds nothing to seal
      const late = await t.handset(number);
      await late.registerByServerCode("pixel-9");
      expect(await late.app.fetchInbox()).toEqual([]);
    });

    it("after retention, a delivered message's ciphertexts are purged; its row keeps status and times", async () => {
      const number = "+447911123410";
      const h = await t.handset(number);
      await h.registerByServerCode("pixel-9");
      const sent = await send(number, { type: "text", text: MARKER });
      await h.app.ack(sent.id);
      await h.app.reply(sent.id, { type: "text", text: REPLY_MARKER });
      expect((await h.app.fetchInbox({ all: true })).map((m) => m.id)).toContain(sent.id);
      t.clock.advance((RETENTION_SECONDS + 1) * 1000);
      const report = await sweepMessaging(t.server.messaging.service);
      expect(report.purged).toBeGreaterThanOrEqual(1);
      expect(report.repliesPurged).toBeGreaterThanOrEqual(1);
      expect((await sweepMessaging(t.server.messaging.service)).purged).toBe(0);
      const s = await status(sent.id);
      expect(s.status).toBe("delivered");
      expect(s.deliveries[0]).toMatchObject({ state: "delivered", deliveredAt: expect.any(Number) });
      const d = await db
        .selectFrom("messaging_deliveries")
        .select(["enc", "ciphertext"])
        .where("message_id", "=", sent.id)
        .executeTakeFirstOrThrow();
      expect(d).toEqual({ enc: null, ciphertext: null });
      expect((await h.app.fetchInbox({ all: true })).map((m) => m.id)).not.toContain(sent.id);
      const replies = await clinic.http.get<{ replies: unknown[] }>(`/v1/messages/${sent.id}/replies`);
      expect(replies.body.replies).toEqual([]);
    });

    it("the sender client sends and follows a message; an admin disables a sender and its key stops", async () => {
      const number = "+447911123411";
      const h = await t.handset(number);
      await h.registerByServerCode("pixel-9");
      const bank = await t.sender("Bank");
      const client = new MessagingSender(t.anonymous, bank.apiKey);
      const sent = await client.send(number, { type: "text", text: MARKER }, { idempotencyKey: "k1" });
      expect(sent).toMatchObject({ status: "queued", duplicate: false });
      expect(
        (await client.send(number, { type: "text", text: MARKER }, { idempotencyKey: "k1" })).duplicate,
      ).toBe(true);
      await h.app.pull().then(({ messages }) => h.app.read(messages[0]!.id));
      expect((await client.waitFor(sent.id, ["read"])).status).toBe("read");
      await t.admin.delete(`/v1/admin/senders/${bank.id}`);
      await expect(client.status(sent.id)).rejects.toMatchObject({
        code: "auth.unauthenticated",
        status: 401,
      });
      await expect(t.admin.delete(`/v1/admin/senders/${bank.id}`)).rejects.toMatchObject({
        code: "messaging.unknown_sender",
      });
      const { body } = await t.admin.get<{ senders: Array<{ id: string; disabledAt: number | null }> }>(
        "/v1/admin/senders",
      );
      expect(body.senders.find((x) => x.id === bank.id)?.disabledAt).toEqual(expect.any(Number));
    });

    it("operators see the acceptances' group commit in /metrics, and on SQLite the WAL restarts", async () => {
      const scrape = async () => t.server.platform.metrics.registry.metrics();
      const gauge = (text: string, name: string) => {
        const m = new RegExp(`^${name}\\{group="messaging_accept"\\} (\\d+)$`, "m").exec(text);
        return m ? Number(m[1]) : undefined;
      };
      const before = await scrape();
      const units = gauge(before, "handsafe_group_commit_units")!;
      const batches = gauge(before, "handsafe_group_commit_batches")!;
      await Promise.all(
        ["+447911123470", "+447911123471", "+447911123472"].map((n) => send(n, { type: "text", text: "m" })),
      );
      const after = await scrape();
      expect(gauge(after, "handsafe_group_commit_units")).toBe(units + 3);
      // Three at once share one or more batches, never more than three.
      const more = gauge(after, "handsafe_group_commit_batches")! - batches;
      expect(more).toBeGreaterThanOrEqual(1);
      expect(more).toBeLessThanOrEqual(3);
      expect(gauge(after, "handsafe_group_commit_retries")).toBe(0);
      if (kind === "sqlite") expect(after).toMatch(/^handsafe_sqlite_wal_restarts \d+$/m);
      else expect(after).not.toContain("handsafe_sqlite_wal_restarts");
    });

    it("no plaintext anywhere: not in any column of any table, not in any file of the server", async () => {
      const folders = [t.dataDir, t.server.platform.config.blobDir];
      if (kind === "sqlite")
        folders.push(dirname(t.server.platform.config.databaseUrl.slice("sqlite:".length)));
      // The scan finds what is there (a control): the sender's name in its row and in the texts, the pin
      // in server.json — and on SQLite, in the database file itself.
      const control = await findMarkers(t.server, ["Clinic", t.server.pin], folders);
      expect(control.tables).toEqual(expect.arrayContaining(["messaging_senders.name", "sms_messages.text"]));
      expect(control.files.some((f) => f.endsWith("server.json"))).toBe(true);
      if (kind === "sqlite") expect(control.files.some((f) => f.includes("handsafe.sqlite"))).toBe(true);

      const found = await findMarkers(
        t.server,
        [MARKER, ATTACHMENT_MARKER, REPLY_MARKER, attachment],
        folders,
      );
      expect(found.scannedTables).toBeGreaterThan(20);
      expect(found.scannedRows).toBeGreaterThan(50);
      expect(found.scannedFiles).toBeGreaterThan(2);
      expect(found.tables).toEqual([]);
      expect(found.files).toEqual([]);
      const { body } = await t.admin.get<{ ok: boolean }>("/v1/admin/audit/verify");
      expect(body.ok).toBe(true);
    });
  });
});
