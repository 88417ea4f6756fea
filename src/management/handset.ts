/**
 * The handset side of the management channel (the SDK): every request is signed (RFC 9421,
 * hmac-sha256) with the session key derived from the device's static key (inside its device
 * wrapper) and the current dynamic key (from the keystore). When the server answers that the
 * dynamic key expired or is used up, the client waits for the fresh notification — by SMS
 * (`nextSms`) or over the push stream (`openPush`, push.ts), whichever brings it first —
 * processes it, and retries once.
 */
import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { HandsafeError } from "../core/errors.ts";
import { errorBodyPrefix } from "../core/streams.ts";
import type {
  HttpTransport,
  StreamingHttpTransport,
  StreamingResponse,
  TransportRequest,
} from "../handset/http-client.ts";
import type { Keystore } from "../handset/keystore.ts";
import type { DeviceWrapper } from "./device-wrapper.ts";
import { deriveSessionKey, signRequest } from "./protocol.ts";
import { PushSubscriber, type PushSubscriberOptions } from "./push.ts";
import { createSmsProcessor, readDynamicKey, type SmsOutcome, type SmsProcessor } from "./sms-processor.ts";

export { signRequest };

/** Codes after which a fresh dynamic key is on its way (by SMS or push). */
const RENEW_CODES = new Set([
  "management.dynamic_key_expired",
  "management.dynamic_key_exhausted",
  "management.dynamic_key_superseded",
]);

export interface ManagementClientOptions {
  /** e.g. "https://mgmt.example:8443" */
  baseUrl: string;
  transport: HttpTransport;
  device: DeviceWrapper;
  keystore: Keystore;
  /**
   * Resolves with the next text the handset receives (the SMS inbox). A handset without SMS, which
   * gets its keys over push only, may pass `() => new Promise(() => {})`.
   */
  nextSms: () => Promise<{ from: string; text: string }>;
  /** How many non-management texts to skip while waiting for a key (default 5). */
  maxSkippedTexts?: number;
  clock?: () => number;
}

export interface ManagementResponse<T> {
  status: number;
  headers: Record<string, string>;
  body: T;
}

export type { StreamingHttpTransport, StreamingResponse } from "../handset/http-client.ts";

export interface RawRequestOptions {
  /** Extra request headers (lowercase names), e.g. `{ range: "bytes=1024-" }`. */
  headers?: Record<string, string>;
  /** false: an unsigned request over the same (pinned) channel, e.g. for public TUF metadata. */
  signed?: boolean;
  signal?: AbortSignal;
}

/** Largest error body read from a streamed response that failed. */
const MAX_ERROR_BODY = 64 * 1024;

function isStreaming(t: HttpTransport): t is StreamingHttpTransport {
  return typeof (t as Partial<StreamingHttpTransport>).stream === "function";
}

type SmsResult = { sms: { from: string; text: string } } | { error: unknown };

export class ManagementClient {
  readonly sms: SmsProcessor;
  private readonly baseUrl: string;
  private readonly clock: () => number;
  /** Keys received so far (any channel); a wait for "the next key" compares against this. */
  #arrivals = 0;
  #latestKeyId: string | undefined;
  readonly #arrivalWaiters = new Set<() => void>();
  /** At most one nextSms() is outstanding; a text it brings while nobody waits is kept here. */
  #smsPull: Promise<void> | undefined;
  #smsKept: { from: string; text: string } | undefined;
  readonly #smsWaiters: Array<(r: SmsResult) => void> = [];

  constructor(private readonly options: ManagementClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.clock = options.clock ?? Date.now;
    this.sms = createSmsProcessor({ device: options.device, keystore: options.keystore, clock: this.clock });
  }

