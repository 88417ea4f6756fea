/**
 * The server's check of a device's signed requests under management's two RFC 9421 profiles
 * (signature.ts): requests signed with a session key of the active dynamic key, and push
 * subscriptions signed with the push authentication key. Both share one nonce table
 * (`signature_nonces`); every decision is audited.
 */
import type { Kysely } from "kysely";
import { HandsafeError } from "../core/errors.ts";
import type { Platform } from "../platform/context.ts";
import type { DeviceKeys } from "./device-keys.ts";
import type { DynamicKeys } from "./dynamic-keys.ts";
import {
  derivePushAuthKey,
  deviceOfPushKeyId,
  KEY_ID,
  type ParsedSignature,
  PUSH_SIGNATURE_TAG,
  parseRequestSignature,
  SIGNATURE_WINDOW_SECONDS,
  type SignedRequestView,
  verifyRequestSignature,
} from "./protocol.ts";
import type { PushChannel } from "./push-channel.ts";
import * as store from "./store.ts";

type Db = Kysely<store.ManagementTables>;

/** What a verified signed request tells the route that runs after requireDeviceSignature. */
export interface VerifiedDevice {
  deviceId: string;
  keyId: string;
  usesLeft: number;
  expiresAt: number;
}

/** Purge the nonce table about once every this many verified requests. */
const PURGE_EVERY = 200;

export class RequestVerification {
  private readonly db: Db;
  private verifiedSincePurge = 0;

  constructor(
    private readonly platform: Platform,
    private readonly keys: DeviceKeys,
    private readonly dynamicKeys: DynamicKeys,
    private readonly push: PushChannel,
  ) {
    this.db = platform.db;
  }

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
    const now = this.platform.clock();
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
    const sessionKey = this.keys.sessionKeyOf(device, key, "requests");
    try {
      verifyRequestSignature(parsed, view, sessionKey, { nowMs: now, body });
    } catch (e) {
      return this.refuse(e, actor, key.id);
    } finally {
      sessionKey.fill(0);
    }
    if (!(await this.claimNonce(device.id, parsed, now))) return this.refuse(replayed(), actor, key.id);
    if (await store.countDynamicKeyUse(this.db, key.id, now)) {
      await this.platform.audit({
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
    const now = this.platform.clock();
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
    const key = this.keys.withStaticKey(device, (staticKey) => derivePushAuthKey(staticKey, device.id));
    try {
      verifyRequestSignature(parsed, view, key.reveal(), { nowMs: now, body: undefined });
    } catch (e) {
      return this.refusePush(e, actor, parsed.keyId);
    } finally {
      key.wipe();
    }
    if (!(await this.claimNonce(device.id, parsed, now)))
      return this.refusePush(replayed(), actor, parsed.keyId);
    await this.platform.audit({
      actor,
      action: "management.push_subscribe",
      subject: `device:${device.id}`,
      outcome: "allow",
      details: { node: this.push.nodeId },
    });
    return { deviceId: device.id };
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

  /** A key found expired, used up or superseded: refused with its code, renewed when that applies. */
  private async refuseKey(
    device: store.DeviceRow,
    keyId: string,
    actor: string,
    now: number,
  ): Promise<never> {
    const { why, freshKeyId } = await this.dynamicKeys.retireAndRenew(device, keyId, now);
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
    await this.platform.audit({
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

  private async refusePush(error: unknown, actor: string, keyId: string | undefined): Promise<never> {
    await this.platform.audit({
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
}

function replayed(): HandsafeError {
  return new HandsafeError("signature.replayed", "this signature's nonce was already used", { status: 401 });
}
