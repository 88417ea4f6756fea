/**
 * The updates part of `handsafe demo`: a manufacturer batch of simulated handsets, a signed delta
 * package, and a staged campaign watched to 100% — with one handset whose new slot fails its health
 * check and rolls back. Everything goes through the server's public API and the handset SDK; the
 * simulated handsets read their texts from the built-in SMS centre (see simulated-device.ts).
 *
 * `runUpdatesDemo` returns what happened so a test can check it against the server independently.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { utf8 } from "../core/codec/bytes.ts";
import { randomToken } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import type { ServerAddress } from "../handset/handset.ts";
import type { HttpClient } from "../handset/http-client.ts";
import type { DeviceKeyFile } from "../management/protocol.ts";
import type { UpdateOutcome } from "../updates/handset.ts";
import type { UpdatePackage } from "../updates/packages.ts";
import { MemorySlotStore } from "../updates/slots.ts";
import { countsLine } from "./campaigns.ts";
import { randomImei, randomMobileNumber } from "./demo-data.ts";
import { createProgressBar } from "./progress.ts";
import { SimulatedDevice } from "./simulated-device.ts";
import { uploadPackage } from "./updates.ts";

export interface UpdatesDemoOptions {
  /** How many simulated handsets the batch holds (default 6). */
  devices?: number;
  say?: (text: string) => void;
  /** Where the progress bar is drawn (default stderr). */
  progressStream?: NodeJS.WriteStream;
}

export interface UpdatesDemoResult {
  model: string;
  campaignId: string;
  packageId: string;
  version: string;
  devices: Array<{ deviceId: string; failing: boolean; outcome: UpdateOutcome["status"]; version: string }>;
  finalState: string;
  percentDone: number;
  byState: Record<string, number>;
}

interface CampaignView {
  id: string;
  state: string;
  currentStage: number;
  currentPercent: number;
  stages: number[];
  progress: { total: number; byState: Record<string, number>; percentDone: number };
}

/** A firmware image: a header naming its version, then deterministic bytes. */
function firmware(version: string, size: number, base?: Uint8Array): Uint8Array {
  const out = base ? base.slice() : new Uint8Array(size);
  if (!base) {
    let x = 0x9e3779b9;
    for (let i = 0; i < size; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = (x >>> 24) & 0x3f; // half the entropy of random bytes, like real code
    }
  } else {
    // A fix: a few scattered runs of changed bytes, about 3% of the image.
    for (let run = 0; run < 12; run++) {
      const at = Math.floor(((run + 0.5) / 12) * (size - 4096));
      for (let i = 0; i < 2048; i++) out[at + i] = (out[at + i]! + 1 + run) & 0xff;
    }
  }
  out.set(utf8(`FIRMWARE ${version}\n`.padEnd(32, " ")), 0);
  return out;
}