  /**
   * A notification from any channel — the push subscriber hands each event's text here; SMS texts
   * pass through here too. The SMS processor opens it, refuses forgeries and replays (counter), and
   * stores the key; a key that arrives ends any awaitDynamicKey in progress.
   */
  async receive(message: { from: string; text: string }): Promise<SmsOutcome> {
    const outcome = await this.sms.process(message);
    if (outcome.kind === "management-key") {
      this.#arrivals++;
      this.#latestKeyId = outcome.keyId;
      for (const wake of [...this.#arrivalWaiters]) wake();
    }
    return outcome;
  }

  /**
   * A push subscriber for this client (push.ts): it feeds every pushed notification to `receive`.
   * The transport must stream (the Node transport does); call `close()` on the subscriber to stop.
   */
  openPush(
    options: Partial<Omit<PushSubscriberOptions, "device" | "keystore" | "deliver">> = {},
  ): PushSubscriber {
    const { transport } = this.options;
    const streaming = options.transport ?? (isStreaming(transport) ? transport : undefined);
    if (!streaming)
      throw new HandsafeError("transport.invalid_options", "push needs a streaming transport", { status: 0 });
    return new PushSubscriber({
      baseUrl: this.baseUrl,
      clock: this.clock,
      ...options,
      transport: streaming,
      device: this.options.device,
      keystore: this.options.keystore,
      deliver: (message) => this.receive(message),
    }).start();
  }

  /** Waits until a management key arrives — the next SMS that carries one, or a pushed one. */
  awaitDynamicKey(): Promise<string> {
    return this.#keyArrivedSince(this.#arrivals);
  }

  /** Resolves at once when a key arrived after `seen` keys (e.g. pushed while a request was out). */
  async #keyArrivedSince(seen: number): Promise<string> {
    const limit = this.options.maxSkippedTexts ?? 5;
    let skipped = 0;
    for (;;) {
      if (this.#arrivals > seen && this.#latestKeyId !== undefined) return this.#latestKeyId;
      const sms = await this.#nextSmsOrArrival();
      if (sms === undefined) continue;
      try {
        const outcome = await this.receive(sms);
        if (outcome.kind === "management-key") return outcome.keyId;
      } catch (e) {
        // A text delivered twice (SMS centres do that) is refused and skipped; anything else stops.
        if (!(e instanceof HandsafeError) || e.code !== "management.notification_replayed") throw e;
      }
      if (++skipped > limit)
        throw new HandsafeError("management.no_dynamic_key", "no management notification arrived", {
          status: 0,
        });
    }
  }

  /** The next SMS, or undefined as soon as a key arrives by another way (the SMS is kept for later). */
  #nextSmsOrArrival(): Promise<{ from: string; text: string } | undefined> {
    return new Promise((resolve, reject) => {
      const kept = this.#smsKept;
      if (kept) {
        this.#smsKept = undefined;
        resolve(kept);
        return;
      }
      const waiter = (r: SmsResult) => {
        this.#arrivalWaiters.delete(wake);
        if ("error" in r) reject(r.error);
        else resolve(r.sms);
      };
      const wake = () => {
        this.#arrivalWaiters.delete(wake);
        const at = this.#smsWaiters.indexOf(waiter);
        if (at >= 0) this.#smsWaiters.splice(at, 1);
        resolve(undefined);
      };
      this.#arrivalWaiters.add(wake);
      this.#smsWaiters.push(waiter);
      this.#pullSms();
    });
  }

  #pullSms(): void {
    if (this.#smsPull) return;
    this.#smsPull = this.options.nextSms().then(
      (sms) => this.#smsSettled({ sms }),
      (error: unknown) => this.#smsSettled({ error }),
    );
  }

  #smsSettled(r: SmsResult): void {
    this.#smsPull = undefined;
    const waiter = this.#smsWaiters.shift();
    if (waiter) waiter(r);
    // Nobody waits any more (a pushed key came first): keep the text; a failure nobody saw is dropped.
    else if ("sms" in r) this.#smsKept = r.sms;
    if (this.#smsWaiters.length > 0) this.#pullSms();
  }

  /** A signed request; JSON in and out. Errors come back as HandsafeError with the server's code. */
  async request<T = unknown>(method: string, path: string, json?: unknown): Promise<ManagementResponse<T>> {
    if (!(await readDynamicKey(this.options.keystore, this.options.device.deviceId)))
      await this.awaitDynamicKey();
    const seen = this.#arrivals;
    try {
      return await this.send<T>(method, path, json);
    } catch (e) {
      if (!(e instanceof HandsafeError) || !RENEW_CODES.has(e.code)) throw e;
      await this.#keyArrivedSince(seen);
      return this.send<T>(method, path, json);
    }
  }

  /**
   * A request whose answer is returned as bytes, whatever its type; HTTP errors (≥ 400) still throw
   * the server's code. Signed unless `signed: false`; renews the dynamic key like `request`.
   */
  async requestRaw(
    method: string,
    path: string,
    options: RawRequestOptions = {},
  ): Promise<ManagementResponse<Uint8Array>> {
    const res = await this.withRenewal(options.signed !== false, async () => {
      const req = await this.prepare(method, path, undefined, options);
      return this.options.transport.send(req);
    });
    if (res.status >= 400) throw errorFrom(method, path, res.status, res.headers, res.body);
    return { status: res.status, headers: res.headers, body: res.body };
  }

  /**
   * A signed request whose body is handed over as it arrives (downloads with Range). The status
   * and headers are known before the body is read; HTTP errors (≥ 400) throw the server's code.
   */
  async requestStream(
    method: string,
    path: string,
    options: RawRequestOptions = {},
  ): Promise<StreamingResponse> {
    return this.withRenewal(options.signed !== false, async () => {
      const req = await this.prepare(method, path, undefined, options);
      const { transport } = this.options;
      if (!isStreaming(transport)) {
        const res = await transport.send(req);
        if (res.status >= 400) throw errorFrom(method, path, res.status, res.headers, res.body);
        return {
          status: res.status,
          headers: res.headers,
          body: (async function* () {
            if (res.body.length) yield res.body;
          })(),
        };
      }
      const res = await transport.stream(req);
      if (res.status >= 400)
        throw errorFrom(
          method,
          path,
          res.status,
          res.headers,
          await errorBodyPrefix(res.body, MAX_ERROR_BODY),
        );
      return res;
    });
  }

