/**
 * The composition root: configuration → certificate → database + migrations → keyring →
 * HTTPS app with every capability's routes. `handsafe server` and the tests both start here.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Kysely } from "kysely";
import { sql } from "kysely";
import { activationMigrations } from "../activation/migrations.ts";
import { registerActivationRoutes } from "../activation/routes.ts";
import type { ActivationService } from "../activation/server.ts";
import { backupMigrations } from "../backup/migrations.ts";
import { registerBackupRoutes } from "../backup/routes.ts";
import { type BackupService, startBackupSweeper } from "../backup/server.ts";
import { type ManagementRoutes, registerManagementRoutes } from "../management/routes.ts";
import { managementMigrations } from "../management/store.ts";
import { messagingMigrations } from "../messaging/migrations.ts";
import { type MessagingRoutes, registerMessagingRoutes } from "../messaging/routes.ts";
import { startMessagingSweeper } from "../messaging/sweeper.ts";
import { trustzoneMigrations } from "../trustzone/migrations.ts";
import { registerTrustzoneRoutes, type TrustzoneRoutes } from "../trustzone/routes.ts";
import { startTrustzoneSweeper } from "../trustzone/sweeper.ts";
import { campaignMigrations } from "../updates/campaigns/migrations.ts";
import { registerCampaignRoutes } from "../updates/campaigns/routes.ts";
import type { CampaignService } from "../updates/campaigns/server.ts";
import { updatesMigrations } from "../updates/migrations.ts";
import { registerUpdateRoutes, type UpdatesService } from "../updates/routes.ts";
import { registerAuthRoutes } from "./auth/routes.ts";
import { type AuthTables, authMigrations, countAdminTokens, issueToken } from "./auth/store.ts";
import { createBlobStore } from "./blobs/index.ts";
import { createPlatform } from "./compose.ts";
import { type Config, defaultPublicUrl, loadConfig } from "./config.ts";
import type { Platform } from "./context.ts";
import { registerConsole } from "./http/console.ts";
import { openDatabase } from "./db/database.ts";
import { combineMigrations, migrateToLatest } from "./db/migrate.ts";
import { platformMigrations } from "./db/migrations/index.ts";
import { type App, createHttpApp } from "./http/app.ts";
import { inboxMigrations } from "./notify/inbox.ts";
import { type AnySmsGateway, createSmsGateway, type InboundSms } from "./notify/sms/index.ts";
import { registerSmsRoutes } from "./notify/sms/routes.ts";
import { smsMigrations } from "./notify/sms/store.ts";
import {
  startWebhookDispatcher,
  type WebhookDispatcherOptions,
  webhookMigrations,
} from "./notify/webhooks.ts";
import { registryMigrations } from "./registry/handsets.ts";
import { replayMigrations } from "./replay.ts";
import { ensureServerCertificate, formatFingerprint, loadCertificate } from "./tls.ts";

export const VERSION = "0.1.0";
export const ADMIN_TOKEN_FILE = "admin.token";
export const SERVER_INFO_FILE = "server.json";

export const allMigrations = combineMigrations(
  platformMigrations,
  authMigrations,
  registryMigrations,
  inboxMigrations,
  activationMigrations,
  smsMigrations,
  managementMigrations,
  updatesMigrations,
  campaignMigrations,
  webhookMigrations,
  replayMigrations,
  messagingMigrations,
  trustzoneMigrations,
  backupMigrations,
);

export interface RunningServer {
  app: App;
  platform: Platform;
  activation: ActivationService;
  sms: AnySmsGateway;
  management: ManagementRoutes;
  /** Update packages and their TUF repository (src/updates/routes.ts). */
  updates: UpdatesService;
  /** Update campaigns (src/updates/campaigns/routes.ts). */
  campaigns: CampaignService;
  /** Secure messaging: senders, messages, registrations (src/messaging/routes.ts). */
  messaging: MessagingRoutes;
  /** Trust-zone containers: managers, zones, tokens, sub-keys, relay (src/trustzone/routes.ts). */
  trustzone: TrustzoneRoutes;
  /** Secure backup: accounts, uploads, blobs, envelopes, shares (src/backup/routes.ts). */
  backup: BackupService;
  /** https://host:port as handsets reach it. */
  url: string;
  /** base64url SHA-256 of the certificate's SubjectPublicKeyInfo: what handsets pin. */
  pin: string;
  fingerprint: string;
  /** Set only when this start created the first admin token (it is also in <dataDir>/admin.token). */
  adminToken: string | undefined;
  close(): Promise<void>;
}

