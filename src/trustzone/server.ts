/**
 * The zone server (docs/protocols/trustzone.md §3–§5, §7): the master TSM's inventory of zones and
 * containers, service managers and their review, tokens (JWS, uses counted here), the server
 * placement of the sub-key generator, provisioning signals and the package relay. The pure parts
 * are protocol.ts; routes.ts only parses, authenticates and calls this.
 *
 * Key custody: a zone's ZMK (and its user info, UK's salt) wait sealed by the keyring. A call that
 * needs UK opens them, derives what it needs (ZAK, ZRK, SK, CK_i) and wipes every buffer before it
 * returns; SK leaves only HPKE-sealed to the manager's X25519 key.
 */
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { utf8 } from "../core/codec/bytes.ts";
import { isValidHpkePublicKey } from "../core/crypto/hpke.ts";
import { generateSigningKey, sha256 } from "../core/crypto/index.ts";
import { randomBytes, randomToken } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import { defineSignatureProfile } from "../core/http-signatures/index.ts";
import { decodeJwsUnverified, type JwsSigner } from "../core/jws.ts";
import { hashToken } from "../platform/auth/store.ts";
import type { AuditEntry, Platform } from "../platform/context.ts";
import { checkWebhookUrl, enqueueWebhook } from "../platform/notify/webhooks.ts";
import {
  buildFreeingSignal,
  buildKeyedSignal,
  deriveUserKey,
  deriveZoneAdminKey,
  deriveZoneRequestKey,
  generateSubKeyMaterial,
  issueToken,
  KEY_LENGTH,
  newTokenId,
  parseRelayCommand,
  type RelayCommand,
  sealSubKeyForManager,
  TOKEN_ISSUER,
  type TokenClaims,
  verifyToken,
  type ZoneSignal,
} from "./protocol.ts";
import * as store from "./store.ts";

/** RFC 9421 profile of the zone's requests: hmac-sha256 under ZRK, keyid = zone id. */
export const ZONE_REQUEST_SIGNATURE = defineSignatureProfile({
  label: "tz",
  alg: "hmac-sha256",
  tag: "handsafe/v1/trustzone/zone-request",
  requiredComponents: ["@method", "@target-uri"],
  windowSeconds: 300,
  nonceBytes: 16,
});
export const WEBHOOK_TAG = "handsafe/v1/trustzone/webhook";
export const MANAGER_API_KEY = /^hs_tsm_[A-Za-z0-9_-]{43}$/;
export const DEFAULT_CONTAINERS = 8;
export const MAX_CONTAINERS = 64;
export const AT_REST = {
  zmk: (zoneId: string) => `trustzone/zmk/${zoneId}`,
  userInfo: (zoneId: string) => `trustzone/user-info/${zoneId}`,
  signingKey: (kid: string) => `trustzone/signing-key/${kid}`,
  webhookSecret: (managerId: string) => `trustzone/webhook-secret/${managerId}`,
} as const;

const newId = (prefix: string) => `${prefix}_${randomToken(12)}`;
const tsmError = (code: string, message: string, status: number) =>
  new HandsafeError(code, message, { status });
export const notFound = (what: string) => tsmError("tsm.not_found", `no such ${what}`, 404);
const bad = (message: string) => tsmError("tsm.invalid_request", message, 400);

function intIn(v: unknown, name: string, min: number, max: number, fallback?: number): number {
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max)
    throw bad(`${name} must be a whole number from ${min} to ${max}`);
  return v;
}
function text(v: unknown, name: string, max: number): string {
  if (typeof v !== "string" || v.length === 0 || v.length > max) throw bad(`${name} is 1..${max} characters`);
  return v;
}

export interface ProvisioningBundle {
  zoneId: string;
  /** base64url; shown once, for the handset's zone only. */
  zmk: string;
  userInfo: string;
  epoch: number;
  trustZonePublicKeys: Array<{ kid: string; publicKey: string }>;
}

export interface RelayView {
  relayId: string;
  state: store.RelayState;
  op: store.RelayOp;
  zoneId: string;
  container: number;
  name: string | null;
  result?: Record<string, unknown>;
  error?: { code: string };
}

export interface ZoneReport {
  /** The highest seq the zone has applied. */
  applied?: number;
  /** Signals the zone refused, with its code. */
  rejected?: Array<{ seq: number; code: string }>;
  relay?: Array<{ id: string; ok: boolean; result?: Record<string, unknown>; code?: string }>;
  locked?: number[];
  wiped?: number[];
  /** The zone's acknowledgement of a factory reset, at the epoch it was reset to. */
  reset?: { epoch: number };
}

export class TrustzoneService {
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

  private async withSigner<T>(use: (signer: JwsSigner) => T): Promise<T> {
    const key = await store.currentSigningKey(this.db);
    if (!key) throw tsmError("internal", "trust-zone signing key missing (init not run)", 500);
    const seed = this.platform.keyring.openAtRest(key.sealedSeed, AT_REST.signingKey(key.kid));
    try {
      return use({ kid: key.kid, seed });
    } finally {
      seed.fill(0);
    }
  }

  private async verificationKeys(): Promise<Map<string, Uint8Array>> {
    return new Map((await store.listSigningKeys(this.db)).map((k) => [k.kid, k.publicKey]));
  }

  // --- managers -----------------------------------------------------------------------------------

