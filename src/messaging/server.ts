/**
 * The messaging service: the protocol core (protocol.ts) over the platform's storage, keyring,
 * audit log, the SMS gateway and the webhook queue. Senders post messages for numbers; each
 * message waits sealed under the server's envelope key and is HPKE-sealed to every active handset
 * of its number. The handsets' side (pull, acknowledge, read, delete, reply) is inbox.ts,
 * registration (the number proved over two channels) registration.ts + enrolment.ts, retention
 * sweeper.ts; routes only parse, authorise and call these.
 *
 * Plaintext exists only in memory, between the sender's request and its seals (or between an
 * envelope opened for a newly registered key and that seal), and is wiped after use.
 */
import { toBase64url } from "../core/codec/base64url.ts";
import { fromUtf8 } from "../core/codec/bytes.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import { hashToken } from "../platform/auth/store.ts";
import type { AuditEntry, Platform } from "../platform/context.ts";
import { type GroupCommit, groupCommit } from "../platform/db/group-commit.ts";
import { groupCommitMetrics } from "../platform/http/metrics.ts";
import { normalisePhoneNumber } from "../platform/notify/sms/phone.ts";
import type { SmsGateway } from "../platform/notify/sms/types.ts";
import { checkWebhookUrl as checkPlatformWebhookUrl, enqueueWebhook } from "../platform/notify/webhooks.ts";
import {
  AT_REST,
  appLinkText,
  checkDisplayName,
  type DeliveryState,
  encodeMessagePlaintext,
  IDEMPOTENCY_KEY,
  LABELS,
  MAX_SENDER_NAME_LENGTH,
  type MessageBody,
  type MessageStatus,
  maskNumber,
  messageWaitingText,
  newMessageId,
  newSenderApiKey,
  newSenderId,
  parseMessageBody,
  resolveExpirySeconds,
  SENDER_API_KEY,
  sealForHandset,
  WEBHOOK_SECRET_BYTES,
  type WebhookPayload,
} from "./protocol.ts";
import { takeNoticeSlot } from "./registration-store.ts";
import * as store from "./store.ts";

/** Where replies and receipts go; by default the platform's durable webhook queue (platformWebhookSink). */
export interface MessagingWebhookSink {
  enqueue(
    target: { senderId: string; url: string; secret: Uint8Array },
    payload: WebhookPayload,
  ): Promise<void>;
}

/**
 * Webhook calls through platform/notify/webhooks.ts: stored, then POSTed by the dispatcher of some
 * node, signed with RFC 9421 hmac-sha256 under the sender's webhook secret (keyid = sender id, tag
 * handsafe/v1/messaging/webhook), retried with backoff. The stored call is in clear, so it never
 * carries a message or reply body: a reply webhook says that a reply waits (GET …/replies).
 */
export function platformWebhookSink(platform: Platform): MessagingWebhookSink {
  return {
    async enqueue(target, payload) {
      await enqueueWebhook(platform, {
        url: target.url,
        body: payload,
        secret: target.secret,
        keyId: target.senderId,
        tag: LABELS.webhookTag,
        kind: `messaging.${payload.type}`,
      });
    },
  };
}

export interface MessagingSettings {
  /** The app link in the text to a number without a handset (HANDSAFE_MESSAGING_APP_URL). */
  appUrl: () => string;
  /** HANDSAFE_MESSAGE_RETENTION, seconds. */
  retentionSeconds: number;
}

export interface MessagingDeps {
  sms: SmsGateway;
  settings: MessagingSettings;
  /** platformWebhookSink(platform) when omitted. */
  webhooks?: MessagingWebhookSink;
}

export interface CreatedSender {
  id: string;
  name: string;
  webhookUrl: string | null;
  createdAt: number;
  /** Shown once: only its SHA-256 is kept. */
  apiKey: string;
  /** Shown once (base64url, 32 bytes): kept sealed at rest, signs webhook calls. */
  webhookSecret: string;
}

export interface SenderInfo {
  id: string;
  name: string;
  webhookUrl: string | null;
  createdAt: number;
  disabledAt: number | null;
}

