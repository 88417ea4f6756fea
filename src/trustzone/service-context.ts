/**
 * What every part of the zone server shares (docs/protocols/trustzone.md §7): the platform, the
 * audited refusal, the trust-zone signing key, a zone's user key (opened, used, wiped), the
 * checks every caller needs, signal rows and webhooks to managers. The parts (managers.ts, zones.ts,
 * tokens.ts, subkeys.ts, signals.ts, relay.ts) are functions over a TrustzoneCore; server.ts joins
 * them into TrustzoneService.
 *
 * Key custody: a zone's ZMK (and its user info, UK's salt) wait sealed by the keyring. A call that
 * needs UK opens them, derives what it needs (ZAK, ZRK, SK, CK_i) and wipes every buffer before it
 * returns; SK leaves only HPKE-sealed to the manager's X25519 key.
 */
import { toBase64url } from "../core/codec/base64url.ts";
import { generateSigningKey, sha256 } from "../core/crypto/index.ts";
import { randomToken } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import type { JwsSigner } from "../core/jws.ts";
import type { AuditEntry, Platform } from "../platform/context.ts";
import { enqueueWebhook } from "../platform/notify/webhooks.ts";
import { deriveUserKey, deriveZoneRequestKey, LABELS, type ZoneSignal } from "./protocol.ts";
import * as store from "./store.ts";

/** The tag of the RFC 9421 signature on webhook calls to a manager. */
export const WEBHOOK_TAG = LABELS.webhook;
/** Keyring contexts of what the server seals at rest (the context binds a sealed value to its row). */
export const AT_REST = {
  zmk: (zoneId: string) => `trustzone/zmk/${zoneId}`,
  userInfo: (zoneId: string) => `trustzone/user-info/${zoneId}`,
  signingKey: (kid: string) => `trustzone/signing-key/${kid}`,
  webhookSecret: (managerId: string) => `trustzone/webhook-secret/${managerId}`,
} as const;

export const newId = (prefix: string) => `${prefix}_${randomToken(12)}`;
export const tsmError = (code: string, message: string, status: number) =>
  new HandsafeError(code, message, { status });
export const notFound = (what: string) => tsmError("tsm.not_found", `no such ${what}`, 404);
export const bad = (message: string) => tsmError("tsm.invalid_request", message, 400);
export const notPersonalised = () => tsmError("zone.not_personalised", "the zone is not personalised", 409);

export function intIn(v: unknown, name: string, min: number, max: number, fallback?: number): number {
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max)
    throw bad(`${name} must be a whole number from ${min} to ${max}`);
  return v;
}

export function text(v: unknown, name: string, max: number): string {
  if (typeof v !== "string" || v.length === 0 || v.length > max) throw bad(`${name} is 1..${max} characters`);
  return v;
}

export class TrustzoneCore {
  readonly db: store.Db;

  constructor(readonly platform: Platform) {
    this.db = platform.db;
  }

  now(): number {
    return this.platform.clock();
  }

  audit(entry: AuditEntry, within?: store.Db): Promise<void> {
    return this.platform.audit(entry, within);
  }

  /** Audits the refusal, then throws it. */
  async refuse(error: unknown, entry: Omit<AuditEntry, "outcome">): Promise<never> {
    const code = error instanceof HandsafeError ? error.code : "internal";
    await this.audit({ ...entry, outcome: "deny", details: { code, ...entry.details } });
    throw error;
  }

  /** Runs `work`, auditing (and rethrowing) a HandsafeError it throws as a deny. */
  async guarded<T>(entry: Omit<AuditEntry, "outcome">, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (e) {
      if (e instanceof HandsafeError) return this.refuse(e, entry);
      throw e;
    }
  }

  // --- the trust-zone signing key -----------------------------------------------------------------

  /** Creates the token-signing key on first start (one for all nodes: the 'current' row is unique). */
  async init(): Promise<void> {
    if (await store.currentSigningKey(this.db)) return;
    const { seed, publicKey } = generateSigningKey();
    try {
      const kid = `tz-${toBase64url(sha256(publicKey)).slice(0, 16)}`;
      await store.insertCurrentSigningKeyIfNone(this.db, {
        kid,
        publicKey,
        sealedSeed: this.platform.keyring.sealAtRest(seed, AT_REST.signingKey(kid)),
        createdAt: this.now(),
      });
    } finally {
      seed.fill(0);
    }
    const current = await store.currentSigningKey(this.db);
    await this.audit({
      actor: "system",
      action: "tsm.signing_key_ready",
      outcome: "info",
      details: { kid: current?.kid ?? null },
    });
  }

