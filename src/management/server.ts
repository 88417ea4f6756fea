/**
 * The management service: the protocol core (protocol.ts) over the platform's storage, keyring,
 * audit log, an SmsGateway and the push channel (push-channel.ts). Routes (routes.ts,
 * push-route.ts) only parse, authorise and call these.
 */
import type { Kysely } from "kysely";
import { randomBytes, randomToken } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import type { AuditEntry, Platform } from "../platform/context.ts";
import type { SmsGateway } from "../platform/notify/sms/types.ts";
import {
  type DeviceKeyFile,
  type DeviceRecordInput,
  DynamicKey,
  type DynamicKeyPolicy,
  derivePushAuthKey,
  deriveSessionKey,
  deviceOfPushKeyId,
  dynamicKeyRefusal,
  KEY_ID,
  makeKeyFile,
  newDeviceId,
  newKeyId,
  type ParsedSignature,
  PUSH_SIGNATURE_TAG,
  parseProvisioningBatch,
  parseRequestSignature,
  resolvePolicy,
  type SessionPurpose,
  SIGNATURE_WINDOW_SECONDS,
  type SignedRequestView,
  STATIC_KEY_BYTES,
  sealDynamicKeyNotification,
  verifyRequestSignature,
} from "./protocol.ts";
import { PushChannel, type PushSettings } from "./push-channel.ts";
import type { PushNotification } from "./push-protocol.ts";
import * as store from "./store.ts";

type Db = Kysely<store.ManagementTables>;

export interface ManagementDeps {
  sms: SmsGateway;
  /** Written into the handset key files so a device knows where (and which key) to trust. */
  server?: { url: string; pin?: string };
  /** The push channel's timings (docs/protocols/management.md §Push channel); defaults otherwise. */
  push?: PushSettings;
  /** Where the push relay reports trouble it recovers from (a dropped LISTEN connection, …). */
  onPushError?: (what: string, err: unknown) => void;
}

/** How a notification reached the device. */
export type NotificationChannel = "sms" | "push";

export interface DeviceInfo {
  id: string;
  model: string;
  hardwareId: string;
  hardwareIdKind: string;
  firmwareVersion: string;
  memoryLayout: Record<string, unknown>;
  msisdn: string | null;
  owner: string | null;
  keySource: string;
  batchId: string;
  handsetId: string | null;
  createdAt: number;
}

export type BatchRowResult =
  | { line: number; status: "accepted"; deviceId: string; hardwareId: string }
  | { line: number; status: "rejected"; code: string; message: string };

export interface BatchImportResult {
  batchId: string;
  accepted: number;
  rejected: number;
  rows: BatchRowResult[];
  /** The handset-side key files of the accepted rows — shown once, never stored in clear. */
  keyFiles: DeviceKeyFile[];
}

export interface IssuedDynamicKey {
  keyId: string;
  deviceId: string;
  counter: number;
  expiresAt: number;
  maxUses: number;
  /** The SMS gateway's message id, or "push_…" for a notification written to a push stream. */
  messageId: string;
  channel: NotificationChannel;
}

export interface DynamicKeyInfo {
  keyId: string;
  state: string;
  counter: number;
  uses: number;
  maxUses: number;
  expiresAt: number;
  createdAt: number;
  policy: Record<string, unknown>;
}

/** What a verified signed request tells the route that runs after requireDeviceSignature. */
export interface VerifiedDevice {
  deviceId: string;
  keyId: string;
  usesLeft: number;
  expiresAt: number;
}

const staticAad = (id: string) => `management/static-key/${id}`;
const dynamicAad = (id: string) => `management/dynamic-key/${id}`;
/** Purge the nonce table about once every this many verified requests. */
const PURGE_EVERY = 200;

export class ManagementService {
  /** This node's push streams (and, on PostgreSQL, the way to the other nodes' streams). */
  readonly push: PushChannel;
  private readonly db: Db;
  private verifiedSincePurge = 0;

  constructor(
    private readonly platform: Platform,
    private readonly deps: ManagementDeps,
  ) {
    this.db = platform.db;
    this.push = new PushChannel(platform, deps.push, deps.onPushError);
  }