export interface SendInput {
  to: string;
  body: unknown;
  expiresInSeconds?: unknown;
  replyWebhook?: string;
}

export interface Accepted {
  id: string;
  status: MessageStatus;
  /** True when an earlier request with the same Idempotency-Key made this message. */
  duplicate: boolean;
}

export interface MessageStatusView {
  id: string;
  to: string;
  status: MessageStatus;
  createdAt: number;
  expiresAt: number;
  deliveredAt: number | null;
  readAt: number | null;
  deliveries: Array<{
    handsetId: string;
    deviceType: string;
    state: DeliveryState;
    deliveredAt?: number;
    readAt?: number;
  }>;
  replies: number;
}

export function unknownMessage(): HandsafeError {
  return new HandsafeError("messaging.unknown_message", "no such message", { status: 404 });
}

/** Where webhook calls may go (platform/notify/webhook-post.ts): https://, http:// to loopback only. */
export function checkWebhookUrl(input: unknown): string {
  if (typeof input !== "string")
    throw new HandsafeError("webhook.invalid_url", "a webhook URL is a string", { status: 400 });
  return checkPlatformWebhookUrl(input).href;
}

/** Inside sendMessage's transaction: another request of this sender holds the Idempotency-Key. */
class IdempotencyKeyTaken extends Error {}

export class MessagingService {
  readonly db: store.Db;
  /** Accepted messages commit in groups (group-commit.ts): one SQLite commit for a burst of them. */
  private readonly acceptances: GroupCommit<store.MessagingTables>;
  /** Wakes handsets whose push stream is open when a copy is sealed to them (push.ts). */
  push: { notify(handsetIds: readonly string[], messageId: string): void } | undefined;

  constructor(
    readonly platform: Platform,
    readonly deps: MessagingDeps,
  ) {
    this.db = platform.db;
    this.acceptances = groupCommit(platform.database);
    groupCommitMetrics(platform.metrics.registry, "messaging_accept", this.acceptances);
  }

  now(): number {
    return this.platform.clock();
  }

  /** With `within`, in that open transaction (last in it: see Platform.audit). */
  audit(entry: AuditEntry, within?: store.Db): Promise<void> {
    return this.platform.audit(entry, within);
  }

  /** Audits the refusal, then throws it. */
  async refuse(error: HandsafeError, entry: Omit<AuditEntry, "outcome">): Promise<never> {
    await this.audit({ ...entry, outcome: "deny", details: { code: error.code, ...entry.details } });
    throw error;
  }

  // --- senders --------------------------------------------------------------------------------------

  async createSender(input: { name: unknown; webhookUrl?: unknown }, actor: string): Promise<CreatedSender> {
    let name: string;
    let webhookUrl: string | null;
    try {
      name = checkDisplayName(input.name, MAX_SENDER_NAME_LENGTH, "messaging.invalid_sender", "name");
      webhookUrl = input.webhookUrl === undefined ? null : checkWebhookUrl(input.webhookUrl);
    } catch (e) {
      if (e instanceof HandsafeError) return this.refuse(e, { actor, action: "messaging.sender_created" });
      throw e;
    }
    const id = newSenderId();
    const apiKey = newSenderApiKey();
    const secret = randomBytes(WEBHOOK_SECRET_BYTES);
    const createdAt = this.now();
    try {
      await store.insertSender(this.db, {
        id,
        name,
        apiKeyHash: hashToken(apiKey),
        webhookUrl,
        sealedWebhookSecret: this.platform.keyring.sealAtRest(secret, AT_REST.webhookSecret(id)),
        createdBy: actor,
        createdAt,
        disabledAt: null,
      });
      await this.audit({
        actor,
        action: "messaging.sender_created",
        subject: `sender:${id}`,
        outcome: "allow",
        details: { name, webhook: webhookUrl !== null },
      });
      return { id, name, webhookUrl, createdAt, apiKey, webhookSecret: toBase64url(secret) };
    } finally {
      secret.fill(0);
    }
  }

