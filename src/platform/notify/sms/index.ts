/**
 * Chooses and builds the SMS gateway from settings, with the per-number send limit around it.
 * `loadSmsConfig(env)` reads the HANDSAFE_SMS_* / HANDSAFE_SMPP_* variables (docs/protocols/sms.md).
 */
import type { Kysely } from "kysely";
import { HandsafeError } from "../../../core/errors.ts";
import { createHttpGateway, type HttpGateway } from "./http.ts";
import { createSendLimiter } from "./limiter.ts";
import { createOutboxGateway, type OutboxGateway } from "./outbox.ts";
import { normalisePhoneNumber } from "./phone.ts";
import { createSmppGateway, type SmppEvent, type SmppGateway } from "./smpp.ts";
import type { SmsGatewayKind } from "./types.ts";

export type { HttpGateway } from "./http.ts";
export type { OutboxGateway } from "./outbox.ts";
export type { SmppGateway } from "./smpp.ts";
export type { InboundHandler, InboundSms, SmsGateway, SmsMessage } from "./types.ts";

export type SmsConfig = {
  serviceNumber: string;
  /** Texts to one number per hour (per process); 0 turns the limit off. */
  perNumberPerHour: number;
} & (
  | { kind: "outbox" }
  | { kind: "smpp"; url: string; systemId: string; password: string }
  | { kind: "http"; sendUrl: string; token: string; webhookSecret: string }
);

export interface SmsDeps {
  // biome-ignore lint/suspicious/noExplicitAny: the platform's untyped handle; the outbox narrows it.
  db: Kysely<any>;
  clock?: () => number;
  onSmppEvent?: (event: SmppEvent) => void;
}

export type AnySmsGateway = OutboxGateway | SmppGateway | HttpGateway;

export const DEFAULT_PER_NUMBER_PER_HOUR = 10;

export function createSmsGateway(config: SmsConfig, deps: SmsDeps): AnySmsGateway {
  const clock = deps.clock ?? Date.now;
  const gateway = build(config, deps, clock);
  if (config.perNumberPerHour === 0) return gateway;
  return createSendLimiter({ perNumberPerHour: config.perNumberPerHour, clock })(gateway);
}

function build(config: SmsConfig, deps: SmsDeps, clock: () => number): AnySmsGateway {
  switch (config.kind) {
    case "outbox":
      return createOutboxGateway(deps.db, { serviceNumber: config.serviceNumber, clock });
    case "smpp":
      return createSmppGateway({
        url: config.url,
        systemId: config.systemId,
        password: config.password,
        serviceNumber: config.serviceNumber,
        clock,
        ...(deps.onSmppEvent ? { onEvent: deps.onSmppEvent } : {}),
      });
    case "http":
      return createHttpGateway({
        sendUrl: config.sendUrl,
        token: config.token,
        webhookSecret: config.webhookSecret,
        serviceNumber: config.serviceNumber,
        clock,
      });
  }
}

const KINDS: readonly SmsGatewayKind[] = ["outbox", "smpp", "http"];
/** The outbox's number when none is configured (the built-in SMS centre never leaves this server). */
export const DEFAULT_SERVICE_NUMBER = "+447911000000";

/** Reads the SMS settings; an empty value counts as unset; a bad one is config.invalid. */
export function loadSmsConfig(env: Record<string, string | undefined> = process.env): SmsConfig {
  const get = (name: string) => {
    const v = env[name]?.trim();
    return v ? v : undefined;
  };
  const required = (name: string, kind: string) => {
    const v = get(name);
    if (v === undefined) throw invalid(`${name} is required when HANDSAFE_SMS_GATEWAY=${kind}`);
    return v;
  };
  const kind = (get("HANDSAFE_SMS_GATEWAY") ?? "outbox").toLowerCase() as SmsGatewayKind;
  if (!KINDS.includes(kind)) throw invalid(`HANDSAFE_SMS_GATEWAY must be one of ${KINDS.join(", ")}`);
  let serviceNumber: string;
  try {
    serviceNumber = normalisePhoneNumber(get("HANDSAFE_SMS_SERVICE_NUMBER") ?? DEFAULT_SERVICE_NUMBER);
  } catch (e) {
    throw invalid(`HANDSAFE_SMS_SERVICE_NUMBER: ${(e as Error).message}`);
  }
  const limitText = get("HANDSAFE_SMS_PER_NUMBER_PER_HOUR") ?? String(DEFAULT_PER_NUMBER_PER_HOUR);
  if (!/^[0-9]{1,6}$/.test(limitText))
    throw invalid("HANDSAFE_SMS_PER_NUMBER_PER_HOUR must be a whole number 0–999999");
  const common = { serviceNumber, perNumberPerHour: Number(limitText) };
  switch (kind) {
    case "outbox":
      return { kind, ...common };
    case "smpp":
      return {
        kind,
        ...common,
        url: required("HANDSAFE_SMPP_URL", kind),
        systemId: required("HANDSAFE_SMPP_SYSTEM_ID", kind),
        password: required("HANDSAFE_SMPP_PASSWORD", kind),
      };
    case "http":
      return {
        kind,
        ...common,
        sendUrl: required("HANDSAFE_SMS_HTTP_URL", kind),
        token: required("HANDSAFE_SMS_HTTP_TOKEN", kind),
        webhookSecret: required("HANDSAFE_SMS_WEBHOOK_SECRET", kind),
      };
  }
}

function invalid(message: string): HandsafeError {
  return new HandsafeError("config.invalid", message, { status: 500 });
}
