/**
 * Container limits (docs/protocols/trustzone.md §7, last line): every minute, on every node, bound
 * (or locked) containers whose `notAfter` passed are reclaimed — freed in the inventory, a `reclaim`
 * signal queued for the zone (which wipes them), the manager told (webhook when it has one; always
 * audited). reclaim() frees each container by compare-and-set, so with N nodes each is reclaimed once.
 * The same pass purges the relay (relay.ts purgeRelay): answers no one fetched and commands no zone
 * pulled within RELAY_RESULT_RETENTION_MS.
 */
import { type PeriodicJob, startPeriodic } from "../platform/periodic.ts";
import { purgeRelay } from "./relay.ts";
import type { TrustzoneService } from "./server.ts";
import * as store from "./store.ts";

export const SWEEP_INTERVAL_MS = 60_000;
const BATCH = 200;

export interface SweepReport {
  reclaimed: number;
  zones: number;
  /** Answered relay rows deleted unfetched after the retention. */
  relayPurged: number;
  /** Queued relay commands failed (tsm.relay_expired) after the retention. */
  relayExpired: number;
}

export async function sweepTrustzone(service: TrustzoneService): Promise<SweepReport> {
  const report: SweepReport = { reclaimed: 0, zones: 0, relayPurged: 0, relayExpired: 0 };
  const now = service.now();
  const lapsed = await store.lapsedContainers(service.db, now, BATCH);
  const byZone = new Map<string, number[]>();
  for (const c of lapsed) byZone.set(c.zoneId, [...(byZone.get(c.zoneId) ?? []), c.idx]);
  for (const [zoneId, containers] of byZone) {
    const zone = await store.findZone(service.db, zoneId);
    if (zone?.state !== "personalised") continue;
    const { containers: freed } = await service.reclaim(zoneId, { containers }, "system", "expired");
    report.reclaimed += freed.length;
    if (freed.length > 0) report.zones++;
  }
  const relay = await purgeRelay(service);
  report.relayPurged = relay.deleted;
  report.relayExpired = relay.expired;
  return report;
}

/** Runs sweepTrustzone every SWEEP_INTERVAL_MS on an unref'd timer; one pass at a time. */
export function startTrustzoneSweeper(
  service: TrustzoneService,
  onError: (err: unknown) => void,
  intervalMs = SWEEP_INTERVAL_MS,
): PeriodicJob<SweepReport> {
  return startPeriodic(() => sweepTrustzone(service), intervalMs, onError);
}