  async listSenders(): Promise<SenderInfo[]> {
    return (await store.listSenders(this.db)).map((s) => ({
      id: s.id,
      name: s.name,
      webhookUrl: s.webhookUrl,
      createdAt: s.createdAt,
      disabledAt: s.disabledAt,
    }));
  }

  /** A disabled sender's key stops working at once; its messages stay as they are. */
  async disableSender(id: string, actor: string): Promise<void> {
    if (!(await store.disableSender(this.db, id, this.now())))
      return this.refuse(
        new HandsafeError("messaging.unknown_sender", "no such active sender", { status: 404 }),
        {
          actor,
          action: "messaging.sender_disabled",
          subject: `sender:${id}`,
        },
      );
    await this.audit({
      actor,
      action: "messaging.sender_disabled",
      subject: `sender:${id}`,
      outcome: "allow",
    });
  }

  /** The sender an API key names; `auth.unauthenticated` (401, audited) otherwise. */
  async authenticateSender(apiKey: string | undefined, origin: string): Promise<store.SenderRow> {
    const sender =
      apiKey !== undefined && SENDER_API_KEY.test(apiKey)
        ? await store.findSenderByKeyHash(this.db, hashToken(apiKey))
        : undefined;
    if (!sender || sender.disabledAt !== null)
      return this.refuse(
        new HandsafeError("auth.unauthenticated", "a valid sender API key is required", { status: 401 }),
        { actor: origin, action: "messaging.sender_auth", details: { presented: apiKey !== undefined } },
      );
    return sender;
  }

  // --- sending --------------------------------------------------------------------------------------

