/**
 * `handsafe admin campaign-…`: update campaigns over the admin API (docs/protocols/campaigns.md),
 * and `handsafe admin device-channel` for a device's release channel and groups.
 */
import type { Command } from "commander";
import { HandsafeError } from "../core/errors.ts";
import { type AdminOptions, adminCommand, print, withAdmin, withServer } from "./admin-command.ts";
import { createProgressBar } from "./progress.ts";

const DEVICE_STATES = [
  "pending",
  "notified",
  "downloading",
  "verified",
  "installed",
  "failed",
  "rolled_back",
];
const CLOSED = new Set(["completed", "aborted"]);

interface CampaignStatus {
  id: string;
  name: string;
  state: string;
  currentStage: number;
  currentPercent: number;
  stages: number[];
  pauseReason: Record<string, unknown> | null;
  progress: { total: number; byState: Record<string, number>; percentDone: number };
}

const list = (s: string | undefined) =>
  s
    ?.split(",")
    .map((x) => x.trim())
    .filter(Boolean);

function numbers(s: string, what: string): number[] {
  const out = s.split(",").map((x) => Number(x.trim()));
  if (out.some((n) => !Number.isFinite(n)))
    throw new HandsafeError("cli.invalid_argument", `${what} wants numbers separated by commas, got ${s}`);
  return out;
}

/** "22-4" → { startHourUtc: 22, endHourUtc: 4 } */
export function parseWindow(s: string): { startHourUtc: number; endHourUtc: number } {
  const m = /^([0-9]{1,2})-([0-9]{1,2})$/.exec(s.trim());
  if (!m)
    throw new HandsafeError(
      "cli.invalid_argument",
      `--window wants START-END in UTC hours, e.g. 22-4; got ${s}`,
    );
  return { startHourUtc: Number(m[1]), endHourUtc: Number(m[2]) };
}

/** One line of counts: "installed 12 · failed 1 · downloading 3". */
export function countsLine(byState: Record<string, number>): string {
  return DEVICE_STATES.filter((s) => (byState[s] ?? 0) > 0)
    .map((s) => `${s} ${byState[s]}`)
    .join(" · ");
}

function summary(c: CampaignStatus): string {
  const stage = `stage ${c.currentStage + 1}/${c.stages.length} (${c.currentPercent}%)`;
  const paused =
    c.state === "paused" && c.pauseReason ? ` — paused: ${String(c.pauseReason["reason"] ?? "")}` : "";
  return [
    `${c.name} (${c.id}): ${c.state}, ${stage}${paused}`,
    `  ${c.progress.percentDone}% done of ${c.progress.total} devices`,
    ...DEVICE_STATES.map((s) => `  ${s.padEnd(12)} ${c.progress.byState[s] ?? 0}`),
  ].join("\n");
}

