/**
 * The outbox gateway: the built-in SMS centre. Sending stores the text (direction mt) where the
 * API lets a simulated handset read it; a simulated handset "sends an SMS to the service" through
 * submitInbound, which stores it (direction mo) and hands it to the inbound handler.
 */
import type { Kysely } from "kysely";
import { HandsafeError } from "../../../core/errors.ts";
import { normalisePhoneNumber } from "./phone.ts";
import { insertText, type SmsTables, type StoredSms } from "./store.ts";
import { checkSmsText } from "./text.ts";
import type { InboundHandler, SmsGateway } from "./types.ts";

export interface OutboxGateway extends SmsGateway {
  readonly kind: "outbox";
  readonly serviceNumber: string;
  /**
   * A handset at `from` texts the service. The text is stored first, then the inbound handler
   * runs; its failure is the caller's failure (the text stays stored).
   */
  submitInbound(from: string, text: string, to?: string): Promise<StoredSms>;
}

export function createOutboxGateway(
  // biome-ignore lint/suspicious/noExplicitAny: the platform's db is untyped; we narrow it here.
  db: Kysely<any>,
  options: { serviceNumber: string; clock?: () => number },
): OutboxGateway {
  const texts = db as Kysely<SmsTables>;
  const serviceNumber = normalisePhoneNumber(options.serviceNumber);
  const clock = options.clock ?? Date.now;
  let handler: InboundHandler | undefined;

  async function sendWith(db: Kysely<SmsTables>, to: string, text: string): Promise<{ id: string }> {
    checkSmsText(text);
    const stored = await insertText(
      db,
      { direction: "mt", from: serviceNumber, to: normalisePhoneNumber(to), text },
      clock(),
    );
    return { id: stored.id };
  }

  return {
    kind: "outbox",
    serviceNumber,
    send: (to, text) => sendWith(texts, to, text),
    sendInTransaction: (trx, to, text) => sendWith(trx as Kysely<SmsTables>, to, text),
    onInbound(h) {
      handler = h;
    },
    async submitInbound(from, text, to = serviceNumber) {
      checkSmsText(text);
      const sender = normalisePhoneNumber(from);
      if (normalisePhoneNumber(to) !== serviceNumber)
        throw new HandsafeError("sms.unknown_recipient", `${to} is not this service's number`, {
          status: 400,
        });
      const stored = await insertText(
        texts,
        { direction: "mo", from: sender, to: serviceNumber, text },
        clock(),
      );
      if (handler)
        await handler({ id: stored.id, from: stored.from, to: stored.to, text: stored.text, at: stored.at });
      return stored;
    },
    async close() {},
  };
}
