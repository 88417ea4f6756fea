/**
 * The service side of activation: the protocol core (protocol.ts) over the platform's storage,
 * keyring and audit log. Routes (routes.ts) only parse, authorise and call these.
 */
import type { Kysely } from "kysely";
import { fromBase64urlOfLength, toBase64url } from "../core/codec/base64url.ts";
import { concatBytes } from "../core/codec/bytes.ts";
import { cpaceRespond } from "../core/crypto/cpace.ts";
import { generateSigningKey } from "../core/crypto/ed25519.ts";
import { randomBytes, randomToken } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import type { AuditEntry, Platform } from "../platform/context.ts";
import { notifyHandset } from "../platform/notify/inbox.ts";
import { findHandset, lockHandsetRow, type RegistryTables } from "../platform/registry/handsets.ts";
import {
  ACTIVATION_ID_BYTES,
  type ActivationGrant,
  checkConfirmation,
  checkExchangeConfirm,
  checkExchangeStart,
  confirmationTag,
  cpaceParameters,
  derivePrs,
  deriveSessionKeys,
  exchangePath,
  keyFingerprint,
  SECRET_BYTES,
  type SignedGrant,
  serviceKeyId,
  signGrant,
} from "./protocol.ts";
import * as store from "./store.ts";

type Db = Kysely<store.ActivationTables>;

/** How long the responder waits for the handset's confirmation once the exchange started. */
const EXCHANGE_WINDOW_MS = 60_000;
const SERVICE_UID = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export interface ServiceInfo {
  uid: string;
  name: string;
  keyId: string;
  publicKey: string;
  exchangeUrl: string;
}

export class ActivationService {
  private readonly db: Db;

  constructor(private readonly platform: Platform) {
    this.db = platform.db;
  }

  private now(): number {
    return this.platform.clock();
  }

  private audit(entry: AuditEntry): Promise<void> {
    return this.platform.audit(entry);
  }

  /** The service row, or activation.unknown_service (404). */
  async requireService(uid: string): Promise<store.ServiceRow> {
    const s = await store.findServiceByUid(this.db, uid);
    if (!s) throw new HandsafeError("activation.unknown_service", `no service ${uid}`, { status: 404 });
    return s;
  }

  private info(s: store.ServiceRow): ServiceInfo {
    return {
      uid: s.uid,
      name: s.name,
      keyId: s.keyId,
      publicKey: toBase64url(s.publicKey),
      exchangeUrl: exchangePath(s.uid),
    };
  }

  // --- services ---------------------------------------------------------------------------------

  async createService(input: { uid: string; name: string }, actor: string): Promise<ServiceInfo> {
    if (!SERVICE_UID.test(input.uid))
      throw new HandsafeError("activation.invalid_service_uid", "a service UID is 1–63 of a-z 0-9 . _ -");
    if (await store.findServiceByUid(this.db, input.uid))
      throw new HandsafeError("activation.service_exists", `service ${input.uid} exists`, { status: 409 });
    const { seed, publicKey } = generateSigningKey();
    const id = `svc_${randomToken(12)}`;
    const row: store.ServiceRow = {
      id,
      uid: input.uid,
      name: input.name,
      keyId: serviceKeyId(publicKey),
      publicKey,
      sealedSigningKey: this.platform.keyring.sealAtRest(seed, `activation/service-signing-key/${id}`),
      createdAt: this.now(),
    };
    seed.fill(0);
    await store.insertService(this.db, row);
    await this.audit({ actor, action: "activation.service_created", subject: input.uid, outcome: "allow" });
    return this.info(row);
  }

  async getService(uid: string): Promise<ServiceInfo> {
    return this.info(await this.requireService(uid));
  }

  async listServices(): Promise<ServiceInfo[]> {
    return (await store.listServices(this.db)).map((s) => this.info(s));
  }

  // --- grants -----------------------------------------------------------------------------------

