/**
 * A device's dynamic keys: issued per policy and sent sealed under its static key, listed, used to
 * derive session keys, renewed when a signed request finds one expired or used up, and resent to a
 * push subscriber that missed one (docs/protocols/management.md §Dynamic keys).
 */
import type { Kysely } from "kysely";
import { HandsafeError } from "../core/errors.ts";
import type { Platform } from "../platform/context.ts";
import type { DeviceKeys } from "./device-keys.ts";
import { requireDevice } from "./devices.ts";
import type { NotificationChannel, NotificationDelivery } from "./notification-delivery.ts";
import {
  DynamicKey,
  type DynamicKeyPolicy,
  dynamicKeyRefusal,
  newKeyId,
  resolvePolicy,
  type SessionPurpose,
  sealDynamicKeyNotification,
} from "./protocol.ts";
import type { PushChannel } from "./push-channel.ts";
import type { PushNotification } from "./push-protocol.ts";
import * as store from "./store.ts";

type Db = Kysely<store.ManagementTables>;

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

/** Why a dynamic key no longer serves (protocol.ts dynamicKeyRefusal). */
export type DynamicKeyRefusal = NonNullable<ReturnType<typeof dynamicKeyRefusal>>;

export class DynamicKeys {
  private readonly db: Db;

  constructor(
    private readonly platform: Platform,
    private readonly keys: DeviceKeys,
    private readonly push: PushChannel,
    private readonly notifications: NotificationDelivery,
  ) {
    this.db = platform.db;
  }

  private now(): number {
    return this.platform.clock();
  }

  async list(deviceId: string): Promise<DynamicKeyInfo[]> {
    await requireDevice(this.db, deviceId);
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

  /**
   * A fresh dynamic key per policy, superseding the device's active one, sent sealed under the
   * device's static key: over its push stream when it holds one open (on this node or, on
   * PostgreSQL, another), otherwise in one SMS to its number. The key is stored (sealed) before the
   * text is sent, so a lost notification leaves a key nobody holds rather than a device holding an
   * unknown key (and a push subscription catches up on it: pushCatchUp).
   */
  async issue(
    deviceId: string,
    policy: DynamicKeyPolicy,
    actor: string,
    reason: "admin" | "expired" | "exhausted" = "admin",
  ): Promise<IssuedDynamicKey> {
    const device = await requireDevice(this.db, deviceId);
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
    const text = this.keys.withStaticKey(device, (staticKey) =>
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
      sealedKey: this.keys.sealDynamicKey(keyId, dynamicKey),
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
    const sent = await this.notifications.send(device, { text, counter }, actor, details);
    await store.recordNotificationSent(this.db, deviceId, keyId, sent.messageId, this.now(), sent.channel);
    await this.platform.audit({
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

  /** Runs `fn` with a session key of the device's active dynamic key (e.g. to wrap a content key). */
  async withSessionKey<T>(deviceId: string, purpose: SessionPurpose, fn: (key: Uint8Array) => T): Promise<T> {
    const device = await requireDevice(this.db, deviceId);
    const active = await store.findActiveDynamicKey(this.db, deviceId);
    if (!active)
      throw new HandsafeError("management.no_dynamic_key", "the device has no active dynamic key", {
        status: 409,
      });
    const session = this.keys.sessionKeyOf(device, active, purpose);
    try {
      return fn(session);
    } finally {
      session.fill(0);
    }
  }

  /**
   * The key a signed request found no longer serving: unless a newer key superseded it, retired
   * (compare-and-set, so only the first request that finds it does) and replaced by a fresh one
   * under the same policy. A failed send leaves no fresh key id; it is already in the audit log.
   */
  async retireAndRenew(
    device: store.DeviceRow,
    keyId: string,
    now: number,
  ): Promise<{ why: DynamicKeyRefusal; freshKeyId: string | undefined }> {
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
          await this.issue(
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
    return { why, freshKeyId };
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
    const device = await requireDevice(this.db, deviceId);
    const dynamicKey = this.keys.openDynamicKey(active);
    let text: string;
    try {
      text = this.keys.withStaticKey(device, (staticKey) =>
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
    await this.platform.audit({
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
}

/** The retired key's lifetime in seconds, clamped to 60 s … 30 days. */
function ttlOf(k: store.DynamicKeyRow): number {
  const seconds = Math.round((k.expiresAt - k.createdAt) / 1000);
  return Math.min(Math.max(seconds, 60), 30 * 86_400);
}
