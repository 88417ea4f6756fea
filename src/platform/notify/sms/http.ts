/**
 * The HTTP gateway, in the shape of commercial SMS APIs.
 *
 * Out: POST <sendUrl> with `Authorization: Bearer <token>` and JSON {"from","to","text"}; any 2xx
 * answer with JSON {"id": string} means accepted.
 *
 * In (the provider's webhook to POST /v1/sms/inbound): JSON {"from","to","text"[,"id"]} with
 *   x-handsafe-timestamp: <unix seconds>
 *   x-handsafe-signature: sha256=<hex HMAC-SHA256(webhookSecret, "<timestamp>." || raw body)>
 * The timestamp is inside the MAC and must lie within 5 minutes of our clock; a signature seen
 * before within that window is refused, so a captured request cannot be replayed (per process).
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { HandsafeError } from "../../../core/errors.ts";
import { normalisePhoneNumber } from "./phone.ts";
import { newSmsId } from "./store.ts";
import { checkSmsText } from "./text.ts";
import type { InboundHandler, InboundSms, SmsGateway } from "./types.ts";

export const SIGNATURE_HEADER = "x-handsafe-signature";
export const TIMESTAMP_HEADER = "x-handsafe-timestamp";
/** How far a webhook's timestamp may be from our clock, either way. */
export const WEBHOOK_WINDOW_MS = 5 * 60 * 1000;
const SEND_TIMEOUT_MS = 10_000;
const MAX_INBOUND_BODY = 16 * 1024;

export type WebhookHeaders = Record<string, string | string[] | undefined>;

export interface HttpGatewayOptions {
  sendUrl: string;
  token: string;
  serviceNumber: string;
  webhookSecret: string;
  clock?: () => number;
  timeoutMs?: number;
}

export interface HttpGateway extends SmsGateway {
  readonly kind: "http";
  /** Checks the webhook's signature and freshness, then reads the text; sms.signature_invalid (401) otherwise. */
  verifyAndParseInbound(headers: WebhookHeaders, rawBody: Uint8Array): InboundSms;
  /** verifyAndParseInbound, then the inbound handler (sms.no_handler, 503, when none is registered). */
  receiveWebhook(headers: WebhookHeaders, rawBody: Uint8Array): Promise<InboundSms>;
}

/** The signature header value for `rawBody` at `timestamp` (unix seconds): what a provider sends. */
export function signWebhook(secret: string, timestamp: number, rawBody: Uint8Array): string {
  return `sha256=${webhookMac(secret, String(timestamp), rawBody).toString("hex")}`;
}

function webhookMac(secret: string, timestamp: string, rawBody: Uint8Array): Buffer {
  return createHmac("sha256", secret).update(`${timestamp}.`).update(rawBody).digest();
}

