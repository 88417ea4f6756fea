/**
 * The console's views: each renders into its element from the admin API and nothing else. A view
 * with `refreshMs` is rendered again on that period while it is on screen (campaign progress).
 */
// Types only (erased from the bundle): the answers' shapes as the server's routes define them.
import type { BackupService } from "../../backup/server.ts";
import type { HttpClient } from "../../handset/http-client.ts";
import type { AuditRecord } from "../../platform/audit.ts";
import type { CampaignView } from "../../updates/campaigns/server.ts";
import { errorLine, formValues, h, progress, show, table, when } from "../shared/dom.ts";

export interface View {
  name: string;
  title: string;
  refreshMs?: number;
  render(into: HTMLElement, api: HttpClient): Promise<void>;
}

const card = (title: string, ...children: Array<Node | string | null>) =>
  h("section", { class: "card" }, h("h2", {}, title), ...children);

type Columns<T> = Parameters<typeof table<T>>[0];

/**
 * A view that is one card with one table of what `load` reads from the admin API. With `pageSize`,
 * `load` reads one page after a cursor (the `cursor` of the previous page's last item) and the card
 * has "Previous" / "Next" buttons.
 */
function tableView<T>(v: {
  name: string;
  title: string;
  heading: (items: T[], page: number) => string;
  /** A line under the heading. */
  note?: string;
  load: (api: HttpClient, after?: string) => Promise<T[]>;
  columns: Columns<T>;
  empty: string;
  pageSize?: number;
  cursor?: (item: T) => string;
}): View {
  return {
    name: v.name,
    title: v.title,
    async render(into, api) {
      // The cursor each page starts after: page 1 starts at the beginning.
      const starts: Array<string | undefined> = [undefined];
      const showPage = async (page: number) => {
        const items = await v.load(api, starts[page]);
        const full = v.pageSize !== undefined && v.cursor !== undefined && items.length === v.pageSize;
        if (full) starts[page + 1] = v.cursor!(items.at(-1)!);
        show(
          into,
          card(
            v.heading(items, page + 1),
            v.note === undefined ? null : h("p", { class: "muted" }, v.note),
            table<T>(v.columns, items, v.empty),
            page > 0 || full
              ? h(
                  "p",
                  {},
                  page > 0
                    ? h("button", { class: "secondary", onclick: () => turn(page - 1) }, "Previous")
                    : null,
                  " ",
                  full ? h("button", { class: "secondary", onclick: () => turn(page + 1) }, "Next") : null,
                )
              : null,
          ),
        );
      };
      // A page that fails to load (the server refused, the connection dropped) says why in place.
      const turn = (page: number) => {
        showPage(page).catch((e: unknown) => show(into, errorLine(e)));
      };
      await showPage(0);
    },
  };
}

// --- overview ------------------------------------------------------------------------------------

const overview: View = {
  name: "overview",
  title: "Overview",
  refreshMs: 5000,
  async render(into, api) {
    const [ready, devices, campaigns, senders] = await Promise.all([
      api.get("/readyz").then(
        () => "ready",
        (e: unknown) => `not ready (${(e as Error).message})`,
      ),
      api.get<{ devices: unknown[] }>("/v1/admin/devices?limit=1000"),
      api.get<{ campaigns: Campaign[] }>("/v1/admin/campaigns"),
      api.get<{ senders: unknown[] }>("/v1/admin/senders"),
    ]);
    const running = campaigns.body.campaigns.filter((c) => !CLOSED.has(c.state));
    show(
      into,
      card(
        "Server",
        h("p", { class: ready === "ready" ? "ok" : "error", "data-testid": "readiness" }, ready),
        table<[string, string | number]>(
          [
            ["", ([k]) => k],
            ["", ([, v]) => v],
          ],
          [
            [
              "Devices in the registry",
              devices.body.devices.length >= 1000 ? "1000+" : devices.body.devices.length,
            ],
            ["Update campaigns running", running.length],
            ["Messaging senders", senders.body.senders.length],
          ],
        ),
      ),
      running.length > 0 ? campaignCards(running) : null,
    );
  },
};

// --- devices -------------------------------------------------------------------------------------

