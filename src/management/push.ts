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
import { fromUtf8 } from "../core/codec/bytes.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import type { StreamingHttpTransport } from "../handset/http-client.ts";
import type { Keystore } from "../handset/keystore.ts";
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
import { MAX_SSE_EVENT_CHARS, type SseEvent, SseParser } from "../core/codec/sse.ts";

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

export type PushState = "idle" | "connecting" | "connected" | "waiting" | "stopped" | "closed";

/** Largest error body read from a refused subscription. */
const MAX_ERROR_BODY = 16 * 1024;

export class PushSubscriber {
  #state: PushState = "idle";
  #loop: Promise<void> | undefined;
  #abort: AbortController | undefined;
  #sleep: { timer: ReturnType<typeof setTimeout>; resolve: () => void } | undefined;
  #stopError: HandsafeError | undefined;
  readonly #waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  readonly #clock: () => number;

  constructor(private readonly options: PushSubscriberOptions) {
    this.#clock = options.clock ?? Date.now;
  }

  get state(): PushState {
    return this.#state;
  }

  /** A method, not a comparison in place: close() changes the state while the loop awaits. */
  #closed(): boolean {
    return this.#state === "closed";
  }

  /** Starts the connect–read–reconnect loop (once). */
  start(): this {
    this.#loop ??= this.#run();
    return this;
  }

  /**
   * Resolves when the stream is open (the server's ready event came) — at once if it is now;
   * rejects if the subscriber stops or is closed first.
   */
  connected(): Promise<void> {
    if (this.#state === "connected") return Promise.resolve();
    if (this.#state === "closed")
      return Promise.reject(
        new HandsafeError("management.push_closed", "the subscriber is closed", { status: 0 }),
      );
    if (this.#state === "stopped") return Promise.reject(this.#stopError);
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Aborts the open request, cancels a pending reconnect and waits for the loop to finish. */
  async close(): Promise<void> {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#abort?.abort();
    if (this.#sleep) {
      clearTimeout(this.#sleep.timer);
      this.#sleep.resolve();
    }
    this.#settleWaiters(
      new HandsafeError("management.push_closed", "the subscriber is closed", { status: 0 }),
    );
    await this.#loop;
  }

  async #run(): Promise<void> {
    const min = this.options.minRetryMs ?? 1000;
    const max = this.options.maxRetryMs ?? 60_000;
    let delay = min;
    while (!this.#closed()) {
      this.#state = "connecting";
      let error: HandsafeError | undefined;
      let opened = false;
      try {
        opened = await this.#session(() => {
          opened = true;
        });
      } catch (e) {
        if (this.#closed()) break;
        error = isHandsafeError(e)
          ? e
          : new HandsafeError("transport.unreachable", String((e as Error)?.message ?? e), { status: 0 });
        if (refusesForGood(error)) {
          this.#state = "stopped";
          this.#stopError = error;
          this.#settleWaiters(error);
          this.options.onEvent?.({ kind: "stopped", error });
          return;
        }
      }
      if (this.#closed()) break;
      // A stream that worked starts the back-off afresh; failures to connect double it.
      if (opened) delay = min;
      const wait = Math.round(delay * (0.5 + Math.random() / 2));
      delay = Math.min(delay * 2, max);
      this.#state = "waiting";
      this.options.onEvent?.({ kind: "disconnected", ...(error ? { error } : {}), retryInMs: wait });
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.#sleep = undefined;
          resolve();
        }, wait);
        this.#sleep = { timer, resolve };
      });
    }
  }

  /** One subscription: true when it got as far as the ready event. */
  async #session(onOpen: () => void): Promise<boolean> {
    const { baseUrl, transport, device, keystore } = this.options;
    const abort = new AbortController();
    this.#abort = abort;
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
    if (this.#closed()) return false;
    const res = await transport.stream({
      method: "GET",
      url,
      headers: { ...headers, ...signature },
      signal: abort.signal,
    });
    if (res.status !== 200) throw await refusal(res.status, res.headers, res.body);
    if (!(res.headers["content-type"] ?? "").toLowerCase().startsWith(PUSH_CONTENT_TYPE))
      throw new HandsafeError("management.push_malformed", "the push answer is not an event stream", {
        status: 0,
      });

    const decoder = new TextDecoder();
    const parser = new SseParser(MAX_SSE_EVENT_CHARS, "management.push_malformed");
    let opened = false;
    let silenceTimer: ReturnType<typeof setTimeout> | undefined;
    let silentFor = 0;
    let silent = false;
    const watch = () => {
      if (silentFor === 0) return;
      clearTimeout(silenceTimer);
      silenceTimer = setTimeout(() => {
        silent = true;
        abort.abort();
      }, silentFor);
    };
    try {
      for await (const piece of res.body) {
        watch();
        for (const event of parser.push(decoder.decode(piece, { stream: true }))) {
          if (!opened) {
            const ready = this.#ready(event);
            opened = true;
            silentFor = ready.keepAliveMs * (this.options.silenceFactor ?? 3);
            watch();
            onOpen();
            continue;
          }
          await this.#event(event);
        }
      }
    } catch (e) {
      if (silent)
        throw new HandsafeError("transport.timeout", "the push stream fell silent", { status: 0, cause: e });
      throw e;
    } finally {
      clearTimeout(silenceTimer);
      if (this.#abort === abort) this.#abort = undefined;
    }
    return opened;
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
    this.#state = "connected";
    this.#settleWaiters();
    this.options.onEvent?.({ kind: "connected" });
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

  #settleWaiters(error?: unknown): void {
    for (const w of this.#waiters.splice(0)) error === undefined ? w.resolve() : w.reject(error);
  }
}

/** 4xx other than 408 and 429: asking again the same way cannot succeed. */
function refusesForGood(e: HandsafeError): boolean {
  return e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429;
}

async function refusal(
  status: number,
  headers: Record<string, string>,
  body: AsyncIterable<Uint8Array>,
): Promise<HandsafeError> {
  const parts: Uint8Array[] = [];
  let size = 0;
  try {
    for await (const piece of body) {
      if (size + piece.length > MAX_ERROR_BODY) break;
      parts.push(piece);
      size += piece.length;
    }
  } catch {
    // The status is what matters; a body cut short only loses its message.
  }
  let err: { code?: unknown; message?: unknown } | undefined;
  if (/^application\/json/i.test(headers["content-type"] ?? "")) {
    const bytes = new Uint8Array(size);
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length;
    }
    try {
      err = (JSON.parse(fromUtf8(bytes)) as { error?: typeof err }).error;
    } catch {
      err = undefined;
    }
  }
  return new HandsafeError(
    typeof err?.code === "string" ? err.code : "transport.http_error",
    typeof err?.message === "string" ? err.message : `GET ${PUSH_PATH} answered HTTP ${status}`,
    { status },
  );
}