export interface StartOptions {
  config?: Config;
  /** Replace the clock (tests). */
  clock?: () => number;
  allowSignup?: boolean;
  /** The webhook dispatcher's settings (tests: a self-signed receiver's `ca`, a faster poll). */
  webhooks?: Omit<WebhookDispatcherOptions, "onEvent">;
  /** Adds routes before the server listens (benchmarks: a ceiling route on the same server). */
  extend?: (app: App, platform: Platform) => Promise<void> | void;
}

export async function startServer(options: StartOptions = {}): Promise<RunningServer> {
  const config = options.config ?? loadConfig();
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const cert = config.tls.selfSigned
    ? await ensureServerCertificate(config.dataDir)
    : await loadCertificate(config.tls.certPath, config.tls.keyPath);

  const database = await openDatabase(config.databaseUrl, {
    sqliteSync: config.sqliteSync,
    sqliteCheckpoints: config.sqliteCheckpoints,
  });
  try {
    await migrateToLatest(database, allMigrations);
  } catch (e) {
    await database.close();
    throw e;
  }
  const platform = createPlatform({ config, database, ...(options.clock ? { clock: options.clock } : {}) });
  const { db, metrics, clock } = platform;

  const adminToken = await bootstrapAdminToken(platform);

  const app = await createHttpApp({
    tls: { cert: cert.certPem, key: cert.keyPem },
    logLevel: config.logLevel,
    bodyLimit: config.bodyLimit,
    rateLimitPerMinute: config.rateLimitPerMinute,
    metrics,
    version: VERSION,
    publicUrl: config.publicUrl ?? `https://localhost:${config.port}`,
    readiness: async () => {
      await sql`select 1`.execute(db);
    },
  });
  const sms = createSmsGateway(config.sms, {
    db,
    clock,
    onSmppEvent: (e) => app.log.info({ sms: e }, "smpp"),
  });
  registerSmsRoutes(app, platform, sms);
  registerAuthRoutes(app, platform, { allowSignup: options.allowSignup ?? true });
  const activation = registerActivationRoutes(app, platform);
  const management = registerManagementRoutes(app, platform, {
    sms,
    ...(config.publicUrl ? { server: { url: config.publicUrl, pin: cert.spkiSha256 } } : {}),
  });
  // One blob store for every capability (keys are namespaced: updates/…, backup/…).
  const blobs = createBlobStore(config);
  const updates = registerUpdateRoutes(app, platform, { blobs, management });
  const campaigns = registerCampaignRoutes(app, platform, { management, updates });
  // Known once the server listens (port 0 picks one): the default app link points at its /handset page.
  let boundUrl = config.publicUrl ?? defaultPublicUrl(config.port);
  const messaging = registerMessagingRoutes(app, platform, {
    sms,
    serviceNumber: config.sms.serviceNumber,
    codeTtlSeconds: config.messaging.codeTtlSeconds,
    registrationRateLimitPerMinute: config.messaging.registrationRateLimitPerMinute,
    settings: {
      retentionSeconds: config.messaging.retentionSeconds,
      appUrl: () => config.messaging.appUrl ?? `${boundUrl}/handset`,
    },
  });
  const backup = registerBackupRoutes(app, platform, { blobs, quotaBytes: config.backup.quotaBytes });
  const trustzone = registerTrustzoneRoutes(app, platform);
  registerConsole(app, config.consoleDir);
  // The gateway has one inbound handler: each capability's in turn, until one takes the text.
  const inboundHandlers: Array<(text: InboundSms) => Promise<boolean>> = [
    (text) => messaging.registrations.handleInboundSms(text),
  ];
  sms.onInbound(async (text) => {
    for (const handle of inboundHandlers) if (await handle(text)) return;
  });

  try {
    await updates.ready;
    await trustzone.ready;
    await options.extend?.(app, platform);
    await app.listen({ host: config.host, port: config.port });
  } catch (e) {
    await sms.close();
    await database.close();
    throw e;
  }
  // Housekeeping every minute: expire lapsed activations and drop their sealed material.
  const sweeper = setInterval(() => {
    activation.sweepExpired().catch((err: unknown) => app.log.error({ err }, "activation sweep failed"));
  }, 60_000);
  sweeper.unref();
  // Outbound webhooks of every capability (platform/notify/webhooks.ts): a poll per node, unref'd.
  const webhooks = startWebhookDispatcher(platform, {
    ...options.webhooks,
    onEvent: (e) =>
      e.type === "error"
        ? app.log.error({ err: e.error }, "webhook pass failed")
        : app.log.info({ webhook: e }, "webhook"),
  });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  const url = config.publicUrl ?? `https://localhost:${port}`;
  boundUrl = url;
  const messagingSweeper = startMessagingSweeper(messaging.service, (err) =>
    app.log.error({ err }, "messaging sweep failed"),
  );
  // Uploads left unfinished for 7 days are dropped (their bytes too): hourly, unref'd.
  const backupSweeper = startBackupSweeper(backup, (err) => app.log.error({ err }, "backup sweep failed"));
  const trustzoneSweeper = startTrustzoneSweeper(trustzone.service, (err) =>
    app.log.error({ err }, "trust-zone sweep failed"),
  );
  // Where a CLI on this machine finds its server by default (`handsafe admin …`, `handsafe handset …`).
  writeFileSync(
    join(config.dataDir, SERVER_INFO_FILE),
    `${JSON.stringify({ url, pin: cert.spkiSha256, fingerprint: formatFingerprint(cert.spkiSha256) }, null, 2)}\n`,
  );
  return {
    app,
    platform,
    activation,
    sms,
    management,
    updates,
    campaigns,
    messaging,
    backup,
    trustzone,
    url,
    pin: cert.spkiSha256,
    fingerprint: formatFingerprint(cert.spkiSha256),
    adminToken,
    async close() {
      clearInterval(sweeper);
      await messagingSweeper.stop();
      await trustzoneSweeper.stop();
      await backupSweeper.stop();
      await webhooks.stop();
      await app.close();
      await sms.close();
      await database.close();
    },
  };
}

/**
 * The first start creates an admin token and writes it to `<dataDir>/admin.token` (mode 0600):
 * whoever can read the server's data folder is its operator. The CLI reads it from there.
 */
async function bootstrapAdminToken(platform: Platform): Promise<string | undefined> {
  const db = platform.db as Kysely<AuthTables>;
  if ((await countAdminTokens(db)) > 0) return undefined;
  const { token } = await issueToken(db, { kind: "admin", label: "bootstrap" }, platform.clock());
  const path = join(platform.config.dataDir, ADMIN_TOKEN_FILE);
  writeFileSync(path, `${token}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
  await platform.audit({ actor: "system", action: "admin.bootstrap_token", outcome: "info" });
  return token;
}

export function readAdminToken(dataDir: string): string | undefined {
  const path = join(dataDir, ADMIN_TOKEN_FILE);
  return existsSync(path) ? readFileSync(path, "utf8").trim() : undefined;
}

export function readServerInfo(
  dataDir: string,
): { url: string; pin: string; fingerprint: string } | undefined {
  const path = join(dataDir, SERVER_INFO_FILE);
  return existsSync(path) ? JSON.parse(readFileSync(path, "utf8")) : undefined;
}
