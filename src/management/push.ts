/**
 * The handset's push subscriber (SDK side of docs/protocols/management.md §Push channel): holds
 * `GET /v1/management/push` open over a streaming transport, signed with the push authentication
 * key (static key only), reads the server-sent events and hands every notification's text to
 * `deliver` — normally ManagementClient.receive, i.e. the same SMS processor and replay counter as
 * a text message. When the stream ends or breaks it reconnects with doubling, jittered delays and
 * tells the server its last accepted counter (Last-Event-ID), so a key it missed is sent again.
 *
 *   const push = client.openPush();       // or new PushSubscriber({...}).start()
 *   await push.connected();
 *   …
 *   await push.close();                   // aborts the request; no socket or timer is left behind
 */
import type { SseEvent } from "../core/codec/sse.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import type { StreamingHttpTransport } from "../handset/http-client.ts";
import type { Keystore } from "../handset/keystore.ts";
import { type SseResponse, SseSubscriber, type SseSubscriberState } from "../handset/sse-subscriber.ts";
import type { DeviceWrapper } from "./device-wrapper.ts";
import { derivePushAuthKey, PUSH_SIGNATURE_TAG, pushKeyId, signRequest } from "./protocol.ts";
import {
  PUSH_CONTENT_TYPE,
  PUSH_EVENT_NOTIFICATION,
  PUSH_EVENT_READY,
  PUSH_PATH,
  parseReady,
} from "./push-protocol.ts";
import { lastCounter, type SmsOutcome } from "./sms-processor.ts";

export interface PushSubscriberOptions {
  /** e.g. "https://mgmt.example:8443" */
  baseUrl: string;
  transport: StreamingHttpTransport;
  device: DeviceWrapper;
  /** Where the last accepted notification counter is read (sent as Last-Event-ID). */
  keystore: Keystore;
  /** Each notification's text; ManagementClient.receive opens and stores it. */
  deliver: (message: { from: string; text: string }) => Promise<SmsOutcome>;
  clock?: () => number;
  /** First reconnect delay (default 1 s); it doubles per failure up to maxRetryMs (default 60 s). */
  minRetryMs?: number;
  maxRetryMs?: number;
  /** Silence longer than this many keep-alive periods counts as a dead stream (default 3). */
  silenceFactor?: number;
  onEvent?: (event: PushSubscriberEvent) => void;
}

export type PushSubscriberEvent =
  | { kind: "connected" }
  | { kind: "key"; keyId: string; counter: number }
  /** A notification the processor refused (forged, replayed, …): skipped, the stream goes on. */
  | { kind: "refused"; error: HandsafeError }
  /** The stream ended or broke; a reconnect follows after `retryInMs`. */
  | { kind: "disconnected"; error?: HandsafeError; retryInMs: number }
  /** The server refused the subscription itself (4xx, e.g. signature.stale): no more attempts. */
  | { kind: "stopped"; error: HandsafeError };

export type PushState = SseSubscriberState;

/**
 * The push channel over the shared handset stream loop (handset/sse-subscriber.ts): each attempt
 * signs `GET /v1/management/push` with the push authentication key and sends the last accepted
 * counter as Last-Event-ID; "ready" must name this device; each notification goes to `deliver`.
 */
export class PushSubscriber {
  readonly #stream: SseSubscriber;
  readonly #clock: () => number;

  constructor(private readonly options: PushSubscriberOptions) {
    this.#clock = options.clock ?? Date.now;
    const onEvent = options.onEvent;
    this.#stream = new SseSubscriber({
      open: (signal) => this.#open(signal),
      contentType: PUSH_CONTENT_TYPE,
      codes: {
        malformed: "management.push_malformed",
        refused: "transport.http_error",
        closed: "management.push_closed",
      },
      describe: `GET ${PUSH_PATH}`,
      ready: (event) => this.#ready(event),
      event: (event) => this.#event(event),
      ...(onEvent ? { onEvent } : {}),
      minRetryMs: options.minRetryMs ?? 1000,
      maxRetryMs: options.maxRetryMs ?? 60_000,
      jitter: [0.5, 1],
      ...(options.silenceFactor === undefined ? {} : { silenceFactor: options.silenceFactor }),
    });
  }

  get state(): PushState {
    return this.#stream.state;
  }

  /** Starts the connect–read–reconnect loop (once). */
  start(): this {
    this.#stream.start();
    return this;
  }

  /** Resolves when the stream is open; rejects if the subscriber stops or is closed first. */
  connected(): Promise<void> {
    return this.#stream.connected();
  }

  /** Aborts the open request, cancels a pending reconnect and waits for the loop to finish. */
  close(): Promise<void> {
    return this.#stream.close();
  }

  async #open(signal: AbortSignal): Promise<SseResponse> {
    const { baseUrl, transport, device, keystore } = this.options;
    const url = baseUrl.replace(/\/+$/, "") + PUSH_PATH;
    const headers: Record<string, string> = {
      accept: PUSH_CONTENT_TYPE,
      "cache-control": "no-store",
      "last-event-id": String(await lastCounter(keystore, device.deviceId)),
    };
    const key = device.withStaticKey((staticKey) => derivePushAuthKey(staticKey, device.deviceId));
    let signature: Record<string, string>;
    try {
      signature = signRequest(
        key.reveal(),
        { method: "GET", url, headers },
        {
          keyId: pushKeyId(device.deviceId),
          created: Math.floor(this.#clock() / 1000),
          tag: PUSH_SIGNATURE_TAG,
        },
      );
    } finally {
      key.wipe();
    }
    return transport.stream({ method: "GET", url, headers: { ...headers, ...signature }, signal });
  }

  #ready(event: SseEvent): { keepAliveMs: number } {
    if (event.event !== PUSH_EVENT_READY)
      throw new HandsafeError("management.push_malformed", "the push stream did not start with ready", {
        status: 0,
      });
    const ready = parseReady(event.data);
    if (ready.deviceId !== this.options.device.deviceId)
      throw new HandsafeError("management.push_malformed", "the push stream is for another device", {
        status: 0,
      });
    return ready;
  }

  async #event(event: SseEvent): Promise<void> {
    if (event.event !== PUSH_EVENT_NOTIFICATION) return; // unknown events are for newer handsets
    let outcome: SmsOutcome;
    try {
      outcome = await this.options.deliver({ from: "push", text: event.data });
    } catch (e) {
      if (!isHandsafeError(e)) throw e;
      this.options.onEvent?.({ kind: "refused", error: e });
      return;
    }
    if (outcome.kind === "management-key")
      this.options.onEvent?.({ kind: "key", keyId: outcome.keyId, counter: outcome.counter });
  }
}
