/**
 * The SMS path, one interface with three adapters (docs/protocols/sms.md):
 * - outbox: a built-in SMS centre — texts are stored and readable through the API, which is how the
 *   CLI and simulated handsets receive them;
 * - smpp: SMPP 3.4 submit_sm to a real SMSC, deliver_sm for texts handsets send us;
 * - http: a webhook in the shape of commercial SMS APIs, with an inbound webhook for replies.
 */

/** A text to or from a handset. Numbers are E.164 ("+447700900123"). */
export interface SmsMessage {
  id: string;
  from: string;
  to: string;
  text: string;
  /** Epoch milliseconds. */
  at: number;
}

/** A text a handset sent to the service (mobile-originated). */
export type InboundSms = SmsMessage;

export type SmsGatewayKind = "outbox" | "smpp" | "http";

/** Receives texts that handsets send to the service; a rejection asks the sender to retry later. */
export type InboundHandler = (sms: InboundSms) => Promise<void>;

import type { Kysely } from "kysely";

export interface SmsGateway {
  readonly kind: SmsGatewayKind;
  /** Sends a text from the service's number; resolves when the gateway accepted it. */
  send(to: string, text: string): Promise<{ id: string }>;
  /**
   * Only a gateway whose sending is a write to the platform's database (the outbox): the same send
   * inside the caller's open transaction `trx`, so the text commits with what it tells of. A network
   * gateway has none; its send is called after the commit, never holding the database.
   */
  // biome-ignore lint/suspicious/noExplicitAny: the caller's transaction, whatever its tables.
  sendInTransaction?(trx: Kysely<any>, to: string, text: string): Promise<{ id: string }>;
  /** Registers the one handler for texts that handsets send to the service. */
  onInbound(handler: InboundHandler): void;
  close(): Promise<void>;
}
