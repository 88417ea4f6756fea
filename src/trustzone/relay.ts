/**
 * The package relay (docs/protocols/trustzone.md §6, §7): a manager's command for one of its bound
 * containers waits in tsm_relay with its proof (HMAC under CK_i, checked by the zone: the server
 * cannot make one) until the zone pulls it and answers; the manager reads the answer once, after
 * which the row — and the sealed package in its result — is deleted (the sweeper deletes what no
 * one fetched after RELAY_RESULT_RETENTION_MS).
 */
import { fromBase64url } from "../core/codec/base64url.ts";
import { HandsafeError } from "../core/errors.ts";
import { MAX_PACKAGE_BYTES, parseRelayCommand, type RelayCommand } from "./protocol.ts";
import { newId, notFound, type TrustzoneCore, tsmError } from "./service-context.ts";
import * as store from "./store.ts";

/** How long an answered command waits for its manager, and a queued one for its zone. */
export const RELAY_RESULT_RETENTION_MS = 10 * 60 * 1000;

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

/**
 * A manager's package command for one of its bound containers, queued for the zone with its proof
 * (HMAC under CK_i, checked by the zone: the server cannot make one). The server checks only who
 * asks: the container must be this manager's, bound, unlocked and within its limit.
 */
export async function queueRelay(
  svc: TrustzoneCore,
  manager: store.ManagerRow,
  target: { zoneId: string; container: number; op: store.RelayOp; name: string | null },
  commandIn: unknown,
  proof: unknown,
): Promise<RelayView> {
  const actor = `manager:${manager.id}`;
  const action = `tsm.relay_${target.op}`;
  const subject = `zone:${target.zoneId}`;
  const entry = { actor, action, subject, details: { container: target.container, name: target.name } };
  await svc.requireValidated(manager, action, subject);
  const { command, sealed } = await svc.guarded(entry, async () => {
    const zone = await store.findZone(svc.db, target.zoneId);
    const c = zone ? await store.findContainer(svc.db, zone.id, target.container) : undefined;
    if (!zone || !c || c.managerId !== manager.id || c.state === "free")
      throw tsmError("tsm.forbidden", "this container is not yours", 403);
    if (zone.state !== "personalised")
      throw tsmError("zone.not_personalised", "the zone is not personalised", 409);
    if (c.state === "locked") throw tsmError("zone.locked", "this container is locked", 423);
    if (c.notAfter !== null && c.notAfter <= svc.now())
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
    // The zone refuses a bigger one anyway (zone.full): no reason to hold it until it does.
    if (sealed !== null && (sealed.length === 0 || sealed.length > MAX_PACKAGE_BYTES))
      throw tsmError("zone.full", `a package is 1..${MAX_PACKAGE_BYTES} bytes`, 413);
    return { command, sealed };
  });
  const now = svc.now();
  const id = newId("rly");
  await store.insertRelay(svc.db, {
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
  await svc.audit({ ...entry, outcome: "allow", details: { ...entry.details, relayId: id } });
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
export async function relayStatus(
  svc: TrustzoneCore,
  manager: store.ManagerRow,
  id: string,
  waitMs: number,
): Promise<RelayView> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const row = await store.findRelay(svc.db, id);
    if (!row || row.managerId !== manager.id)
      return svc.refuse(notFound("relayed command"), {
        actor: `manager:${manager.id}`,
        action: "tsm.relay_status",
        details: { relayId: id.slice(0, 64) },
      });
    if (row.state !== "queued") {
      // Answered: this is the manager's copy. The row (with the sealed package of a `get`) goes now.
      await store.deleteAnsweredRelay(svc.db, row.id, manager.id);
      return relayViewOf(row);
    }
    if (Date.now() >= deadline) return relayViewOf(row);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * The sweeper's pass over tsm_relay: answers no one fetched within RELAY_RESULT_RETENTION_MS are
 * deleted, and commands the zone has not pulled within it fail (`tsm.relay_expired`: the zone would
 * refuse them as stale anyway, RELAY_MAX_AGE_MS), their package dropped — so no sealed package
 * waits on the server longer than twice the retention.
 */
export async function purgeRelay(svc: TrustzoneCore): Promise<{ deleted: number; expired: number }> {
  const now = svc.now();
  const before = now - RELAY_RESULT_RETENTION_MS;
  return store.purgeRelay(svc.db, before, before, "tsm.relay_expired", now);
}