  async registerManager(
    input: Record<string, unknown>,
    origin: string,
  ): Promise<{ managerId: string; apiKey: string; state: "pending"; webhookSecret?: string }> {
    const entry = { actor: origin, action: "tsm.manager_registered" };
    const parsed = await this.guarded(entry, async () => {
      const apps = input["applications"] ?? [];
      if (!Array.isArray(apps) || apps.length > 32) throw bad("applications is a list of at most 32");
      const applications = apps.map((a: unknown) => {
        const o = (a ?? {}) as Record<string, unknown>;
        const sha = text(o["sha256"], "applications[].sha256", 64);
        if (!/^[0-9a-f]{64}$/.test(sha)) throw bad("applications[].sha256 is 64 lower-case hex digits");
        return { appId: text(o["appId"], "applications[].appId", 100), sha256: sha };
      });
      if (new Set(applications.map((a) => a.appId)).size !== applications.length)
        throw bad("an application is listed twice");
      let key: Uint8Array;
      try {
        key = fromBase64url(text(input["x25519PublicKey"], "x25519PublicKey", 64), "x25519PublicKey");
      } catch {
        throw bad("x25519PublicKey is base64url");
      }
      if (!isValidHpkePublicKey(key)) throw bad("x25519PublicKey is not a valid X25519 public key");
      const certification = input["certification"] ?? {};
      if (
        typeof certification !== "object" ||
        certification === null ||
        JSON.stringify(certification).length > 4096
      )
        throw bad("certification is a JSON object of at most 4 KiB");
      return {
        name: text(input["name"], "name", 200),
        identificationCode: text(input["identificationCode"], "identificationCode", 100),
        memoryBytes: intIn(input["memoryBytes"], "memoryBytes", 0, 1 << 30, 0),
        certification,
        applications,
        key,
        webhookUrl:
          input["webhookUrl"] === undefined
            ? null
            : checkWebhookUrl(text(input["webhookUrl"], "webhookUrl", 4096)).href,
      };
    });
    const id = newId("mgr");
    const apiKey = `hs_tsm_${toBase64url(randomBytes(32))}`;
    const secret = parsed.webhookUrl === null ? undefined : randomBytes(32);
    const now = this.now();
    try {
      await store.insertManager(this.db, {
        id,
        name: parsed.name,
        identificationCode: parsed.identificationCode,
        certification: parsed.certification,
        memoryBytes: parsed.memoryBytes,
        applications: parsed.applications,
        x25519PublicKey: parsed.key,
        apiKeyHash: hashToken(apiKey),
        webhookUrl: parsed.webhookUrl,
        sealedWebhookSecret: secret
          ? this.platform.keyring.sealAtRest(secret, AT_REST.webhookSecret(id))
          : null,
        state: "pending",
        reason: null,
        reviewedBy: null,
        createdAt: now,
        updatedAt: now,
      });
      await this.audit({
        ...entry,
        subject: `manager:${id}`,
        outcome: "allow",
        details: {
          name: parsed.name,
          applications: parsed.applications.length,
          webhook: secret !== undefined,
        },
      });
      return {
        managerId: id,
        apiKey,
        state: "pending",
        ...(secret ? { webhookSecret: toBase64url(secret) } : {}),
      };
    } finally {
      secret?.fill(0);
    }
  }

  /** The manager an API key names; `auth.unauthenticated` (401, audited) otherwise. */
  async authenticateManager(apiKey: string | undefined, origin: string): Promise<store.ManagerRow> {
    const manager =
      apiKey !== undefined && MANAGER_API_KEY.test(apiKey)
        ? await store.findManagerByKeyHash(this.db, hashToken(apiKey))
        : undefined;
    if (!manager)
      return this.refuse(
        tsmError("auth.unauthenticated", "a valid service-manager API key is required", 401),
        {
          actor: origin,
          action: "tsm.manager_auth",
          details: { presented: apiKey !== undefined },
        },
      );
    return manager;
  }

  /** Only a validated manager gets tokens, sub-keys and the relay. */
  async requireValidated(manager: store.ManagerRow, action: string, subject?: string): Promise<void> {
    if (manager.state === "validated") return;
    const error =
      manager.state === "rejected"
        ? tsmError("tsm.manager_rejected", "this service manager was rejected", 403)
        : tsmError("tsm.manager_not_validated", "this service manager is not validated yet", 403);
    await this.refuse(error, { actor: `manager:${manager.id}`, action, ...(subject ? { subject } : {}) });
  }

  async reviewManager(
    id: string,
    decision: "validated" | "rejected",
    reason: string | null,
    actor: string,
  ): Promise<{ managerId: string; state: store.ManagerState }> {
    const action = decision === "validated" ? "tsm.manager_validated" : "tsm.manager_rejected";
    const subject = `manager:${id}`;
    const manager = await store.findManager(this.db, id);
    if (!manager) return this.refuse(notFound("manager"), { actor, action, subject });
    await store.setManagerState(this.db, id, decision, reason, actor, this.now());
    await this.audit({ actor, action, subject, outcome: "allow", details: { from: manager.state, reason } });
    return { managerId: id, state: decision };
  }

  async reviewApplication(
    managerId: string,
    appId: string,
    actor: string,
  ): Promise<{ appId: string; state: string }> {
    const subject = `manager:${managerId}`;
    const action = "tsm.application_validated";
    if (!(await store.setApplicationState(this.db, managerId, appId, "validated", this.now())))
      return this.refuse(notFound("application"), { actor, action, subject, details: { appId } });
    await this.audit({ actor, action, subject, outcome: "allow", details: { appId } });
    return { appId, state: "validated" };
  }

  async managerView(id: string): Promise<Record<string, unknown>> {
    const m = await store.findManager(this.db, id);
    if (!m) throw notFound("manager");
    return {
      managerId: m.id,
      name: m.name,
      identificationCode: m.identificationCode,
      certification: m.certification,
      memoryBytes: m.memoryBytes,
      state: m.state,
      reason: m.reason,
      applications: await store.applicationsOf(this.db, m.id),
      createdAt: m.createdAt,
    };
  }

