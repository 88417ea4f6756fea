/**
 * A simulated managed handset for the CLI and the demo: the SDK's parts put together the way a
 * device maker's client would put them — a device wrapper around the manufacturer's key file, a
 * keystore, the management client (signed requests, dynamic keys from notifications), and the
 * updater writing an A/B slot store.
 *
 * Its "radio" is the server's built-in SMS centre (the outbox gateway): texts to the device's number
 * are read through `GET /v1/sms/outbox`, which needs the admin token — the simulator stands in for a
 * network that only the operator runs. A real handset gets the same texts from its modem.
 *
 * folder-device.ts keeps one such device in a folder between runs, for `handsafe device …`.
 */
import { HandsafeError } from "../core/errors.ts";
import type { ServerAddress } from "../handset/handset.ts";
import type { HttpClient } from "../handset/http-client.ts";
import { OutboxLine } from "../handset/outbox-line.ts";
import { type Keystore, MemoryKeystore } from "../handset/keystore.ts";
import { createNodeTransport } from "../handset/node-transport.ts";
import { type DeviceWrapper, fromKeyFile } from "../management/device-wrapper.ts";
import { ManagementClient } from "../management/handset.ts";
import type { DeviceKeyFile } from "../management/protocol.ts";
import type { SmsOutcome } from "../management/sms-processor.ts";
import { MemoryPartialStore, type PartialStore } from "../updates/download.ts";
import { type CheckOptions, type UpdateOutcome, Updater } from "../updates/handset.ts";
import type { SlotStore } from "../updates/slots.ts";

export interface SimulatedDeviceOptions {
  server: ServerAddress;
  keyFile: DeviceKeyFile | string;
  msisdn: string;
  /** Reads the built-in SMS centre (see the module comment). */
  admin: HttpClient;
  slots: SlotStore;
  keystore?: Keystore;
  partial?: PartialStore;
  /** Passed to the updater: how often the download percent is reported (default 25). */
  percentStep?: number;
  radioTimeoutMs?: number;
  /** The radio starts after this text id (a device that kept its `radio.cursor` from an earlier run). */
  radioCursor?: string;
}

/** What became of one text the radio handed over (never its content: a notification carries a key). */
export type TextReceipt = { id: string; from: string } & (
  | { kind: "management-key"; keyId: string; counter: number }
  | { kind: "ignored" }
  /** A forged, malformed or replayed notification: refused, nothing changed. */
  | { kind: "refused"; code: string }
);

export class SimulatedDevice {
  readonly device: DeviceWrapper;
  readonly management: ManagementClient;
  readonly updater: Updater;
  readonly radio: OutboxLine;
  readonly keystore: Keystore;
  readonly #transport: ReturnType<typeof createNodeTransport>;

  constructor(options: SimulatedDeviceOptions) {
    if (!options.server.pin)
      throw new HandsafeError("cli.no_pin", "a simulated device pins its server: give the pin", {
        status: 0,
      });
    this.device = fromKeyFile(options.keyFile);
    this.keystore = options.keystore ?? new MemoryKeystore();
    this.radio = new OutboxLine(options.admin, options.msisdn, {
      ...(options.radioTimeoutMs === undefined ? {} : { timeoutMs: options.radioTimeoutMs }),
      ...(options.radioCursor === undefined ? {} : { after: options.radioCursor }),
    });
    this.#transport = createNodeTransport({ pin: options.server.pin });
    this.management = new ManagementClient({
      baseUrl: options.server.url,
      transport: this.#transport,
      device: this.device,
      keystore: this.keystore,
      nextSms: () => this.radio.nextText(),
    });
    this.updater = new Updater({
      management: this.management,
      device: this.device,
      keystore: this.keystore,
      slots: options.slots,
      partial: options.partial ?? new MemoryPartialStore(),
      ...(options.percentStep === undefined ? {} : { percentStep: options.percentStep }),
    });
  }

  get deviceId(): string {
    return this.device.deviceId;
  }

  /** Feeds every new text to the SMS processor; management notifications store their key. */
  async receiveTexts(): Promise<SmsOutcome[]> {
    return (await this.readTexts()).map((r) =>
      r.kind === "management-key"
        ? { kind: r.kind, keyId: r.keyId, counter: r.counter }
        : { kind: "ignored" },
    );
  }

  /** Like receiveTexts, saying for each text what it was, refusals with their code. */
  async readTexts(): Promise<TextReceipt[]> {
    const receipts: TextReceipt[] = [];
    for (const t of await this.radio.texts()) {
      const seen = { id: t.id, from: t.from };
      try {
        const outcome = await this.management.sms.process({ from: t.from, text: t.text });
        receipts.push(
          outcome.kind === "management-key" ? { ...seen, ...outcome } : { ...seen, kind: "ignored" },
        );
      } catch (e) {
        // A replayed or forged text is refused and changes nothing; the device carries on.
        if (!(e instanceof HandsafeError) || !e.code.startsWith("management.notification")) throw e;
        receipts.push({ ...seen, kind: "refused", code: e.code });
      }
    }
    return receipts;
  }

  /** Wakes on new texts: when a management key arrived, asks for an update and installs it. */
  async wake(options: CheckOptions = {}): Promise<{ keys: number; outcome: UpdateOutcome | null }> {
    const keys = (await this.receiveTexts()).filter((o) => o.kind === "management-key").length;
    if (keys === 0) return { keys, outcome: null };
    return { keys, outcome: await this.updater.checkAndInstall(options) };
  }

  close(): void {
    this.#transport.close();
  }
}