export function registerCampaignCommands(program: Command): void {
  const admin = adminCommand(program);

  withServer(admin.command("campaign-create").description("create a draft update campaign of a package"))
    .requiredOption("--name <name>")
    .requiredOption("--package <id>", "the package to roll out (pkg_…)")
    .option("--models <a,b>", "target models")
    .option("--min <version>", "lowest installed version targeted (inclusive)")
    .option("--max <version>", "highest installed version targeted (inclusive)")
    .option("--groups <a,b>", "target device groups (any of)")
    .option("--devices <id,id>", "target device ids")
    .option("--channel <name>", "release channel (default: the package's)")
    .option("--stages <p,p,…>", "cumulative percentages, ascending, ending at 100", "10,50,100")
    .option("--error-threshold <fraction>", "auto-pause above this failure rate (0–1)", "0.1")
    .option("--window <start-end>", "maintenance window in UTC hours, e.g. 22-4")
    .action(
      async (
        o: AdminOptions & {
          name: string;
          package: string;
          models?: string;
          min?: string;
          max?: string;
          groups?: string;
          devices?: string;
          channel?: string;
          stages: string;
          errorThreshold: string;
          window?: string;
        },
      ) => {
        const target = {
          ...(o.models ? { models: list(o.models) } : {}),
          ...(o.groups ? { groups: list(o.groups) } : {}),
          ...(o.devices ? { deviceIds: list(o.devices) } : {}),
          ...(o.min || o.max
            ? { versionRange: { ...(o.min ? { min: o.min } : {}), ...(o.max ? { max: o.max } : {}) } }
            : {}),
        };
        const body = {
          name: o.name,
          packageId: o.package,
          target,
          stages: numbers(o.stages, "--stages"),
          errorThreshold: Number(o.errorThreshold),
          ...(o.channel ? { channel: o.channel } : {}),
          ...(o.window ? { maintenanceWindow: parseWindow(o.window) } : {}),
        };
        await withAdmin(o, async (c) => print((await c.post("/v1/admin/campaigns", body)).body));
      },
    );

  for (const [action, what] of [
    ["start", "start a draft campaign: enrol matching devices, notify the first stage"],
    ["pause", "pause a running campaign: no new notifications or assignments"],
    ["resume", "resume a paused campaign"],
    ["abort", "abort a campaign for good"],
    ["advance", "move a running campaign to its next stage and notify the devices it adds"],
  ] as const) {
    withServer(admin.command(`campaign-${action}`).description(what))
      .requiredOption("--id <id>", "campaign id (cmp_…)")
      .action(async (o: AdminOptions & { id: string }) =>
        withAdmin(o, async (c) => {
          const status = (
            await c.post<CampaignStatus>(`/v1/admin/campaigns/${encodeURIComponent(o.id)}/${action}`)
          ).body;
          process.stdout.write(`${summary(status)}\n`);
        }),
      );
  }

  withServer(admin.command("campaigns").description("list campaigns")).action(async (o: AdminOptions) =>
    withAdmin(o, async (c) => {
      const { campaigns } = (await c.get<{ campaigns: CampaignStatus[] }>("/v1/admin/campaigns")).body;
      for (const x of campaigns)
        process.stdout.write(
          `${x.id}  ${x.state.padEnd(9)} ${String(x.progress.percentDone).padStart(5)}%  ${x.name}\n`,
        );
    }),
  );

  withServer(
    admin.command("campaign-status").description("a campaign's progress by state, with a progress bar"),
  )
    .requiredOption("--id <id>", "campaign id (cmp_…)")
    .option("--watch", "keep polling until the campaign completes or is aborted")
    .option("--interval <seconds>", "polling interval with --watch", "2")
    .option("--json", "print the campaign as JSON instead")
    .action(async (o: AdminOptions & { id: string; watch?: boolean; interval: string; json?: boolean }) =>
      withAdmin(o, async (c) => {
        const path = `/v1/admin/campaigns/${encodeURIComponent(o.id)}`;
        const bar = createProgressBar({ label: "campaign", total: 100 });
        const intervalMs = Math.max(Number(o.interval) || 2, 0.2) * 1000;
        let status = (await c.get<CampaignStatus>(path)).body;
        bar.update(status.progress.percentDone, `${status.state} · ${countsLine(status.progress.byState)}`);
        while (o.watch && !CLOSED.has(status.state)) {
          await new Promise((r) => setTimeout(r, intervalMs));
          status = (await c.get<CampaignStatus>(path)).body;
          bar.update(status.progress.percentDone, `${status.state} · ${countsLine(status.progress.byState)}`);
        }
        bar.finish();
        if (o.json) print(status);
        else process.stdout.write(`${summary(status)}\n`);
      }),
    );

  withServer(admin.command("device-channel").description("show or set a device's release channel and groups"))
    .requiredOption("--device <id>", "device id (dev_…)")
    .option("--channel <name>", "release channel, e.g. stable or beta")
    .option("--groups <a,b>", "groups (replaces the device's groups; empty string for none)")
    .action(async (o: AdminOptions & { device: string; channel?: string; groups?: string }) =>
      withAdmin(o, async (c) => {
        const path = `/v1/admin/device-channels/${encodeURIComponent(o.device)}`;
        if (o.channel === undefined && o.groups === undefined) return print((await c.get(path)).body);
        const current = (await c.get<{ channel: string; groups: string[] }>(path)).body;
        const body = {
          channel: o.channel ?? current.channel,
          groups: o.groups === undefined ? current.groups : (list(o.groups) ?? []),
        };
        print((await c.request("PUT", path, { json: body })).body);
      }),
    );
}