  private now(): number {
    return this.platform.clock();
  }

  private audit(entry: AuditEntry): Promise<void> {
    return this.platform.audit(entry);
  }

  // --- provisioning -----------------------------------------------------------------------------

  async importBatch(input: string, format: "csv" | "json", actor: string): Promise<BatchImportResult> {
    let parsed: ReturnType<typeof parseProvisioningBatch>;
    try {
      parsed = parseProvisioningBatch(input, format);
    } catch (e) {
      await this.audit({
        actor,
        action: "management.batch_import",
        outcome: "deny",
        details: { code: e instanceof HandsafeError ? e.code : "internal", format },
      });
      throw e;
    }
    const now = this.now();
    const batchId = `bat_${randomToken(12)}`;
    const rows: BatchRowResult[] = parsed.errors.map((e) => ({ ...e, status: "rejected" as const }));
    const taken = await store.existingHardwareIds(
      this.db,
      parsed.accepted.map((r) => r.hardwareId),
    );
    const fresh: Array<{ record: DeviceRecordInput; row: store.DeviceRow; key: Uint8Array }> = [];
    for (const record of parsed.accepted) {
      if (taken.has(record.hardwareId)) {
        rows.push(duplicate(record));
        continue;
      }
      const id = newDeviceId();
      const key = record.staticKey ?? randomBytes(STATIC_KEY_BYTES);
      fresh.push({
        record,
        key,
        row: {
          id,
          model: record.model,
          hardwareId: record.hardwareId,
          hardwareIdKind: record.hardwareIdKind,
          firmwareVersion: record.firmwareVersion,
          memoryLayout: record.memoryLayout,
          msisdn: record.msisdn,
          owner: record.owner,
          sealedStaticKey: this.platform.keyring.sealAtRest(key, staticAad(id)),
          keySource: record.keySource,
          batchId,
          handsetId: null,
          createdAt: now,
        },
      });
    }
    const inserted = await store.insertDevices(
      this.db,
      fresh.map((f) => f.row),
    );
    const keyFiles: DeviceKeyFile[] = [];
    for (const f of fresh) {
      if (!inserted.has(f.row.id)) {
        rows.push(duplicate(f.record));
      } else {
        rows.push({
          line: f.record.line,
          status: "accepted",
          deviceId: f.row.id,
          hardwareId: f.row.hardwareId,
        });
        keyFiles.push(
          makeKeyFile({
            deviceId: f.row.id,
            hardwareId: f.row.hardwareId,
            model: f.row.model,
            staticKey: f.key,
            keySource: f.row.keySource,
            ...(this.deps.server?.url ? { serverUrl: this.deps.server.url } : {}),
            ...(this.deps.server?.pin ? { serverPin: this.deps.server.pin } : {}),
          }),
        );
      }
      f.key.fill(0);
    }
    rows.sort((a, b) => a.line - b.line);
    const accepted = keyFiles.length;
    await store.insertBatch(this.db, {
      id: batchId,
      format,
      accepted,
      rejected: rows.length - accepted,
      createdBy: actor,
      createdAt: now,
    });
    await this.audit({
      actor,
      action: "management.batch_import",
      subject: `batch:${batchId}`,
      outcome: "allow",
      details: { format, accepted, rejected: rows.length - accepted },
    });
    return { batchId, accepted, rejected: rows.length - accepted, rows, keyFiles };
  }

  async requireDevice(id: string): Promise<store.DeviceRow> {
    const d = await store.findDevice(this.db, id);
    if (!d) throw new HandsafeError("device.unknown", `no device ${id}`, { status: 404 });
    return d;
  }

  async getDevice(id: string): Promise<DeviceInfo> {
    return deviceInfo(await this.requireDevice(id));
  }

  async listDevices(page: { after?: string; limit: number; model?: string }): Promise<DeviceInfo[]> {
    return (await store.listDevices(this.db, page)).map(deviceInfo);
  }

