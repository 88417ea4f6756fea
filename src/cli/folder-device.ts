/**
 * A simulated managed handset whose state lives in a folder, for `handsafe device …` (device.ts):
 * each command opens it, works, and leaves everything on disk for the next. One process at a time.
 * On the network it is a SimulatedDevice (simulated-device.ts) built from these stores.
 *
 * Layout; nothing secret is outside the keystore:
 *
 *   device.json   FolderDeviceConfig: ids, number and the pinned server (no secrets)
 *   keystore/     FolderKeystore under the passphrase: the manufacturer key file (entry "device/key-file"),
 *                 dynamic key and notification counter (sms-processor.ts), TUF state (updates/handset.ts),
 *                 the radio's read cursor ("device/radio-cursor")
 *   slots/        FolderSlotStore: a.img, b.img, slots.json
 *   partial/      FolderPartialStore: an unfinished download (ciphertext), resumed by the next run
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { HandsafeError } from "../core/errors.ts";
import { FolderKeystore, type ScryptParams } from "../handset/folder-keystore.ts";
import type { HttpClient } from "../handset/http-client.ts";
import { parseKeyFile } from "../management/protocol.ts";
import { readDynamicKey } from "../management/sms-processor.ts";
import type { HealthCheck, InitialImage } from "../updates/slots.ts";
import { FolderPartialStore, FolderSlotStore } from "../updates/slots-folder.ts";
import { SimulatedDevice, type SimulatedDeviceOptions } from "./simulated-device.ts";

export const DEVICE_FOLDER = {
  config: "device.json",
  keystore: "keystore",
  slots: "slots",
  partial: "partial",
} as const;
export const KEY_FILE_ENTRY = "device/key-file";
export const RADIO_CURSOR_ENTRY = "device/radio-cursor";
const CONFIG_FORMAT = "handsafe-simulated-device";

export interface FolderDeviceConfig {
  format: typeof CONFIG_FORMAT;
  version: 1;
  deviceId: string;
  model: string;
  /** E.164: where the device's texts arrive. */
  msisdn: string;
  server: { url: string; pin: string };
  createdAt: string;
}

/** What a device knows about its current dynamic key (never the key). */
export interface DynamicKeyFacts {
  keyId: string;
  expiresAt: number;
  maxUses: number;
  counter: number;
  receivedAt: number;
}

function configError(dir: string, why: string): HandsafeError {
  return new HandsafeError("cli.device_config_invalid", `${join(dir, DEVICE_FOLDER.config)}: ${why}`, {
    status: 0,
  });
}

function parseConfig(dir: string, text: string): FolderDeviceConfig {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw configError(dir, "not JSON");
  }
  const c = v as Partial<FolderDeviceConfig> | null;
  if (typeof c !== "object" || c === null || c.format !== CONFIG_FORMAT)
    throw configError(dir, "not a device");
  if (c.version !== 1) throw configError(dir, `version ${JSON.stringify(c.version)}; this build reads 1`);
  for (const k of ["deviceId", "model", "msisdn", "createdAt"] as const)
    if (typeof c[k] !== "string" || c[k] === "") throw configError(dir, `bad ${k}`);
  if (typeof c.server?.url !== "string" || typeof c.server.pin !== "string")
    throw configError(dir, "bad server");
  return {
    format: CONFIG_FORMAT,
    version: 1,
    deviceId: c.deviceId!,
    model: c.model!,
    msisdn: c.msisdn!,
    server: { url: c.server.url, pin: c.server.pin },
    createdAt: c.createdAt!,
  };
}

/**
 * A simulator's firmware image of 64 KiB: a 64-byte header naming version and model, then SHA-256
 * blocks of both (deterministic, so two devices of a model start from the same image).
 */
export function simulatedFirmware(version: string, model: string): Uint8Array {
  const out = new Uint8Array(64 * 1024);
  for (let at = 0; at < out.length; at += 32)
    out.set(
      createHash("sha256").update(`handsafe/simulated-firmware\0${model}\0${version}\0${at}`).digest(),
      at,
    );
  const header = utf8(`FIRMWARE ${version} ${model}`.slice(0, 63).padEnd(63, " ") + "\n");
  out.set(header.subarray(0, 64), 0);
  return out;
}

/** The device in its folder (layout in the module comment). */
export class FolderDevice {
  /** The key file's text: it holds the static key, so it is no property anyone could log. */
  readonly #keyFile: string;

  private constructor(
    readonly dir: string,
    readonly config: FolderDeviceConfig,
    readonly keystore: FolderKeystore,
    readonly slots: FolderSlotStore,
    readonly partial: FolderPartialStore,
    readonly hardwareId: string,
    keyFile: string,
  ) {
    this.#keyFile = keyFile;
  }