  /**
   * The login answer for one service: a fresh (or pre-generated) one-time secret and the
   * service's address, signed with the service key. For the exchange the server keeps only a PRS
   * derived from the secret (sealed at rest); a pre-generated secret is necessarily kept sealed
   * whole until it is handed out, then deleted.
   */
  async issueGrant(input: { userId: string; handsetId: string; serviceUid: string }): Promise<SignedGrant> {
    const service = await this.requireService(input.serviceUid);
    const now = this.now();
    const pooled = await store.takePooledSecret(this.db, input.userId, service.id, now);
    const secret = pooled
      ? this.platform.keyring.openAtRest(pooled.sealedSecret, `activation/pool/${pooled.id}`)
      : randomBytes(SECRET_BYTES);
    const activationId = toBase64url(randomBytes(ACTIVATION_ID_BYTES));
    const expiresAt = now + this.platform.config.activationSecretTtlSeconds * 1000;
    let origin: store.ActivationRow["origin"] = pooled ? "pool" : "login";
    // One transaction: of two grants racing for one handset and service, one supersedes the other.
    await this.db.transaction().execute(async (trx) => {
      // The registry's row, through the same transaction (its own table type).
      await lockHandsetRow(
        trx as unknown as Kysely<RegistryTables>,
        input.handsetId,
        this.platform.database.dialect,
      );
      await store.supersedeIssued(trx, service.id, input.handsetId, now);
      const pending = (await store.findPendingActivations(trx, input.handsetId, now)).filter(
        (p) => p.serviceId === service.id,
      );
      for (const p of pending) await store.transitionActivation(trx, p.id, "pending", "expired", {}, now);
      if (!pooled && pending.length > 0) origin = "on_behalf";
      await store.insertActivation(trx, {
        id: activationId,
        serviceId: service.id,
        userId: input.userId,
        handsetId: input.handsetId,
        state: "issued",
        origin,
        sealedPrs: this.platform.keyring.sealAtRest(derivePrs(secret), `activation/prs/${activationId}`),
        ya: null,
        yb: null,
        sealedKeys: null,
        createdAt: now,
        expiresAt,
        updatedAt: now,
      });
    });
    const grant: ActivationGrant = {
      v: 1,
      activationId,
      serviceUid: service.uid,
      handsetId: input.handsetId,
      secret: toBase64url(secret),
      exchangeUrl: exchangePath(service.uid),
      expiresAt,
    };
    const seed = this.platform.keyring.openAtRest(
      service.sealedSigningKey,
      `activation/service-signing-key/${service.id}`,
    );
    const signed = signGrant(grant, seed, service.keyId);
    seed.fill(0);
    secret.fill(0);
    await this.audit({
      actor: input.userId,
      action: "activation.grant_issued",
      subject: `${service.uid}/${input.handsetId}`,
      outcome: "allow",
      details: { activationId, origin },
    });
    return signed;
  }

  // --- the key exchange (no login: CPace itself authenticates) ----------------------------------

  async exchangeStart(
    serviceUid: string,
    input: { activationId: string; ya: string },
  ): Promise<{ yb: string; confirm: string }> {
    const service = await this.requireService(serviceUid);
    const now = this.now();
    const record = await this.activationOf(service, input.activationId);
    try {
      checkExchangeStart(record, now);
    } catch (e) {
      await this.deny("activation.exchange_refused", serviceUid, e, input.activationId);
      throw e;
    }
    const a = record!;
    const ya = fromBase64urlOfLength(input.ya, 32, "ya");
    const prs = this.platform.keyring.openAtRest(a.sealedPrs!, `activation/prs/${a.id}`);
    const params = cpaceParameters(prs, a.id, service.uid, a.handsetId);
    let isk: Uint8Array;
    let yb: Uint8Array;
    try {
      ({ isk, message: yb } = cpaceRespond(
        { prs, ci: params.ci, sid: params.sid, ad: params.adB },
        ya,
        params.adA,
      ));
    } catch (e) {
      await store.transitionActivation(this.db, a.id, "issued", "failed", { sealed_prs: null }, now);
      await this.deny("activation.exchange_refused", serviceUid, e, a.id);
      throw e;
    }
    const keys = deriveSessionKeys(isk, params.sid);
    const sealedKeys = this.platform.keyring.sealAtRest(
      concatBytes(keys.confirmInitiator, keys.serviceKey),
      `activation/pending-keys/${a.id}`,
    );
    const won = await store.transitionActivation(
      this.db,
      a.id,
      "issued",
      "exchanging",
      {
        ya,
        yb,
        sealed_keys: sealedKeys,
        sealed_prs: null,
        expires_at: Math.min(a.expiresAt, now + EXCHANGE_WINDOW_MS),
      },
      now,
    );
    if (!won) {
      const e = new HandsafeError(
        "activation.exchange_in_progress",
        "a key exchange for this activation secret is already running",
        { status: 409 },
      );
      await this.deny("activation.exchange_refused", serviceUid, e, a.id);
      throw e;
    }
    return { yb: toBase64url(yb), confirm: toBase64url(confirmationTag(keys.confirmResponder, ya, yb)) };
  }