  // --- zones --------------------------------------------------------------------------------------

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

  private bundle(zoneId: string, zmk: Uint8Array, userInfo: string, epoch: number) {
    return async (): Promise<ProvisioningBundle> => ({
      zoneId,
      zmk: toBase64url(zmk),
      userInfo,
      epoch,
      trustZonePublicKeys: (await this.publicKeys()).map(({ kid, publicKey }) => ({ kid, publicKey })),
    });
  }

  /** A new zone with a fresh ZMK at epoch 1, `containers` free containers. */
  async personaliseZone(input: Record<string, unknown>, actor: string): Promise<ProvisioningBundle> {
    const action = "tsm.zone_personalised";
    const parsed = await this.guarded({ actor, action }, async () => ({
      userInfo: text(input["userInfo"], "userInfo", 1000),
      handsetId: input["handsetId"] === undefined ? null : text(input["handsetId"], "handsetId", 200),
      containers: intIn(input["containers"], "containers", 1, MAX_CONTAINERS, DEFAULT_CONTAINERS),
    }));
    const id = newId("zone");
    const zmk = randomBytes(KEY_LENGTH);
    const now = this.now();
    try {
      await store.insertZone(this.db, {
        id,
        handsetId: parsed.handsetId,
        epoch: 1,
        state: "personalised",
        userInfoHash: toBase64url(sha256(utf8(parsed.userInfo))),
        sealedUserInfo: this.platform.keyring.sealAtRest(utf8(parsed.userInfo), AT_REST.userInfo(id)),
        sealedZmk: this.platform.keyring.sealAtRest(zmk, AT_REST.zmk(id)),
        containers: parsed.containers,
        personalisedAt: now,
        resetAt: null,
        resetAcknowledgedAt: null,
        createdBy: actor,
        createdAt: now,
      });
      await this.audit({
        actor,
        action,
        subject: `zone:${id}`,
        outcome: "allow",
        details: { epoch: 1, containers: parsed.containers, handsetId: parsed.handsetId },
      });
      return await this.bundle(id, zmk, parsed.userInfo, 1)();
    } finally {
      zmk.fill(0);
    }
  }

  /** After a factory reset: the next user's info and a fresh ZMK, at the zone's new epoch. */
  async repersonaliseZone(
    zoneId: string,
    input: Record<string, unknown>,
    actor: string,
  ): Promise<ProvisioningBundle> {
    const action = "tsm.zone_personalised";
    const subject = `zone:${zoneId}`;
    const { zone, userInfo, handsetId } = await this.guarded({ actor, action, subject }, async () => {
      const zone = await store.findZone(this.db, zoneId);
      if (!zone) throw notFound("zone");
      if (zone.state === "personalised")
        throw tsmError("tsm.zone_personalised", "factory-reset the zone before personalising it again", 409);
      return {
        zone,
        userInfo: text(input["userInfo"], "userInfo", 1000),
        handsetId:
          input["handsetId"] === undefined ? zone.handsetId : text(input["handsetId"], "handsetId", 200),
      };
    });
    const zmk = randomBytes(KEY_LENGTH);
    try {
      const moved = await store.repersonaliseZone(
        this.db,
        zoneId,
        zone.epoch,
        {
          userInfoHash: toBase64url(sha256(utf8(userInfo))),
          sealedUserInfo: this.platform.keyring.sealAtRest(utf8(userInfo), AT_REST.userInfo(zoneId)),
          sealedZmk: this.platform.keyring.sealAtRest(zmk, AT_REST.zmk(zoneId)),
          handsetId,
        },
        this.now(),
      );
      if (!moved)
        return this.refuse(tsmError("tsm.conflict", "the zone changed meanwhile", 409), {
          actor,
          action,
          subject,
        });
      await this.audit({
        actor,
        action,
        subject,
        outcome: "allow",
        details: { epoch: zone.epoch, again: true },
      });
      return await this.bundle(zoneId, zmk, userInfo, zone.epoch)();
    } finally {
      zmk.fill(0);
    }
  }

  async requireZone(zoneId: string): Promise<store.ZoneRow> {
    const zone = await store.findZone(this.db, zoneId);
    if (!zone) throw notFound("zone");
    return zone;
  }

  async zoneView(zoneId: string, actor: string): Promise<Record<string, unknown>> {
    const zone = await this.guarded({ actor, action: "tsm.zone_viewed", subject: `zone:${zoneId}` }, () =>
      this.requireZone(zoneId),
    );
    const [containers, tokens] = await Promise.all([
      store.containersOf(this.db, zoneId),
      store.tokensOfZone(this.db, zoneId),
    ]);
    const byJti = new Map(tokens.map((t) => [t.jti, t]));
    const managers = new Map<string, string>();
    for (const c of containers)
      if (c.managerId !== null && !managers.has(c.managerId))
        managers.set(c.managerId, (await store.findManager(this.db, c.managerId))?.name ?? "?");
    return {
      zone: {
        zoneId: zone.id,
        handsetId: zone.handsetId,
        epoch: zone.epoch,
        state: zone.state,
        userInfoHash: zone.userInfoHash,
        containers: zone.containers,
        personalisedAt: zone.personalisedAt,
        resetAt: zone.resetAt,
        resetAcknowledgedAt: zone.resetAcknowledgedAt,
      },
      containers: containers.map((c) => {
        const t = c.jti === null ? undefined : byJti.get(c.jti);
        return {
          index: c.idx,
          state: c.state,
          managerId: c.managerId,
          managerName: c.managerId === null ? null : (managers.get(c.managerId) ?? null),
          jti: c.jti,
          notAfter: c.notAfter,
          maxAttempts: c.maxAttempts,
          bytes: c.bytes,
          tokenUses: t?.uses ?? null,
          tokenMaxUses: t?.maxUses ?? null,
        };
      }),
      tokens: tokens.map((t) => tokenStatusOf(t, this.now())),
      audit: await store.auditTrailOf(this.db, [`zone:${zoneId}`], 500),
    };
  }

