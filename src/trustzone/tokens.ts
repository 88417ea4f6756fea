/**
 * Tokens (docs/protocols/trustzone.md §3): the carrier issues them (containers by index or by
 * count, none reserved by another live token), a manager reads their status without spending a
 * use, and every presented token is checked against the server's record before a use is counted
 * (atomically: compare-and-set on `uses`). The handset placement's redeem lives here too.
 */

import type { HandsafeError } from "../core/errors.ts";
import { decodeJwsUnverified } from "../core/jws.ts";
import { issueToken, newTokenId, TOKEN_ISSUER, type TokenClaims, verifyToken } from "./protocol.ts";
import { bad, intIn, notFound, type TrustzoneCore, tsmError } from "./service-context.ts";
import * as store from "./store.ts";

/** Thrown inside a transaction when the compare-and-set on a token's uses missed. */
export class RedeemMissed extends Error {}
/** Thrown inside a transaction when a container of the token was bound meanwhile. */
export class ContainersTaken extends Error {}

export const containersTaken = () =>
  tsmError("token.containers_taken", "a container of this token is taken", 409);

/** The `aud` of a token, unverified, for the audit subject of a refusal ("?" when none). */
export function peekAudience(token: unknown): string {
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

/** The carrier issues a token for a validated manager: containers by index (free, or the manager's own: a renewal) or by count (free ones). */
export async function issueTokenFor(
  svc: TrustzoneCore,
  input: Record<string, unknown>,
  actor: string,
): Promise<Record<string, unknown>> {
  const managerId = typeof input["managerId"] === "string" ? input["managerId"] : "";
  const zoneId = typeof input["zoneId"] === "string" ? input["zoneId"] : "";
  const action = "tsm.token_issued";
  const subject = `zone:${zoneId}`;
  const now = svc.now();
  const plan = await svc.guarded({ actor, action, subject, details: { managerId } }, async () => {
    const manager = await store.findManager(svc.db, managerId);
    if (!manager) throw notFound("manager");
    if (manager.state === "rejected")
      throw tsmError("tsm.manager_rejected", "this manager was rejected", 403);
    if (manager.state !== "validated")
      throw tsmError("tsm.manager_not_validated", "tokens go to validated managers only", 403);
    const zone = await svc.requireZone(zoneId);
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
    const inventory = await store.containersOf(svc.db, zoneId);
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
      for (const t of await store.tokensOfZone(svc.db, zoneId))
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
  const token = await svc.withSigner((signer) => issueToken(claims, signer));
  await store.insertToken(svc.db, {
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
  await svc.audit({
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
export async function tokenStatus(
  svc: TrustzoneCore,
  manager: store.ManagerRow,
  jti: string,
): Promise<Record<string, unknown>> {
  const t = await store.findToken(svc.db, jti);
  if (!t || t.managerId !== manager.id)
    return svc.refuse(notFound("token"), {
      actor: `manager:${manager.id}`,
      action: "tsm.token_status",
      details: { jti: jti.slice(0, 64), exists: t !== undefined },
    });
  const zone = await store.findZone(svc.db, t.zoneId);
  return { ...tokenStatusOf(t, svc.now()), epoch: zone?.epoch ?? t.epoch };
}

/**
 * The whole check of a presented token, in order: JWS and claims (protocol.ts verifyToken: token.invalid
 * / expired / wrong_zone / wrong_manager), then the server's record of it (unknown jti or claims that
 * differ: token.invalid; revoked, or of an epoch before a reset: token.revoked; uses spent: exhausted).
 */
export async function checkToken(
  svc: TrustzoneCore,
  tokenJws: unknown,
  ctx: { zoneId?: string; managerId?: string },
): Promise<{ claims: TokenClaims; row: store.TokenRow; zone: store.ZoneRow; tokenJws: string }> {
  if (typeof tokenJws !== "string") throw tsmError("token.invalid", "token must be a JWS string", 401);
  const aud = decodeJwsUnverified(tokenJws).payload["aud"];
  const zone = typeof aud === "string" ? await store.findZone(svc.db, aud) : undefined;
  if (!zone) throw tsmError("token.invalid", "token names no known zone", 401);
  const now = svc.now();
  const claims = verifyToken(tokenJws, await svc.verificationKeys(), {
    now,
    zoneId: ctx.zoneId ?? zone.id,
    ...(ctx.managerId === undefined ? {} : { managerId: ctx.managerId }),
  });
  const row = await store.findToken(svc.db, claims.jti);
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
export async function redeemRefusal(svc: TrustzoneCore, jti: string): Promise<HandsafeError> {
  const row = await store.findToken(svc.db, jti);
  if (row?.revokedAt !== null) return tsmError("token.revoked", "token was revoked", 401);
  if (row.exp <= svc.now()) return tsmError("token.expired", "token has expired", 401);
  return tsmError("token.exhausted", "token has no uses left", 401);
}

/** §4 handset placement: the zone generated SK itself; the server counts the use and records occupancy. */
export async function zoneRedeem(
  svc: TrustzoneCore,
  zone: store.ZoneRow,
  jti: string,
  tokenJws: unknown,
): Promise<Record<string, unknown>> {
  const actor = `zone:${zone.id}`;
  const entry = {
    actor,
    action: "tsm.token_redeemed",
    subject: `zone:${zone.id}`,
    details: { jti: jti.slice(0, 64) },
  };
  const { claims } = await svc.guarded(entry, async () => {
    const checked = await checkToken(svc, tokenJws, { zoneId: zone.id });
    if (checked.claims.jti !== jti) throw tsmError("token.invalid", "the token is not the one named", 401);
    const manager = await store.findManager(svc.db, checked.claims.sub);
    if (manager?.state !== "validated")
      throw tsmError("tsm.manager_not_validated", "the token's manager is not validated", 403);
    return checked;
  });
  const now = svc.now();
  const notAfter = now + claims.limits.containerSeconds * 1000;
  await svc.db
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
      await svc.audit(
        { ...entry, outcome: "allow", details: { jti, containers: claims.containers, notAfter } },
        trx,
      );
    })
    .catch(async (e: unknown) => {
      if (e instanceof RedeemMissed) return svc.refuse(await redeemRefusal(svc, jti), entry);
      if (e instanceof ContainersTaken) return svc.refuse(containersTaken(), entry);
      throw e;
    });
  const row = await store.findToken(svc.db, jti);
  return { jti, containers: claims.containers, notAfter, usesLeft: row ? row.maxUses - row.uses : 0 };
}
