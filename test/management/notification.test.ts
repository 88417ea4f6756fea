/** Dynamic-key notifications: one SMS, readable only by its device, never twice. */
import { describe, expect, it } from "vitest";
import { toBase64url } from "../../src/core/codec/base64url.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import {
  embedded,
  fromKeyFile,
  SimulatedSimCard,
  simulatedSim,
} from "../../src/management/device-wrapper.ts";
import {
  DynamicKey,
  deriveSessionKey,
  isManagementSms,
  makeKeyFile,
  NOTIFICATION_TEXT_LENGTH,
  newDeviceId,
  newKeyId,
  openDynamicKeyNotification,
  parseKeyFile,
  sealDynamicKeyNotification,
} from "../../src/management/protocol.ts";
import {
  createSmsProcessor,
  DEFAULT_DYNAMIC_KEY_TTL_MS,
  readDynamicKey,
} from "../../src/management/sms-processor.ts";

const GSM7_BASIC = /^[A-Za-z0-9@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&'()*+,\-./:;<=>?¡ÄÖÑÜ§¿äöñüà]*$/;

function setup() {
  const deviceId = newDeviceId();
  const staticKey = randomBytes(32);
  const dynamicKey = DynamicKey.generate();
  const keyId = newKeyId();
  const seal = (counter: number, extra: { expiresAt?: number | null; maxUses?: number | null } = {}) =>
    sealDynamicKeyNotification(staticKey, {
      deviceId,
      keyId,
      dynamicKey,
      expiresAt: extra.expiresAt === undefined ? 1_900_000_000_000 : extra.expiresAt,
      maxUses: extra.maxUses === undefined ? 10 : extra.maxUses,
      counter,
    });
  return { deviceId, staticKey, dynamicKey, keyId, seal };
}

describe("the notification SMS", () => {
  it("fits one 160-character GSM-7 SMS and round-trips", () => {
    const s = setup();
    const text = s.seal(1);
    expect(text.length).toBe(NOTIFICATION_TEXT_LENGTH);
    expect(text.length).toBeLessThanOrEqual(160);
    expect(GSM7_BASIC.test(text)).toBe(true);
    expect(isManagementSms(text)).toBe(true);
    const n = openDynamicKeyNotification(s.staticKey, s.deviceId, text, 0);
    expect(n.keyId).toBe(s.keyId);
    expect(n.counter).toBe(1);
    expect(n.expiresAt).toBe(1_900_000_000_000);
    expect(n.maxUses).toBe(10);
    expect(n.dynamicKey.reveal()).toEqual(s.dynamicKey.reveal());
  });

  it("ordinary texts are not management texts", () => {
    for (const t of ["Hello", "HSM1:abc", `HSM1:${"A".repeat(111)}!`, ""])
      expect(isManagementSms(t)).toBe(false);
  });

  it("a key never prints", () => {
    const s = setup();
    expect(JSON.stringify({ k: s.dynamicKey })).not.toContain(toBase64url(s.dynamicKey.reveal()));
    expect(String(s.dynamicKey)).toBe("[redacted key]");
  });
});

describe("attack: forged notification", () => {
  it("one flipped character is refused as forged", () => {
    const s = setup();
    const text = s.seal(1);
    const i = 60;
    const flipped = text.slice(0, i) + (text[i] === "A" ? "B" : "A") + text.slice(i + 1);
    expect(() => openDynamicKeyNotification(s.staticKey, s.deviceId, flipped, 0)).toThrow(
      expect.objectContaining({ code: "management.notification_forged" }),
    );
  });
  it("a text sealed under another static key is refused as forged", () => {
    const s = setup();
    expect(() => openDynamicKeyNotification(randomBytes(32), s.deviceId, s.seal(1), 0)).toThrow(
      expect.objectContaining({ code: "management.notification_forged" }),
    );
  });
  it("a raised counter in the clear header breaks authentication", () => {
    const s = setup();
    const text = s.seal(1);
    const bytes = Buffer.from(text.slice(5), "base64url");
    bytes[3] = 9;
    expect(() =>
      openDynamicKeyNotification(s.staticKey, s.deviceId, `HSM1:${bytes.toString("base64url")}`, 0),
    ).toThrow(expect.objectContaining({ code: "management.notification_forged" }));
  });
});

describe("attack: notification for another device", () => {
  it("even with the same static key, another device id does not open it (AAD and KEK bind the id)", () => {
    const s = setup();
    expect(() => openDynamicKeyNotification(s.staticKey, newDeviceId(), s.seal(1), 0)).toThrow(
      expect.objectContaining({ code: "management.notification_forged" }),
    );
  });
});

describe("attack: replayed notification", () => {
  it("a counter not above the last accepted one is refused", () => {
    const s = setup();
    const text = s.seal(5);
    expect(() => openDynamicKeyNotification(s.staticKey, s.deviceId, text, 5)).toThrow(
      expect.objectContaining({ code: "management.notification_replayed" }),
    );
    expect(() => openDynamicKeyNotification(s.staticKey, s.deviceId, text, 7)).toThrow(
      expect.objectContaining({ code: "management.notification_replayed" }),
    );
  });
});

describe("session keys", () => {
  it("need both halves, and differ per purpose and device", () => {
    const s = setup();
    const base = deriveSessionKey(s.staticKey, s.dynamicKey, s.deviceId, "requests").reveal();
    expect(base.length).toBe(32);
    expect(deriveSessionKey(s.staticKey, s.dynamicKey, s.deviceId, "content").reveal()).not.toEqual(base);
    expect(deriveSessionKey(s.staticKey, s.dynamicKey, newDeviceId(), "requests").reveal()).not.toEqual(base);
    expect(deriveSessionKey(randomBytes(32), s.dynamicKey, s.deviceId, "requests").reveal()).not.toEqual(
      base,
    );
    expect(deriveSessionKey(s.staticKey, DynamicKey.generate(), s.deviceId, "requests").reveal()).not.toEqual(
      base,
    );
  });
});

describe("device wrappers and the SMS processor", () => {
  const hardwareId = "490154203237518";

  it("a key file round-trips and the wrapper never shows the key", () => {
    const s = setup();
    const file = makeKeyFile({ deviceId: s.deviceId, hardwareId, model: "HS-1", staticKey: s.staticKey });
    expect(parseKeyFile(JSON.stringify(file)).staticKeyBytes).toEqual(s.staticKey);
    const device = fromKeyFile(JSON.stringify(file));
    expect(JSON.stringify(device)).not.toContain(file.staticKey);
    expect(Object.keys(device)).not.toContain("staticKey");
    expect(device.withStaticKey((k) => toBase64url(k))).toBe(file.staticKey);
    expect(() => parseKeyFile({ ...file, staticKey: "short" })).toThrow(
      expect.objectContaining({ code: "device.invalid_key_file" }),
    );
  });

  it("stores the key and counter; ignores ordinary texts; refuses a replay without changing state", async () => {
    const s = setup();
    const device = embedded({ deviceId: s.deviceId, hardwareId, model: "HS-1", staticKey: s.staticKey });
    const keystore = new MemoryKeystore();
    const sms = createSmsProcessor({ device, keystore, clock: () => 1_000 });
    expect(await sms.process({ from: "+4915100000000", text: "see you at 8" })).toEqual({ kind: "ignored" });
    const first = s.seal(1, { expiresAt: null, maxUses: null });
    expect(await sms.process({ from: "x", text: first })).toEqual({
      kind: "management-key",
      keyId: s.keyId,
      counter: 1,
    });
    const stored = await readDynamicKey(keystore, s.deviceId);
    expect(stored?.expiresAt).toBe(1_000 + DEFAULT_DYNAMIC_KEY_TTL_MS);
    expect(stored?.key.reveal()).toEqual(s.dynamicKey.reveal());
    await expect(sms.process({ from: "x", text: first })).rejects.toMatchObject({
      code: "management.notification_replayed",
    });
    expect((await readDynamicKey(keystore, s.deviceId))?.counter).toBe(1);
  });

  it("a simulated SIM runs the computation on the card", async () => {
    const s = setup();
    const card = new SimulatedSimCard("8949000000000000001", s.staticKey);
    const device = simulatedSim({ deviceId: s.deviceId, hardwareId, model: "HS-1", card });
    const sms = createSmsProcessor({ device, keystore: new MemoryKeystore() });
    await sms.process({ from: "x", text: s.seal(3) });
    expect(card.operations).toBe(1);
    expect(JSON.stringify(device)).not.toMatch(/key"?:\s*"[A-Za-z0-9_-]{43}"/);
  });
});
