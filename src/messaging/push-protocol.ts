/**
 * The messaging push stream's wire format (docs/protocols/messaging.md §Push) — no I/O; the server
 * side is push.ts, the handset's is MessagingApp.subscribe (handset.ts).
 *
 *   event: ready     data: {"handsetId":"mh_…","keepAliveMs":15000}   once, first
 *   : keep-alive     (a comment, every keepAliveMs)
 *   event: message   data: {"id":"msg_…"}
 */
import { formatEvent } from "../core/codec/sse.ts";
import { HANDSET_ID, MESSAGE_ID } from "./labels.ts";

export const INBOX_EVENTS_PATH = "/v1/messaging/inbox/events";
export const EVENTS_CONTENT_TYPE = "text/event-stream";
export const EVENT_READY = "ready";
export const EVENT_MESSAGE = "message";

export const PUSH_NOTIFY_CHANNEL = "handsafe_messaging_push";

export const MESSAGING_PUSH_DEFAULTS = {
  /** Under the server's 30 s socket timeout. */
  keepAliveMs: 15_000,
  maxStreamMs: 30 * 60_000,
  maxStreamsPerHandset: 2,
} as const;

export function readyEvent(handsetId: string, keepAliveMs: number): string {
  return formatEvent({ event: EVENT_READY, data: JSON.stringify({ handsetId, keepAliveMs }) });
}

export function messageEvent(messageId: string): string {
  return formatEvent({ event: EVENT_MESSAGE, data: JSON.stringify({ id: messageId }) });
}

/** The handset's strict reading of a `message` event's data: the message id, or undefined. */
export function parseMessageEvent(data: string): string | undefined {
  try {
    const v = JSON.parse(data) as { id?: unknown };
    return typeof v.id === "string" && MESSAGE_ID.test(v.id) ? v.id : undefined;
  } catch {
    return undefined;
  }
}

/** The handset's strict reading of the `ready` event's data. */
export function parseReadyEvent(data: string): { handsetId: string; keepAliveMs: number } | undefined {
  try {
    const v = JSON.parse(data) as { handsetId?: unknown; keepAliveMs?: unknown };
    if (typeof v.handsetId !== "string" || !HANDSET_ID.test(v.handsetId)) return undefined;
    if (!Number.isSafeInteger(v.keepAliveMs) || (v.keepAliveMs as number) <= 0) return undefined;
    return { handsetId: v.handsetId, keepAliveMs: v.keepAliveMs as number };
  } catch {
    return undefined;
  }
}