export function createHttpGateway(options: HttpGatewayOptions): HttpGateway {
  const serviceNumber = normalisePhoneNumber(options.serviceNumber);
  const sendUrl = checkSendUrl(options.sendUrl);
  if (options.token.length === 0 || /[\r\n]/.test(options.token))
    throw new HandsafeError("config.invalid", "the SMS API token must be one non-empty line", {
      status: 500,
    });
  if (Buffer.byteLength(options.webhookSecret) < 16)
    throw new HandsafeError("config.invalid", "the SMS webhook secret must be at least 16 bytes", {
      status: 500,
    });
  const clock = options.clock ?? Date.now;
  const timeoutMs = options.timeoutMs ?? SEND_TIMEOUT_MS;
  let handler: InboundHandler | undefined;
  /** Signatures accepted within the window, with when they stop mattering. */
  const seen = new Map<string, number>();

  function verifyAndParseInbound(headers: WebhookHeaders, rawBody: Uint8Array): InboundSms {
    const signature = header(headers, SIGNATURE_HEADER);
    const timestamp = header(headers, TIMESTAMP_HEADER);
    if (!signature || !timestamp)
      throw unauthorised(`${SIGNATURE_HEADER} and ${TIMESTAMP_HEADER} are required`);
    const match = /^sha256=([0-9a-f]{64})$/.exec(signature.trim());
    if (!match || !/^[0-9]{1,12}$/.test(timestamp))
      throw unauthorised("malformed signature or timestamp header");
    // Authenticity first: nothing about the request is believed before the MAC checks out.
    const expected = webhookMac(options.webhookSecret, timestamp, rawBody);
    if (!timingSafeEqual(expected, Buffer.from(match[1]!, "hex")))
      throw unauthorised("signature does not match");
    const now = clock();
    const at = Number(timestamp) * 1000;
    if (Math.abs(now - at) > WEBHOOK_WINDOW_MS)
      throw new HandsafeError("sms.signature_expired", "webhook timestamp is outside the 5-minute window", {
        status: 401,
      });
    for (const [sig, until] of seen) if (until < now) seen.delete(sig);
    if (seen.has(match[1]!))
      throw new HandsafeError("sms.replayed", "this webhook request was already received", { status: 401 });
    const sms = parseInboundBody(rawBody, serviceNumber, now);
    seen.set(match[1]!, at + WEBHOOK_WINDOW_MS);
    return sms;
  }

  return {
    kind: "http",
    verifyAndParseInbound,
    async receiveWebhook(headers, rawBody) {
      const sms = verifyAndParseInbound(headers, rawBody);
      if (!handler)
        throw new HandsafeError("sms.no_handler", "nothing receives inbound texts yet", { status: 503 });
      await handler(sms);
      return sms;
    },
    async send(to, text) {
      checkSmsText(text);
      const body = JSON.stringify({ from: serviceNumber, to: normalisePhoneNumber(to), text });
      let response: Response;
      try {
        response = await fetch(sendUrl, {
          method: "POST",
          headers: {
            authorization: `Bearer ${options.token}`,
            "content-type": "application/json",
            accept: "application/json",
          },
          body,
          signal: AbortSignal.timeout(timeoutMs),
          redirect: "error",
        });
      } catch (e) {
        throw new HandsafeError(
          "sms.unavailable",
          `SMS API at ${sendUrl.origin} not reachable: ${reason(e)}`,
          {
            status: 503,
            cause: e,
          },
        );
      }
      const answer = await response.text().catch(() => "");
      if (response.status === 429 || response.status >= 500)
        throw new HandsafeError("sms.unavailable", `SMS API answered ${response.status}`, {
          status: 503,
          details: { httpStatus: response.status },
        });
      if (response.status < 200 || response.status > 299)
        throw new HandsafeError("sms.send_failed", `SMS API refused the text with ${response.status}`, {
          status: 502,
          details: { httpStatus: response.status },
        });
      let id: unknown;
      try {
        id = (JSON.parse(answer) as { id?: unknown }).id;
      } catch {}
      if (typeof id !== "string" || id.length === 0 || id.length > 200)
        throw new HandsafeError("sms.send_failed", "SMS API accepted the text but returned no id", {
          status: 502,
        });
      return { id };
    },
    onInbound(h) {
      handler = h;
    },
    async close() {},
  };
}

function parseInboundBody(rawBody: Uint8Array, serviceNumber: string, now: number): InboundSms {
  if (rawBody.length > MAX_INBOUND_BODY)
    throw new HandsafeError("request.too_large", "inbound SMS body too large", { status: 413 });
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(rawBody).toString("utf8"));
  } catch {
    throw new HandsafeError("request.malformed_json", "inbound SMS body is not JSON", { status: 400 });
  }
  const { from, to, text, id } = (body ?? {}) as Record<string, unknown>;
  if (typeof from !== "string" || typeof text !== "string" || (to !== undefined && typeof to !== "string"))
    throw new HandsafeError("request.invalid", "inbound SMS needs string from, to and text", { status: 400 });
  checkSmsText(text);
  const recipient = to === undefined ? serviceNumber : normalisePhoneNumber(to);
  if (recipient !== serviceNumber)
    throw new HandsafeError("sms.unknown_recipient", `${recipient} is not this service's number`, {
      status: 400,
    });
  const providerId = typeof id === "string" && /^[A-Za-z0-9._:-]{1,100}$/.test(id) ? id : undefined;
  return { id: providerId ?? newSmsId(now), from: normalisePhoneNumber(from), to: recipient, text, at: now };
}

function checkSendUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new HandsafeError("config.invalid", `SMS send URL ${JSON.stringify(url)} is not a URL`, {
      status: 500,
    });
  }
  if (u.protocol !== "https:" && u.protocol !== "http:")
    throw new HandsafeError("config.invalid", "SMS send URL must be http(s)", { status: 500 });
  return u;
}

/** A header by case-insensitive name; a header sent twice counts as missing. */
function header(headers: WebhookHeaders, name: string): string | undefined {
  const found = Object.entries(headers).filter(([key]) => key.toLowerCase() === name);
  if (found.length !== 1) return undefined;
  const value = found[0]![1];
  return Array.isArray(value) ? (value.length === 1 ? value[0] : undefined) : value;
}

function unauthorised(message: string): HandsafeError {
  return new HandsafeError("sms.signature_invalid", message, { status: 401 });
}

function reason(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: { code?: unknown } }).cause;
    return typeof cause?.code === "string" ? `${e.message} (${cause.code})` : e.message;
  }
  return String(e);
}
