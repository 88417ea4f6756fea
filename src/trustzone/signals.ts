/**
 * The zone's side of the server (docs/protocols/trustzone.md §5, §7): what a zone pulls (its
 * unapplied signals and the relayed commands waiting for it) and what it reports (signals applied
 * or refused, relay answers, locked and wiped containers, a reset done).
 */
import { toBase64url } from "../core/codec/base64url.ts";
import type { TrustzoneCore } from "./service-context.ts";
import * as store from "./store.ts";

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

/** What the zone pulls: unapplied signals (MAC'd with ZAK) and the relayed commands waiting for it. */
export async function zoneInbox(svc: TrustzoneCore, zone: store.ZoneRow): Promise<Record<string, unknown>> {
  const [signals, relay] = await Promise.all([
    zone.state === "personalised" ? store.pendingSignals(svc.db, zone.id, 100) : Promise.resolve([]),
    zone.state === "personalised" ? store.queuedRelay(svc.db, zone.id, 100) : Promise.resolve([]),
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
export async function zoneReport(
  svc: TrustzoneCore,
  zone: store.ZoneRow,
  report: ZoneReport,
): Promise<{ ok: true }> {
  const actor = `zone:${zone.id}`;
  const subject = `zone:${zone.id}`;
  const now = svc.now();
  if (report.reset !== undefined) {
    const acked = await store.acknowledgeZoneReset(svc.db, zone.id, report.reset.epoch, now);
    await svc.audit({
      actor,
      action: "tsm.zone_reset_acknowledged",
      subject,
      outcome: acked ? "allow" : "deny",
      details: { epoch: report.reset.epoch },
    });
  }
  if (zone.state !== "personalised") return { ok: true };
  if (report.applied !== undefined) {
    const n = await store.markSignalsApplied(svc.db, zone.id, report.applied, now);
    if (n > 0)
      await svc.audit({
        actor,
        action: "tsm.signals_applied",
        subject,
        outcome: "info",
        details: { upTo: report.applied, count: n },
      });
  }
  for (const r of report.rejected ?? [])
    await svc.audit({
      actor,
      action: "tsm.signal_rejected",
      subject,
      outcome: "error",
      details: { seq: r.seq, code: r.code },
    });
  for (const r of report.relay ?? []) {
    const row = await store.findRelay(svc.db, r.id);
    if (!row || row.zoneId !== zone.id) continue;
    const done = await store.finishRelay(
      svc.db,
      r.id,
      zone.id,
      r.ok
        ? { state: "done", result: r.result ?? {}, resultPackage: null, errorCode: null }
        : { state: "failed", result: null, resultPackage: null, errorCode: r.code ?? "zone.failed" },
      now,
    );
    if (!done) continue;
    if (r.ok && typeof r.result?.["bytes"] === "number")
      await store.setContainerBytes(svc.db, zone.id, row.idx, r.result["bytes"] as number, now);
    await svc.audit({
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
    const c = await store.findContainer(svc.db, zone.id, idx);
    if (!c || !(await store.lockContainer(svc.db, zone.id, idx, now))) continue;
    await svc.audit({
      actor,
      action: "tsm.container_locked",
      subject,
      outcome: "info",
      details: { container: idx, managerId: c.managerId },
    });
    if (c.managerId !== null)
      await svc.tellManager(
        c.managerId,
        { type: "tsm.container_locked", zoneId: zone.id, containers: [idx], at: now },
        subject,
      );
  }
  if ((report.wiped ?? []).length > 0)
    await svc.audit({
      actor,
      action: "tsm.containers_wiped",
      subject,
      outcome: "info",
      details: { containers: report.wiped ?? [] },
    });
  return { ok: true };
}
