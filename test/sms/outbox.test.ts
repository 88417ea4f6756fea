/** The built-in SMS centre and its routes, on SQLite and PostgreSQL. */
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { appendAudit } from "../../src/platform/audit.ts";
import { createGuards } from "../../src/platform/auth/guard.ts";
import { type AuthTables, authMigrations, issueToken } from "../../src/platform/auth/store.ts";
import { loadConfig } from "../../src/platform/config.ts";
import type { Platform } from "../../src/platform/context.ts";
import { type Database, openDatabase } from "../../src/platform/db/database.ts";
import { combineMigrations, migrateToLatest } from "../../src/platform/db/migrate.ts";
import { platformMigrations } from "../../src/platform/db/migrations/index.ts";
import { type App, createHttpApp } from "../../src/platform/http/app.ts";
import { createMetrics } from "../../src/platform/http/metrics.ts";
import { keyringFromConfig } from "../../src/platform/keyring.ts";
import { createHttpGateway, signWebhook } from "../../src/platform/notify/sms/http.ts";
import { createSmsGateway, type OutboxGateway } from "../../src/platform/notify/sms/index.ts";
import { createOutboxGateway } from "../../src/platform/notify/sms/outbox.ts";
import { registerSmsRoutes } from "../../src/platform/notify/sms/routes.ts";
import { listTexts, type SmsTables, smsMigrations } from "../../src/platform/notify/sms/store.ts";
import type { InboundSms } from "../../src/platform/notify/sms/types.ts";
import {
  createTestDatabase,
  databaseKinds,
  postgresAvailable,
  type TestDatabase,
} from "../helpers/databases.ts";

const SERVICE = "+447911123456";
const HANDSET = "+33612345678";
const OTHER = "+4915112345678";
const pgOk = await postgresAvailable();

async function platformOn(database: Database, clock: () => number): Promise<Platform> {
  const metrics = createMetrics();
  const config = loadConfig({
    HANDSAFE_DATA_DIR: "/tmp/handsafe-sms-test-unused",
    HANDSAFE_MASTER_KEY: "A".repeat(43),
  });
  return {
    config,
    database,
    db: database.db,
    keyring: keyringFromConfig(config),
    clock,
    metrics,
    guards: createGuards(database.db as Kysely<AuthTables>, clock),
    async audit(entry) {
      await appendAudit(database, entry);
    },
  };
}

async function appWith(platform: Platform, gateway: Parameters<typeof registerSmsRoutes>[2]): Promise<App> {
  const app = await createHttpApp({
    logLevel: "silent",
    bodyLimit: 65536,
    rateLimitPerMinute: 0,
    metrics: platform.metrics,
    version: "test",
    publicUrl: "http://localhost",
    readiness: async () => {},
  });
  registerSmsRoutes(app, platform, gateway);
  await app.ready();
  return app;
}

