/**
 * `handsafe device …`: a simulated managed handset kept in a folder (FolderDevice in
 * folder-device.ts), the handset side of `handsafe admin devices-import` and of campaigns:
 *
 *   handsafe device init --dir D --key-file dev_….json --msisdn +49… [--image F] [--version V]
 *   handsafe device texts --dir D       new texts from the SMS centre → the SMS processor
 *   handsafe device update --dir D      texts, then ask for an update and install it (progress on stderr)
 *   handsafe device status --dir D      identity, slots, the dynamic key's facts (never a key)
 *
 * The keystore passphrase comes as for `handsafe handset …` (HANDSAFE_HANDSET_PASSPHRASE,
 * --passphrase-file or a prompt). The device's radio is the server's built-in SMS centre, read with
 * the admin token (see simulated-device.ts), so `texts` and `update` need one.
 */
import { resolve } from "node:path";
import type { Command } from "commander";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import type { ServerAddress } from "../handset/handset.ts";
import type { HttpClient } from "../handset/http-client.ts";
import { parseKeyFile } from "../management/protocol.ts";
import { normalisePhoneNumber } from "../platform/notify/sms/phone.ts";
import type { UpdateOutcome, UpdateState } from "../updates/handset.ts";
import { SLOT_NAMES, type SlotMeta } from "../updates/slots.ts";
import {
  adminClient,
  readPassphrase,
  resolveAdminToken,
  resolveServer,
  type ServerOptions,
} from "./connect.ts";
import { type DeviceInfo, type DynamicKeyInfo, readInputFile } from "./devices.ts";
import { FolderDevice, simulatedFirmware } from "./folder-device.ts";
import { createProgressBar } from "./progress.ts";
import type { SimulatedDevice, TextReceipt } from "./simulated-device.ts";

type DeviceOptions = { dir: string; passphraseFile?: string; token?: string; dataDir?: string };

function withDevice(cmd: Command): Command {
  return cmd
    .option("--dir <dir>", "the device's folder", process.env["HANDSAFE_DEVICE_DIR"] ?? "./device")
    .option(
      "--passphrase-file <file>",
      "file holding the keystore passphrase (default: HANDSAFE_HANDSET_PASSPHRASE or a prompt)",
    )
    .option(
      "--token <token>",
      "admin token for the SMS centre (default: HANDSAFE_ADMIN_TOKEN or <data dir>/admin.token)",
    )
    .option("--data-dir <dir>", "a local server's data folder (its admin.token, server.json)");
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.[0-9]{3}Z$/, "Z");

async function openDevice(o: DeviceOptions): Promise<FolderDevice> {
  return FolderDevice.open(resolve(o.dir), await readPassphrase(o));
}

/**
 * The device on the network for one command: its radio reads the SMS centre with the admin token;
 * the radio's place is saved whatever happens, so no text is handed over twice.
 */
async function online<T>(
  folder: FolderDevice,
  o: DeviceOptions,
  fn: (device: SimulatedDevice) => Promise<T>,
): Promise<T> {
  const admin = adminClient(folder.config.server, resolveAdminToken(o));
  const device = await folder.connect(admin, { percentStep: 25 });
  try {
    return await fn(device);
  } finally {
    // Unsaved, the next run is handed these texts again and the SMS processor refuses the replays.
    await folder.saveRadioCursor(device).catch(() => undefined);
    device.close();
    admin.close();
  }
}

/** One line per text; never the text itself (a notification carries a sealed key). */
function describeReceipt(r: TextReceipt): string {
  const head = `text ${r.id} from ${r.from}:`;
  switch (r.kind) {
    case "management-key":
      return `${head} management key stored (${r.keyId}, notification ${r.counter})`;
    case "ignored":
      return `${head} ignored (not a management notification)`;
    case "refused":
      return r.code === "management.notification_replayed"
        ? `${head} refused replay (${r.code}): an old notification changes nothing`
        : `${head} refused (${r.code}): nothing changed`;
  }
}

async function readTexts(device: SimulatedDevice): Promise<TextReceipt[]> {
  const receipts = await device.readTexts();
  for (const r of receipts) say(describeReceipt(r));
  if (receipts.length === 0) say("no new texts");
  return receipts;
}

/** The init's server: --url/--pin, HANDSAFE_URL/PIN, the local server.json, else the key file's. */
function initServer(o: ServerOptions, keyFile: { serverUrl?: string; serverPin?: string }): ServerAddress {
  let server: ServerAddress;
  try {
    server = resolveServer(o);
  } catch (e) {
    if (!isHandsafeError(e) || e.code !== "cli.no_server" || !keyFile.serverUrl) throw e;
    server = { url: keyFile.serverUrl, ...(keyFile.serverPin ? { pin: keyFile.serverPin } : {}) };
  }
  if (!server.pin)
    throw new HandsafeError(
      "cli.no_pin",
      `a simulated device pins its server: give --pin for ${server.url}`,
      {
        status: 0,
      },
    );
  return server;
}