interface Device {
  id: string;
  model: string;
  firmwareVersion: string;
  msisdn: string | null;
  owner: string | null;
  keySource: string;
  batchId: string;
  createdAt: number;
}

const DEVICE_PAGE = 100;

const devices = tableView<Device>({
  name: "devices",
  title: "Devices",
  heading: (items, page) => `Devices: page ${page} (${items.length})`,
  pageSize: DEVICE_PAGE,
  cursor: (d) => d.id,
  load: async (api, after) =>
    (
      await api.get<{ devices: Device[] }>(
        `/v1/admin/devices?limit=${DEVICE_PAGE}${after === undefined ? "" : `&after=${encodeURIComponent(after)}`}`,
      )
    ).body.devices,
  columns: [
    ["Device", (d) => h("code", {}, d.id)],
    ["Model", (d) => d.model],
    ["Firmware", (d) => d.firmwareVersion],
    ["Number", (d) => d.msisdn ?? "—"],
    ["Static key", (d) => d.keySource],
    ["Batch", (d) => h("code", {}, d.batchId)],
    ["Registered", (d) => when(d.createdAt)],
  ],
  empty: "No device is registered yet (handsafe admin device-batch … provisions them).",
});

// --- campaigns -----------------------------------------------------------------------------------

/** The admin API's campaign view, as its route answers it. */
type Campaign = CampaignView;

const CLOSED = new Set(["completed", "aborted"]);

function campaignCards(campaigns: Campaign[]): HTMLElement {
  return card(
    "Update campaigns",
    table<Campaign>(
      [
        ["Campaign", (c) => h("span", {}, c.name, h("br"), h("code", { class: "muted" }, c.id))],
        ["State", (c) => h("span", { "data-testid": `campaign-state-${c.id}` }, c.state)],
        ["Stage", (c) => `${c.currentStage + 1} of ${c.stages.length} (${c.currentPercent}% of the fleet)`],
        [
          "Progress",
          (c) =>
            h(
              "div",
              { "data-testid": `campaign-progress-${c.id}` },
              progress(
                c.progress.percentDone,
                100,
                `${c.progress.percentDone}% of ${c.progress.total} devices done`,
              ),
              h(
                "div",
                { class: "chips" },
                ...Object.entries(c.progress.byState)
                  .filter(([, n]) => n > 0)
                  .map(([s, n]) => h("span", { class: "chip" }, `${s} ${n}`)),
              ),
              c.pauseReason ? h("p", { class: "error" }, `paused: ${JSON.stringify(c.pauseReason)}`) : null,
            ),
        ],
      ],
      campaigns,
      "No campaign yet (handsafe admin campaign-create …).",
    ),
  );
}

const campaigns: View = {
  name: "campaigns",
  title: "Campaigns",
  refreshMs: 2000,
  async render(into, api) {
    const { campaigns } = (await api.get<{ campaigns: Campaign[] }>("/v1/admin/campaigns")).body;
    show(into, campaignCards(campaigns));
  },
};

// --- update packages -----------------------------------------------------------------------------

