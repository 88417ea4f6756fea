/**
 * Zones (docs/protocols/trustzone.md §2, §7): personalisation (a fresh ZMK, epoch 1) and
 * re-personalisation after a reset, the carrier's container map, reclaiming containers (a `reclaim`
 * signal, tokens revoked, waiting commands failed, managers told) and the factory reset.
 */
import { toBase64url } from "../core/codec/base64url.ts";
import { utf8 } from "../core/codec/bytes.ts";
import { sha256 } from "../core/crypto/index.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { buildFreeingSignal, deriveZoneAdminKey, KEY_LENGTH } from "./protocol.ts";
import {
  AT_REST,
  bad,
  intIn,
  newId,
  notFound,
  type TrustzoneCore,
  text,
  tsmError,
} from "./service-context.ts";
import * as store from "./store.ts";
import { tokenStatusOf } from "./tokens.ts";

/** Thrown inside the reset transaction when the zone's epoch or state moved meanwhile. */
class ZoneChanged extends Error {}

export const DEFAULT_CONTAINERS = 8;
export const MAX_CONTAINERS = 64;

export interface ProvisioningBundle {
  zoneId: string;
  /** base64url; shown once, for the handset's zone only. */
  zmk: string;
  userInfo: string;
  epoch: number;
  trustZonePublicKeys: Array<{ kid: string; publicKey: string }>;
}

export function provisioningBundle(
  svc: TrustzoneCore,
  zoneId: string,
  zmk: Uint8Array,
  userInfo: string,
  epoch: number,
) {
  return async (): Promise<ProvisioningBundle> => ({
    zoneId,
    zmk: toBase64url(zmk),
    userInfo,
    epoch,
    trustZonePublicKeys: (await svc.publicKeys()).map(({ kid, publicKey }) => ({ kid, publicKey })),
  });
}

/** A new zone with a fresh ZMK at epoch 1, `containers` free containers. */
export async function personaliseZone(
  svc: TrustzoneCore,
  input: Record<string, unknown>,
  actor: string,
): Promise<ProvisioningBundle> {
  const action = "tsm.zone_personalised";
  const parsed = await svc.guarded({ actor, action }, async () => ({
    userInfo: text(input["userInfo"], "userInfo", 1000),
    handsetId: input["handsetId"] === undefined ? null : text(input["handsetId"], "handsetId", 200),
    containers: intIn(input["containers"], "containers", 1, MAX_CONTAINERS, DEFAULT_CONTAINERS),
  }));
  const id = newId("zone");
  const zmk = randomBytes(KEY_LENGTH);
  const now = svc.now();
  try {
    await store.insertZone(svc.db, {
      id,
      handsetId: parsed.handsetId,
      epoch: 1,
      state: "personalised",
      userInfoHash: toBase64url(sha256(utf8(parsed.userInfo))),
      sealedUserInfo: svc.platform.keyring.sealAtRest(utf8(parsed.userInfo), AT_REST.userInfo(id)),
      sealedZmk: svc.platform.keyring.sealAtRest(zmk, AT_REST.zmk(id)),
      containers: parsed.containers,
      personalisedAt: now,
      resetAt: null,
      resetAcknowledgedAt: null,
      createdBy: actor,
      createdAt: now,
    });
    await svc.audit({
      actor,
      action,
      subject: `zone:${id}`,
      outcome: "allow",
      details: { epoch: 1, containers: parsed.containers, handsetId: parsed.handsetId },
    });
    return await provisioningBundle(svc, id, zmk, parsed.userInfo, 1)();
  } finally {
    zmk.fill(0);
  }
}

/** After a factory reset: the next user's info and a fresh ZMK, at the zone's new epoch. */
export async function repersonaliseZone(
  svc: TrustzoneCore,
  zoneId: string,
  input: Record<string, unknown>,
  actor: string,
): Promise<ProvisioningBundle> {
  const action = "tsm.zone_personalised";
  const subject = `zone:${zoneId}`;
  const { zone, userInfo, handsetId } = await svc.guarded({ actor, action, subject }, async () => {
    const zone = await store.findZone(svc.db, zoneId);
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
      svc.db,
      zoneId,
      zone.epoch,
      {
        userInfoHash: toBase64url(sha256(utf8(userInfo))),
        sealedUserInfo: svc.platform.keyring.sealAtRest(utf8(userInfo), AT_REST.userInfo(zoneId)),
        sealedZmk: svc.platform.keyring.sealAtRest(zmk, AT_REST.zmk(zoneId)),
        handsetId,
      },
      svc.now(),
    );
    if (!moved)
      return svc.refuse(tsmError("tsm.conflict", "the zone changed meanwhile", 409), {
        actor,
        action,
        subject,
      });
    await svc.audit({
      actor,
      action,
      subject,
      outcome: "allow",
      details: { epoch: zone.epoch, again: true },
    });
    return await provisioningBundle(svc, zoneId, zmk, userInfo, zone.epoch)();
  } finally {
    zmk.fill(0);
  }
}