  // --- tokens -------------------------------------------------------------------------------------

  /** The carrier issues a token for a validated manager: containers by index (free, or the manager's own: a renewal) or by count (free ones). */
  async issueToken(input: Record<string, unknown>, actor: string): Promise<Record<string, unknown>> {
    const managerId = typeof input["managerId"] === "string" ? input["managerId"] : "";
    const zoneId = typeof input["zoneId"] === "string" ? input["zoneId"] : "";
    const action = "tsm.token_issued";
    const subject = `zone:${zoneId}`;
    const now = this.now();
    const plan = await this.guarded({ actor, action, subject, details: { managerId } }, async () => {
      const manager = await store.findManager(this.db, managerId);
      if (!manager) throw notFound("manager");
      if (manager.state === "rejected")
        throw tsmError("tsm.manager_rejected", "this manager was rejected", 403);
      if (manager.state !== "validated")
        throw tsmError("tsm.manager_not_validated", "tokens go to validated managers only", 403);
      const zone = await this.requireZone(zoneId);
      if (zone.state !== "personalised")
        throw tsmError("zone.not_personalised", "the zone is not personalised", 409);
      const limitsIn = (input["limits"] ?? {}) as Record<string, unknown>;
      const limits = {
        containerSeconds: intIn(
          limitsIn["containerSeconds"],
          "limits.containerSeconds",
          1,
          366 * 86_400,
          86_400,
        ),
        maxAttempts: intIn(limitsIn["maxAttempts"], "limits.maxAttempts", 1, 100, 5),
      };
      const maxUses = intIn(input["maxUses"], "maxUses", 1, 1000, 1);
      const ttl = intIn(input["expiresInSeconds"], "expiresInSeconds", 1, 30 * 86_400, 3600);
      const inventory = await store.containersOf(this.db, zoneId);
      let containers: number[];
      if (input["containers"] !== undefined) {
        const asked = input["containers"];
        if (!Array.isArray(asked) || asked.length === 0 || asked.length > zone.containers)
          throw bad("containers is a non-empty list of container indexes");
        containers = asked.map((i) => intIn(i, "containers[]", 0, zone.containers - 1));
        if (new Set(containers).size !== containers.length) throw bad("a container is listed twice");
        for (const i of containers) {
          const c = inventory[i]!;
          if (!(c.state === "free" || (c.state === "bound" && c.managerId === manager.id)))
            throw tsmError("token.containers_taken", `container ${i} is not free`, 409);
        }
      } else {
        const count = intIn(input["count"], "count", 1, zone.containers, 1);
        const reserved = new Set<number>();
        for (const t of await store.tokensOfZone(this.db, zoneId))
          if (t.revokedAt === null && t.exp > now && t.uses < t.maxUses)
            for (const i of t.containers) reserved.add(i);
        containers = inventory
          .filter((c) => c.state === "free" && !reserved.has(c.idx))
          .map((c) => c.idx)
          .slice(0, count);
        if (containers.length < count)
          throw tsmError("tsm.no_free_containers", `only ${containers.length} free containers`, 409);
      }
      return { manager, zone, limits, maxUses, ttl, containers };
    });
    const iat = Math.floor(now / 1000);
    const claims: TokenClaims = {
      iss: TOKEN_ISSUER,
      sub: plan.manager.id,
      aud: plan.zone.id,
      jti: newTokenId(),
      iat,
      exp: iat + plan.ttl,
      maxUses: plan.maxUses,
      containers: plan.containers,
      limits: plan.limits,
    };
    const token = await this.withSigner((signer) => issueToken(claims, signer));
    await store.insertToken(this.db, {
      jti: claims.jti,
      managerId: claims.sub,
      zoneId: claims.aud,
      epoch: plan.zone.epoch,
      containers: claims.containers,
      limits: claims.limits,
      maxUses: claims.maxUses,
      uses: 0,
      exp: claims.exp * 1000,
      issuedBy: actor,
      issuedAt: now,
      lastUsedAt: null,
      revokedAt: null,
    });
    await this.audit({
      actor,
      action,
      subject,
      outcome: "allow",
      details: { managerId, jti: claims.jti, containers: claims.containers, maxUses: claims.maxUses },
    });
    return {
      token,
      jti: claims.jti,
      zoneId,
      managerId,
      containers: claims.containers,
      exp: claims.exp * 1000,
    };
  }

  /** Uses left, expiry, containers: spends nothing. Another manager's token answers like a missing one. */
  async tokenStatus(manager: store.ManagerRow, jti: string): Promise<Record<string, unknown>> {
    const t = await store.findToken(this.db, jti);
    if (!t || t.managerId !== manager.id)
      return this.refuse(notFound("token"), {
        actor: `manager:${manager.id}`,
        action: "tsm.token_status",
        details: { jti: jti.slice(0, 64), exists: t !== undefined },
      });
    const zone = await store.findZone(this.db, t.zoneId);
    return { ...tokenStatusOf(t, this.now()), epoch: zone?.epoch ?? t.epoch };
  }

