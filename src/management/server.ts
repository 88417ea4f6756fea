/**
 * The management service: the protocol core (protocol.ts) over the platform's storage, keyring,
 * audit log, an SmsGateway and the push channel (push-channel.ts). Routes (routes.ts,
 * push-route.ts) only parse, authorise and call these. The work is done by one part per concern —
 * provisioning.ts, devices.ts, dynamic-keys.ts (with device-keys.ts and notification-delivery.ts),
 * request-verification.ts — and this class is their one face.
 */
import type { Kysely } from "kysely";
import type { Platform } from "../platform/context.ts";
import type { SmsGateway } from "../platform/notify/sms/types.ts";
import { DeviceKeys } from "./device-keys.ts";
import { type DeviceInfo, getDevice, listDevices, requireDevice } from "./devices.ts";
import { type DynamicKeyInfo, DynamicKeys, type IssuedDynamicKey } from "./dynamic-keys.ts";
import { NotificationDelivery } from "./notification-delivery.ts";
import type { DynamicKeyPolicy, ParsedSignature, SessionPurpose, SignedRequestView } from "./protocol.ts";
import { type BatchImportResult, Provisioning } from "./provisioning.ts";
import { PushChannel, type PushSettings } from "./push-channel.ts";
import type { PushNotification } from "./push-protocol.ts";
import { RequestVerification, type VerifiedDevice } from "./request-verification.ts";
import type * as store from "./store.ts";

export type { DeviceInfo } from "./devices.ts";
export type { DynamicKeyInfo, IssuedDynamicKey } from "./dynamic-keys.ts";
export type { NotificationChannel } from "./notification-delivery.ts";
export type { BatchImportResult, BatchRowResult } from "./provisioning.ts";
export type { VerifiedDevice } from "./request-verification.ts";

export interface ManagementDeps {
  sms: SmsGateway;
  /** Written into the handset key files so a device knows where (and which key) to trust. */
  server?: { url: string; pin?: string };
  /** The push channel's timings (docs/protocols/management.md §Push channel); defaults otherwise. */
  push?: PushSettings;
  /** Where the push relay reports trouble it recovers from (a dropped LISTEN connection, …). */
  onPushError?: (what: string, err: unknown) => void;
}

export class ManagementService {
  /** This node's push streams (and, on PostgreSQL, the way to the other nodes' streams). */
  readonly push: PushChannel;
  private readonly db: Kysely<store.ManagementTables>;
  private readonly provisioning: Provisioning;
  private readonly dynamicKeys: DynamicKeys;
  private readonly verification: RequestVerification;

  constructor(platform: Platform, deps: ManagementDeps) {
    this.db = platform.db;
    this.push = new PushChannel(platform, deps.push, deps.onPushError);
    const keys = new DeviceKeys(platform.keyring);
    const notifications = new NotificationDelivery(platform, this.push, deps.sms, deps.onPushError);
    this.provisioning = new Provisioning(platform, keys, deps.server);
    this.dynamicKeys = new DynamicKeys(platform, keys, this.push, notifications);
    this.verification = new RequestVerification(platform, keys, this.dynamicKeys, this.push);
  }

  // --- provisioning and devices (provisioning.ts, devices.ts) -----------------------------------

  importBatch(input: string, format: "csv" | "json", actor: string): Promise<BatchImportResult> {
    return this.provisioning.importBatch(input, format, actor);
  }

  requireDevice(id: string): Promise<store.DeviceRow> {
    return requireDevice(this.db, id);
  }

  getDevice(id: string): Promise<DeviceInfo> {
    return getDevice(this.db, id);
  }

  listDevices(page: { after?: string; limit: number; model?: string }): Promise<DeviceInfo[]> {
    return listDevices(this.db, page);
  }

  // --- dynamic keys (dynamic-keys.ts) -----------------------------------------------------------

  listDynamicKeys(deviceId: string): Promise<DynamicKeyInfo[]> {
    return this.dynamicKeys.list(deviceId);
  }

  /** See DynamicKeys.issue: a fresh key, stored sealed, then sent by push or SMS. */
  issueDynamicKey(
    deviceId: string,
    policy: DynamicKeyPolicy,
    actor: string,
    reason: "admin" | "expired" | "exhausted" = "admin",
  ): Promise<IssuedDynamicKey> {
    return this.dynamicKeys.issue(deviceId, policy, actor, reason);
  }

  /** Runs `fn` with a session key of the device's active dynamic key (e.g. to wrap a content key). */
  withSessionKey<T>(deviceId: string, purpose: SessionPurpose, fn: (key: Uint8Array) => T): Promise<T> {
    return this.dynamicKeys.withSessionKey(deviceId, purpose, fn);
  }

  /** See DynamicKeys.pushCatchUp: the active key resent to a subscriber whose counter is older. */
  pushCatchUp(deviceId: string, lastCounter: number): Promise<PushNotification | undefined> {
    return this.dynamicKeys.pushCatchUp(deviceId, lastCounter);
  }

  // --- signed requests and push subscriptions (request-verification.ts) -------------------------

  verifySignedRequest(
    parsed: ParsedSignature,
    view: SignedRequestView,
    body: Uint8Array | undefined,
  ): Promise<VerifiedDevice> {
    return this.verification.verifySignedRequest(parsed, view, body);
  }

  acceptPushSubscription(
    headers: Readonly<Record<string, string | string[] | undefined>>,
    view: SignedRequestView,
  ): Promise<{ deviceId: string }> {
    return this.verification.acceptPushSubscription(headers, view);
  }
}