describe.each(databaseKinds)("SMS outbox on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let testDb: TestDatabase;
    let database: Database;
    let now = 1_700_000_000_000;
    const clock = () => now;

    beforeAll(async () => {
      testDb = await createTestDatabase(kind);
      database = await openDatabase(testDb.url);
      await migrateToLatest(database, combineMigrations(platformMigrations, authMigrations, smsMigrations));
    });
    afterAll(async () => {
      await database?.close();
      await testDb?.drop();
    });

    it("send() stores an MT text that listTexts reads back, oldest first, paged by id", async () => {
      const outbox = createOutboxGateway(database.db, { serviceNumber: SERVICE, clock });
      const ids: string[] = [];
      for (const text of ["one", "two", "three"]) ids.push((await outbox.send(HANDSET, text)).id);
      await outbox.send(OTHER, "not for the handset");
      const db = database.db as Kysely<SmsTables>;
      const all = await listTexts(db, { to: HANDSET, limit: 10 });
      expect(all.map((t) => [t.text, t.direction, t.from, t.to, t.at])).toEqual([
        ["one", "mt", SERVICE, HANDSET, now],
        ["two", "mt", SERVICE, HANDSET, now],
        ["three", "mt", SERVICE, HANDSET, now],
      ]);
      expect(all.map((t) => t.id)).toEqual(ids);
      expect((await listTexts(db, { to: HANDSET, after: ids[0]!, limit: 1 })).map((t) => t.text)).toEqual([
        "two",
      ]);
      expect(await listTexts(db, { to: HANDSET, after: ids[2]!, limit: 10 })).toEqual([]);
    });

    it("submitInbound stores an MO text and calls the inbound handler", async () => {
      const outbox = createOutboxGateway(database.db, { serviceNumber: SERVICE, clock });
      const got: InboundSms[] = [];
      outbox.onInbound(async (sms) => {
        got.push(sms);
      });
      const stored = await outbox.submitInbound("+33 6 12 34 56 78", "STOP");
      expect(stored).toMatchObject({ direction: "mo", from: HANDSET, to: SERVICE, text: "STOP" });
      expect(got).toEqual([{ id: stored.id, from: HANDSET, to: SERVICE, text: "STOP", at: now }]);
      const atService = await listTexts(database.db as Kysely<SmsTables>, { to: SERVICE, limit: 10 });
      expect(atService.map((t) => t.text)).toContain("STOP");
      await expect(outbox.submitInbound(HANDSET, "x", OTHER)).rejects.toMatchObject({
        code: "sms.unknown_recipient",
      });
      await expect(outbox.send("12345", "x")).rejects.toMatchObject({ code: "phone.invalid" });
    });

    describe("routes", () => {
      let app: App;
      let admin: string;
      let session: string;
      let outbox: OutboxGateway;

      beforeAll(async () => {
        const platform = await platformOn(database, clock);
        outbox = createSmsGateway(
          { kind: "outbox", serviceNumber: SERVICE, perNumberPerHour: 3 },
          { db: database.db, clock },
        ) as OutboxGateway;
        app = await appWith(platform, outbox);
        const db = database.db as Kysely<AuthTables>;
        admin = (await issueToken(db, { kind: "admin", label: "t" }, now)).token;
        session = (await issueToken(db, { kind: "session" }, now)).token;
      });
      afterAll(() => app?.close());

      const number = "+33612345670";
      it("an admin reads a number's texts through GET /v1/sms/outbox, and reading marks them read", async () => {
        await outbox.send("+33612345679", "hello");
        const url = `/v1/sms/outbox?to=${encodeURIComponent("+33 6 12 34 56 79")}`;
        const first = await app.inject({ method: "GET", url, headers: { authorization: `Bearer ${admin}` } });
        expect(first.statusCode).toBe(200);
        const texts = first.json().texts;
        expect(texts).toHaveLength(1);
        expect(texts[0]).toMatchObject({ text: "hello", from: SERVICE, to: "+33612345679", readAt: null });
        now += 1000;
        const again = await app.inject({ method: "GET", url, headers: { authorization: `Bearer ${admin}` } });
        expect(again.json().texts[0].readAt).toBe(now - 1000);
        const after = await app.inject({
          method: "GET",
          url: `${url}&after=${texts[0].id}`,
          headers: { authorization: `Bearer ${admin}` },
        });
        expect(after.json().texts).toEqual([]);
      });

      it("POST /v1/sms/outbox/inbound simulates a handset texting the service", async () => {
        const texts: string[] = [];
        outbox.onInbound(async (sms) => {
          texts.push(`${sms.from}:${sms.text}`);
        });
        const res = await app.inject({
          method: "POST",
          url: "/v1/sms/outbox/inbound",
          headers: { authorization: `Bearer ${admin}` },
          payload: { from: HANDSET, to: SERVICE, text: "YES" },
        });
        expect(res.statusCode).toBe(200);
        expect(res.json()).toMatchObject({ direction: "mo", from: HANDSET, text: "YES" });
        expect(texts).toEqual([`${HANDSET}:YES`]);
      });

      describe("someone without an admin token reads or forges texts", () => {
        it.each([
          ["no token", undefined, 401, "auth.unauthenticated"],
          ["a handset session", "session", 403, "auth.forbidden"],
        ])("%s → %s", async (_name, who, status, code) => {
          const headers = who ? { authorization: `Bearer ${session}` } : {};
          const read = await app.inject({
            method: "GET",
            url: `/v1/sms/outbox?to=${encodeURIComponent(HANDSET)}`,
            headers,
          });
          expect([read.statusCode, read.json().error.code]).toEqual([status, code]);
          const forge = await app.inject({
            method: "POST",
            url: "/v1/sms/outbox/inbound",
            headers,
            payload: { from: HANDSET, text: "YES" },
          });
          expect([forge.statusCode, forge.json().error.code]).toEqual([status, code]);
        });
      });

      it("refuses invalid numbers and query strings", async () => {
        const headers = { authorization: `Bearer ${admin}` };
        const bad = await app.inject({ method: "GET", url: "/v1/sms/outbox?to=12", headers });
        expect([bad.statusCode, bad.json().error.code]).toEqual([400, "phone.invalid"]);
        const badAfter = await app.inject({
          method: "GET",
          url: `/v1/sms/outbox?to=${encodeURIComponent(HANDSET)}&after=x`,
          headers,
        });
        expect(badAfter.json().error.code).toBe("request.invalid");
        const badFrom = await app.inject({
          method: "POST",
          url: "/v1/sms/outbox/inbound",
          headers,
          payload: { from: "x", text: "y" },
        });
        expect(badFrom.json().error.code).toBe("phone.invalid");
      });

      it("a flood of texts to one number stops at the limit with sms.rate_limited", async () => {
        for (let i = 0; i < 3; i++) await outbox.send(number, `t${i}`);
        await expect(outbox.send(number, "one too many")).rejects.toMatchObject({
          code: "sms.rate_limited",
          status: 429,
        });
      });

      it("the outbox routes do not exist with another gateway; the webhook does", async () => {
        const platform = await platformOn(database, clock);
        const http = createHttpGateway({
          sendUrl: "http://127.0.0.1:1/",
          token: "t",
          serviceNumber: SERVICE,
          webhookSecret: "secret-secret-secret",
          clock,
        });
        const got: string[] = [];
        http.onInbound(async (sms) => {
          got.push(sms.text);
        });
        const other = await appWith(platform, http);
        try {
          const res = await other.inject({
            method: "GET",
            url: `/v1/sms/outbox?to=${encodeURIComponent(HANDSET)}`,
            headers: { authorization: `Bearer ${admin}` },
          });
          expect(res.statusCode).toBe(404);
          const payload = JSON.stringify({ from: HANDSET, to: SERVICE, text: "HELP" });
          const ts = Math.floor(now / 1000);
          const ok = await other.inject({
            method: "POST",
            url: "/v1/sms/inbound",
            headers: {
              "content-type": "application/json",
              "x-handsafe-timestamp": String(ts),
              "x-handsafe-signature": signWebhook("secret-secret-secret", ts, Buffer.from(payload)),
            },
            payload,
          });
          expect(ok.statusCode).toBe(200);
          expect(got).toEqual(["HELP"]);
          const forged = await other.inject({
            method: "POST",
            url: "/v1/sms/inbound",
            headers: {
              "content-type": "application/json",
              "x-handsafe-timestamp": String(ts),
              "x-handsafe-signature": `sha256=${"0".repeat(64)}`,
            },
            payload,
          });
          expect([forged.statusCode, forged.json().error.code]).toEqual([401, "sms.signature_invalid"]);
        } finally {
          await other.close();
        }
      });
    });
  });
});