  /**
   * Accepts a message for a number: sealed at rest as its envelope, then HPKE-sealed to every active
   * handset of the number (status queued, a "message waiting" text) or, with none, left waiting for a
   * registration (status waiting_registration, a text with the app link). The same Idempotency-Key
   * from the same sender returns the first answer and never makes a second message.
   */
  async sendMessage(sender: store.SenderRow, input: SendInput, idempotencyKey?: string): Promise<Accepted> {
    const actor = `sender:${sender.id}`;
    let to: string;
    let body: MessageBody;
    let expirySeconds: number;
    let replyWebhook: string | null;
    try {
      if (idempotencyKey !== undefined && !IDEMPOTENCY_KEY.test(idempotencyKey))
        throw new HandsafeError(
          "messaging.invalid_idempotency_key",
          "Idempotency-Key is 1..64 visible ASCII characters",
          { status: 400 },
        );
      to = normalisePhoneNumber(input.to);
      body = parseMessageBody(input.body);
      expirySeconds = resolveExpirySeconds(input.expiresInSeconds);
      replyWebhook = input.replyWebhook === undefined ? null : checkWebhookUrl(input.replyWebhook);
    } catch (e) {
      if (e instanceof HandsafeError) return this.refuse(e, { actor, action: "messaging.message_accepted" });
      throw e;
    }
    if (idempotencyKey !== undefined) {
      const earlier = await store.findMessageByIdempotencyKey(this.db, sender.id, idempotencyKey);
      if (earlier) return { id: earlier.id, status: earlier.status, duplicate: true };
    }

    const createdAt = this.now();
    const id = newMessageId(createdAt);
    const expiresAt = createdAt + expirySeconds * 1000;
    const plaintext = encodeMessagePlaintext({
      v: 1,
      id,
      senderId: sender.id,
      senderName: sender.name,
      to,
      body,
      createdAt,
      expiresAt,
    });
    try {
      const sealedEnvelope = this.platform.keyring.sealAtRest(plaintext, AT_REST.message(id));
      const accepted = (sealed: number, notified: boolean): AuditEntry => ({
        actor,
        action: "messaging.message_accepted",
        subject: `message:${id}`,
        outcome: "allow",
        details: { to: maskNumber(to), handsets: sealed, notified, bodyType: body.type },
      });
      const sms = this.deps.sms;
      let written: { sealed: number; noticeAfterCommit: string | undefined; handsetIds: string[] };
      try {
        // One unit of a group commit: the number's row, the message, its deliveries, the notice
        // when the gateway is the outbox, and the audit record of the decision, all or none. It
        // may run twice (its batch retried), so it does nothing outside this transaction.
        written = await this.acceptances.run(async (trx) => {
          // The number's row first (the notice gate): it holds the row to the commit, as a
          // registration does (enrolment.ts). So a registration either committed its handset before
          // the read below, or reads this message after this transaction committed.
          const noticeSlot = await takeNoticeSlot(trx, to, createdAt);
          const handsets = await store.activeHandsetsOf(trx, to);
          const deliveries = this.sealDeliveries(id, plaintext, handsets);
          const inserted = await store.insertMessage(trx, {
            id,
            senderId: sender.id,
            toNumber: to,
            status: deliveries.length > 0 ? "queued" : "waiting_registration",
            sealedEnvelope,
            replyWebhook,
            idempotencyKey: idempotencyKey ?? null,
            createdAt,
            expiresAt,
            deliveredAt: null,
            readAt: null,
            envelopeErasedAt: null,
            purgedAt: null,
          });
          // Rolls back the notice slot too (and PostgreSQL refuses anything more in this transaction).
          if (!inserted) throw new IdempotencyKeyTaken();
          await store.insertDeliveries(trx, deliveries, this.now());
          const sealed = deliveries.length;
          const handsetIds = deliveries.map((d) => d.handsetId);
          const text = noticeSlot
            ? sealed > 0
              ? messageWaitingText(sender.name)
              : appLinkText(sender.name, this.deps.settings.appUrl(), expiresAt)
            : undefined;
          // A network gateway is called after the commit: it never holds the database.
          if (text !== undefined && sms.sendInTransaction === undefined)
            return { sealed, noticeAfterCommit: text, handsetIds };
          const notified =
            text !== undefined &&
            (await this.sendNotice(to, actor, () => sms.sendInTransaction!(trx, to, text), trx));
          await this.audit(accepted(sealed, notified), trx);
          return { sealed, noticeAfterCommit: undefined, handsetIds };
        });
      } catch (e) {
        if (!(e instanceof IdempotencyKeyTaken)) throw e;
        // A concurrent request with the same key won the unique index.
        const earlier = await store.findMessageByIdempotencyKey(this.db, sender.id, idempotencyKey!);
        if (earlier) return { id: earlier.id, status: earlier.status, duplicate: true };
        throw new HandsafeError("internal", "idempotent insert lost without a winner", { status: 500 });
      }
      const { sealed, noticeAfterCommit, handsetIds } = written;
      // Committed: a handset woken now finds its copy.
      this.push?.notify(handsetIds, id);
      const status: MessageStatus = sealed > 0 ? "queued" : "waiting_registration";
      if (noticeAfterCommit !== undefined) {
        const notified = await this.sendNotice(to, actor, () => sms.send(to, noticeAfterCommit));
        await this.audit(accepted(sealed, notified));
      }
      return { id, status, duplicate: false };
    } finally {
      plaintext.fill(0);
    }
  }

  /** The HPKE seal of the plaintext to each handset, as delivery rows. */
  private sealDeliveries(
    messageId: string,
    plaintext: Uint8Array,
    handsets: ReadonlyArray<{ id: string; encryptionKey: Uint8Array }>,
  ): Array<{ messageId: string; handsetId: string; enc: Uint8Array; ciphertext: Uint8Array }> {
    return handsets.map((h) => ({ messageId, handsetId: h.id, ...sealForHandset(plaintext, messageId, h) }));
  }

  /** HPKE-seals the plaintext to each handset and stores the deliveries; returns how many exist now. */
  async sealTo(
    messageId: string,
    plaintext: Uint8Array,
    handsets: ReadonlyArray<{ id: string; encryptionKey: Uint8Array }>,
  ): Promise<number> {
    const rows = this.sealDeliveries(messageId, plaintext, handsets);
    await store.insertDeliveries(this.db, rows, this.now());
    this.push?.notify(
      rows.map((r) => r.handsetId),
      messageId,
    );
    return rows.length;
  }

