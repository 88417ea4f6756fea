/**
 * The web console and the virtual handset page in a real browser (Debian's Chromium, driven by
 * playwright-core), against a real server on SQLite serving a fresh Vite build of src/console.
 *
 * An operator signs in, creates a sender and sees the API key once; the sender texts a number that
 * has no handset; a handset page registers it by the server's code (read off its simulated SIM),
 * opens the waiting message in the browser, marks it read and replies; a second page (a tablet on
 * the same number) registers by the handset's own code and both receive the next message; the
 * audit view shows the decisions and checks the chain. In CI a missing Chromium is a failure,
 * never a silent skip (.ci/run installs it).
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Kysely } from "kysely";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { build } from "vite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BackupTables } from "../../src/backup/store.ts";
import { runBackupDemo } from "../../src/cli/demo-backup.ts";
import { randomImei } from "../../src/cli/demo-data.ts";
import { runTrustzoneDemo } from "../../src/cli/demo-trustzone.ts";
import { runUpdatesDemo } from "../../src/cli/demo-updates.ts";
import { type HttpClient, withHeaders } from "../../src/handset/http-client.ts";
import { sweepTrustzone } from "../../src/trustzone/sweeper.ts";
import { hasNodeImports } from "../helpers/browser-bundle.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

const CHROMIUM = "/usr/bin/chromium";
const ROOT = join(import.meta.dirname, "../..");

function chromiumAvailable(): boolean {
  if (existsSync(CHROMIUM)) return true;
  if (process.env["CI"])
    throw new Error(`Chromium is not at ${CHROMIUM}: CI must run the browser tests (.ci/run installs it).`);
  console.warn(`SKIPPING the browser tests: no Chromium at ${CHROMIUM} (apt-get install -y chromium).`);
  return false;
}

/** Polls `check` until it holds (or throws its last failure after `ms`). */
async function eventually<T>(check: () => Promise<T>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

describe.skipIf(!chromiumAvailable())(
  "the web console and the virtual handset in Chromium",
  { timeout: 60_000 },
  () => {
    let consoleDir: string;
    let t: TestServer;
    let browser: Browser;
    let context: BrowserContext;
    /**
     * Script errors, errors the pages logged (a refused request's own "failed to load" line aside:
     * the wrong token is refused on purpose) and any 5xx answer: checked empty at the end.
     */
    const pageErrors: string[] = [];

    beforeAll(async () => {
      consoleDir = mkdtempSync(join(tmpdir(), "handsafe-console-"));
      await build({
        configFile: join(ROOT, "src/console/vite.config.ts"),
        logLevel: "silent",
        build: { outDir: consoleDir, emptyOutDir: true },
      });
      t = await startTestServer("sqlite", {
        HANDSAFE_CONSOLE_DIR: consoleDir,
        HANDSAFE_MESSAGING_REGISTRATION_RATE_LIMIT: "0",
        HANDSAFE_SMS_PER_NUMBER_PER_HOUR: "0",
      });
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
        ],
      });
      // The server's certificate is its own self-signed one (handsets pin it; a browser cannot).
      context = await browser.newContext({ ignoreHTTPSErrors: true });
    }, 120_000);

    afterAll(async () => {
      await context?.close();
      await browser?.close();
      await t?.close();
      if (consoleDir) rmSync(consoleDir, { recursive: true, force: true });
    });

    async function open(path: string): Promise<Page> {
      const page = await context.newPage();
      page.on("pageerror", (e) => pageErrors.push(`${path}: ${e.message}`));
      page.on("console", (m) => {
        if (m.type() === "error" && !m.text().startsWith("Failed to load resource"))
          pageErrors.push(`${path}: ${m.text()}`);
      });
      page.on("response", (r) => {
        if (r.status() >= 500) pageErrors.push(`${path}: ${r.status()} from ${r.url()}`);
      });
      await page.goto(`${t.server.url}${path}`);
      return page;
    }

    let apiKey: string;
    let sender: HttpClient;
    const number = "+447911123456";

    it("builds bundles with no node:* module in them", () => {
      const scripts = readdirSync(join(consoleDir, "assets")).filter((f) => f.endsWith(".js"));
      expect(scripts.length).toBeGreaterThan(1);
      for (const f of scripts)
        expect(hasNodeImports(readFileSync(join(consoleDir, "assets", f), "utf8")), f).toBe(false);
    });

    it("signs the operator in with the admin token only, and shows the server ready", async () => {
      const page = await open("/console");
      await page.getByLabel("Admin token").fill("not-the-token");
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByRole("alert").filter({ hasText: "auth.unauthenticated" }).waitFor();

      await page.getByLabel("Admin token").fill(t.server.adminToken!);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByTestId("readiness").filter({ hasText: "ready" }).waitFor();
      for (const name of [
        "Devices",
        "Packages",
        "Campaigns",
        "Services",
        "Senders",
        "Backups",
        "Trust zones",
        "SMS outbox",
        "Audit",
      ]) {
        await page.getByRole("link", { name }).click();
        // The nav marks the view at once and clears the page; its cards come with its answers.
        await page.locator('nav a[aria-current="page"]', { hasText: name }).waitFor();
        await page.locator("section.card h2").first().waitFor();
        expect(await page.locator(".error").count(), name).toBe(0);
      }
      await page.close();
    });

    it("creates a sender and shows its API key once", async () => {
      const page = await open("/console#/senders");
      await page.getByLabel("Admin token").fill(t.server.adminToken!);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByLabel("Name").fill("City Clinic");
      await page.getByRole("button", { name: "Create sender" }).click();
      apiKey = (await page.getByTestId("api-key").textContent())!;
      expect(apiKey).toMatch(/^hs_sk_[A-Za-z0-9_-]{43}$/);
      await page.locator("td", { hasText: "City Clinic" }).waitFor();
      // A reload lists the sender but never shows its key again.
      await page.reload();
      await page.locator("td", { hasText: "City Clinic" }).waitFor();
      expect(await page.getByTestId("api-key").count()).toBe(0);
      expect(await page.content()).not.toContain(apiKey);
      await page.close();
      sender = withHeaders(t.client(), { authorization: `Bearer ${apiKey}` });
    });

    it("registers a handset by the server's code and opens the message that waited for it", async () => {
      const { body: first } = await sender.post<{ id: string; status: string }>("/v1/messages", {
        to: number,
        body: { type: "text", text: "Your appointment with Dr. Okafor is on Friday at 10:00." },
      });
      expect(first.status).toBe("waiting_registration");

      const phone = await open("/handset");
      await phone.getByLabel("Operator's admin token").fill(t.server.adminToken!);
      await phone.getByRole("button", { name: "Attach" }).click();
      await phone.getByLabel("Phone number").fill(number);
      await phone.getByRole("button", { name: "Register" }).click();
      await phone.getByRole("heading", { name: "Enter the code" }).waitFor();
      // The code arrives as a text on the simulated SIM, after the app-link text.
      const code = await eventually(async () => {
        const texts = (await phone.getByTestId("sim-texts").textContent()) ?? "";
        const m = /Your handsafe code is ([0-9]+)\./.exec(texts);
        if (!m) throw new Error(`no code among the texts yet: ${texts}`);
        return m[1]!;
      });
      await phone.getByLabel("Code").fill(code);
      await phone.getByRole("button", { name: "Confirm" }).click();

      const message = phone.locator(`[data-message-id="${first.id}"]`);
      await message.filter({ hasText: "Dr. Okafor is on Friday" }).waitFor();
      expect(await message.locator(".from").textContent()).toBe("City Clinic");
      await eventually(async () => {
        const { body } = await sender.get<{ status: string }>(`/v1/messages/${first.id}`);
        expect(body.status).toBe("delivered");
      });

      await message.getByRole("button", { name: "Mark read" }).click();
      await message.locator(".state", { hasText: "read" }).waitFor();
      await message.getByLabel("Reply").fill("I will be there.");
      await message.getByRole("button", { name: "Reply" }).click();
      await phone.getByText("Reply sent").waitFor();
      const { body: status } = await sender.get<{ status: string; replies: number }>(
        `/v1/messages/${first.id}`,
      );
      expect(status).toMatchObject({ status: "read", replies: 1 });
      const { body: replies } = await sender.get<{ replies: Array<{ body: unknown }> }>(
        `/v1/messages/${first.id}/replies`,
      );
      expect(replies.replies.map((r) => r.body)).toEqual([{ type: "text", text: "I will be there." }]);
      await phone.close();
    });

    it("registers a tablet on the same number by its own code; both receive the next message", async () => {
      const tablet = await open("/handset");
      await tablet.getByLabel("Operator's admin token").fill(t.server.adminToken!);
      await tablet.getByRole("button", { name: "Attach" }).click();
      await tablet.getByLabel("Phone number").fill(number);
      await tablet.getByLabel("Device").selectOption("tablet");
      await tablet.getByLabel("Check the number by").selectOption("handset");
      await tablet.getByRole("button", { name: "Register" }).click();
      const text = (await tablet.getByTestId("handset-code-text").textContent())!;
      expect(text).toMatch(/^HSREG [0-9]+$/);
      await tablet.getByRole("button", { name: "Send the text with the simulated SIM" }).click();
      await tablet.getByRole("heading", { name: `Inbox of ${number}` }).waitFor();

      const { body: second } = await sender.post<{ id: string; status: string }>("/v1/messages", {
        to: number,
        body: { type: "text", text: "Please bring your referral letter." },
      });
      expect(second.status).toBe("queued");
      // Its page hears of it on the push stream: well before its 30 s fallback refresh.
      await tablet.getByTestId("push-state").filter({ hasText: "live" }).waitFor();
      await tablet
        .locator(`[data-message-id="${second.id}"]`)
        .filter({ hasText: "referral letter" })
        .waitFor({ timeout: 5000 });
      const { body: status } = await sender.get<{ deliveries: Array<{ deviceType: string }> }>(
        `/v1/messages/${second.id}`,
      );
      // Sealed to each handset registered when it was accepted: the first page's phone and the tablet.
      expect(status.deliveries.map((d) => d.deviceType).sort()).toEqual(["phone", "tablet"]);
      await tablet.close();
    });

    it("activates a service in the page: CPace in the browser agrees the key the server holds", async () => {
      await t.admin.post("/v1/admin/users", { email: "ada@example.org", password: "correct horse battery" });
      await t.admin.post("/v1/admin/services", { uid: "mail", name: "Mail" });
      const page = await open("/handset");
      await page.getByLabel("Email", { exact: true }).fill("ada@example.org");
      await page.getByLabel("Password", { exact: true }).fill("wrong password here");
      await page.getByRole("button", { name: "Activate" }).click();
      await page.getByRole("alert").filter({ hasText: "auth." }).waitFor();
      await page.getByLabel("Password", { exact: true }).fill("correct horse battery");
      await page.locator(`select[name="service"]`).selectOption("mail");
      await page.getByRole("button", { name: "Activate" }).click();
      const shown = page.locator('[data-fingerprint="mail"]');
      await shown.waitFor();
      const handsetId = /Handset (\S+)\./.exec(
        (await page.getByText(/^Handset .* Each service/).textContent())!,
      )![1]!;
      // The server's side of the same key, by fingerprint (never the key).
      const { body: keys } = await t.admin.get<
        Array<{ serviceUid: string; fingerprint: string; state: string }>
      >(`/v1/handsets/${handsetId}/keys`);
      expect(keys.find((k) => k.serviceUid === "mail")).toMatchObject({
        fingerprint: await shown.textContent(),
        state: "active",
      });
      await page.close();
    });

    it("shows an update campaign's progress and the devices it reached", async () => {
      const page = await open("/console#/campaigns");
      await page.getByLabel("Admin token").fill(t.server.adminToken!);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByText("No campaign yet").waitFor();
      // A staged campaign to a simulated fleet (one handset fails its health check and rolls back),
      // while the view is on screen: it refreshes itself.
      const result = await runUpdatesDemo(
        t.admin,
        { url: t.server.url, pin: t.server.pin },
        t.server.adminToken!,
        {
          devices: 3,
          say: () => {},
          progressStream: { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream,
        },
      );
      expect(result.finalState).toBe("completed");
      const row = page.getByTestId(`campaign-progress-${result.campaignId}`);
      await row.filter({ hasText: "100% of 3 devices done" }).waitFor();
      expect(await row.getByRole("progressbar").getAttribute("aria-valuenow")).toBe("100");
      expect(await row.locator(".chip").allTextContents()).toEqual(
        Object.entries(result.byState)
          .filter(([, n]) => n > 0)
          .map(([state, n]) => `${state} ${n}`),
      );
      await page
        .getByTestId(`campaign-state-${result.campaignId}`)
        .filter({ hasText: "completed" })
        .waitFor();
      await page.getByRole("link", { name: "Devices" }).click();
      await page.locator("td", { hasText: result.model }).first().waitFor();
      expect(await page.locator("td", { hasText: result.model }).count()).toBe(3);
      await page.close();
    });

    it("pages the device registry by 100", async () => {
      const rows = Array.from({ length: 100 }, () => ({
        model: "HS-PAGED",
        hardware_id: randomImei(),
        firmware_version: "1.0.0",
      }));
      const { body: imported } = await t.admin.post<{ accepted: number }>("/v1/admin/devices/batches", rows);
      expect(imported.accepted).toBe(100);
      const { body: all } = await t.admin.get<{ devices: Array<{ id: string }> }>(
        "/v1/admin/devices?limit=1000",
      );
      const ids = all.devices.map((d) => d.id);
      expect(ids.length).toBeGreaterThan(100);
      const page = await open("/console#/devices");
      await page.getByLabel("Admin token").fill(t.server.adminToken!);
      await page.getByRole("button", { name: "Sign in" }).click();
      const shown = () => page.locator("tbody tr td:first-child").allTextContents();
      await page.getByRole("heading", { name: "Devices: page 1 (100)" }).waitFor();
      expect(await shown()).toEqual(ids.slice(0, 100));
      await page.getByRole("button", { name: "Next" }).click();
      await page
        .getByRole("heading", { name: `Devices: page 2 (${Math.min(100, ids.length - 100)})` })
        .waitFor();
      expect(await shown()).toEqual(ids.slice(100, 200));
      await page.getByRole("button", { name: "Previous" }).click();
      await page.getByRole("heading", { name: "Devices: page 1 (100)" }).waitFor();
      expect(await shown()).toEqual(ids.slice(0, 100));
      await page.close();
    });

    it("shows the trust zone's service managers and a zone's container map", async () => {
      const result = await runTrustzoneDemo(
        t.admin,
        { url: t.server.url, pin: t.server.pin },
        { say: () => {}, sweep: () => sweepTrustzone(t.server.trustzone.service), bankLimitSeconds: 2 },
      );
      const { body: managers } = await t.admin.get<{
        managers: Array<{ managerId: string; name: string; state: string }>;
      }>("/v1/admin/tsm/managers");
      const page = await open("/console#/trustzone");
      await page.getByLabel("Admin token").fill(t.server.adminToken!);
      await page.getByRole("button", { name: "Sign in" }).click();
      for (const m of managers.managers) {
        const row = page.locator("tr", { has: page.locator("code", { hasText: m.managerId }) });
        expect(await row.locator("td").nth(0).textContent()).toBe(m.name);
        expect(await row.locator("td").nth(1).textContent()).toContain(m.state);
      }
      expect(managers.managers.find((m) => m.managerId === result.rejectedId)?.state).toBe("rejected");
      await page.getByLabel("Zone").fill(result.zoneId);
      await page.getByRole("button", { name: "Show its containers" }).click();
      const map = page.getByTestId("zone-map");
      await map.getByText(`Zone ${result.zoneId}: personalised, epoch 2`).waitFor();
      expect(await map.locator("tbody tr").count()).toBe(result.finalZone.length);
      await page.getByLabel("Zone").fill("zone-that-is-not");
      await page.getByRole("button", { name: "Show its containers" }).click();
      await map.getByRole("alert").waitFor();
      await page.close();
    });

    it("shows the audit log's decisions and checks its chain", async () => {
      // Enough records for more than one page: refused sender keys, each one audited.
      const stranger = withHeaders(t.client(), { authorization: `Bearer hs_sk_${"x".repeat(43)}` });
      for (let i = 0; i < 110; i++)
        await stranger
          .post("/v1/messages", { to: number, body: { type: "text", text: "no" } })
          .catch(() => {});
      const page = await open("/console#/audit");
      await page.getByLabel("Admin token").fill(t.server.adminToken!);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.locator("td", { hasText: "messaging.sender_auth" }).first().waitFor();
      await page.getByRole("button", { name: "Verify the hash chain" }).click();
      await page.getByTestId("audit-verdict").filter({ hasText: "chain intact" }).waitFor();
      // Pages of 100, newest first, and back.
      const { body: chain } = await t.admin.get<{ count: number }>("/v1/admin/audit/verify");
      expect(chain.count).toBeGreaterThan(100);
      const seqs = async () => (await page.locator("tbody tr td:first-child").allTextContents()).map(Number);
      const newest = await seqs();
      expect(newest).toHaveLength(100);
      expect(newest[0]).toBe(chain.count);
      await page.getByRole("button", { name: "Older records" }).click();
      await page
        .locator("tbody tr td:first-child", { hasText: String(newest.at(-1)! - 1) })
        .first()
        .waitFor();
      const older = await seqs();
      expect(older[0]).toBe(newest.at(-1)! - 1);
      expect(older.at(-1)).toBe(Math.max(1, newest.at(-1)! - 100));
      await page.getByRole("button", { name: "Newest" }).click();
      await page
        .locator("tbody tr td:first-child", { hasText: String(chain.count) })
        .first()
        .waitFor();
      await page.close();
    });

    it("shows each backup account's storage against the quota, and its backups", async () => {
      const result = await runBackupDemo({ url: t.server.url, pin: t.server.pin }, { say: () => {} });
      const { body } = await t.admin.get<{
        quotaBytes: number;
        accounts: Array<{ id: string; handle: string; bytesUsed: number; backups: number }>;
      }>("/v1/admin/backup/accounts");
      const alice = body.accounts.find((a) => a.id === result.alice.accountId)!;
      // Every envelope the account holds: its two backups and the one that shares her photos.
      const held = await (t.server.platform.db as Kysely<BackupTables>)
        .selectFrom("backup_envelopes")
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .where("account_id", "=", alice.id)
        .executeTakeFirstOrThrow();
      expect(alice).toMatchObject({ handle: result.alice.handle, backups: Number(held.n) });
      expect(alice.backups).toBeGreaterThanOrEqual(2);
      expect(alice.bytesUsed).toBeGreaterThan(6 * 1024 * 1024);
      // The operator's listing is the operator's only: an account's own key does not open it.
      const anonymous = await t
        .anonymous()
        .request("GET", "/v1/admin/backup/accounts")
        .catch((e: unknown) => e);
      expect(anonymous).toMatchObject({ status: 401 });

      const page = await open("/console#/backups");
      await page.getByLabel("Admin token").fill(t.server.adminToken!);
      await page.getByRole("button", { name: "Sign in" }).click();
      const usage = page.getByTestId(`usage-${alice.id}`);
      await usage.waitFor();
      expect(await usage.getByRole("progressbar").getAttribute("aria-valuenow")).toBe(
        String(Math.round((alice.bytesUsed / body.quotaBytes) * 100)),
      );
      const row = page.locator("tr", { has: usage });
      expect(await row.locator("td").nth(1).textContent()).toBe(result.alice.handle);
      expect(await row.locator("td").nth(3).textContent()).toBe(String(alice.backups));
      await page.close();
    });

    it("pages the backup accounts by 100", async () => {
      // Accounts as the registration stores them (the listing reads this table alone).
      await (t.server.platform.db as Kysely<BackupTables>)
        .insertInto("backup_accounts")
        .values(
          Array.from({ length: 110 }, (_, i) => ({
            id: `acct_paged${String(i).padStart(4, "0")}${"x".repeat(13)}`,
            signing_key: new Uint8Array(32),
            recipient: "age1paged",
            handle: null,
            created_at: Date.now(),
            bytes_used: i,
          })),
        )
        .execute();
      const { body } = await t.admin.get<{ accounts: Array<{ id: string }> }>(
        "/v1/admin/backup/accounts?limit=1000",
      );
      const ids = body.accounts.map((a) => a.id);
      expect(ids.length).toBeGreaterThan(110);
      const page = await open("/console#/backups");
      await page.getByLabel("Admin token").fill(t.server.adminToken!);
      await page.getByRole("button", { name: "Sign in" }).click();
      const shown = () => page.locator("tbody tr td:first-child").allTextContents();
      await page.getByRole("heading", { name: "Backup accounts: page 1 (100)" }).waitFor();
      expect(await shown()).toEqual(ids.slice(0, 100));
      await page.getByRole("button", { name: "Next" }).click();
      await page.getByRole("heading", { name: `Backup accounts: page 2 (${ids.length - 100})` }).waitFor();
      expect(await shown()).toEqual(ids.slice(100, 200));
      await page.getByRole("button", { name: "Previous" }).click();
      await page.getByRole("heading", { name: "Backup accounts: page 1 (100)" }).waitFor();
      expect(await shown()).toEqual(ids.slice(0, 100));
      await page.close();
    });

    it("left no script error in any page", () => {
      expect(pageErrors).toEqual([]);
    });
  },
);