  async exchangeConfirm(
    serviceUid: string,
    input: { activationId: string; confirm: string },
  ): Promise<{ fingerprint: string; serviceUid: string; handsetId: string }> {
    const service = await this.requireService(serviceUid);
    const now = this.now();
    const record = await this.activationOf(service, input.activationId);
    try {
      checkExchangeConfirm(record, now);
    } catch (e) {
      await this.deny("activation.confirm_refused", serviceUid, e, input.activationId);
      throw e;
    }
    const a = record!;
    const material = this.platform.keyring.openAtRest(a.sealedKeys!, `activation/pending-keys/${a.id}`);
    const confirmInitiator = material.subarray(0, 32);
    const serviceKey = material.slice(32);
    // A malformed message is refused without burning the secret (as at start); a wrong tag burns it.
    const received = fromBase64urlOfLength(input.confirm, 32, "confirm");
    try {
      checkConfirmation(confirmationTag(confirmInitiator, a.ya!, a.yb!), received);
    } catch (e) {
      // One try per secret: a wrong confirmation burns it, so guessing cannot go on.
      await store.transitionActivation(this.db, a.id, "exchanging", "failed", { sealed_keys: null }, now);
      await this.deny("activation.confirm_refused", serviceUid, e, a.id);
      throw e;
    }
    if (
      !(await store.transitionActivation(this.db, a.id, "exchanging", "active", { sealed_keys: null }, now))
    ) {
      throw new HandsafeError("activation.secret_used", "the activation secret was already used", {
        status: 410,
      });
    }
    const fingerprint = keyFingerprint(serviceKey);
    const keyId = `skey_${randomToken(12)}`;
    await store.storeServiceKey(
      this.db,
      {
        id: keyId,
        serviceId: service.id,
        handsetId: a.handsetId,
        userId: a.userId,
        activationId: a.id,
        sealedKey: this.platform.keyring.sealAtRest(serviceKey, `activation/service-key/${keyId}`),
        fingerprint,
        state: "active",
        createdAt: now,
        revokedAt: null,
      },
      now,
    );
    serviceKey.fill(0);
    await this.audit({
      actor: a.handsetId,
      action: "activation.key_established",
      subject: `${service.uid}/${a.handsetId}`,
      outcome: "allow",
      details: { activationId: a.id, fingerprint },
    });
    return { fingerprint, serviceUid: service.uid, handsetId: a.handsetId };
  }

  private async activationOf(
    service: store.ServiceRow,
    activationId: string,
  ): Promise<store.ActivationRow | undefined> {
    fromBase64urlOfLength(activationId, ACTIVATION_ID_BYTES, "activationId");
    const a = await store.findActivation(this.db, activationId);
    // An activation of another service is, to this endpoint, no activation at all.
    return a && a.serviceId === service.id ? a : undefined;
  }

  /** Audits a refused request with its error code (never its secrets). */
  async deny(action: string, subject: string, error: unknown, activationId?: string): Promise<void> {
    await this.audit({
      actor: "anonymous",
      action,
      subject,
      outcome: "deny",
      details: {
        code: error instanceof HandsafeError ? error.code : "internal",
        ...(activationId ? { activationId } : {}),
      },
    });
  }

  /** Housekeeping: lapsed activations lose their sealed material; lapsed pooled secrets go. */
  async sweepExpired(): Promise<{ activations: number; pooled: number }> {
    const swept = await store.expireLapsed(this.db, this.now());
    if (swept.activations + swept.pooled > 0)
      await this.audit({
        actor: "system",
        action: "activation.expired_swept",
        outcome: "info",
        details: swept,
      });
    return swept;
  }