  async listDynamicKeys(deviceId: string): Promise<DynamicKeyInfo[]> {
    await this.requireDevice(deviceId);
    return (await store.listDynamicKeys(this.db, deviceId)).map((k) => ({
      keyId: k.id,
      state: k.state,
      counter: k.counter,
      uses: k.uses,
      maxUses: k.maxUses,
      expiresAt: k.expiresAt,
      createdAt: k.createdAt,
      policy: JSON.parse(k.policy) as Record<string, unknown>,
    }));
  }

  /** Runs `fn` with the device's static key, wiping the plaintext afterwards. */
  private withStaticKey<T>(device: store.DeviceRow, fn: (key: Uint8Array) => T): T {
    const key = this.platform.keyring.openAtRest(device.sealedStaticKey, staticAad(device.id));
    try {
      return fn(key);
    } finally {
      key.fill(0);
    }
  }

  // --- dynamic keys -----------------------------------------------------------------------------

  /**
   * A fresh dynamic key per policy, superseding the device's active one, sent sealed under the
   * device's static key: over its push stream when it holds one open (on this node or, on
   * PostgreSQL, another), otherwise in one SMS to its number. The key is stored (sealed) before the
   * text is sent, so a lost notification leaves a key nobody holds rather than a device holding an
   * unknown key (and a push subscription catches up on it: pushCatchUp).
   */
  async issueDynamicKey(
    deviceId: string,
    policy: DynamicKeyPolicy,
    actor: string,
    reason: "admin" | "expired" | "exhausted" = "admin",
  ): Promise<IssuedDynamicKey> {
    const device = await this.requireDevice(deviceId);
    const resolved = resolvePolicy(policy);
    if (!device.msisdn && !(await this.push.reachable(deviceId)))
      throw new HandsafeError(
        "management.no_msisdn",
        "the device has no phone number to notify and no open push stream",
        { status: 409 },
      );
    const now = this.now();
    // Whole seconds: the notification carries seconds, and both sides must agree on the instant.
    const expiresAt = (Math.floor(now / 1000) + resolved.ttlSeconds) * 1000;
    const keyId = newKeyId();
    const dynamicKey = DynamicKey.generate();
    const counter = await store.nextNotificationCounter(this.db, deviceId);
    const text = this.withStaticKey(device, (staticKey) =>
      sealDynamicKeyNotification(staticKey, {
        deviceId,
        keyId,
        dynamicKey,
        expiresAt,
        maxUses: resolved.maxUses,
        counter,
      }),
    );
    await store.insertDynamicKey(this.db, {
      id: keyId,
      deviceId,
      sealedKey: this.platform.keyring.sealAtRest(dynamicKey.reveal(), dynamicAad(keyId)),
      policy: JSON.stringify({ profile: resolved.profile, model: device.model, reason }),
      counter,
      expiresAt,
      maxUses: resolved.maxUses,
      uses: 0,
      state: "active",
      createdAt: now,
      updatedAt: now,
    });
    dynamicKey.wipe();
    const details = { keyId, counter, reason, maxUses: resolved.maxUses, expiresAt };
    const sent = await this.sendNotification(device, { text, counter }, actor, details);
    await store.recordNotificationSent(this.db, deviceId, keyId, sent.messageId, this.now(), sent.channel);
    await this.audit({
      actor,
      action: "management.dynamic_key_issued",
      subject: `device:${deviceId}`,
      outcome: "allow",
      details: { ...details, ...sent },
    });
    return {
      keyId,
      deviceId,
      counter,
      expiresAt,
      maxUses: resolved.maxUses,
      messageId: sent.messageId,
      channel: sent.channel,
    };
  }

