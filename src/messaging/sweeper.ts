/**
 * Retention (docs/protocols/messaging.md §Retention), run every minute on every node. Each step is
 * a compare-and-set per message, so with N nodes each message is expired, erased or purged once —
 * and only the node that did it sends the sender its `expired` receipt.
 *
 * - a message past expiry that no handset acknowledged: `expired`, envelope and ciphertexts purged;
 * - a delivered message past expiry: its envelope erased, copies still pending `expired`;
 * - a delivered message past HANDSAFE_MESSAGE_RETENTION after delivery: every ciphertext purged
 *   (the row keeps its status and times); replies likewise after retention;
 * - lapsed registrations `expired`; handset codes forgotten an hour after they lapsed.
 */
import { type PeriodicJob, startPeriodic } from "../platform/periodic.ts";
import { QUOTA_WINDOW_MS } from "./protocol.ts";
import { deleteOldInboundCodes, expireLapsedRegistrations } from "./registration-store.ts";
import type { MessagingService } from "./server.ts";
import * as store from "./store.ts";

export const SWEEP_INTERVAL_MS = 60_000;
const BATCH = 200;

export interface SweepReport {
  expired: number;
  envelopesErased: number;
  purged: number;
  repliesPurged: number;
  registrationsExpired: number;
}

export async function sweepMessaging(service: MessagingService): Promise<SweepReport> {
  const db = service.db;
  const now = service.now();
  const report: SweepReport = {
    expired: 0,
    envelopesErased: 0,
    purged: 0,
    repliesPurged: 0,
    registrationsExpired: 0,
  };

  for (;;) {
    const lapsed = await store.lapsedUndelivered(db, now, BATCH);
    for (const m of lapsed) {
      if (!(await store.claimPurge(db, m.id, now, true)).claimed) continue;
      await store.dropCiphertexts(db, m.id, now, true);
      await service.receipt(m, "expired", undefined, now);
      report.expired++;
    }
    if (lapsed.length < BATCH) break;
  }

  for (;;) {
    const ids = await store.lapsedEnvelopes(db, now, BATCH);
    for (const id of ids) {
      if (!(await store.eraseEnvelope(db, id, now))) continue;
      await store.expirePendingDeliveries(db, id, now);
      report.envelopesErased++;
    }
    if (ids.length < BATCH) break;
  }

  const cutoff = now - service.deps.settings.retentionSeconds * 1000;
  for (;;) {
    const ids = await store.pastRetention(db, cutoff, BATCH);
    for (const id of ids) {
      if (!(await store.claimPurge(db, id, now, false)).claimed) continue;
      await store.dropCiphertexts(db, id, now, false);
      report.purged++;
    }
    if (ids.length < BATCH) break;
  }
  report.repliesPurged = await store.purgeReplies(db, cutoff, now);
  report.registrationsExpired = await expireLapsedRegistrations(db, now);
  await deleteOldInboundCodes(db, now - QUOTA_WINDOW_MS);

  if (report.expired + report.envelopesErased + report.purged + report.repliesPurged > 0)
    await service.audit({
      actor: "system",
      action: "messaging.retention_swept",
      outcome: "info",
      details: { ...report },
    });
  return report;
}

/** Runs sweepMessaging every SWEEP_INTERVAL_MS on an unref'd timer; one pass at a time. */
export function startMessagingSweeper(
  service: MessagingService,
  onError: (err: unknown) => void,
  intervalMs = SWEEP_INTERVAL_MS,
): PeriodicJob<SweepReport> {
  return startPeriodic(() => sweepMessaging(service), intervalMs, onError);
}