  // --- keys held by handsets --------------------------------------------------------------------

  async listHandsetKeys(handsetId: string): Promise<
    Array<{
      serviceUid: string;
      fingerprint: string;
      state: string;
      createdAt: number;
      revokedAt: number | null;
    }>
  > {
    return (await store.listServiceKeysOfHandset(this.db, handsetId)).map((k) => ({
      serviceUid: k.serviceUid,
      fingerprint: k.fingerprint,
      state: k.state,
      createdAt: k.createdAt,
      revokedAt: k.revokedAt,
    }));
  }

  async revoke(handsetId: string, serviceUid: string, actor: string): Promise<void> {
    const service = await this.requireService(serviceUid);
    const done = await store.revokeServiceKey(this.db, service.id, handsetId, this.now());
    await this.audit({
      actor,
      action: "activation.key_revoked",
      subject: `${serviceUid}/${handsetId}`,
      outcome: done ? "allow" : "info",
    });
    if (!done)
      throw new HandsafeError("activation.not_active", `${serviceUid} is not active on this handset`, {
        status: 404,
      });
  }

  // --- on behalf of a user, and pre-generated secrets -------------------------------------------

  /** An admin sets a service up for a user away from the handset: pending until it next runs. */
  async activateOnBehalf(
    input: { userId: string; handsetId: string; serviceUid: string },
    actor: string,
  ): Promise<{ activationId: string; state: "pending" }> {
    const service = await this.requireService(input.serviceUid);
    const handset = await findHandset(this.platform.db, input.handsetId);
    if (!handset || handset.userId !== input.userId)
      throw new HandsafeError("handset.unknown", "no such handset for this user", { status: 404 });
    const now = this.now();
    const activationId = toBase64url(randomBytes(ACTIVATION_ID_BYTES));
    await store.insertActivation(this.db, {
      id: activationId,
      serviceId: service.id,
      userId: input.userId,
      handsetId: input.handsetId,
      state: "pending",
      origin: "on_behalf",
      sealedPrs: null,
      ya: null,
      yb: null,
      sealedKeys: null,
      createdAt: now,
      expiresAt: now + 30 * 24 * 3600 * 1000,
      updatedAt: now,
    });
    await notifyHandset(
      this.platform.db,
      input.handsetId,
      "activation.pending",
      { serviceUid: service.uid, activationId },
      now,
    );
    await this.audit({
      actor,
      action: "activation.on_behalf",
      subject: `${service.uid}/${input.handsetId}`,
      outcome: "allow",
      details: { activationId },
    });
    return { activationId, state: "pending" };
  }

  async pendingServices(handsetId: string): Promise<string[]> {
    const now = this.now();
    const pending = await store.findPendingActivations(this.db, handsetId, now);
    const uids: string[] = [];
    for (const p of pending) {
      if (p.expiresAt <= now) continue;
      const s = await store.findServiceById(this.db, p.serviceId);
      if (s && !uids.includes(s.uid)) uids.push(s.uid);
    }
    return uids;
  }

  async pregenerateSecrets(
    input: { userId: string; serviceUid: string; count: number; ttlSeconds: number },
    actor: string,
  ): Promise<{ pooled: number }> {
    if (!Number.isSafeInteger(input.count) || input.count < 1 || input.count > 100)
      throw new HandsafeError("activation.invalid_count", "count must be 1–100");
    const service = await this.requireService(input.serviceUid);
    const now = this.now();
    for (let i = 0; i < input.count; i++) {
      const id = `pool_${randomToken(12)}`;
      const secret = randomBytes(SECRET_BYTES);
      await store.insertPooledSecret(this.db, {
        id,
        userId: input.userId,
        serviceId: service.id,
        sealedSecret: this.platform.keyring.sealAtRest(secret, `activation/pool/${id}`),
        createdAt: now,
        expiresAt: now + input.ttlSeconds * 1000,
      });
      secret.fill(0);
    }
    await this.audit({
      actor,
      action: "activation.secrets_pregenerated",
      subject: `${service.uid}/${input.userId}`,
      outcome: "allow",
      details: { count: input.count },
    });
    return { pooled: await store.countPooledSecrets(this.db, input.userId, service.id, now) };
  }
}