/** The registry's record of the device, when an admin token is at hand (undefined otherwise). */
async function registryRecord(
  server: ServerAddress,
  o: DeviceOptions,
  deviceId: string,
): Promise<DeviceInfo | undefined> {
  let token: string;
  try {
    token = resolveAdminToken(o);
  } catch (e) {
    if (isHandsafeError(e) && e.code === "cli.no_admin_token") return undefined;
    throw e;
  }
  const admin: HttpClient = adminClient(server, token);
  try {
    return (await admin.get<DeviceInfo>(`/v1/admin/devices/${encodeURIComponent(deviceId)}`)).body;
  } finally {
    admin.close();
  }
}

function outcomeLine(outcome: UpdateOutcome, running: string): string {
  switch (outcome.status) {
    case "no_update":
      return "no_update: nothing is assigned to this device";
    case "waiting_for_window": {
      const w = outcome.window;
      return `waiting_for_window: campaign ${outcome.campaignId} installs between ${w.startHourUtc}:00 and ${w.endHourUtc}:00 UTC; run again then`;
    }
    case "installed":
      return `installed ${outcome.version} in slot ${outcome.slot} (campaign ${outcome.campaignId})`;
    case "rolled_back":
      return `rolled_back: ${outcome.version} did not pass its health check (${outcome.reason}); running ${running} again (campaign ${outcome.campaignId})`;
    case "failed":
      return `failed (campaign ${outcome.campaignId})`;
  }
}

const slotText = (m: SlotMeta | undefined) => (m ? `${m.version} (${m.length} bytes)` : "empty");

