/**
 * A push stream held open by a handset: one signed GET answered with server-sent events, whose first
 * event is the server's "ready" and whose later events the caller handles, reopened after a break
 * with doubling, jittered delays. Management's push channel (management/push.ts) and messaging's
 * inbox stream (messaging/handset.ts subscribe) are both this loop; what differs — how the request is
 * signed, what "ready" must say, what an event means — comes in as options.
 *
 * - A refusal that asking again the same way cannot cure (a 4xx but 408 and 429: a key replaced, a
 *   clock off by more than the signature window) stops it for good: `stopped`, and `connected()`
 *   rejects with the server's error code.
 * - Anything else (a 5xx, a network error, a stream that ends, breaks the protocol or falls silent
 *   past `silenceFactor` keep-alive periods) is `disconnected` — with no error when the stream just
 *   ended — then a reconnect; a stream that got as far as ready starts the back-off afresh.
 * - `close()` aborts the open request, cancels a pending reconnect and waits for the loop: no socket or
 *   timer is left behind.
 */

import { fromUtf8 } from "../core/codec/bytes.ts";
import { MAX_SSE_EVENT_CHARS, type SseEvent, SseParser } from "../core/codec/sse.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import { errorBodyPrefix } from "../core/streams.ts";

/** What the transport gives back for the subscription request. */
export interface SseResponse {
  status: number;
  headers: Record<string, string>;
  body: AsyncIterable<Uint8Array>;
}

export type SseSubscriberEvent =
  | { kind: "connected" }
  /** The stream broke (`error`) or ended cleanly (none); a reconnect follows after `retryInMs`. */
  | { kind: "disconnected"; error?: HandsafeError; retryInMs: number }
  /** The server refused the subscription itself: no more attempts. */
  | { kind: "stopped"; error: HandsafeError };

export type SseSubscriberState = "idle" | "connecting" | "connected" | "waiting" | "stopped" | "closed";

export interface SseSubscriberOptions {
  /** Sends one subscription request (signed afresh each time), aborted with `signal` on close. */
  open(signal: AbortSignal): Promise<SseResponse>;
  /** The media type the answer must have (`text/event-stream`). */
  contentType: string;
  /** Error codes: a stream that breaks the protocol; a refusal whose body names none; close(). */
  codes: { malformed: string; refused: string; closed: string };
  /** The request as a refusal's message names it, e.g. "GET /v1/management/push". */
  describe: string;
  /**
   * Checks the first event (throw a HandsafeError with `codes.malformed` when it is not the right
   * ready); the keep-alive period it announces, if any, arms the silence watch.
   */
  ready(event: SseEvent): { keepAliveMs?: number };
  /** Each later event, in order; a throw breaks the stream (and a reconnect follows). */
  event(event: SseEvent): Promise<void> | void;
  /** Called once the ready event was accepted, after `connected` was reported. */
  opened?(): void;
  onEvent?(event: SseSubscriberEvent): void;
  /** First reconnect delay; it doubles per failure up to maxRetryMs. */
  minRetryMs: number;
  maxRetryMs: number;
  /** The delay actually waited is delay × a uniform factor in [low, high). */
  jitter: readonly [number, number];
  /** Silence longer than this many keep-alive periods counts as a dead stream (default 3). */
  silenceFactor?: number;
}

/** Largest error body read from a refused subscription. */
const MAX_ERROR_BODY = 16 * 1024;

export class SseSubscriber {
  #state: SseSubscriberState = "idle";
  #loop: Promise<void> | undefined;
  #abort: AbortController | undefined;
  #sleep: { timer: ReturnType<typeof setTimeout>; resolve: () => void } | undefined;
  #stopError: HandsafeError | undefined;
  readonly #waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];

  constructor(private readonly options: SseSubscriberOptions) {}

