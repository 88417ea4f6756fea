/**
 * The zone server (docs/protocols/trustzone.md §3–§7): the master TSM's inventory of zones and
 * containers, service managers and their review, tokens (JWS, uses counted here), the server
 * placement of the sub-key generator, provisioning signals and the package relay. The pure parts
 * are protocol.ts; routes.ts only parses, authenticates and calls TrustzoneService, which joins the
 * parts, one file each:
 *
 *   service-context.ts  TrustzoneCore: platform, audited refusals, signing key, UK custody, webhooks
 *   managers.ts         registration, API keys, review
 *   zones.ts            personalise / re-personalise, the container map, reclaim, factory reset
 *   tokens.ts           issue, status, the server's check of a presented token, handset-placement redeem
 *   subkeys.ts          §4 server placement
 *   signals.ts          the zone's inbox and reports
 *   relay.ts            relayed package commands, their answers, the purge of answered rows
 */
import type { Platform } from "../platform/context.ts";
import * as managers from "./managers.ts";
import * as relay from "./relay.ts";
import { TrustzoneCore } from "./service-context.ts";
import * as signals from "./signals.ts";
import type * as store from "./store.ts";
import { serverSubKey } from "./subkeys.ts";
import * as tokens from "./tokens.ts";
import * as zones from "./zones.ts";

export { MANAGER_API_KEY } from "./managers.ts";
// Names this module exported before the split: they stay importable from here.
export { ZONE_REQUEST_SIGNATURE } from "./protocol.ts";
export { RELAY_RESULT_RETENTION_MS, type RelayView, relayViewOf } from "./relay.ts";
export { AT_REST, notFound, TrustzoneCore, WEBHOOK_TAG } from "./service-context.ts";
export type { ZoneReport } from "./signals.ts";
export { tokenStatusOf } from "./tokens.ts";
export { DEFAULT_CONTAINERS, MAX_CONTAINERS, type ProvisioningBundle } from "./zones.ts";

export class TrustzoneService extends TrustzoneCore {
  constructor(platform: Platform) {
    super(platform);
  }

  // --- managers ---------------------------------------------------------------------------------

  registerManager(input: Record<string, unknown>, origin: string) {
    return managers.registerManager(this, input, origin);
  }

  /** The manager an API key names; `auth.unauthenticated` (401, audited) otherwise. */
  authenticateManager(apiKey: string | undefined, origin: string): Promise<store.ManagerRow> {
    return managers.authenticateManager(this, apiKey, origin);
  }

  reviewManager(id: string, decision: "validated" | "rejected", reason: string | null, actor: string) {
    return managers.reviewManager(this, id, decision, reason, actor);
  }

  reviewApplication(managerId: string, appId: string, actor: string) {
    return managers.reviewApplication(this, managerId, appId, actor);
  }

  managerView(id: string): Promise<Record<string, unknown>> {
    return managers.managerView(this, id);
  }

  listManagers(): Promise<Array<Record<string, unknown>>> {
    return managers.listManagerViews(this);
  }

  // --- zones ------------------------------------------------------------------------------------

  /** A new zone with a fresh ZMK at epoch 1. */
  personaliseZone(input: Record<string, unknown>, actor: string): Promise<zones.ProvisioningBundle> {
    return zones.personaliseZone(this, input, actor);
  }

  /** After a factory reset: the next user's info and a fresh ZMK, at the zone's new epoch. */
  repersonaliseZone(
    zoneId: string,
    input: Record<string, unknown>,
    actor: string,
  ): Promise<zones.ProvisioningBundle> {
    return zones.repersonaliseZone(this, zoneId, input, actor);
  }

  zoneView(zoneId: string, actor: string): Promise<Record<string, unknown>> {
    return zones.zoneView(this, zoneId, actor);
  }

  /** Frees containers (by index, or a manager's), queues a `reclaim` signal, tells the managers. */
  reclaim(
    zoneId: string,
    sel: { containers?: unknown; managerId?: unknown },
    actor: string,
    reason: "carrier" | "expired",
  ): Promise<{ containers: number[] }> {
    return zones.reclaimContainers(this, zoneId, sel, actor, reason);
  }

  /** Factory reset: epoch + 1, every container freed, every token revoked. */
  resetZone(zoneId: string, actor: string): Promise<{ zoneId: string; epoch: number; state: string }> {
    return zones.resetZone(this, zoneId, actor);
  }

  // --- tokens and sub-keys ----------------------------------------------------------------------

  issueToken(input: Record<string, unknown>, actor: string): Promise<Record<string, unknown>> {
    return tokens.issueTokenFor(this, input, actor);
  }

  tokenStatus(manager: store.ManagerRow, jti: string): Promise<Record<string, unknown>> {
    return tokens.tokenStatus(this, manager, jti);
  }

  /** §4 server placement. */
  serverSubKey(
    manager: store.ManagerRow,
    input: { token?: unknown; zoneId?: unknown },
  ): Promise<Record<string, unknown>> {
    return serverSubKey(this, manager, input);
  }

  /** §4 handset placement: the server counts the use and records occupancy. */
  zoneRedeem(zone: store.ZoneRow, jti: string, tokenJws: unknown): Promise<Record<string, unknown>> {
    return tokens.zoneRedeem(this, zone, jti, tokenJws);
  }

  // --- the zone's inbox and reports -------------------------------------------------------------

  zoneInbox(zone: store.ZoneRow): Promise<Record<string, unknown>> {
    return signals.zoneInbox(this, zone);
  }

  zoneReport(zone: store.ZoneRow, report: signals.ZoneReport): Promise<{ ok: true }> {
    return signals.zoneReport(this, zone, report);
  }

  // --- relay ------------------------------------------------------------------------------------

  queueRelay(
    manager: store.ManagerRow,
    target: { zoneId: string; container: number; op: store.RelayOp; name: string | null },
    commandIn: unknown,
    proof: unknown,
  ): Promise<relay.RelayView> {
    return relay.queueRelay(this, manager, target, commandIn, proof);
  }

  /** A relayed command's state for its manager; an answered one is handed over once, then purged. */
  relayStatus(manager: store.ManagerRow, id: string, waitMs: number): Promise<relay.RelayView> {
    return relay.relayStatus(this, manager, id, waitMs);
  }
}
