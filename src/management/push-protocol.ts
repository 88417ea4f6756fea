/**
 * The push channel's wire format (docs/protocols/management.md §Push channel) — no I/O. A handset
 * holds `GET /v1/management/push` open, signed with its push authentication key (protocol.ts
 * derivePushAuthKey, RFC 9421 tag PUSH_SIGNATURE_TAG, keyid "push:<device id>"); the server answers
 * with a server-sent event stream:
 *
 *   event: ready          data: {"deviceId":"dev_…","keepAliveMs":15000}      once, first
 *   : keep-alive          (a comment, every keepAliveMs)
 *   id: <counter>
 *   event: notification   data: HSM1:…   the same sealed text an SMS would carry
 */
import { HandsafeError } from "../core/errors.ts";
import { DEVICE_ID } from "./protocol.ts";
import { formatEvent } from "../core/codec/sse.ts";

export const PUSH_PATH = "/v1/management/push";
export const PUSH_EVENT_READY = "ready";
export const PUSH_EVENT_NOTIFICATION = "notification";
export const PUSH_CONTENT_TYPE = "text/event-stream";

/** A notification as the push channel carries it: the sealed text and its counter (the event id). */
export interface PushNotification {
  text: string;
  counter: number;
}

export interface PushReady {
  deviceId: string;
  /** The server writes a comment at least this often; longer silence means the stream is dead. */
  keepAliveMs: number;
}

export function readyEvent(ready: PushReady): string {
  return formatEvent({
    event: PUSH_EVENT_READY,
    data: JSON.stringify({ deviceId: ready.deviceId, keepAliveMs: ready.keepAliveMs }),
  });
}

export function notificationEvent(n: PushNotification): string {
  return formatEvent({ event: PUSH_EVENT_NOTIFICATION, id: String(n.counter), data: n.text });
}

/** The handset's strict reading of the ready event's data. */
export function parseReady(data: string): PushReady {
  const bad = () => new HandsafeError("management.push_malformed", "malformed ready event", { status: 0 });
  let v: unknown;
  try {
    v = JSON.parse(data);
  } catch {
    throw bad();
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw bad();
  const { deviceId, keepAliveMs } = v as Record<string, unknown>;
  if (typeof deviceId !== "string" || !DEVICE_ID.test(deviceId)) throw bad();
  if (typeof keepAliveMs !== "number" || !Number.isSafeInteger(keepAliveMs) || keepAliveMs < 1) throw bad();
  return { deviceId, keepAliveMs };
}

/** `Last-Event-ID` as the handset sends it: its last accepted notification counter, in decimal. */
export const LAST_EVENT_ID = /^[0-9]{1,10}$/;