  /**
   * Push first (no cost, no SMS limit, works without a number), SMS otherwise. A failure is audited
   * as management.notification_sent (error) and answered management.notification_failed.
   */
  private async sendNotification(
    device: store.DeviceRow,
    notification: PushNotification,
    actor: string,
    details: Record<string, unknown>,
  ): Promise<{ channel: NotificationChannel; messageId: string; gateway: string; node?: string }> {
    const failed = async (code: string, message: string, cause?: unknown): Promise<never> => {
      await this.audit({
        actor,
        action: "management.notification_sent",
        subject: `device:${device.id}`,
        outcome: "error",
        details: { ...details, code },
      });
      throw new HandsafeError("management.notification_failed", message, {
        status: 502,
        ...(cause === undefined ? {} : { cause }),
      });
    };
    let node: string | undefined;
    try {
      node = await this.push.deliver(device.id, notification);
    } catch (e) {
      // The relay could not be asked (database trouble): the SMS path may still work.
      this.deps.onPushError?.("deliver", e);
    }
    if (node !== undefined)
      return { channel: "push", messageId: `push_${randomToken(12)}`, gateway: "push", node };
    if (!device.msisdn)
      return failed(
        "management.push_closed",
        "the push stream closed before the notification was written; the key is sent when the device reconnects",
      );
    try {
      const { id } = await this.deps.sms.send(device.msisdn, notification.text);
      return { channel: "sms", messageId: id, gateway: this.deps.sms.kind };
    } catch (e) {
      return failed(
        e instanceof HandsafeError ? e.code : "sms.failed",
        "the SMS gateway did not accept the notification",
        e,
      );
    }
  }

  /** Runs `fn` with a session key of the device's active dynamic key (e.g. to wrap a content key). */
  async withSessionKey<T>(deviceId: string, purpose: SessionPurpose, fn: (key: Uint8Array) => T): Promise<T> {
    const device = await this.requireDevice(deviceId);
    const active = await store.findActiveDynamicKey(this.db, deviceId);
    if (!active)
      throw new HandsafeError("management.no_dynamic_key", "the device has no active dynamic key", {
        status: 409,
      });
    const session = this.sessionKeyOf(device, active, purpose);
    try {
      return fn(session);
    } finally {
      session.fill(0);
    }
  }

  private sessionKeyOf(
    device: store.DeviceRow,
    key: store.DynamicKeyRow,
    purpose: SessionPurpose,
  ): Uint8Array {
    const dynamicKey = new DynamicKey(this.platform.keyring.openAtRest(key.sealedKey, dynamicAad(key.id)));
    try {
      return this.withStaticKey(device, (staticKey) => {
        const session = deriveSessionKey(staticKey, dynamicKey, device.id, purpose);
        return Uint8Array.from(session.reveal());
      });
    } finally {
      dynamicKey.wipe();
    }
  }

  // --- signed requests --------------------------------------------------------------------------

  /**
   * The whole check of a signed management request, in this order: a known key id; signature,
   * digest and `created` under the session key; the nonce never seen before; one use counted on
   * the dynamic key. A key found expired or used up answers 401 with its code, and the request
   * that retires it (only that one: compare-and-set) also sends the device a fresh key.
   */
  async verifySignedRequest(
    parsed: ParsedSignature,
    view: SignedRequestView,
    body: Uint8Array | undefined,
  ): Promise<VerifiedDevice> {
    const now = this.now();
    const key = KEY_ID.test(parsed.keyId) ? await store.findDynamicKey(this.db, parsed.keyId) : undefined;
    const device = key ? await store.findDevice(this.db, key.deviceId) : undefined;
    if (!key || !device)
      return this.refuse(
        new HandsafeError("signature.unknown_key", "the signature's keyid names no dynamic key", {
          status: 401,
        }),
        "anonymous",
        parsed.keyId,
      );
    const actor = `device:${device.id}`;
    const sessionKey = this.sessionKeyOf(device, key, "requests");
    try {
      verifyRequestSignature(parsed, view, sessionKey, { nowMs: now, body });
    } catch (e) {
      return this.refuse(e, actor, key.id);
    } finally {
      sessionKey.fill(0);
    }
    if (!(await this.claimNonce(device.id, parsed, now))) return this.refuse(replayed(), actor, key.id);
    if (await store.countDynamicKeyUse(this.db, key.id, now)) {
      await this.audit({
        actor,
        action: "management.request",
        subject: `${view.method} ${view.path}`,
        outcome: "allow",
        details: { keyId: key.id, use: key.uses + 1 },
      });
      return {
        deviceId: device.id,
        keyId: key.id,
        usesLeft: key.maxUses - key.uses - 1,
        expiresAt: key.expiresAt,
      };
    }
    return this.refuseKey(device, key.id, actor, now);
  }