interface UpdatePackage {
  id: string;
  version: string;
  kind: "full" | "delta";
  fromVersion?: string;
  models: string[];
  channel: string;
  imageLength: number;
  encryptedLength: number;
  createdAt: number;
}

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(bytes < 1048576 ? 2 : 1)} MiB`;

const packages = tableView<UpdatePackage>({
  name: "packages",
  title: "Packages",
  heading: () => "Update packages (signed in the TUF repository), newest first",
  load: async (api) =>
    (await api.get<{ packages: UpdatePackage[] }>("/v1/admin/updates/packages")).body.packages.reverse(),
  columns: [
    ["Version", (p) => p.version],
    ["Kind", (p) => (p.kind === "delta" ? `delta from ${p.fromVersion ?? "?"}` : "full")],
    ["Models", (p) => p.models.join(", ")],
    ["Channel", (p) => p.channel],
    ["Image", (p) => mib(p.imageLength)],
    ["Download", (p) => mib(p.encryptedLength)],
    ["Package", (p) => h("code", {}, p.id)],
    ["Created", (p) => h("span", { class: "nowrap" }, when(p.createdAt))],
  ],
  empty: "No package yet (handsafe admin package-upload …).",
});

// --- activation services -------------------------------------------------------------------------

interface Service {
  uid: string;
  name: string;
  keyId: string;
  exchangeUrl: string;
}

const services = tableView<Service>({
  name: "services",
  title: "Services",
  heading: () => "Activation services (each signs its grants with its own Ed25519 key)",
  // The public list (what handsets pin their services' keys from).
  load: async (api) => (await api.get<Service[]>("/v1/services")).body,
  columns: [
    ["Service", (s) => h("code", {}, s.uid)],
    ["Name", (s) => s.name],
    ["Signing key", (s) => h("code", {}, s.keyId)],
    ["Key exchange", (s) => h("code", { class: "details" }, s.exchangeUrl)],
  ],
  empty: "No service yet (handsafe admin service-create …).",
});

// --- trust-zone service managers and zones -------------------------------------------------------

interface Manager {
  managerId: string;
  name: string;
  state: string;
  reason: string | null;
  memoryBytes: number;
  applications: Array<{ appId: string; state: string }>;
  createdAt: number;
}

interface ZoneMap {
  zone: { zoneId: string; handsetId: string | null; epoch: number; state: string; containers: number };
  containers: Array<{
    index: number;
    state: string;
    managerName: string | null;
    notAfter: number | null;
    bytes: number;
    tokenUses: number | null;
    tokenMaxUses: number | null;
  }>;
}

const trustzone: View = {
  name: "trustzone",
  title: "Trust zones",
  async render(into, api) {
    const managers = (await api.get<{ managers: Manager[] }>("/v1/admin/tsm/managers")).body.managers;
    const map = h("div", { "data-testid": "zone-map" });
    const form = h(
      "form",
      {
        onsubmit: async (event: Event) => {
          event.preventDefault();
          const zone = formValues(form).zone ?? "";
          try {
            const { body } = await api.get<ZoneMap>(`/v1/admin/tsm/zones/${encodeURIComponent(zone)}`);
            show(
              map,
              h(
                "p",
                {},
                `Zone ${body.zone.zoneId}: ${body.zone.state}, epoch ${body.zone.epoch}, `,
                `${body.zone.containers} containers`,
                body.zone.handsetId ? `, handset ${body.zone.handsetId}` : "",
              ),
              table<ZoneMap["containers"][number]>(
                [
                  ["#", (c) => c.index],
                  ["State", (c) => c.state],
                  ["Held by", (c) => c.managerName ?? "—"],
                  ["Until", (c) => when(c.notAfter)],
                  [
                    "Token uses",
                    (c) => (c.tokenMaxUses === null ? "—" : `${c.tokenUses} of ${c.tokenMaxUses}`),
                  ],
                  ["Bytes", (c) => c.bytes],
                ],
                body.containers,
              ),
            );
          } catch (e) {
            show(map, errorLine(e));
          }
        },
      },
      h("label", {}, "Zone", h("input", { name: "zone", required: true, size: 30 })),
      h("button", { type: "submit" }, "Show its containers"),
    );
    show(
      into,
      card(
        "Service managers",
        table<Manager>(
          [
            ["Name", (m) => m.name],
            ["State", (m) => (m.reason ? `${m.state} (${m.reason})` : m.state)],
            [
              "Applications",
              (m) =>
                h(
                  "div",
                  { class: "chips" },
                  ...m.applications.map((a) => h("span", { class: "chip" }, `${a.appId} ${a.state}`)),
                ),
            ],
            ["Memory", (m) => mib(m.memoryBytes)],
            ["Manager", (m) => h("code", {}, m.managerId)],
            ["Registered", (m) => h("span", { class: "nowrap" }, when(m.createdAt))],
          ],
          managers,
          "No service manager has registered yet.",
        ),
      ),
      card("A zone's container map", form, map),
    );
  },
};

// --- backup storage ------------------------------------------------------------------------------

/** GET /v1/admin/backup/accounts, as the backup service answers it. */
type BackupUsage = Awaited<ReturnType<BackupService["accountUsage"]>>;

const BACKUP_PAGE = 100;

/** An account's row, with the quota the server answered its page with (the same for all). */
type BackupRow = BackupUsage["accounts"][number] & { quotaBytes: number };

const backups = tableView<BackupRow>({
  name: "backups",
  title: "Backups",
  heading: (items, page) =>
    `Backup accounts: page ${page} (${items.length})` +
    (items[0] ? `, storage used of the ${mib(items[0].quotaBytes)} quota` : ""),
  note: "The server holds only ciphertext and signed envelopes: sizes and counts are all it can show.",
  pageSize: BACKUP_PAGE,
  cursor: (a) => a.id,
  load: async (api, after) => {
    const query = `limit=${BACKUP_PAGE}${after === undefined ? "" : `&after=${encodeURIComponent(after)}`}`;
    const { quotaBytes, accounts } = (await api.get<BackupUsage>(`/v1/admin/backup/accounts?${query}`)).body;
    return accounts.map((a) => ({ ...a, quotaBytes }));
  },
  columns: [
    ["Account", (a) => h("code", {}, a.id)],
    ["Handle", (a) => a.handle ?? "—"],
    [
      "Storage",
      (a) =>
        h(
          "div",
          { "data-testid": `usage-${a.id}` },
          progress(a.bytesUsed, a.quotaBytes, `${mib(a.bytesUsed)} of ${mib(a.quotaBytes)}`),
        ),
    ],
    ["Backups", (a) => a.backups],
    ["Last backup", (a) => h("span", { class: "nowrap" }, when(a.lastBackupAt))],
  ],
  empty: "No backup account yet (handsafe backup init …).",
});

// --- messaging senders ---------------------------------------------------------------------------

interface Sender {
  id: string;
  name: string;
  webhookUrl: string | null;
  createdAt: number;
  disabledAt: number | null;
}

const senders: View = {
  name: "senders",
  title: "Senders",
  async render(into, api) {
    const list = (await api.get<{ senders: Sender[] }>("/v1/admin/senders")).body.senders;
    const created = h("div");
    const form = h(
      "form",
      {
        onsubmit: async (event: Event) => {
          event.preventDefault();
          const { name, webhookUrl } = formValues(form);
          try {
            const { body } = await api.post<Sender & { apiKey: string; webhookSecret: string }>(
              "/v1/admin/senders",
              { name, ...(webhookUrl ? { webhookUrl } : {}) },
            );
            await senders.render(into, api);
            // After the re-render: the key is shown once, here, and never again.
            into.prepend(
              card(
                `Sender ${body.name} created`,
                h("p", {}, "Give the sender its API key now: the server keeps only a hash of it."),
                h("p", { class: "secret mono", "data-testid": "api-key" }, body.apiKey),
                h("p", { class: "muted" }, "Webhook signing secret: "),
                h("p", { class: "secret mono" }, body.webhookSecret),
              ),
            );
          } catch (e) {
            show(created, errorLine(e));
          }
        },
      },
      h("label", {}, "Name", h("input", { name: "name", required: true, maxlength: 100 })),
      h("label", {}, "Reply webhook (optional)", h("input", { name: "webhookUrl", type: "url", size: 36 })),
      h("button", { type: "submit" }, "Create sender"),
    );
    show(
      into,
      card("New sender", form, created),
      card(
        "Senders",
        table<Sender>(
          [
            ["Name", (s) => s.name],
            ["Sender", (s) => h("code", {}, s.id)],
            ["Webhook", (s) => s.webhookUrl ?? "—"],
            ["Created", (s) => when(s.createdAt)],
            [
              "",
              (s) =>
                s.disabledAt !== null
                  ? h("span", { class: "muted" }, `disabled ${when(s.disabledAt)}`)
                  : h(
                      "button",
                      {
                        class: "secondary",
                        onclick: async () => {
                          if (!window.confirm(`Disable ${s.name}? Its API key stops working at once.`))
                            return;
                          await api.delete(`/v1/admin/senders/${encodeURIComponent(s.id)}`);
                          await senders.render(into, api);
                        },
                      },
                      "Disable",
                    ),
            ],
          ],
          list,
        ),
      ),
    );
  },
};

// --- the built-in SMS centre ---------------------------------------------------------------------

interface Text {
  id: string;
  from: string;
  to: string;
  text: string;
  at: number;
}

const outbox: View = {
  name: "outbox",
  title: "SMS outbox",
  async render(into, api) {
    const list = h("div");
    const form = h(
      "form",
      {
        onsubmit: async (event: Event) => {
          event.preventDefault();
          const { to } = formValues(form);
          try {
            const { texts } = (
              await api.get<{ texts: Text[] }>(`/v1/sms/outbox?to=${encodeURIComponent(to ?? "")}&limit=100`)
            ).body;
            show(
              list,
              table<Text>(
                [
                  ["At", (t) => when(t.at)],
                  ["From", (t) => t.from],
                  ["Text", (t) => h("span", { class: "mono" }, t.text)],
                ],
                texts,
                "No text to that number.",
              ),
            );
          } catch (e) {
            show(list, errorLine(e));
          }
        },
      },
      h(
        "label",
        {},
        "Number",
        h("input", { name: "to", type: "tel", required: true, placeholder: "+447911123456" }),
      ),
      h("button", { type: "submit" }, "Show texts"),
    );
    show(
      into,
      card(
        "Texts held by the built-in SMS centre",
        h(
          "p",
          { class: "muted" },
          "With HANDSAFE_SMS_GATEWAY=outbox, texts are kept here instead of being sent.",
        ),
        form,
        list,
      ),
    );
  },
};

// --- audit ---------------------------------------------------------------------------------------

const audit: View = {
  name: "audit",
  title: "Audit",
  async render(into, api) {
    const verdict = h("span", { "data-testid": "audit-verdict" });
    const verify = h(
      "button",
      {
        class: "secondary",
        onclick: async () => {
          show(verdict, "checking…");
          try {
            const { body } = await api.get<{
              ok: boolean;
              count?: number;
              brokenAt?: number;
              reason?: string;
            }>("/v1/admin/audit/verify");
            show(
              verdict,
              body.ok
                ? h("span", { class: "ok" }, `chain intact: ${body.count} records`)
                : h("span", { class: "error" }, `chain broken at ${body.brokenAt}: ${body.reason}`),
            );
          } catch (e) {
            show(verdict, errorLine(e));
          }
        },
      },
      "Verify the hash chain",
    );
    const page = h("div");
    /** Shows the newest PAGE records before `before` (all the newest without), with a way further back. */
    const showPage = async (before?: number) => {
      const query = `latest=true&limit=${AUDIT_PAGE}${before === undefined ? "" : `&before=${before}`}`;
      const { records } = (await api.get<{ records: AuditRecord[] }>(`/v1/admin/audit?${query}`)).body;
      const oldest = records[0]?.seq;
      show(
        page,
        auditTable(records),
        h(
          "p",
          {},
          before === undefined
            ? null
            : h("button", { class: "secondary", onclick: () => void showPage() }, "Newest"),
          " ",
          oldest !== undefined && oldest > 1
            ? h("button", { class: "secondary", onclick: () => void showPage(oldest) }, "Older records")
            : null,
        ),
      );
    };
    await showPage();
    show(into, card("Audit log (newest first)", h("p", {}, verify, " ", verdict), page));
  },
};

const AUDIT_PAGE = 100;

function auditTable(records: AuditRecord[]): HTMLElement {
  return table<AuditRecord>(
    [
      ["#", (r) => r.seq],
      ["At", (r) => h("span", { class: "nowrap" }, when(r.at))],
      ["Actor", (r) => h("code", {}, r.actor)],
      ["Action", (r) => r.action],
      ["Subject", (r) => (r.subject ? h("code", {}, r.subject) : "—")],
      [
        "Outcome",
        (r) =>
          h("span", { class: r.outcome === "allow" ? "ok" : r.outcome === "deny" ? "error" : "" }, r.outcome),
      ],
      ["Details", (r) => h("code", { class: "muted details" }, JSON.stringify(r.details))],
    ],
    [...records].reverse(),
  );
}

export const VIEWS: readonly View[] = [
  overview,
  devices,
  packages,
  campaigns,
  services,
  senders,
  backups,
  trustzone,
  outbox,
  audit,
];