export function registerDeviceCommands(program: Command): void {
  const device = program
    .command("device")
    .description("a simulated managed handset kept in a folder: provisioned key file, SMS, A/B update slots");

  withDevice(
    device
      .command("init")
      .description(
        "make a device from its key file: the key file goes into the encrypted keystore, the image into slot a",
      ),
  )
    .requiredOption("--key-file <file>", "the device's key file (from `handsafe admin devices-import`)")
    .requiredOption("--msisdn <number>", "its phone number, E.164 (where its texts arrive)")
    .option("--image <file>", "the installed firmware image (default: a generated 64 KiB image)")
    .option(
      "--version <version>",
      "the installed firmware version (default: the registry's, with an admin token)",
    )
    .option("--url <url>", "server URL (default: HANDSAFE_URL, the local server.json, else the key file's)")
    .option(
      "--pin <pin>",
      "server SPKI SHA-256 pin (default: HANDSAFE_PIN, the local server's, or the key file's)",
    )
    .action(
      async (
        o: DeviceOptions &
          ServerOptions & { keyFile: string; msisdn: string; image?: string; version?: string },
      ) => {
        const dir = resolve(o.dir);
        const keyFileText = new TextDecoder().decode(readInputFile(o.keyFile, "the key file"));
        const keyFile = parseKeyFile(keyFileText);
        keyFile.staticKeyBytes.fill(0);
        const msisdn = normalisePhoneNumber(o.msisdn);
        const server = initServer(o, keyFile);
        const record = await registryRecord(server, o, keyFile.deviceId);
        if (record && record.msisdn !== msisdn)
          throw new HandsafeError(
            "cli.msisdn_mismatch",
            `the registry sends ${keyFile.deviceId}'s texts to ${record.msisdn ?? "no number"}, not ${msisdn}`,
            { status: 0 },
          );
        const version = o.version ?? record?.firmwareVersion;
        if (!version)
          throw new HandsafeError(
            "cli.no_version",
            "give --version (or an admin token, to read the device's firmware version from the registry)",
            { status: 0 },
          );
        const image = o.image
          ? readInputFile(o.image, "the image")
          : simulatedFirmware(version, keyFile.model);
        const folder = await FolderDevice.create({
          dir,
          passphrase: await readPassphrase(o),
          keyFile: keyFileText,
          msisdn,
          server: { url: server.url, pin: server.pin! },
          image: { version, image },
        });
        say(`device ${folder.deviceId} (${folder.config.model}) in ${dir}`);
        say(`  slot a: ${version}, ${image.length} bytes${o.image ? "" : " (generated)"}; active`);
        say(`  texts to ${msisdn}; server ${server.url}, pinned`);
        say(`  the key file is in the encrypted keystore now; ${o.keyFile} is no longer needed here`);
      },
    );

  withDevice(
    device
      .command("texts")
      .description("read new texts for the device's number and feed them to its SMS processor"),
  ).action(async (o: DeviceOptions) => {
    const folder = await openDevice(o);
    await online(folder, o, readTexts);
  });

  withDevice(
    device
      .command("update")
      .description(
        "read texts, then ask for an assigned update and install it into the other slot (progress on stderr); " +
          "a broken download resumes on the next run. Exits 1 when the update failed or rolled back",
      ),
  ).action(async (o: DeviceOptions) => {
    const folder = await openDevice(o);
    const outcome = await online(folder, o, async (d) => {
      await readTexts(d);
      if (!(await folder.dynamicKey()))
        throw new HandsafeError(
          "management.no_dynamic_key",
          "no dynamic key yet: a campaign or `handsafe admin dynamic-key` sends one; then run this again",
          { status: 0 },
        );
      const bar = createProgressBar({ label: "update", total: 100 });
      let percent = 0;
      const onProgress = (e: { state: UpdateState; percent?: number }) => {
        if (e.percent !== undefined) percent = e.percent;
        if (e.state === "verified" || e.state === "installed") percent = 100;
        bar.update(percent, e.state);
      };
      try {
        return await d.updater.checkAndInstall({ onProgress });
      } finally {
        bar.finish();
      }
    });
    const running = (await folder.slots.meta(await folder.slots.active()))?.version ?? "unknown";
    say(outcomeLine(outcome, running));
    if (outcome.status === "failed")
      // The updater reported the failure to the server; the code is the reason it gave.
      throw new HandsafeError(outcome.code, outcome.message, { status: 0 });
    if (outcome.status === "rolled_back") process.exitCode = 1;
  });

  withDevice(
    device
      .command("status")
      .description("the device's identity, its slots and its current dynamic key (never a key)"),
  )
    .option("--json", "print as JSON")
    .action(async (o: DeviceOptions & { json?: boolean }) => {
      const folder = await openDevice(o);
      const { slots } = folder;
      const active = await slots.active();
      const metas = Object.fromEntries(
        await Promise.all(SLOT_NAMES.map(async (s) => [s, (await slots.meta(s)) ?? null] as const)),
      );
      const key = await folder.dynamicKey();
      // Uses are counted by the server: ask its registry when an admin token is at hand.
      let server: { state: string; usesLeft: number } | null = null;
      let unknownWhy: string | undefined;
      if (key) {
        try {
          const admin = adminClient(folder.config.server, resolveAdminToken(o));
          try {
            const { keys } = (
              await admin.get<{ keys: DynamicKeyInfo[] }>(
                `/v1/admin/devices/${encodeURIComponent(folder.deviceId)}/dynamic-keys`,
              )
            ).body;
            const k = keys.find((x) => x.keyId === key.keyId);
            if (k) server = { state: k.state, usesLeft: k.state === "active" ? k.maxUses - k.uses : 0 };
            else unknownWhy = "the server does not know this key";
          } finally {
            admin.close();
          }
        } catch (e) {
          if (!isHandsafeError(e)) throw e;
          unknownWhy = e.code;
        }
      }
      const partialId = await folder.partial.id();
      const partial = partialId ? { id: partialId, bytes: await folder.partial.size() } : null;
      const status = {
        deviceId: folder.deviceId,
        model: folder.config.model,
        hardwareId: folder.hardwareId,
        msisdn: folder.config.msisdn,
        server: folder.config.server,
        activeSlot: active,
        pendingSlot: await slots.pending(),
        slots: metas,
        dynamicKey: key
          ? {
              keyId: key.keyId,
              expiresAt: key.expiresAt,
              maxUses: key.maxUses,
              usesLeft: server?.usesLeft ?? null,
              state: server?.state ?? null,
            }
          : null,
        partialDownload: partial,
      };
      if (o.json) {
        process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
        return;
      }
      say(`device ${status.deviceId}  model ${status.model}  msisdn ${status.msisdn}`);
      say(`  server ${status.server.url}`);
      for (const s of SLOT_NAMES)
        say(`  slot ${s}: ${slotText(metas[s] ?? undefined)}${s === active ? "  ← active" : ""}`);
      if (!key) say("  dynamic key: none yet");
      else {
        const uses = server
          ? `${server.usesLeft} of ${key.maxUses} uses left (${server.state})`
          : `uses left unknown (${unknownWhy}); at most ${key.maxUses}`;
        say(`  dynamic key ${key.keyId}: ${uses}, expires ${iso(key.expiresAt)}`);
      }
      if (partial) say(`  unfinished download: ${partial.bytes} bytes of ${partial.id} (resumes on update)`);
    });
}