  /**
   * Sends the notice text once the number's gate (one per 10 minutes, takeNoticeSlot) let it. A text
   * the SMS path refuses (its own per-number limit, a gateway failure) does not fail the message: it
   * is audited (in `within` when the text was sent in that transaction) and the message waits all
   * the same.
   */
  private async sendNotice(
    to: string,
    actor: string,
    send: () => Promise<unknown>,
    within?: store.Db,
  ): Promise<boolean> {
    try {
      await send();
      return true;
    } catch (e) {
      await this.audit(
        {
          actor,
          action: "messaging.notice_sent",
          outcome: "error",
          details: { to: maskNumber(to), code: e instanceof HandsafeError ? e.code : "sms.failed" },
        },
        within,
      );
      return false;
    }
  }

  // --- the sender's view ----------------------------------------------------------------------------

  /** Another sender's message answers exactly like a missing one (and the attempt is audited). */
  private async ownMessage(sender: store.SenderRow, id: string, action: string): Promise<store.MessageRow> {
    const m = await store.findMessage(this.db, id);
    if (!m || m.senderId !== sender.id)
      return this.refuse(unknownMessage(), {
        actor: `sender:${sender.id}`,
        action,
        subject: `message:${id}`,
        details: { exists: m !== undefined },
      });
    return m;
  }

  async messageStatus(sender: store.SenderRow, id: string): Promise<MessageStatusView> {
    const m = await this.ownMessage(sender, id, "messaging.message_status");
    const deliveries = await store.deliveryStatusOf(this.db, id);
    return {
      id: m.id,
      to: m.toNumber,
      status: m.status,
      createdAt: m.createdAt,
      expiresAt: m.expiresAt,
      deliveredAt: m.deliveredAt,
      readAt: m.readAt,
      deliveries: deliveries.map((d) => ({
        handsetId: d.handsetId,
        deviceType: d.deviceType,
        state: d.state,
        ...(d.deliveredAt === null ? {} : { deliveredAt: d.deliveredAt }),
        ...(d.readAt === null ? {} : { readAt: d.readAt }),
      })),
      replies: await store.countReplies(this.db, id),
    };
  }

  /** The replies still within retention, opened for their sender. */
  async messageReplies(
    sender: store.SenderRow,
    id: string,
  ): Promise<Array<{ id: string; handsetId: string; at: number; body: MessageBody }>> {
    await this.ownMessage(sender, id, "messaging.message_replies");
    const out: Array<{ id: string; handsetId: string; at: number; body: MessageBody }> = [];
    for (const r of await store.repliesOf(this.db, id)) {
      if (r.sealedBody === null) continue;
      const bytes = this.platform.keyring.openAtRest(r.sealedBody, AT_REST.reply(r.id));
      try {
        out.push({
          id: r.id,
          handsetId: r.handsetId,
          at: r.createdAt,
          body: JSON.parse(fromUtf8(bytes)) as MessageBody,
        });
      } finally {
        bytes.fill(0);
      }
    }
    return out;
  }

  // --- webhooks -------------------------------------------------------------------------------------

  async receipt(
    message: store.MessageRow,
    status: "delivered" | "read" | "expired",
    handsetId: string | undefined,
    at: number,
  ): Promise<void> {
    await this.toSender(message, {
      type: "receipt",
      messageId: message.id,
      status,
      ...(handsetId === undefined ? {} : { handsetId }),
      at,
    });
  }

  /** Queues a webhook call to the message's replyWebhook, else its sender's webhookUrl; none: nothing. */
  async toSender(message: store.MessageRow, payload: WebhookPayload): Promise<void> {
    const sink = this.deps.webhooks ?? platformWebhookSink(this.platform);
    const sender = await store.findSender(this.db, message.senderId);
    const url = message.replyWebhook ?? sender?.webhookUrl ?? null;
    if (!sender || url === null) return;
    const secret = this.platform.keyring.openAtRest(
      sender.sealedWebhookSecret,
      AT_REST.webhookSecret(sender.id),
    );
    try {
      await sink.enqueue({ senderId: sender.id, url, secret }, payload);
    } finally {
      secret.fill(0);
    }
  }
}