export async function zoneView(
  svc: TrustzoneCore,
  zoneId: string,
  actor: string,
): Promise<Record<string, unknown>> {
  const zone = await svc.guarded({ actor, action: "tsm.zone_viewed", subject: `zone:${zoneId}` }, () =>
    svc.requireZone(zoneId),
  );
  const [containers, tokens] = await Promise.all([
    store.containersOf(svc.db, zoneId),
    store.tokensOfZone(svc.db, zoneId),
  ]);
  const byJti = new Map(tokens.map((t) => [t.jti, t]));
  const managers = new Map<string, string>();
  for (const c of containers)
    if (c.managerId !== null && !managers.has(c.managerId))
      managers.set(c.managerId, (await store.findManager(svc.db, c.managerId))?.name ?? "?");
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
    tokens: tokens.map((t) => tokenStatusOf(t, svc.now())),
    audit: await store.auditTrailOf(svc.db, [`zone:${zoneId}`], 500),
  };
}

/**
 * Frees containers (by index, or every one a manager holds in the zone), queues a `reclaim`
 * signal, revokes the affected managers' unspent tokens on them, fails relayed commands still
 * waiting for them, and tells each manager (webhook). Free containers are left as they are.
 */
export async function reclaimContainers(
  svc: TrustzoneCore,
  zoneId: string,
  sel: { containers?: unknown; managerId?: unknown },
  actor: string,
  reason: "carrier" | "expired",
): Promise<{ containers: number[] }> {
  const action = "tsm.containers_reclaimed";
  const subject = `zone:${zoneId}`;
  const { zone, idxs, managerId } = await svc.guarded({ actor, action, subject }, async () => {
    const zone = await svc.requireZone(zoneId);
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
  const now = svc.now();
  const zak = svc.withUserKey(zone, (uk) => deriveZoneAdminKey(uk));
  try {
    const freed = await svc.db.transaction().execute(async (trx) => {
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
      await svc.insertSignal(trx, signal, mac, now);
      await store.failQueuedRelay(trx, zone.id, indexes, "zone.reclaimed", now);
      for (const t of await store.tokensOfZone(trx, zone.id))
        if (
          t.revokedAt === null &&
          t.uses < t.maxUses &&
          freed.some((c) => c.managerId === t.managerId) &&
          t.containers.some((i) => indexes.includes(i))
        )
          await store.revokeToken(trx, t.jti, now);
      await svc.audit(
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
      await svc.tellManager(
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
export async function resetZone(
  svc: TrustzoneCore,
  zoneId: string,
  actor: string,
): Promise<{ zoneId: string; epoch: number; state: string }> {
  const action = "tsm.zone_reset";
  const subject = `zone:${zoneId}`;
  const zone = await svc.guarded({ actor, action, subject }, () => svc.requireZone(zoneId));
  const now = svc.now();
  if (zone.state !== "personalised") {
    // Already reset: a second bump would leave the zone holding keys of an epoch (zone.epoch - 1)
    // that no longer matches what the server accepts while resetting, so it could never acknowledge.
    await svc.audit({ actor, action, subject, outcome: "info", details: { epoch: zone.epoch, again: true } });
    return { zoneId, epoch: zone.epoch, state: zone.state };
  }
  const freed = await svc.db
    .transaction()
    .execute(async (trx) => {
      if (!(await store.beginZoneReset(trx, zoneId, zone.epoch, now))) throw new ZoneChanged();
      const freed = await store.freeContainers(trx, zoneId, undefined, now);
      const revoked = await store.revokeTokensOfZone(trx, zoneId, now);
      await store.failQueuedRelay(trx, zoneId, undefined, "zone.reset", now);
      await store.retireSignalsBefore(trx, zoneId, zone.epoch + 1, now);
      await svc.audit(
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
    })
    .catch((e: unknown) => {
      if (e instanceof ZoneChanged)
        return svc.refuse(tsmError("tsm.conflict", "the zone changed meanwhile", 409), {
          actor,
          action,
          subject,
        });
      throw e;
    });
  const managers = new Set(freed.map((c) => c.managerId).filter((m): m is string => m !== null));
  for (const m of managers) await svc.tellManager(m, { type: "tsm.zone_reset", zoneId, at: now }, subject);
  return { zoneId, epoch: zone.epoch + 1, state: "resetting" };
}