  async publicKeys(): Promise<Array<{ kid: string; publicKey: string; current: boolean }>> {
    return (await store.listSigningKeys(this.db)).map((k) => ({
      kid: k.kid,
      publicKey: toBase64url(k.publicKey),
      current: k.current,
    }));
  }

  async withSigner<T>(use: (signer: JwsSigner) => T): Promise<T> {
    const key = await store.currentSigningKey(this.db);
    if (!key) throw tsmError("internal", "trust-zone signing key missing (init not run)", 500);
    const seed = this.platform.keyring.openAtRest(key.sealedSeed, AT_REST.signingKey(key.kid));
    try {
      return use({ kid: key.kid, seed });
    } finally {
      seed.fill(0);
    }
  }

  async verificationKeys(): Promise<Map<string, Uint8Array>> {
    return new Map((await store.listSigningKeys(this.db)).map((k) => [k.kid, k.publicKey]));
  }

  // --- what every part checks -----------------------------------------------------------------------

  /** Only a validated manager gets tokens, sub-keys and the relay. */
  async requireValidated(manager: store.ManagerRow, action: string, subject?: string): Promise<void> {
    if (manager.state === "validated") return;
    const error =
      manager.state === "rejected"
        ? tsmError("tsm.manager_rejected", "this service manager was rejected", 403)
        : tsmError("tsm.manager_not_validated", "this service manager is not validated yet", 403);
    await this.refuse(error, { actor: `manager:${manager.id}`, action, ...(subject ? { subject } : {}) });
  }

  async requireZone(zoneId: string): Promise<store.ZoneRow> {
    const zone = await store.findZone(this.db, zoneId);
    if (!zone) throw notFound("zone");
    return zone;
  }

  /** UK of the zone's current epoch (or `epoch`), given to `use` and wiped after. */
  withUserKey<T>(zone: store.ZoneRow, use: (uk: Uint8Array) => T, epoch = zone.epoch): T {
    if (zone.sealedUserInfo === null)
      throw tsmError("zone.not_personalised", "the zone is not personalised", 409);
    const zmk = this.platform.keyring.openAtRest(zone.sealedZmk, AT_REST.zmk(zone.id));
    const info = this.platform.keyring.openAtRest(zone.sealedUserInfo, AT_REST.userInfo(zone.id));
    let uk: Uint8Array | undefined;
    try {
      uk = deriveUserKey(zmk, info, epoch);
      return use(uk);
    } finally {
      zmk.fill(0);
      info.fill(0);
      uk?.fill(0);
    }
  }

  /** ZRK of the zone (the caller wipes it): what its RFC 9421 requests are signed with. */
  zoneRequestKey(zone: store.ZoneRow, epoch = zone.epoch): Uint8Array {
    return this.withUserKey(zone, (uk) => deriveZoneRequestKey(uk), epoch);
  }

  async insertSignal(db: store.Db, signal: ZoneSignal, mac: Uint8Array, now: number): Promise<void> {
    await store.insertSignal(db, {
      zoneId: signal.zoneId,
      seq: signal.seq,
      epoch: signal.epoch,
      type: signal.type,
      body: signal as unknown as Record<string, unknown>,
      mac: toBase64url(mac),
      createdAt: now,
    });
  }

  /** A webhook call to the manager when it registered a URL (platform outbox); always audited. */
  async tellManager(managerId: string, payload: Record<string, unknown>, subject: string): Promise<void> {
    const manager = await store.findManager(this.db, managerId);
    let queued = false;
    if (manager?.webhookUrl && manager.sealedWebhookSecret) {
      const secret = this.platform.keyring.openAtRest(
        manager.sealedWebhookSecret,
        AT_REST.webhookSecret(manager.id),
      );
      try {
        await enqueueWebhook(this.platform, {
          url: manager.webhookUrl,
          body: { ...payload, managerId },
          secret,
          keyId: manager.id,
          tag: WEBHOOK_TAG,
          kind: String(payload["type"]),
        });
        queued = true;
      } finally {
        secret.fill(0);
      }
    }
    await this.audit({
      actor: "system",
      action: "tsm.manager_notified",
      subject,
      outcome: "info",
      details: { managerId, type: String(payload["type"]), webhook: queued },
    });
  }
}
