/**
 * A real management server for the tests, composed like src/platform/server.ts (which this
 * capability does not edit): real database (SQLite or PostgreSQL) with the real migrations, real
 * keyring, hash-chained audit, the platform's Fastify app over HTTPS with management's routes. The
 * only stand-in is the SMS transport: a gateway that records the texts it is asked to send.
 */
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Kysely, sql } from "kysely";
import { createNodeTransport } from "../../src/handset/node-transport.ts";
import type { PushSettings } from "../../src/management/push-channel.ts";
import { registerManagementRoutes } from "../../src/management/routes.ts";
import type { ManagementService } from "../../src/management/server.ts";
import { managementMigrations } from "../../src/management/store.ts";
import { verifyAuditChain } from "../../src/platform/audit.ts";
import { type AuthTables, authMigrations, issueToken } from "../../src/platform/auth/store.ts";
import { loadConfig } from "../../src/platform/config.ts";
import { createPlatform } from "../../src/platform/compose.ts";
import type { Platform } from "../../src/platform/context.ts";
import { openDatabase } from "../../src/platform/db/database.ts";
import { combineMigrations, migrateToLatest } from "../../src/platform/db/migrate.ts";
import { platformMigrations } from "../../src/platform/db/migrations/index.ts";
import { type App, createHttpApp } from "../../src/platform/http/app.ts";
import { createMetrics } from "../../src/platform/http/metrics.ts";
import { MASTER_KEY_FILE } from "../../src/platform/keyring.ts";
import { inboxMigrations } from "../../src/platform/notify/inbox.ts";
import type { InboundSms, SmsGateway } from "../../src/platform/notify/sms/types.ts";
import { registryMigrations } from "../../src/platform/registry/handsets.ts";
import { ensureServerCertificate } from "../../src/platform/tls.ts";
import { createTestDatabase, type DatabaseKind } from "../helpers/databases.ts";

/** A transport double: records each text it is asked to send, in order. */
export class RecordingSmsGateway implements SmsGateway {
  readonly kind = "outbox" as const;
  readonly sent: Array<{ id: string; to: string; text: string }> = [];
  failNext = false;
  private waiters: Array<{ to: string; from: number; resolve: (t: string) => void }> = [];

  async send(to: string, text: string): Promise<{ id: string }> {
    if (this.failNext) {
      this.failNext = false;
      throw new Error("gateway down");
    }
    const id = `sms_${this.sent.length + 1}`;
    this.sent.push({ id, to, text });
    for (const w of [...this.waiters]) this.deliverTo(w);
    return { id };
  }

  onInbound(_handler: (sms: InboundSms) => Promise<void>): void {}
  async close(): Promise<void> {}

  textsTo(to: string): string[] {
    return this.sent.filter((s) => s.to === to).map((s) => s.text);
  }

  /** An SMS inbox for one number: each call resolves with the next text sent to it. */
  inbox(to: string): () => Promise<{ from: string; text: string }> {
    let read = this.textsTo(to).length;
    return () =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no SMS to ${to}`)), 5000);
        const w = {
          to,
          from: read,
          resolve: (text: string) => {
            clearTimeout(timer);
            read++;
            resolve({ from: "+4915100000000", text });
          },
        };
        if (!this.deliverTo(w)) this.waiters.push(w);
      });
  }

  private deliverTo(w: { to: string; from: number; resolve: (t: string) => void }): boolean {
    const texts = this.textsTo(w.to);
    if (texts.length <= w.from) return false;
    this.waiters = this.waiters.filter((x) => x !== w);
    w.resolve(texts[w.from]!);
    return true;
  }
}

export interface ManagementTestServer {
  app: App;
  platform: Platform;
  service: ManagementService;
  sms: RecordingSmsGateway;
  url: string;
  pin: string;
  adminToken: string;
  /** Admin request through app.inject. */
  admin(
    method: "GET" | "POST",
    url: string,
    body?: string | object,
    contentType?: string,
  ): Promise<{
    status: number;
    // biome-ignore lint/suspicious/noExplicitAny: tests read answers of many shapes.
    json: () => any;
  }>;
  transport(): ReturnType<typeof createNodeTransport>;
  auditOk(): Promise<boolean>;
  close(): Promise<void>;
}

export async function startManagementServer(
  kind: DatabaseKind,
  options: {
    clock?: () => number;
    /** Another node on this database (kept when this node closes): a second server of one fleet. */
    shareDatabaseOf?: ManagementTestServer;
    push?: PushSettings;
  } = {},
): Promise<ManagementTestServer> {
  const database = options.shareDatabaseOf
    ? { url: options.shareDatabaseOf.platform.config.databaseUrl, drop: async () => {} }
    : await createTestDatabase(kind);
  const dataDir = mkdtempSync(join(tmpdir(), "handsafe-mgmt-"));
  // Nodes of one fleet share the master key (docs/configuration.md HANDSAFE_MASTER_KEY).
  if (options.shareDatabaseOf)
    copyFileSync(
      join(options.shareDatabaseOf.platform.config.dataDir, MASTER_KEY_FILE),
      join(dataDir, MASTER_KEY_FILE),
    );
  const config = loadConfig({
    HANDSAFE_DATA_DIR: dataDir,
    HANDSAFE_PORT: "0",
    HANDSAFE_DATABASE_URL: database.url,
    HANDSAFE_LOG_LEVEL: "silent",
    HANDSAFE_RATE_LIMIT: "0",
  });
  const cert = await ensureServerCertificate(dataDir);
  const db = await openDatabase(database.url);
  await migrateToLatest(
    db,
    combineMigrations(
      platformMigrations,
      authMigrations,
      registryMigrations,
      inboxMigrations,
      managementMigrations,
    ),
  );
  const metrics = createMetrics();
  const clock = options.clock ?? Date.now;
  const platform = createPlatform({ config, database: db, clock: clock, metrics });

  const { token } = await issueToken(db.db as Kysely<AuthTables>, { kind: "admin", label: "test" }, clock());
  const app = await createHttpApp({
    tls: { cert: cert.certPem, key: cert.keyPem },
    logLevel: "silent",
    bodyLimit: config.bodyLimit,
    rateLimitPerMinute: 0,
    metrics,
    version: "test",
    publicUrl: "https://localhost",
    readiness: async () => {
      await sql`select 1`.execute(db.db);
    },
  });
  const sms = new RecordingSmsGateway();
  const routes = registerManagementRoutes(app, platform, {
    sms,
    server: { url: "https://localhost", pin: cert.spkiSha256 },
    ...(options.push ? { push: options.push } : {}),
  });
  await app.listen({ host: "127.0.0.1", port: 0 });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  const transports: Array<{ close(): void }> = [];
  return {
    app,
    platform,
    service: routes.service,
    sms,
    url: `https://127.0.0.1:${port}`,
    pin: cert.spkiSha256,
    adminToken: token,
    async admin(method, url, body, contentType) {
      const res = await app.inject({
        method,
        url,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body !== undefined ? { "content-type": contentType ?? "application/json" } : {}),
        },
        ...(body !== undefined ? { payload: typeof body === "string" ? body : JSON.stringify(body) } : {}),
      });
      return { status: res.statusCode, json: () => res.json() };
    },
    transport() {
      const t = createNodeTransport({ pin: cert.spkiSha256 });
      transports.push(t);
      return t;
    },
    async auditOk() {
      return (await verifyAuditChain(db)).ok;
    },
    async close() {
      for (const t of transports) t.close();
      await app.close();
      await db.close();
      await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