  /**
   * The whole check of a presented token, in order: JWS and claims (protocol.ts verifyToken: token.invalid
   * / expired / wrong_zone / wrong_manager), then the server's record of it (unknown jti or claims that
   * differ: token.invalid; revoked, or of an epoch before a reset: token.revoked; uses spent: exhausted).
   */
  private async checkToken(
    tokenJws: unknown,
    ctx: { zoneId?: string; managerId?: string },
  ): Promise<{ claims: TokenClaims; row: store.TokenRow; zone: store.ZoneRow; tokenJws: string }> {
    if (typeof tokenJws !== "string") throw tsmError("token.invalid", "token must be a JWS string", 401);
    const aud = decodeJwsUnverified(tokenJws).payload["aud"];
    const zone = typeof aud === "string" ? await store.findZone(this.db, aud) : undefined;
    if (!zone) throw tsmError("token.invalid", "token names no known zone", 401);
    const now = this.now();
    const claims = verifyToken(tokenJws, await this.verificationKeys(), {
      now,
      zoneId: ctx.zoneId ?? zone.id,
      ...(ctx.managerId === undefined ? {} : { managerId: ctx.managerId }),
    });
    const row = await store.findToken(this.db, claims.jti);
    if (
      !row ||
      row.managerId !== claims.sub ||
      row.zoneId !== claims.aud ||
      JSON.stringify(row.containers) !== JSON.stringify(claims.containers)
    )
      throw tsmError("token.invalid", "token unknown to this server", 401);
    if (row.revokedAt !== null || row.epoch !== zone.epoch || zone.state !== "personalised")
      throw tsmError("token.revoked", "token was revoked", 401);
    if (row.uses >= row.maxUses) throw tsmError("token.exhausted", "token has no uses left", 401);
    return { claims, row, zone, tokenJws };
  }

  /** Why redeemToken refused (re-read after the compare-and-set missed). */
  private async redeemRefusal(jti: string): Promise<HandsafeError> {
    const row = await store.findToken(this.db, jti);
    if (row?.revokedAt !== null) return tsmError("token.revoked", "token was revoked", 401);
    if (row.exp <= this.now()) return tsmError("token.expired", "token has expired", 401);
    return tsmError("token.exhausted", "token has no uses left", 401);
  }

  /**
   * §4 server placement: check and redeem the token (one use, atomically), derive SK and each CK_i
   * from the zone's UK, record the containers as the manager's, queue the `bind` (or, for
   * containers it already holds, `renew`) signal, and return SK HPKE-sealed to the manager.
   */
  async serverSubKey(
    manager: store.ManagerRow,
    input: { token?: unknown; zoneId?: unknown },
  ): Promise<Record<string, unknown>> {
    const actor = `manager:${manager.id}`;
    const action = "tsm.subkey_generated";
    const peekAud = peekAudience(input.token);
    const entry = { actor, action, subject: `zone:${peekAud}` };
    await this.requireValidated(manager, action, entry.subject);
    const { claims, zone, tokenJws } = await this.guarded(entry, () =>
      this.checkToken(input.token, {
        ...(typeof input.zoneId === "string" ? { zoneId: input.zoneId } : {}),
        managerId: manager.id,
      }),
    );
    const now = this.now();
    const notAfter = now + claims.limits.containerSeconds * 1000;
    // SK, CK_i and ZAK exist only inside this block; every buffer is wiped in its finally.
    const prepared = this.withUserKey(zone, (uk) => {
      const material = generateSubKeyMaterial(uk, tokenJws, claims.containers);
      const zak = deriveZoneAdminKey(uk);
      return { material, zak };
    });
    const { material, zak } = prepared;
    try {
      const sealed = sealSubKeyForManager(material.sk, manager.x25519PublicKey, claims.jti);
      const outcome = await this.db
        .transaction()
        .execute(async (trx) => {
          if (!(await store.redeemToken(trx, claims.jti, now))) throw new RedeemMissed();
          const before = await store.containersOf(trx, zone.id);
          const renewing = claims.containers.filter(
            (i) => before[i]?.state === "bound" && before[i]?.managerId === manager.id,
          );
          const moved = await store.bindContainers(
            trx,
            zone.id,
            claims.containers,
            { managerId: manager.id, jti: claims.jti, notAfter, maxAttempts: claims.limits.maxAttempts },
            now,
          );
          if (moved !== claims.containers.length) throw new ContainersTaken();
          const seqs: number[] = [];
          for (const type of ["bind", "renew"] as const) {
            const group = material.containers.filter(
              (c) => renewing.includes(c.index) === (type === "renew"),
            );
            if (group.length === 0) continue;
            const seq = await store.takeSignalSeq(trx, zone.id, now);
            const { signal, mac } = buildKeyedSignal({
              zak,
              zoneId: zone.id,
              epoch: zone.epoch,
              seq,
              type,
              managerId: manager.id,
              jti: claims.jti,
              containerKeys: group,
              notAfter,
              maxAttempts: claims.limits.maxAttempts,
            });
            await this.insertSignal(trx, signal, mac, now);
            seqs.push(seq);
          }
          await this.audit(
            {
              ...entry,
              outcome: "allow",
              details: { jti: claims.jti, containers: claims.containers, renewed: renewing, seqs, notAfter },
            },
            trx,
          );
          return { renewing };
        })
        .catch(async (e: unknown) => {
          if (e instanceof RedeemMissed) return this.refuse(await this.redeemRefusal(claims.jti), entry);
          if (e instanceof ContainersTaken)
            return this.refuse(
              tsmError("token.containers_taken", "a container of this token is taken", 409),
              entry,
            );
          throw e;
        });
      return {
        jti: claims.jti,
        zoneId: zone.id,
        epoch: zone.epoch,
        containers: claims.containers,
        renewed: outcome.renewing,
        notAfter,
        keyChecks: Object.fromEntries(
          material.containers.map((c) => [String(c.index), toBase64url(c.keyCheck)]),
        ),
        sealedSubKey: { enc: toBase64url(sealed.enc), ciphertext: toBase64url(sealed.ciphertext) },
      };
    } finally {
      material.sk.fill(0);
      for (const c of material.containers) c.ck.fill(0);
      zak.fill(0);
    }
  }