  /** Records the signature's nonce once per device; false when it was seen before (a replay). */
  private async claimNonce(deviceId: string, parsed: ParsedSignature, now: number): Promise<boolean> {
    const nonceExpiry = (parsed.created + SIGNATURE_WINDOW_SECONDS) * 1000 + 1000;
    if (!(await store.insertNonce(this.db, deviceId, parsed.nonce, Math.max(nonceExpiry, now)))) return false;
    if (++this.verifiedSincePurge >= PURGE_EVERY) {
      this.verifiedSincePurge = 0;
      await store.purgeExpiredNonces(this.db, now);
    }
    return true;
  }

  // --- push subscriptions -----------------------------------------------------------------------

  /**
   * The check of GET /v1/management/push, in this order: the push profile's signature headers
   * (tag PUSH_SIGNATURE_TAG); keyid "push:<device id>" naming a registered device; signature and
   * `created` under the device's push authentication key (static key only: a device whose dynamic
   * key is dead must still get its next one); the nonce never seen before. No dynamic-key use is
   * counted. Every decision is audited as management.push_subscribe.
   */
  async acceptPushSubscription(
    headers: Readonly<Record<string, string | string[] | undefined>>,
    view: SignedRequestView,
  ): Promise<{ deviceId: string }> {
    const now = this.now();
    let parsed: ParsedSignature;
    try {
      parsed = parseRequestSignature(headers, PUSH_SIGNATURE_TAG);
    } catch (e) {
      return this.refusePush(e, "anonymous", undefined);
    }
    const deviceId = deviceOfPushKeyId(parsed.keyId);
    const device = deviceId ? await store.findDevice(this.db, deviceId) : undefined;
    if (!device)
      return this.refusePush(
        new HandsafeError("signature.unknown_key", 'a push keyid is "push:" and a registered device id', {
          status: 401,
        }),
        "anonymous",
        parsed.keyId,
      );
    const actor = `device:${device.id}`;
    const key = this.withStaticKey(device, (staticKey) => derivePushAuthKey(staticKey, device.id));
    try {
      verifyRequestSignature(parsed, view, key.reveal(), { nowMs: now, body: undefined });
    } catch (e) {
      return this.refusePush(e, actor, parsed.keyId);
    } finally {
      key.wipe();
    }
    if (!(await this.claimNonce(device.id, parsed, now)))
      return this.refusePush(replayed(), actor, parsed.keyId);
    await this.audit({
      actor,
      action: "management.push_subscribe",
      subject: `device:${device.id}`,
      outcome: "allow",
      details: { node: this.push.nodeId },
    });
    return { deviceId: device.id };
  }

  /**
   * The device's active key sealed again (same key, same counter, fresh AEAD nonce) when the
   * handset says its last accepted counter is older: a notification pushed into a connection that
   * had died unnoticed, or an SMS that never came, reaches the handset when it subscribes again.
   * Only a key that can still be used; a handset that already has it would refuse it as a replay.
   */
  async pushCatchUp(deviceId: string, lastCounter: number): Promise<PushNotification | undefined> {
    const now = this.now();
    const active = await store.findActiveDynamicKey(this.db, deviceId);
    if (!active || active.counter <= lastCounter || dynamicKeyRefusal(active, now) !== null) return undefined;
    const device = await this.requireDevice(deviceId);
    const dynamicKey = new DynamicKey(
      this.platform.keyring.openAtRest(active.sealedKey, dynamicAad(active.id)),
    );
    let text: string;
    try {
      text = this.withStaticKey(device, (staticKey) =>
        sealDynamicKeyNotification(staticKey, {
          deviceId,
          keyId: active.id,
          dynamicKey,
          expiresAt: active.expiresAt,
          maxUses: active.maxUses,
          counter: active.counter,
        }),
      );
    } finally {
      dynamicKey.wipe();
    }
    await this.audit({
      actor: "system",
      action: "management.dynamic_key_resent",
      subject: `device:${deviceId}`,
      outcome: "allow",
      details: {
        keyId: active.id,
        counter: active.counter,
        lastCounter,
        channel: "push",
        node: this.push.nodeId,
      },
    });
    return { text, counter: active.counter };
  }

