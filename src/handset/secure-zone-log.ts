/**
 * The secure zone's event log (docs/protocols/trustzone.md §6): what the carrier reads to audit the
 * zone. Two parts, so that junk cannot flush evidence:
 *   - security events (personalised, signal applied, sub-key generated, wrong key, locked, factory
 *     reset), capped at MAX_SECURITY_EVENTS — each is bounded by legitimate activity (a wrong key
 *     spends one of a container's attempts; at zero it locks and compares no key any more);
 *   - refusals of malformed, forged, stale or replayed input (signals, relayed commands): anyone on
 *     the path can send those without limit, so they are counted, never logged one by one.
 * Pure: works on the ZoneRecord that secure-zone-store.ts seals.
 */

export type ZoneEventType =
  | "personalised"
  | "signal_applied"
  | "subkey_generated"
  | "wrong_key"
  | "locked"
  | "factory_reset";

export interface ZoneEvent {
  seq: number;
  at: number;
  type: ZoneEventType;
  container?: number;
  detail?: string;
}

/** What a refusal counter counts: a provisioning signal or a relayed command the zone refused. */
export type ZoneRefusalKind = "signal" | "relay";

export interface ZoneRefusalCount {
  count: number;
  /** Milliseconds; null before the first. */
  lastAt: number | null;
  /** The last refusal's reason (its message), for the carrier's eyes. */
  lastReason: string | null;
}

export type ZoneRefusals = Record<ZoneRefusalKind, ZoneRefusalCount>;

export const MAX_SECURITY_EVENTS = 1000;
const MAX_REASON_CHARS = 200;

export interface ZoneLogRecord {
  events: ZoneEvent[];
  eventSeq: number;
  refusals: ZoneRefusals;
}

export function emptyRefusals(): ZoneRefusals {
  return {
    signal: { count: 0, lastAt: null, lastReason: null },
    relay: { count: 0, lastAt: null, lastReason: null },
  };
}

/** Appends a security event; past the cap the oldest goes (refusals never enter this list). */
export function logSecurityEvent(
  r: ZoneLogRecord,
  at: number,
  type: ZoneEventType,
  container?: number,
  detail?: string,
): void {
  r.eventSeq++;
  const event: ZoneEvent = { seq: r.eventSeq, at, type };
  if (container !== undefined) event.container = container;
  if (detail !== undefined) event.detail = detail;
  r.events.push(event);
  if (r.events.length > MAX_SECURITY_EVENTS) r.events.splice(0, r.events.length - MAX_SECURITY_EVENTS);
}

/** Counts a refusal of untrusted input: O(1) state however many arrive. */
export function countRefusal(r: ZoneLogRecord, kind: ZoneRefusalKind, at: number, reason: string): void {
  const c = r.refusals[kind];
  c.count++;
  c.lastAt = at;
  c.lastReason = reason.slice(0, MAX_REASON_CHARS);
}