  /**
   * Makes a device in `dir` (missing or empty): the key file goes into the new keystore (the file it
   * came from is no longer needed), `image` into slot a, the server address into device.json — last,
   * so a folder with a device.json holds a whole device.
   */
  static async create(options: {
    dir: string;
    passphrase: string;
    keyFile: string;
    msisdn: string;
    server: { url: string; pin: string };
    image: InitialImage;
    scrypt?: ScryptParams;
  }): Promise<FolderDevice> {
    const { dir } = options;
    const file = parseKeyFile(options.keyFile);
    file.staticKeyBytes.fill(0);
    const existing = await readdir(dir).catch((e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT") return [];
      if (e.code === "ENOTDIR") return [dir];
      throw e;
    });
    if (existing.length > 0)
      throw new HandsafeError(
        "cli.device_folder_not_empty",
        `${dir} is not an empty folder: a device needs a new one (delete this to start over)`,
        { status: 0 },
      );
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const keystore = await FolderKeystore.open(
      join(dir, DEVICE_FOLDER.keystore),
      options.passphrase,
      options.scrypt ? { scrypt: options.scrypt } : {},
    );
    await keystore.put(KEY_FILE_ENTRY, utf8(options.keyFile));
    await FolderSlotStore.open(join(dir, DEVICE_FOLDER.slots), { initial: { a: options.image } });
    const config: FolderDeviceConfig = {
      format: CONFIG_FORMAT,
      version: 1,
      deviceId: file.deviceId,
      model: file.model,
      msisdn: options.msisdn,
      server: options.server,
      createdAt: new Date().toISOString(),
    };
    await writeFile(join(dir, DEVICE_FOLDER.config), `${JSON.stringify(config, null, 2)}\n`, {
      flag: "wx",
      mode: 0o644,
    });
    return FolderDevice.open(dir, options.passphrase);
  }

  /** Opens the device in `dir`. `healthCheck` replaces the simulator's (slots.ts). */
  static async open(
    dir: string,
    passphrase: string,
    options: { healthCheck?: HealthCheck } = {},
  ): Promise<FolderDevice> {
    let text: string;
    try {
      text = await readFile(join(dir, DEVICE_FOLDER.config), "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      throw new HandsafeError("cli.no_device", `${dir} holds no device: run \`handsafe device init\` first`, {
        status: 0,
      });
    }
    const config = parseConfig(dir, text);
    const keystore = await FolderKeystore.open(join(dir, DEVICE_FOLDER.keystore), passphrase);
    const raw = await keystore.get(KEY_FILE_ENTRY);
    if (!raw) throw configError(dir, "its keystore holds no key file");
    const keyFileText = fromUtf8(raw);
    raw.fill(0);
    const file = parseKeyFile(keyFileText);
    file.staticKeyBytes.fill(0);
    if (file.deviceId !== config.deviceId)
      throw new HandsafeError(
        "cli.device_mismatch",
        `${dir}: device.json names ${config.deviceId}, the keystore's key file ${file.deviceId}`,
        { status: 0 },
      );
    const slots = await FolderSlotStore.open(
      join(dir, DEVICE_FOLDER.slots),
      options.healthCheck ? { healthCheck: options.healthCheck } : {},
    );
    return new FolderDevice(
      dir,
      config,
      keystore,
      slots,
      new FolderPartialStore(join(dir, DEVICE_FOLDER.partial)),
      file.hardwareId,
      keyFileText,
    );
  }

  get deviceId(): string {
    return this.config.deviceId;
  }

  /** The device on the network: its radio reads the SMS centre with `admin` (see the module comment). */
  async connect(
    admin: HttpClient,
    options: Pick<SimulatedDeviceOptions, "percentStep" | "radioTimeoutMs"> = {},
  ): Promise<SimulatedDevice> {
    const cursor = await this.keystore.get(RADIO_CURSOR_ENTRY);
    return new SimulatedDevice({
      ...options,
      server: this.config.server,
      keyFile: this.#keyFile,
      msisdn: this.config.msisdn,
      admin,
      slots: this.slots,
      keystore: this.keystore,
      partial: this.partial,
      ...(cursor ? { radioCursor: fromUtf8(cursor) } : {}),
    });
  }

  /** Keeps the radio's place, so the next run is not handed the same texts. */
  async saveRadioCursor(device: SimulatedDevice): Promise<void> {
    const cursor = device.radio.cursor;
    if (cursor === undefined) return;
    const stored = await this.keystore.get(RADIO_CURSOR_ENTRY);
    if (stored && fromUtf8(stored) === cursor) return;
    await this.keystore.put(RADIO_CURSOR_ENTRY, utf8(cursor));
  }

  /** The current dynamic key's facts, without its bytes; undefined before the first notification. */
  async dynamicKey(): Promise<DynamicKeyFacts | undefined> {
    const stored = await readDynamicKey(this.keystore, this.deviceId);
    if (!stored) return undefined;
    stored.key.wipe();
    const { keyId, expiresAt, maxUses, counter, receivedAt } = stored;
    return { keyId, expiresAt, maxUses, counter, receivedAt };
  }

  toJSON(): { device: string; dir: string } {
    return { device: this.deviceId, dir: this.dir };
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `FolderDevice(${this.deviceId}, ${this.dir})`;
  }
}