  /** §4 handset placement: the zone generated SK itself; the server counts the use and records occupancy. */
  async zoneRedeem(zone: store.ZoneRow, jti: string, tokenJws: unknown): Promise<Record<string, unknown>> {
    const actor = `zone:${zone.id}`;
    const entry = {
      actor,
      action: "tsm.token_redeemed",
      subject: `zone:${zone.id}`,
      details: { jti: jti.slice(0, 64) },
    };
    const { claims } = await this.guarded(entry, async () => {
      const checked = await this.checkToken(tokenJws, { zoneId: zone.id });
      if (checked.claims.jti !== jti) throw tsmError("token.invalid", "the token is not the one named", 401);
      const manager = await store.findManager(this.db, checked.claims.sub);
      if (manager?.state !== "validated")
        throw tsmError("tsm.manager_not_validated", "the token's manager is not validated", 403);
      return checked;
    });
    const now = this.now();
    const notAfter = now + claims.limits.containerSeconds * 1000;
    await this.db
      .transaction()
      .execute(async (trx) => {
        if (!(await store.redeemToken(trx, jti, now))) throw new RedeemMissed();
        const moved = await store.bindContainers(
          trx,
          zone.id,
          claims.containers,
          { managerId: claims.sub, jti, notAfter, maxAttempts: claims.limits.maxAttempts },
          now,
        );
        if (moved !== claims.containers.length) throw new ContainersTaken();
        await this.audit(
          { ...entry, outcome: "allow", details: { jti, containers: claims.containers, notAfter } },
          trx,
        );
      })
      .catch(async (e: unknown) => {
        if (e instanceof RedeemMissed) return this.refuse(await this.redeemRefusal(jti), entry);
        if (e instanceof ContainersTaken)
          return this.refuse(
            tsmError("token.containers_taken", "a container of this token is taken", 409),
            entry,
          );
        throw e;
      });
    const row = await store.findToken(this.db, jti);
    return { jti, containers: claims.containers, notAfter, usesLeft: row ? row.maxUses - row.uses : 0 };
  }

  // --- signals --------------------------------------------------------------------------------------