  get state(): SseSubscriberState {
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
   * Resolves when the stream is open (its ready event came) — at once if it is now; rejects if the
   * subscriber stops or is closed first.
   */
  connected(): Promise<void> {
    if (this.#state === "connected") return Promise.resolve();
    if (this.#state === "closed") return Promise.reject(this.#closedError());
    if (this.#state === "stopped") return Promise.reject(this.#stopError);
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  async close(): Promise<void> {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#abort?.abort();
    if (this.#sleep) {
      clearTimeout(this.#sleep.timer);
      this.#sleep.resolve();
    }
    this.#settleWaiters(this.#closedError());
    await this.#loop;
  }

  #closedError(): HandsafeError {
    return new HandsafeError(this.options.codes.closed, "the subscriber is closed", { status: 0 });
  }

  async #run(): Promise<void> {
    const { minRetryMs, maxRetryMs, jitter } = this.options;
    let delay = minRetryMs;
    while (!this.#closed()) {
      this.#state = "connecting";
      let error: HandsafeError | undefined;
      let opened = false;
      try {
        await this.#session(() => {
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
      if (opened) delay = minRetryMs;
      const wait = Math.round(delay * (jitter[0] + Math.random() * (jitter[1] - jitter[0])));
      delay = Math.min(delay * 2, maxRetryMs);
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

  /** One subscription, read until it ends; `onOpen` once its ready event was accepted. */
  async #session(onOpen: () => void): Promise<void> {
    const { options } = this;
    const abort = new AbortController();
    this.#abort = abort;
    try {
      const res = await options.open(abort.signal);
      if (res.status !== 200) throw await refusal(res, options);
      if (!(res.headers["content-type"] ?? "").toLowerCase().startsWith(options.contentType))
        throw new HandsafeError(options.codes.malformed, "the push answer is not an event stream", {
          status: 0,
        });
      await this.#read(res.body, abort, onOpen);
    } finally {
      if (this.#abort === abort) this.#abort = undefined;
    }
  }

  async #read(body: AsyncIterable<Uint8Array>, abort: AbortController, onOpen: () => void): Promise<void> {
    const { options } = this;
    const decoder = new TextDecoder();
    const parser = new SseParser(MAX_SSE_EVENT_CHARS, options.codes.malformed);
    let ready = false;
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
      for await (const piece of body) {
        watch();
        for (const event of parser.push(decoder.decode(piece, { stream: true }))) {
          if (ready) {
            await options.event(event);
            continue;
          }
          const { keepAliveMs } = options.ready(event);
          ready = true;
          silentFor = keepAliveMs === undefined ? 0 : keepAliveMs * (options.silenceFactor ?? 3);
          watch();
          this.#state = "connected";
          this.#settleWaiters();
          onOpen();
          options.onEvent?.({ kind: "connected" });
          options.opened?.();
        }
      }
    } catch (e) {
      if (silent)
        throw new HandsafeError("transport.timeout", "the push stream fell silent", { status: 0, cause: e });
      throw e;
    } finally {
      clearTimeout(silenceTimer);
    }
  }

  #settleWaiters(error?: unknown): void {
    for (const w of this.#waiters.splice(0)) error === undefined ? w.resolve() : w.reject(error);
  }
}

/** 4xx other than 408 and 429: asking again the same way cannot succeed. */
function refusesForGood(e: HandsafeError): boolean {
  return e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429;
}

/** The refusal as the server's own error (code and message from its JSON body, when it has one). */
async function refusal(res: SseResponse, options: SseSubscriberOptions): Promise<HandsafeError> {
  const bytes = await errorBodyPrefix(res.body, MAX_ERROR_BODY);
  let err: { code?: unknown; message?: unknown } | undefined;
  if (/^application\/json/i.test(res.headers["content-type"] ?? "")) {
    try {
      err = (JSON.parse(fromUtf8(bytes)) as { error?: typeof err }).error;
    } catch {
      err = undefined;
    }
  }
  return new HandsafeError(
    typeof err?.code === "string" ? err.code : options.codes.refused,
    typeof err?.message === "string" ? err.message : `${options.describe} answered HTTP ${res.status}`,
    { status: res.status },
  );
}