  private async refusePush(error: unknown, actor: string, keyId: string | undefined): Promise<never> {
    await this.audit({
      actor,
      action: "management.push_subscribe",
      outcome: "deny",
      details: {
        code: error instanceof HandsafeError ? error.code : "internal",
        ...(keyId === undefined ? {} : { keyId: keyId.slice(0, 40) }),
      },
    });
    throw error;
  }

  private async refuseKey(
    device: store.DeviceRow,
    keyId: string,
    actor: string,
    now: number,
  ): Promise<never> {
    const current = (await store.findDynamicKey(this.db, keyId))!;
    const why = dynamicKeyRefusal(current, now) ?? "exhausted";
    let freshKeyId: string | undefined;
    if (
      why !== "superseded" &&
      current.state === "active" &&
      (await store.retireDynamicKey(this.db, keyId, why, now))
    ) {
      const policy = JSON.parse(current.policy) as { profile?: string | null };
      try {
        freshKeyId = (
          await this.issueDynamicKey(
            device.id,
            {
              ...(policy.profile ? { profile: policy.profile } : {}),
              maxUses: current.maxUses,
              ttlSeconds: ttlOf(current),
            },
            "system",
            why,
          )
        ).keyId;
      } catch (e) {
        // The refusal still stands; the failed send is already in the audit log.
        if (!(e instanceof HandsafeError)) throw e;
      }
    }
    const error =
      why === "superseded"
        ? new HandsafeError(
            "management.dynamic_key_superseded",
            "a newer dynamic key was sent to this device",
            {
              status: 401,
            },
          )
        : new HandsafeError(
            `management.dynamic_key_${why}`,
            why === "expired"
              ? "the dynamic key has expired; a fresh one is sent to the device"
              : "the dynamic key is used up; a fresh one is sent to the device",
            { status: 401, ...(freshKeyId ? { details: { freshKeySent: true } } : {}) },
          );
    return this.refuse(error, actor, keyId, freshKeyId ? { freshKeyId } : {});
  }

  private async refuse(
    error: unknown,
    actor: string,
    keyId: string,
    extra: Record<string, unknown> = {},
  ): Promise<never> {
    await this.audit({
      actor,
      action: "management.request",
      outcome: "deny",
      details: {
        code: error instanceof HandsafeError ? error.code : "internal",
        keyId: keyId.slice(0, 40),
        ...extra,
      },
    });
    throw error;
  }
}

function replayed(): HandsafeError {
  return new HandsafeError("signature.replayed", "this signature's nonce was already used", { status: 401 });
}

function ttlOf(k: store.DynamicKeyRow): number {
  const seconds = Math.round((k.expiresAt - k.createdAt) / 1000);
  return Math.min(Math.max(seconds, 60), 30 * 86_400);
}

function duplicate(record: DeviceRecordInput): BatchRowResult {
  return {
    line: record.line,
    status: "rejected",
    code: "provisioning.duplicate_device",
    message: `hardware_id ${record.hardwareId} is already registered`,
  };
}

function deviceInfo(d: store.DeviceRow): DeviceInfo {
  return {
    id: d.id,
    model: d.model,
    hardwareId: d.hardwareId,
    hardwareIdKind: d.hardwareIdKind,
    firmwareVersion: d.firmwareVersion,
    memoryLayout: JSON.parse(d.memoryLayout) as Record<string, unknown>,
    msisdn: d.msisdn,
    owner: d.owner,
    keySource: d.keySource,
    batchId: d.batchId,
    handsetId: d.handsetId,
    createdAt: d.createdAt,
  };
}
