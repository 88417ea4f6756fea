/**
 * The handset's SMS processor: recognises a management notification among incoming texts, opens it
 * with the device's static key (through the device wrapper), and stores the dynamic key and the
 * notification counter in the keystore. Ordinary texts are left alone; a forged or replayed
 * notification is refused (management.notification_forged / management.notification_replayed)
 * and changes nothing.
 *
 * Keystore entries, per device:
 *   management/<deviceId>/dynamic-key   JSON {keyId, key, expiresAt, maxUses, counter, receivedAt}
 *   management/<deviceId>/counter       JSON number: the last accepted notification counter
 */
import { fromBase64urlOfLength, toBase64url } from "../core/codec/base64url.ts";
import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import type { Keystore } from "../handset/keystore.ts";
import type { DeviceWrapper } from "./device-wrapper.ts";
import { DYNAMIC_KEY_BYTES, DynamicKey, isManagementSms, openDynamicKeyNotification } from "./protocol.ts";

/** Applied when a notification carries no expiry (docs/protocols/management.md). */
export const DEFAULT_DYNAMIC_KEY_TTL_MS = 24 * 60 * 60 * 1000;
/** Applied when a notification carries no use limit: the server counts uses anyway. */
export const DEFAULT_DYNAMIC_KEY_MAX_USES = 10;

export const dynamicKeyEntry = (deviceId: string) => `management/${deviceId}/dynamic-key`;
export const counterEntry = (deviceId: string) => `management/${deviceId}/counter`;

export interface StoredDynamicKey {
  keyId: string;
  key: DynamicKey;
  expiresAt: number;
  maxUses: number;
  counter: number;
  receivedAt: number;
}

export type SmsOutcome = { kind: "management-key"; keyId: string; counter: number } | { kind: "ignored" };

export interface SmsProcessor {
  process(sms: { from: string; text: string }): Promise<SmsOutcome>;
}

export async function readDynamicKey(
  keystore: Keystore,
  deviceId: string,
): Promise<StoredDynamicKey | undefined> {
  const raw = await keystore.get(dynamicKeyEntry(deviceId));
  if (!raw) return undefined;
  const v = JSON.parse(fromUtf8(raw)) as Omit<StoredDynamicKey, "key"> & { key: string };
  const bytes = fromBase64urlOfLength(v.key, DYNAMIC_KEY_BYTES, "dynamic key");
  raw.fill(0);
  const key = new DynamicKey(bytes);
  bytes.fill(0);
  return { ...v, key };
}

export async function lastCounter(keystore: Keystore, deviceId: string): Promise<number> {
  const raw = await keystore.get(counterEntry(deviceId));
  return raw ? Number(JSON.parse(fromUtf8(raw))) : 0;
}

export function createSmsProcessor(options: {
  device: DeviceWrapper;
  keystore: Keystore;
  clock?: () => number;
}): SmsProcessor {
  const { device, keystore } = options;
  const clock = options.clock ?? Date.now;
  // One text at a time, so two notifications cannot both pass the counter check.
  let queue: Promise<unknown> = Promise.resolve();

  async function handle(text: string): Promise<SmsOutcome> {
    if (!isManagementSms(text)) return { kind: "ignored" };
    const last = await lastCounter(keystore, device.deviceId);
    const n = device.withStaticKey((staticKey) =>
      openDynamicKeyNotification(staticKey, device.deviceId, text, last),
    );
    const now = clock();
    const record = {
      keyId: n.keyId,
      key: toBase64url(n.dynamicKey.reveal()),
      expiresAt: n.expiresAt ?? now + DEFAULT_DYNAMIC_KEY_TTL_MS,
      maxUses: n.maxUses ?? DEFAULT_DYNAMIC_KEY_MAX_USES,
      counter: n.counter,
      receivedAt: now,
    };
    n.dynamicKey.wipe();
    // Counter first: a crash between the two writes loses a key (the server sends another on use),
    // never lets the same notification be accepted twice.
    await keystore.put(counterEntry(device.deviceId), utf8(JSON.stringify(n.counter)));
    await keystore.put(dynamicKeyEntry(device.deviceId), utf8(JSON.stringify(record)));
    return { kind: "management-key", keyId: n.keyId, counter: n.counter };
  }

  return {
    process(sms) {
      const run = queue.then(() => handle(sms.text));
      queue = run.catch(() => undefined);
      return run;
    },
  };
}