export async function runUpdatesDemo(
  admin: HttpClient,
  server: ServerAddress & { pin: string },
  token: string,
  options: UpdatesDemoOptions = {},
): Promise<UpdatesDemoResult> {
  const say = options.say ?? ((t: string) => process.stdout.write(`${t}\n`));
  const step = (n: string, text: string) => say(`\n${n}. ${text}`);
  const count = options.devices ?? 6;
  const run = randomToken(4)
    .toUpperCase()
    .replace(/[^A-Z0-9]/g, "X");
  const model = `HS-DEMO-${run}`;
  const work = mkdtempSync(join(tmpdir(), "handsafe-demo-updates-"));
  const devices: SimulatedDevice[] = [];
  const slotStores: MemorySlotStore[] = [];
  try {
    step(
      "U1",
      `A manufacturer delivers a batch of ${count} ${model} handsets (one bad row, to show the report).`,
    );
    const rows = Array.from({ length: count }, () => ({
      model,
      hardware_id: randomImei(),
      firmware_version: "1.0.0",
      msisdn: randomMobileNumber(),
    }));
    const batch = [...rows, { model, hardware_id: "not-an-imei", firmware_version: "1.0.0" }];
    const { body: imported } = await admin.post<{
      accepted: number;
      rejected: number;
      rows: Array<{ line: number; status: "accepted" | "rejected"; code?: string; message?: string }>;
      keyFiles: DeviceKeyFile[];
    }>("/v1/admin/devices/batches", batch);
    say(`   accepted ${imported.accepted}, rejected ${imported.rejected}`);
    for (const r of imported.rows.filter((r) => r.status === "rejected"))
      say(`   row ${r.line} rejected, nothing else: ${r.code} (${r.message})`);
    say("   each handset gets its key file (its static key); the server keeps the key sealed at rest");

    const v1 = firmware("1.0.0", 1 << 20);
    const v2 = firmware("1.1.0", 1 << 20, v1);
    const failingIndex = count - 1;
    for (let i = 0; i < imported.keyFiles.length; i++) {
      const keyFile = imported.keyFiles[i]!;
      const failing = i === failingIndex;
      const slots = new MemorySlotStore({
        a: { version: "1.0.0", image: v1 },
        // The failing handset's new slot does not boot: its health check says no.
        ...(failing ? { healthCheck: async (slot) => slot === "a" } : {}),
      });
      const msisdn = rows[i]!.msisdn;
      const device = new SimulatedDevice({ server, keyFile, msisdn, admin, slots, percentStep: 50 });
      await device.radio.skipExisting();
      devices.push(device);
      slotStores.push(slots);
    }

    step("U2", "The maker uploads firmware 1.0.0 and 1.1.0; the server builds a delta between them. Each");
    say("   package is encrypted once with its own content key and published as a signed TUF target.");
    const upload = async (version: string, bytes: Uint8Array): Promise<UpdatePackage> => {
      const file = join(work, `firmware-${version}.img`);
      writeFileSync(file, bytes);
      const bar = createProgressBar({
        label: `   upload ${version}`,
        total: bytes.length,
        ...(options.progressStream ? { stream: options.progressStream } : {}),
      });
      const pkg = await uploadPackage(server, token, file, { version, models: [model] }, (sent) =>
        bar.update(sent),
      );
      bar.finish();
      return pkg;
    };
    const full1 = await upload("1.0.0", v1);
    const full2 = await upload("1.1.0", v2);
    const { body: delta } = await admin.post<UpdatePackage>(`/v1/admin/updates/packages/${full2.id}/delta`, {
      fromPackageId: full1.id,
    });
    say(
      `   delta ${delta.id}: ${delta.encryptedLength} bytes for a ${full2.plaintextLength}-byte image ` +
        `(${((100 * delta.encryptedLength) / full2.encryptedLength).toFixed(1)}%)`,
    );

    step("U3", "A staged campaign of the delta: 50% of the fleet first, then everyone; it pauses by itself");
    say("   if more than half of the finished handsets fail.");
    const { body: created } = await admin.post<CampaignView>("/v1/admin/campaigns", {
      name: `demo ${run}: 1.1.0`,
      packageId: delta.id,
      target: { models: [model], versionRange: { min: "1.0.0", max: "1.0.0" } },
      stages: [50, 100],
      errorThreshold: 0.5,
    });
    const campaignId = created.id;
    await admin.post(`/v1/admin/campaigns/${campaignId}/start`, {});
    say(`   campaign ${campaignId} started`);

    const outcomes = new Map<string, UpdateOutcome["status"]>();
    const failures = new Map<string, string>();
    const bar = createProgressBar({
      label: "   rollout",
      logStep: 25,
      ...(options.progressStream ? { stream: options.progressStream } : {}),
    });
    const show = async () => {
      const { body } = await admin.get<CampaignView>(`/v1/admin/campaigns/${campaignId}`);
      bar.update(body.progress.percentDone, countsLine(body.progress.byState));
      return body;
    };
    const wakeAll = async () => {
      // Each handset that received a notification asks for its assignment, downloads, installs.
      await Promise.all(
        devices.map(async (d) => {
          const { outcome } = await d.wake();
          if (!outcome) return;
          outcomes.set(d.deviceId, outcome.status);
          if (outcome.status === "failed") failures.set(d.deviceId, `${outcome.code}: ${outcome.message}`);
          await show();
        }),
      );
      return show();
    };

    let view = await show();
    for (let stage = 0; stage < created.stages.length; stage++) {
      view = await wakeAll();
      if (view.state === "paused") {
        // The error threshold tripped (a small stage that holds the failing handset can do that).
        bar.finish();
        const { body: devicesView } = await admin.get<unknown>(`/v1/admin/campaigns/${campaignId}`);
        const reason = (devicesView as { pauseReason?: { reason?: string } }).pauseReason?.reason;
        say(`   the campaign paused by itself (${reason ?? "error threshold"}): the operator looks, resumes`);
        await admin.post(`/v1/admin/campaigns/${campaignId}/resume`, {});
        view = await show();
      }
      if (view.state === "running" && view.currentStage < view.stages.length - 1) {
        bar.finish();
        say(`   stage ${view.currentStage + 1} done (${view.currentPercent}%): the operator advances`);
        await admin.post(`/v1/admin/campaigns/${campaignId}/advance`, {});
      }
    }
    bar.finish();
    view = await show();
    bar.finish();

    step("U4", "Where each handset ended:");
    const summary: UpdatesDemoResult["devices"] = [];
    for (const [i, d] of devices.entries()) {
      const outcome = outcomes.get(d.deviceId) ?? "no_update";
      const slots = slotStores[i]!;
      const version = (await slots.meta(await slots.active()))?.version ?? "unknown";
      summary.push({ deviceId: d.deviceId, failing: i === failingIndex, outcome, version });
      const note =
        outcome === "rolled_back"
          ? "   (its new slot failed the health check: switched back)"
          : failures.has(d.deviceId)
            ? `   (${failures.get(d.deviceId)})`
            : "";
      say(`   ${d.deviceId}  ${outcome.padEnd(12)} running ${version}${note}`);
    }
    say(
      `   campaign ${view.state}: ${view.progress.percentDone}% done — ${countsLine(view.progress.byState)}`,
    );
    const { body: verification } = await admin.get<{ ok: boolean; count?: number }>("/v1/admin/audit/verify");
    if (!verification.ok) throw new HandsafeError("demo.audit_broken", "the audit chain does not verify");
    say(`   audit chain verified, ${verification.count} records`);
    return {
      model,
      campaignId,
      packageId: delta.id,
      version: "1.1.0",
      devices: summary,
      finalState: view.state,
      percentDone: view.progress.percentDone,
      byState: view.progress.byState,
    };
  } finally {
    for (const d of devices) d.close();
    rmSync(work, { recursive: true, force: true });
  }
}
