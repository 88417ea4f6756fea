/**
 * Campaigns end to end on SQLite and PostgreSQL: a real server (management, updates with its TUF
 * repository and a real package, campaigns) over HTTPS; devices provisioned by batch; handsets
 * sign their assignment and status requests with keys that arrive by (recorded) SMS.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Kysely, sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBase64url } from "../../src/core/codec/base64url.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { createNodeTransport } from "../../src/handset/node-transport.ts";
import { fromKeyFile } from "../../src/management/device-wrapper.ts";
import { ManagementClient } from "../../src/management/handset.ts";
import { type DeviceKeyFile, deriveSessionKey, signRequest } from "../../src/management/protocol.ts";
import { type ManagementRoutes, registerManagementRoutes } from "../../src/management/routes.ts";
import { readDynamicKey } from "../../src/management/sms-processor.ts";
import { managementMigrations } from "../../src/management/store.ts";
import { listAudit, verifyAuditChain } from "../../src/platform/audit.ts";
import { type AuthTables, authMigrations, issueToken } from "../../src/platform/auth/store.ts";
import { createFilesystemBlobStore } from "../../src/platform/blobs/filesystem.ts";
import { loadConfig } from "../../src/platform/config.ts";
import { createPlatform } from "../../src/platform/compose.ts";
import { type Database, openDatabase } from "../../src/platform/db/database.ts";
import { combineMigrations, migrateToLatest } from "../../src/platform/db/migrate.ts";
import { platformMigrations } from "../../src/platform/db/migrations/index.ts";
import { type App, createHttpApp } from "../../src/platform/http/app.ts";
import { createMetrics } from "../../src/platform/http/metrics.ts";
import { inboxMigrations } from "../../src/platform/notify/inbox.ts";
import { registryMigrations } from "../../src/platform/registry/handsets.ts";
import { ensureServerCertificate } from "../../src/platform/tls.ts";
import { campaignMigrations } from "../../src/updates/campaigns/migrations.ts";
import { rolloutBucket } from "../../src/updates/campaigns/protocol.ts";
import { registerCampaignRoutes } from "../../src/updates/campaigns/routes.ts";
import type { CampaignService } from "../../src/updates/campaigns/server.ts";
import * as campaignStore from "../../src/updates/campaigns/store.ts";
import { updatesMigrations } from "../../src/updates/migrations.ts";
import { registerUpdateRoutes } from "../../src/updates/routes.ts";
import { createTestDatabase, databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { imei } from "../management/fixtures.ts";
import { RecordingSmsGateway } from "../management/harness.ts";

const pgOk = await postgresAvailable();

interface Harness {
  app: App;
  db: Database;
  url: string;
  sms: RecordingSmsGateway;
  management: ManagementRoutes;
  campaigns: CampaignService;
  transport: ReturnType<typeof createNodeTransport>;
  admin(
    method: "GET" | "POST" | "PUT",
    url: string,
    body?: unknown,
    type?: string,
    // biome-ignore lint/suspicious/noExplicitAny: tests read answers of many shapes.
  ): Promise<{ status: number; body: any }>;
  close(): Promise<void>;
}

/** The composition of src/platform/server.ts with a recording SMS gateway. */
async function startHarness(kind: (typeof databaseKinds)[number]): Promise<Harness> {
  const database = await createTestDatabase(kind);
  const dataDir = mkdtempSync(join(tmpdir(), "handsafe-cmp-"));
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
      updatesMigrations,
      campaignMigrations,
    ),
  );
  const metrics = createMetrics();
  const platform = createPlatform({ config, database: db, clock: Date.now, metrics });

  const { token } = await issueToken(
    db.db as Kysely<AuthTables>,
    { kind: "admin", label: "test" },
    Date.now(),
  );
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
  const management = registerManagementRoutes(app, platform, { sms });
  const updates = registerUpdateRoutes(app, platform, {
    blobs: createFilesystemBlobStore(join(dataDir, "blobs")),
    management,
  });
  const campaigns = registerCampaignRoutes(app, platform, { management, updates });
  await updates.ready;
  await app.listen({ host: "127.0.0.1", port: 0 });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  const transport = createNodeTransport({ pin: cert.spkiSha256 });
  return {
    app,
    db,
    url: `https://127.0.0.1:${port}`,
    sms,
    management,
    campaigns,
    transport,
    async admin(method, url, body, type) {
      const res = await app.inject({
        method,
        url,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body !== undefined ? { "content-type": type ?? "application/json" } : {}),
        },
        ...(body !== undefined
          ? { payload: body instanceof Uint8Array ? Buffer.from(body) : JSON.stringify(body) }
          : {}),
      });
      return { status: res.statusCode, body: res.body ? res.json() : undefined };
    },
    async close() {
      transport.close();
      await app.close();
      await db.close();
      await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The audit records about one subject, in order. */
async function auditOf(h: Harness, subject: string) {
  const out = [];
  for (let after = 0; ; ) {
    const page = await listAudit(h.db, { afterSeq: after, limit: 500 });
    if (page.length === 0) return out;
    out.push(...page.filter((r) => r.subject === subject));
    after = page[page.length - 1]!.seq;
  }
}

const STATES = ["pending", "notified", "downloading", "verified", "installed", "failed", "rolled_back"];

describe.each(databaseKinds)("campaigns on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let h: Harness;
    let packageId: string;
    const files = new Map<string, DeviceKeyFile>();
    const msisdnOf = new Map<string, string>();
    let hs100: string[] = [];
    let hs100v15: string[] = [];
    let hs200: string[] = [];
    let serial = 0;

    /** Provisions devices by batch; returns their ids in order. */
    async function provision(model: string, version: string, count: number): Promise<string[]> {
      const lines = ["model,hardware_id,firmware_version,msisdn"];
      const byHw = new Map<string, string>();
      for (let i = 0; i < count; i++) {
        serial++;
        const hw = imei(`3520000${String(serial).padStart(7, "0")}`);
        const msisdn = `+4915190${String(serial).padStart(6, "0")}`;
        byHw.set(hw, msisdn);
        lines.push(`${model},${hw},${version},${msisdn}`);
      }
      const res = await h.management.service.importBatch(lines.join("\n"), "csv", "admin:test");
      expect(res.accepted).toBe(count);
      for (const f of res.keyFiles) {
        files.set(f.deviceId, f);
        msisdnOf.set(f.deviceId, byHw.get(f.hardwareId)!);
      }
      return res.keyFiles.map((f) => f.deviceId);
    }

    /** A handset whose SMS inbox hands it the latest text sent to its number. */
    function handset(deviceId: string, keystore = new MemoryKeystore()): ManagementClient {
      const msisdn = msisdnOf.get(deviceId)!;
      return new ManagementClient({
        baseUrl: h.url,
        transport: h.transport,
        device: fromKeyFile(files.get(deviceId)!),
        keystore,
        nextSms: async () => {
          const texts = h.sms.textsTo(msisdn);
          if (texts.length === 0) throw new Error(`no SMS to ${msisdn}`);
          return { from: "+4915100000000", text: texts[texts.length - 1]! };
        },
      });
    }

    async function createCampaign(body: Record<string, unknown>): Promise<string> {
      const res = await h.admin("POST", "/v1/admin/campaigns", {
        name: "test",
        packageId,
        target: {},
        stages: [100],
        errorThreshold: 1,
        ...body,
      });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      expect(res.body.state).toBe("draft");
      return res.body.id;
    }

    async function act(id: string, action: string) {
      return h.admin("POST", `/v1/admin/campaigns/${id}/${action}`);
    }

    async function enrolled(id: string, state?: string): Promise<string[]> {
      const res = await h.admin(
        "GET",
        `/v1/admin/campaigns/${id}/devices?limit=1000${state ? `&state=${state}` : ""}`,
      );
      expect(res.status).toBe(200);
      return res.body.devices.map((d: { deviceId: string }) => d.deviceId).sort();
    }

    const assignment = async (c: ManagementClient) =>
      (
        await c.request<{ assignment: Record<string, unknown> | null }>(
          "GET",
          "/v1/updates/devices/me/assignment",
        )
      ).body.assignment;
    const report = (c: ManagementClient, body: Record<string, unknown>) =>
      c.request("POST", "/v1/updates/devices/me/status", body);
    async function refusal(p: Promise<unknown>): Promise<string> {
      try {
        await p;
      } catch (e) {
        return (e as { code: string }).code;
      }
      return "no refusal";
    }

    beforeAll(async () => {
      h = await startHarness(kind);
      hs100 = await provision("HS-100", "1.0.0", 180);
      hs100v15 = await provision("HS-100", "1.5.0", 20);
      hs100 = [...hs100, ...hs100v15];
      hs200 = await provision("HS-200", "1.0.0", 10);
      const image = new Uint8Array(3000).map((_, i) => i % 251);
      const up = await h.admin(
        "POST",
        "/v1/admin/updates/packages?version=2.0.0&models=HS-100,HS-200",
        image,
        "application/octet-stream",
      );
      expect(up.status, JSON.stringify(up.body)).toBe(201);
      packageId = up.body.id;
    });
    afterAll(async () => h?.close());

    it("refuses a campaign of an unknown package, bad stages, and non-admins", async () => {
      const bad = await h.admin("POST", "/v1/admin/campaigns", {
        name: "x",
        packageId: "pkg_AAAAAAAAAAAAAAAA",
        target: {},
        stages: [100],
        errorThreshold: 0.1,
      });
      expect([bad.status, bad.body.error.code]).toEqual([404, "campaigns.unknown_package"]);
      const stages = await h.admin("POST", "/v1/admin/campaigns", {
        name: "x",
        packageId,
        target: {},
        stages: [50, 20, 100],
        errorThreshold: 0.1,
      });
      expect(stages.body.error.code).toBe("campaigns.invalid_stages");
      const anon = await h.app.inject({ method: "GET", url: "/v1/admin/campaigns" });
      expect(anon.statusCode).toBe(401);
    });

    it("targets by model, version range, group, device list and channel", async () => {
      const lab = hs100.slice(0, 3);
      const beta = hs100.slice(3, 5);
      for (const id of lab)
        expect(
          (await h.admin("PUT", `/v1/admin/device-channels/${id}`, { channel: "stable", groups: ["lab"] }))
            .status,
        ).toBe(200);
      for (const id of beta)
        await h.admin("PUT", `/v1/admin/device-channels/${id}`, { channel: "beta", groups: [] });
      expect((await h.admin("GET", `/v1/admin/device-channels/${beta[0]}`)).body).toMatchObject({
        channel: "beta",
      });

      const cases: Array<[Record<string, unknown>, string[]]> = [
        [{ target: { models: ["HS-200"] } }, hs200],
        [{ target: { versionRange: { min: "1.5", max: "1.9" } } }, hs100v15],
        [{ target: { groups: ["lab"] } }, lab],
        [{ target: { deviceIds: [hs200[0], hs100[10]] } }, [hs200[0]!, hs100[10]!]],
        [{ target: { models: ["HS-100"] }, channel: "beta" }, beta],
      ];
      for (const [body, expected] of cases) {
        // A 1% first stage keeps the texts few; targeting is what is checked here.
        const id = await createCampaign({ ...body, stages: [1, 100] });
        expect((await act(id, "start")).status).toBe(200);
        expect(await enrolled(id)).toEqual([...expected].sort());
        expect((await act(id, "abort")).body.state).toBe("aborted");
      }
      for (const id of beta)
        await h.admin("PUT", `/v1/admin/device-channels/${id}`, { channel: "stable", groups: [] });
    });

    it("rolls out by stage: ~10% of 200 first, the same set every time, assignments only inside the stage", async () => {
      const id = await createCampaign({ target: { models: ["HS-100"] }, stages: [10, 50, 100] });
      const before = h.sms.sent.length;
      const started = await act(id, "start");
      expect(started.body).toMatchObject({ state: "running", currentStage: 0, currentPercent: 10 });
      expect(started.body.progress.total).toBe(200);

      const expected = hs100.filter((d) => rolloutBucket(id, d) < 10).sort();
      // About 10% (mean 20 of 200, σ ≈ 4.2); the bounds sit ~4σ out, as the campaign id is random —
      // at 8 they failed about one run in three hundred. The exact set is checked just below.
      expect(expected.length).toBeGreaterThanOrEqual(3);
      expect(expected.length).toBeLessThanOrEqual(40);
      expect(await enrolled(id, "notified")).toEqual(expected);
      expect(await enrolled(id, "notified")).toEqual(expected);
      expect(h.sms.sent.length - before).toBe(expected.length);

      // Inside the stage: the notification carried the key, the assignment answers.
      const inside = handset(expected[0]!);
      const a = await assignment(inside);
      expect(a).toMatchObject({
        campaignId: id,
        packageId,
        version: "2.0.0",
        kind: "full",
        installWindow: null,
      });
      expect(fromBase64url(a!["wrappedContentKey"] as string).length).toBe(60);

      // Outside the stage (bucket 10–49): a key from the operator, but no assignment yet.
      const laterId = hs100.find((d) => rolloutBucket(id, d) >= 10 && rolloutBucket(id, d) < 50)!;
      await h.admin("POST", `/v1/admin/devices/${laterId}/dynamic-keys`, {});
      const later = handset(laterId);
      expect(await assignment(later)).toBeNull();

      // Pause: no new notifications, by tick or otherwise; advance refused.
      expect((await act(id, "pause")).body).toMatchObject({
        state: "paused",
        pauseReason: { reason: "operator" },
      });
      const paused = h.sms.sent.length;
      await h.campaigns.tick();
      expect((await act(id, "advance")).body.error.code).toBe("campaigns.bad_state");
      expect(h.sms.sent.length).toBe(paused);
      expect(await assignment(inside)).toBeNull();

      expect((await act(id, "resume")).body.state).toBe("running");
      const advanced = await act(id, "advance");
      expect(advanced.body).toMatchObject({ currentStage: 1, currentPercent: 50 });
      const stage1 = hs100.filter((d) => rolloutBucket(id, d) < 50);
      expect(h.sms.sent.length - paused).toBe(stage1.length - expected.length);
      expect(await assignment(later)).toMatchObject({ campaignId: id });

      // Abort: nothing is assigned, nothing more is sent.
      expect((await act(id, "abort")).body.state).toBe("aborted");
      expect(await assignment(inside)).toBeNull();
      const aborted = h.sms.sent.length;
      await h.campaigns.tick();
      expect(h.sms.sent.length).toBe(aborted);
      expect((await act(id, "resume")).body.error.code).toBe("campaigns.bad_state");
      expect((await auditOf(h, `campaign:${id}`)).map((r) => `${r.action}:${r.outcome}`)).toEqual([
        "campaigns.create:allow",
        "campaigns.start:allow",
        "campaigns.pause:allow",
        "campaigns.advance:deny",
        "campaigns.resume:allow",
        "campaigns.advance:allow",
        "campaigns.abort:allow",
        "campaigns.resume:deny",
      ]);
    });

    it("walks devices through their states, refuses reports out of order, auto-pauses on errors", async () => {
      const [a, b, c] = hs200.slice(5, 8) as [string, string, string];
      const window = { startHourUtc: 22, endHourUtc: 4 };
      const id = await createCampaign({
        target: { deviceIds: [a, b, c] },
        errorThreshold: 0.4,
        maintenanceWindow: window,
      });
      expect((await act(id, "start")).body.progress.byState.notified).toBe(3);
      const [ha, hb, hc] = [handset(a), handset(b), handset(c)];

      expect(await assignment(ha)).toMatchObject({ campaignId: id, installWindow: window });
      await report(ha, { campaignId: id, state: "notified" });
      await report(ha, { campaignId: id, state: "downloading", percent: 40 });
      await report(ha, { campaignId: id, state: "downloading", percent: 90 });
      const mid = (await h.admin("GET", `/v1/admin/campaigns/${id}/devices?state=downloading`)).body.devices;
      expect(mid).toMatchObject([{ deviceId: a, percent: 90 }]);
      await report(ha, { campaignId: id, state: "verified" });
      await report(ha, { campaignId: id, state: "installed", installedVersion: "2.0.0" });
      expect(await refusal(report(ha, { campaignId: id, state: "downloading" }))).toBe(
        "campaigns.bad_transition",
      );
      expect((await h.admin("GET", `/v1/admin/device-channels/${a}`)).body.reportedVersion).toBe("2.0.0");

      expect(await refusal(report(hb, { campaignId: id, state: "installed" }))).toBe(
        "campaigns.bad_transition",
      );
      await report(hb, { campaignId: id, state: "downloading", percent: 5 });
      expect((await h.admin("GET", `/v1/admin/campaigns/${id}`)).body.state).toBe("running");
      await report(hb, { campaignId: id, state: "failed", reason: "hash mismatch" });

      // 1 failed of 2 final = 0.5 > 0.4: paused by itself, with the reason, in the audit log.
      const status = (await h.admin("GET", `/v1/admin/campaigns/${id}`)).body;
      expect(status.state).toBe("paused");
      expect(status.pauseReason).toMatchObject({
        reason: "error_threshold",
        failed: 1,
        final: 2,
        by: "system",
      });
      expect(status.progress).toEqual({
        total: 3,
        byState: { ...Object.fromEntries(STATES.map((s) => [s, 0])), installed: 1, failed: 1, notified: 1 },
        percentDone: 66.6,
      });
      const audit = await auditOf(h, `campaign:${id}`);
      expect(audit.map((r) => [r.action, r.outcome])).toEqual([
        ["campaigns.create", "allow"],
        ["campaigns.start", "allow"],
        ["campaigns.auto_paused", "info"],
      ]);
      expect(await assignment(hc)).toBeNull();
      await act(id, "abort");
    });

    it("binds assignments and reports to the signing device", async () => {
      const [a, b] = hs200.slice(8, 10) as [string, string];
      const id = await createCampaign({ target: { deviceIds: [a] } });
      await act(id, "start");
      const [keystoreA, keystoreB] = [new MemoryKeystore(), new MemoryKeystore()];
      const ha = handset(a, keystoreA);
      expect(await assignment(ha)).toMatchObject({ campaignId: id });
      // b holds a key of its own but is not in the campaign: nothing to read, nothing to report.
      await h.admin("POST", `/v1/admin/devices/${b}/dynamic-keys`, {});
      const hb = handset(b, keystoreB);
      expect(await assignment(hb)).toBeNull();
      expect(await refusal(report(hb, { campaignId: id, state: "failed" }))).toBe("campaigns.not_enrolled");

      // a request under b's key id signed with a's session key is refused before any route runs
      const storedA = (await readDynamicKey(keystoreA, a))!;
      const storedB = (await readDynamicKey(keystoreB, b))!;
      const sessionA = fromKeyFile(files.get(a)!).withStaticKey((k) =>
        deriveSessionKey(k, storedA.key, a, "requests"),
      );
      const path = "/v1/updates/devices/me/assignment";
      const headers = signRequest(
        sessionA.reveal(),
        { method: "GET", url: `http://localhost${path}` },
        { keyId: storedB.keyId, created: Math.floor(Date.now() / 1000) },
      );
      const forged = await h.app.inject({ method: "GET", url: path, headers });
      expect(forged.statusCode).toBe(401);
      expect(forged.json().error.code).toMatch(/^signature\./);
      const unsigned = await h.app.inject({ method: "GET", url: path });
      expect(unsigned.statusCode).toBe(401);
      await act(id, "abort");
    });

    it("lets late joiners in: re-channelled, found by the tick, or asking for an assignment", async () => {
      const id = await createCampaign({ target: { groups: ["late"] } });
      expect((await act(id, "start")).body.progress.total).toBe(0);
      const [d1, d2, d3] = (await provision("HS-200", "1.0.0", 3)) as [string, string, string];

      // 1. re-channelled through the admin route: joins and is notified at once
      const sent = h.sms.sent.length;
      await h.admin("PUT", `/v1/admin/device-channels/${d1}`, { channel: "stable", groups: ["late"] });
      expect(await enrolled(id, "notified")).toEqual([d1]);
      expect(h.sms.textsTo(msisdnOf.get(d1)!).length).toBe(1);
      expect(h.sms.sent.length).toBe(sent + 1);

      // 2. changed behind this node's back (another node, say): the periodic tick enrols and notifies it
      const db = h.db.db as Kysely<campaignStore.CampaignTables>;
      await campaignStore.upsertDeviceChannel(db, d2, { channel: "stable", groups: ["late"] }, Date.now());
      expect(await h.campaigns.tick()).toMatchObject({ enrolled: 1, notified: 1 });
      expect(await enrolled(id, "notified")).toEqual([d1, d2].sort());

      // 3. asks for its assignment before any tick: joins then and there
      await campaignStore.upsertDeviceChannel(db, d3, { channel: "stable", groups: ["late"] }, Date.now());
      await h.admin("POST", `/v1/admin/devices/${d3}/dynamic-keys`, {});
      expect(await assignment(handset(d3))).toMatchObject({ campaignId: id });
      expect((await h.admin("GET", `/v1/admin/campaigns/${id}`)).body.progress).toMatchObject({
        total: 3,
        byState: { notified: 3 },
      });
      await act(id, "abort");
    });

    it("completes when every device is final at the last stage; the audit chain holds", async () => {
      const d = hs100[20]!;
      const id = await createCampaign({ target: { deviceIds: [d] } });
      await act(id, "start");
      const hd = handset(d);
      await assignment(hd);
      for (const state of ["downloading", "verified"]) await report(hd, { campaignId: id, state });
      await report(hd, { campaignId: id, state: "installed", installedVersion: "2.0.0" });
      const done = (await h.admin("GET", `/v1/admin/campaigns/${id}`)).body;
      expect(done.state).toBe("completed");
      expect(done.progress.percentDone).toBe(100);
      expect((await verifyAuditChain(h.db)).ok).toBe(true);
    });

    it("completes on the advance to the last stage when every device finished before it", async () => {
      const [d] = await provision("HS-200", "1.0.0", 1);
      // A campaign whose first stage (50%) happens to hold the device: the bucket decides.
      let id = "";
      for (let i = 0; i < 40 && !id; i++) {
        const candidate = await createCampaign({ target: { deviceIds: [d!] }, stages: [50, 100] });
        if (rolloutBucket(candidate, d!) < 50) id = candidate;
      }
      expect(id).not.toBe("");
      await act(id, "start");
      const hd = handset(d!);
      expect(await assignment(hd)).not.toBeNull();
      for (const state of ["downloading", "verified"]) await report(hd, { campaignId: id, state });
      await report(hd, { campaignId: id, state: "installed", installedVersion: "2.0.0" });
      // Everyone is final, but the campaign is not at its last stage yet: still running.
      expect((await h.admin("GET", `/v1/admin/campaigns/${id}`)).body.state).toBe("running");
      // Nobody is left to report after the advance: the advance itself completes it.
      const advanced = await act(id, "advance");
      expect(advanced.status).toBe(200);
      expect((await h.admin("GET", `/v1/admin/campaigns/${id}`)).body.state).toBe("completed");
    });
  });
});
