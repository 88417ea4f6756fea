/**
 * §4 server placement of the sub-key generator (docs/protocols/trustzone.md): check and redeem the
 * token, derive SK and each CK_i from the zone's UK, bind the containers, queue the bind/renew
 * signal, and return SK HPKE-sealed to the manager. The server holds SK only during this call.
 */
import { toBase64url } from "../core/codec/base64url.ts";
import {
  buildKeyedSignal,
  deriveZoneAdminKey,
  generateSubKeyMaterial,
  sealSubKeyForManager,
} from "./protocol.ts";
import type { TrustzoneCore } from "./service-context.ts";
import * as store from "./store.ts";
import {
  ContainersTaken,
  checkToken,
  containersTaken,
  peekAudience,
  RedeemMissed,
  redeemRefusal,
} from "./tokens.ts";

/**
 * §4 server placement: check and redeem the token (one use, atomically), derive SK and each CK_i
 * from the zone's UK, record the containers as the manager's, queue the `bind` (or, for
 * containers it already holds, `renew`) signal, and return SK HPKE-sealed to the manager.
 */
export async function serverSubKey(
  svc: TrustzoneCore,
  manager: store.ManagerRow,
  input: { token?: unknown; zoneId?: unknown },
): Promise<Record<string, unknown>> {
  const actor = `manager:${manager.id}`;
  const action = "tsm.subkey_generated";
  const peekAud = peekAudience(input.token);
  const entry = { actor, action, subject: `zone:${peekAud}` };
  await svc.requireValidated(manager, action, entry.subject);
  const { claims, zone, tokenJws } = await svc.guarded(entry, () =>
    checkToken(svc, input.token, {
      ...(typeof input.zoneId === "string" ? { zoneId: input.zoneId } : {}),
      managerId: manager.id,
    }),
  );
  const now = svc.now();
  const notAfter = now + claims.limits.containerSeconds * 1000;
  // SK, CK_i and ZAK exist only inside this block; every buffer is wiped in its finally.
  const prepared = svc.withUserKey(zone, (uk) => {
    const material = generateSubKeyMaterial(uk, tokenJws, claims.containers);
    const zak = deriveZoneAdminKey(uk);
    return { material, zak };
  });
  const { material, zak } = prepared;
  try {
    const sealed = sealSubKeyForManager(material.sk, manager.x25519PublicKey, claims.jti);
    const outcome = await svc.db
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
          const group = material.containers.filter((c) => renewing.includes(c.index) === (type === "renew"));
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
          await svc.insertSignal(trx, signal, mac, now);
          seqs.push(seq);
        }
        await svc.audit(
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
        if (e instanceof RedeemMissed) return svc.refuse(await redeemRefusal(svc, claims.jti), entry);
        if (e instanceof ContainersTaken) return svc.refuse(containersTaken(), entry);
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