  private async insertSignal(db: store.Db, signal: ZoneSignal, mac: Uint8Array, now: number): Promise<void> {
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

  /**
   * Frees containers (by index, or every one a manager holds in the zone), queues a `reclaim`
   * signal, revokes the affected managers' unspent tokens on them, fails relayed commands still
   * waiting for them, and tells each manager (webhook). Free containers are left as they are.
   */
  async reclaim(
    zoneId: string,
    sel: { containers?: unknown; managerId?: unknown },
    actor: string,
    reason: "carrier" | "expired",
  ): Promise<{ containers: number[] }> {
    const action = "tsm.containers_reclaimed";
    const subject = `zone:${zoneId}`;
    const { zone, idxs, managerId } = await this.guarded({ actor, action, subject }, async () => {
      const zone = await this.requireZone(zoneId);
      if (zone.state !== "personalised")
        throw tsmError("zone.not_personalised", "the zone is not personalised", 409);
      let idxs: number[] | undefined;
      if (sel.containers !== undefined) {
        if (!Array.isArray(sel.containers)) throw bad("containers is a list of indexes");
        idxs = sel.containers.map((i) => intIn(i, "containers[]", 0, zone.containers - 1));
      }
      const managerId = sel.managerId === undefined ? undefined : text(sel.managerId, "managerId", 100);
      if (idxs === undefined && managerId === undefined) throw bad("name containers, a managerId, or both");
      return { zone, idxs, managerId };
    });
    const now = this.now();
    const zak = this.withUserKey(zone, (uk) => deriveZoneAdminKey(uk));
    try {
      const freed = await this.db.transaction().execute(async (trx) => {
        const freed = await store.freeContainers(
          trx,
          zone.id,
          idxs,
          now,
          managerId === undefined ? {} : { managerId },
        );
        if (freed.length === 0) return freed;
        const indexes = freed.map((c) => c.idx);
        const seq = await store.takeSignalSeq(trx, zone.id, now);
        const { signal, mac } = buildFreeingSignal({
          zak,
          zoneId: zone.id,
          epoch: zone.epoch,
          seq,
          type: "reclaim",
          containers: indexes,
        });
        await this.insertSignal(trx, signal, mac, now);
        await store.failQueuedRelay(trx, zone.id, indexes, "zone.reclaimed", now);
        for (const t of await store.tokensOfZone(trx, zone.id))
          if (
            t.revokedAt === null &&
            t.uses < t.maxUses &&
            freed.some((c) => c.managerId === t.managerId) &&
            t.containers.some((i) => indexes.includes(i))
          )
            await store.revokeToken(trx, t.jti, now);
        await this.audit(
          {
            actor,
            action,
            subject,
            outcome: "allow",
            details: { containers: indexes, reason, seq, managerId: managerId ?? null },
          },
          trx,
        );
        return freed;
      });
      const byManager = new Map<string, number[]>();
      for (const c of freed)
        if (c.managerId !== null) byManager.set(c.managerId, [...(byManager.get(c.managerId) ?? []), c.idx]);
      for (const [m, containers] of byManager)
        await this.tellManager(
          m,
          { type: "tsm.containers_reclaimed", zoneId, containers, reason, at: now },
          subject,
        );
      return { containers: freed.map((c) => c.idx) };
    } finally {
      zak.fill(0);
    }
  }

  /**
   * Factory reset: epoch + 1, every container freed, every token of the zone revoked, waiting
   * commands failed, unapplied signals of the old epoch dropped. The zone (wiped by its owner or on
   * the carrier's order) acknowledges with a `reset` report; then the zone is personalised again.
   */
  async resetZone(zoneId: string, actor: string): Promise<{ zoneId: string; epoch: number; state: string }> {
    const action = "tsm.zone_reset";
    const subject = `zone:${zoneId}`;
    const zone = await this.guarded({ actor, action, subject }, () => this.requireZone(zoneId));
    const now = this.now();
    const freed = await this.db.transaction().execute(async (trx) => {
      if (!(await store.beginZoneReset(trx, zoneId, zone.epoch, now)))
        throw tsmError("tsm.conflict", "the zone changed meanwhile", 409);
      const freed = await store.freeContainers(trx, zoneId, undefined, now);
      const revoked = await store.revokeTokensOfZone(trx, zoneId, now);
      await store.failQueuedRelay(trx, zoneId, undefined, "zone.reset", now);
      await store.retireSignalsBefore(trx, zoneId, zone.epoch + 1, now);
      await this.audit(
        {
          actor,
          action,
          subject,
          outcome: "allow",
          details: { fromEpoch: zone.epoch, epoch: zone.epoch + 1, freed: freed.length, revoked },
        },
        trx,
      );
      return freed;
    });
    const managers = new Set(freed.map((c) => c.managerId).filter((m): m is string => m !== null));
    for (const m of managers) await this.tellManager(m, { type: "tsm.zone_reset", zoneId, at: now }, subject);
    return { zoneId, epoch: zone.epoch + 1, state: "resetting" };
  }

  /** What the zone pulls: unapplied signals (MAC'd with ZAK) and the relayed commands waiting for it. */
  async zoneInbox(zone: store.ZoneRow): Promise<Record<string, unknown>> {
    const [signals, relay] = await Promise.all([
      zone.state === "personalised" ? store.pendingSignals(this.db, zone.id, 100) : Promise.resolve([]),
      zone.state === "personalised" ? store.queuedRelay(this.db, zone.id, 100) : Promise.resolve([]),
    ]);
    return {
      zoneId: zone.id,
      epoch: zone.epoch,
      state: zone.state,
      signals: signals.map((s) => ({ signal: s.body, mac: s.mac })),
      relay: relay.map((r) => ({
        id: r.id,
        command: r.package === null ? r.command : { ...r.command, package: toBase64url(r.package) },
        proof: r.proof,
      })),
    };
  }

  /** The zone's report: signals applied or refused, relay answers, locked and wiped containers, reset done. */
  async zoneReport(zone: store.ZoneRow, report: ZoneReport): Promise<{ ok: true }> {
    const actor = `zone:${zone.id}`;
    const subject = `zone:${zone.id}`;
    const now = this.now();
    if (report.reset !== undefined) {
      const acked = await store.acknowledgeZoneReset(this.db, zone.id, report.reset.epoch, now);
      await this.audit({
        actor,
        action: "tsm.zone_reset_acknowledged",
        subject,
        outcome: acked ? "allow" : "deny",
        details: { epoch: report.reset.epoch },
      });
    }
    if (zone.state !== "personalised") return { ok: true };
    if (report.applied !== undefined) {
      const n = await store.markSignalsApplied(this.db, zone.id, report.applied, now);
      if (n > 0)
        await this.audit({
          actor,
          action: "tsm.signals_applied",
          subject,
          outcome: "info",
          details: { upTo: report.applied, count: n },
        });
    }
    for (const r of report.rejected ?? [])
      await this.audit({
        actor,
        action: "tsm.signal_rejected",
        subject,
        outcome: "error",
        details: { seq: r.seq, code: r.code },
      });
    for (const r of report.relay ?? []) {
      const row = await store.findRelay(this.db, r.id);
      if (!row || row.zoneId !== zone.id) continue;
      const done = await store.finishRelay(
        this.db,
        r.id,
        zone.id,
        r.ok
          ? { state: "done", result: r.result ?? {}, resultPackage: null, errorCode: null }
          : { state: "failed", result: null, resultPackage: null, errorCode: r.code ?? "zone.failed" },
        now,
      );
      if (!done) continue;
      if (r.ok && typeof r.result?.["bytes"] === "number")
        await store.setContainerBytes(this.db, zone.id, row.idx, r.result["bytes"] as number, now);
      await this.audit({
        actor,
        action: "tsm.relay_answered",
        subject,
        outcome: r.ok ? "allow" : "deny",
        details: {
          relayId: r.id,
          op: row.op,
          container: row.idx,
          managerId: row.managerId,
          ...(r.ok ? {} : { code: r.code ?? "zone.failed" }),
        },
      });
    }
    for (const idx of report.locked ?? []) {
      const c = await store.findContainer(this.db, zone.id, idx);
      if (!c || !(await store.lockContainer(this.db, zone.id, idx, now))) continue;
      await this.audit({
        actor,
        action: "tsm.container_locked",
        subject,
        outcome: "info",
        details: { container: idx, managerId: c.managerId },
      });
      if (c.managerId !== null)
        await this.tellManager(
          c.managerId,
          { type: "tsm.container_locked", zoneId: zone.id, containers: [idx], at: now },
          subject,
        );
    }
    if ((report.wiped ?? []).length > 0)
      await this.audit({
        actor,
        action: "tsm.containers_wiped",
        subject,
        outcome: "info",
        details: { containers: report.wiped ?? [] },
      });
    return { ok: true };
  }

  // --- relay ----------------------------------------------------------------------------------------

  /**
   * A manager's package command for one of its bound containers, queued for the zone with its proof
   * (HMAC under CK_i, checked by the zone: the server cannot make one). The server checks only who
   * asks: the container must be this manager's, bound, unlocked and within its limit.
   */
  async queueRelay(
    manager: store.ManagerRow,
    target: { zoneId: string; container: number; op: store.RelayOp; name: string | null },
    commandIn: unknown,
    proof: unknown,
  ): Promise<RelayView> {
    const actor = `manager:${manager.id}`;
    const action = `tsm.relay_${target.op}`;
    const subject = `zone:${target.zoneId}`;
    const entry = { actor, action, subject, details: { container: target.container, name: target.name } };
    await this.requireValidated(manager, action, subject);
    const { command, sealed } = await this.guarded(entry, async () => {
      const zone = await store.findZone(this.db, target.zoneId);
      const c = zone ? await store.findContainer(this.db, zone.id, target.container) : undefined;
      if (!zone || !c || c.managerId !== manager.id || c.state === "free")
        throw tsmError("tsm.forbidden", "this container is not yours", 403);
      if (zone.state !== "personalised")
        throw tsmError("zone.not_personalised", "the zone is not personalised", 409);
      if (c.state === "locked") throw tsmError("zone.locked", "this container is locked", 423);
      if (c.notAfter !== null && c.notAfter <= this.now())
        throw tsmError("zone.expired", "this container's limit has passed", 410);
      let command: RelayCommand;
      try {
        command = parseRelayCommand(typeof commandIn === "string" ? JSON.parse(commandIn) : commandIn);
      } catch (e) {
        if (e instanceof HandsafeError) throw e;
        throw tsmError("zone.relay_invalid", "the command is not JSON", 400);
      }
      if (
        command.op !== target.op ||
        command.zoneId !== zone.id ||
        command.container !== target.container ||
        (command.name ?? null) !== target.name ||
        command.epoch !== zone.epoch
      )
        throw tsmError("zone.relay_invalid", "the command does not match the request", 400);
      if (typeof proof !== "string" || !/^[A-Za-z0-9_-]{43}$/.test(proof))
        throw tsmError("zone.relay_invalid", "proof is base64url HMAC-SHA256", 400);
      let sealed: Uint8Array | null = null;
      if (command.package !== undefined)
        try {
          sealed = fromBase64url(command.package, "package");
        } catch {
          throw tsmError("zone.relay_invalid", "package is base64url", 400);
        }
      return { command, sealed };
    });
    const now = this.now();
    const id = newId("rly");
    await store.insertRelay(this.db, {
      id,
      zoneId: target.zoneId,
      epoch: command.epoch,
      managerId: manager.id,
      idx: target.container,
      op: target.op,
      name: target.name,
      // The sealed package waits in its own column (dropped once the zone answers), not in the command.
      command: Object.fromEntries(Object.entries(command).filter(([k]) => k !== "package")),
      package: sealed,
      proof: proof as string,
      state: "queued",
      result: null,
      resultPackage: null,
      errorCode: null,
      createdAt: now,
      updatedAt: now,
    });
    await this.audit({ ...entry, outcome: "allow", details: { ...entry.details, relayId: id } });
    return {
      relayId: id,
      state: "queued",
      op: target.op,
      zoneId: target.zoneId,
      container: target.container,
      name: target.name,
    };
  }

  /** A relayed command's state for its manager, waiting up to `waitMs` (real time) for the zone's answer. */
  async relayStatus(manager: store.ManagerRow, id: string, waitMs: number): Promise<RelayView> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const row = await store.findRelay(this.db, id);
      if (!row || row.managerId !== manager.id)
        return this.refuse(notFound("relayed command"), {
          actor: `manager:${manager.id}`,
          action: "tsm.relay_status",
          details: { relayId: id.slice(0, 64) },
        });
      if (row.state !== "queued" || Date.now() >= deadline) return relayViewOf(row);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  // --- notifications --------------------------------------------------------------------------------

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

class RedeemMissed extends Error {}
class ContainersTaken extends Error {}

function peekAudience(token: unknown): string {
  if (typeof token !== "string") return "?";
  try {
    const aud = decodeJwsUnverified(token).payload["aud"];
    return typeof aud === "string" ? aud.slice(0, 100) : "?";
  } catch {
    return "?";
  }
}

export function tokenStatusOf(t: store.TokenRow, now: number): Record<string, unknown> {
  return {
    jti: t.jti,
    managerId: t.managerId,
    zoneId: t.zoneId,
    containers: t.containers,
    limits: t.limits,
    maxUses: t.maxUses,
    uses: t.uses,
    usesLeft: Math.max(0, t.maxUses - t.uses),
    exp: t.exp,
    expired: t.exp <= now,
    revoked: t.revokedAt !== null,
  };
}

export function relayViewOf(row: store.RelayRow): RelayView {
  return {
    relayId: row.id,
    state: row.state,
    op: row.op,
    zoneId: row.zoneId,
    container: row.idx,
    name: row.name,
    ...(row.result === null ? {} : { result: row.result }),
    ...(row.errorCode === null ? {} : { error: { code: row.errorCode } }),
  };
}