  ping(): Promise<
    ManagementResponse<{ ok: true; deviceId: string; keyId: string; usesLeft: number; expiresAt: number }>
  > {
    return this.request("GET", "/v1/management/ping");
  }

  private async withRenewal<R>(signed: boolean, run: () => Promise<R>): Promise<R> {
    if (!signed) return run();
    if (!(await readDynamicKey(this.options.keystore, this.options.device.deviceId)))
      await this.awaitDynamicKey();
    const seen = this.#arrivals;
    try {
      return await run();
    } catch (e) {
      if (!(e instanceof HandsafeError) || !RENEW_CODES.has(e.code)) throw e;
      await this.#keyArrivedSince(seen);
      return run();
    }
  }

  /** The transport request, signed unless `signed: false`. */
  private async prepare(
    method: string,
    path: string,
    body: Uint8Array | undefined,
    options: RawRequestOptions,
  ): Promise<TransportRequest> {
    const url = this.baseUrl + path;
    const headers: Record<string, string> = { accept: "*/*" };
    for (const [k, v] of Object.entries(options.headers ?? {})) headers[k.toLowerCase()] = v;
    const signal = options.signal === undefined ? {} : { signal: options.signal };
    if (options.signed === false) return { method, url, headers, ...(body ? { body } : {}), ...signal };
    const { device, keystore } = this.options;
    const stored = await readDynamicKey(keystore, device.deviceId);
    if (!stored) throw new HandsafeError("management.no_dynamic_key", "no dynamic key yet", { status: 0 });
    const session = device.withStaticKey((staticKey) =>
      deriveSessionKey(staticKey, stored.key, device.deviceId, "requests"),
    );
    stored.key.wipe();
    try {
      const signature = signRequest(
        session.reveal(),
        { method, url, headers, ...(body ? { body } : {}) },
        { keyId: stored.keyId, created: Math.floor(this.clock() / 1000) },
      );
      return { method, url, headers: { ...headers, ...signature }, ...(body ? { body } : {}), ...signal };
    } finally {
      session.wipe();
    }
  }

  private async send<T>(method: string, path: string, json?: unknown): Promise<ManagementResponse<T>> {
    const { device, keystore, transport } = this.options;
    const stored = await readDynamicKey(keystore, device.deviceId);
    if (!stored) throw new HandsafeError("management.no_dynamic_key", "no dynamic key yet", { status: 0 });
    const url = this.baseUrl + path;
    const body = json === undefined ? undefined : utf8(JSON.stringify(json));
    const headers: Record<string, string> = { accept: "application/json" };
    if (body) headers["content-type"] = "application/json";
    const session = device.withStaticKey((staticKey) =>
      deriveSessionKey(staticKey, stored.key, device.deviceId, "requests"),
    );
    stored.key.wipe();
    let signature: Record<string, string>;
    try {
      signature = signRequest(
        session.reveal(),
        { method, url, headers, ...(body ? { body } : {}) },
        { keyId: stored.keyId, created: Math.floor(this.clock() / 1000) },
      );
    } finally {
      session.wipe();
    }
    const res = await transport.send({
      method,
      url,
      headers: { ...headers, ...signature },
      ...(body ? { body } : {}),
    });
    const text = res.body.length ? fromUtf8(res.body) : "";
    let parsed: unknown = text;
    if (/^application\/json/i.test(res.headers["content-type"] ?? "") && text) parsed = JSON.parse(text);
    if (res.status >= 400) {
      const err = (parsed as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
      throw new HandsafeError(
        typeof err?.code === "string" ? err.code : "transport.http_error",
        typeof err?.message === "string" ? err.message : `${method} ${path} answered HTTP ${res.status}`,
        { status: res.status },
      );
    }
    return { status: res.status, headers: res.headers, body: parsed as T };
  }
}

/** `{"error":{"code","message"}}` becomes that HandsafeError; anything else transport.http_error. */
function errorFrom(
  method: string,
  path: string,
  status: number,
  headers: Record<string, string>,
  body: Uint8Array,
): HandsafeError {
  let err: { code?: unknown; message?: unknown } | undefined;
  if (/^application\/json/i.test(headers["content-type"] ?? "") && body.length) {
    try {
      err = (JSON.parse(fromUtf8(body)) as { error?: typeof err }).error;
    } catch {
      err = undefined;
    }
  }
  return new HandsafeError(
    typeof err?.code === "string" ? err.code : "transport.http_error",
    typeof err?.message === "string" ? err.message : `${method} ${path} answered HTTP ${status}`,
    { status },
  );
}
