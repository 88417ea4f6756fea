/**
 * The handset's side of the service: its inbox (sealed to it only), acknowledgements, read
 * receipts, deletion and replies. Every action names a message by id; one of another handset or
 * number answers like one that does not exist. The envelope of a message goes once every active
 * handset of its number acknowledged it.
 */
import { toBase64url } from "../core/codec/base64url.ts";
import { utf8 } from "../core/codec/bytes.ts";
import { HandsafeError } from "../core/errors.ts";
import { AT_REST, type DeliveryState, type MessageBody, newReplyId, parseMessageBody } from "./protocol.ts";
import { type MessagingService, unknownMessage } from "./server.ts";
import * as store from "./store.ts";

export interface InboxItem {
  id: string;
  senderId: string;
  senderName: string;
  state: DeliveryState;
  enc: string;
  ciphertext: string;
  createdAt: number;
  expiresAt: number;
}

/** Who a verified handset request came from (request-auth.ts). */
export interface MessagingHandset {
  id: string;
  phoneNumber: string;
}

export class HandsetInbox {
  constructor(private readonly service: MessagingService) {}

  async list(
    handset: MessagingHandset,
    options: { all?: boolean; limit?: number } = {},
  ): Promise<InboxItem[]> {
    const states: DeliveryState[] = options.all ? ["pending", "delivered", "read"] : ["pending"];
    const rows = await store.inboxOf(
      this.service.db,
      handset.id,
      states,
      this.service.now(),
      options.limit ?? 100,
    );
    return rows.map((r) => ({
      id: r.messageId,
      senderId: r.senderId,
      senderName: r.senderName,
      state: r.state,
      enc: toBase64url(r.enc),
      ciphertext: toBase64url(r.ciphertext),
      createdAt: r.createdAt,
      expiresAt: r.expiresAt,
    }));
  }

  /**
   * This handset's delivery of a message, or `messaging.unknown_message` (404, audited) — a message
   * of another handset or number looks exactly like a missing one. An expired message is
   * `messaging.message_expired` (410).
   */
  private async ownDelivery(
    handset: MessagingHandset,
    messageId: string,
    action: string,
  ): Promise<{ message: store.MessageRow; delivery: store.DeliveryRow }> {
    const delivery = await store.findDelivery(this.service.db, messageId, handset.id);
    const message = delivery ? await store.findMessage(this.service.db, messageId) : undefined;
    if (!delivery || !message || delivery.state === "replaced" || delivery.state === "lost_on_reregistration")
      return this.service.refuse(unknownMessage(), {
        actor: `handset:${handset.id}`,
        action,
        subject: `message:${messageId}`,
      });
    if (message.status === "expired" || message.expiresAt <= this.service.now())
      return this.service.refuse(
        new HandsafeError("messaging.message_expired", "this message has expired", { status: 410 }),
        { actor: `handset:${handset.id}`, action, subject: `message:${messageId}` },
      );
    return { message, delivery };
  }

  /** The handset has the message: its delivery is `delivered`, the message's status follows. */
  async acknowledge(handset: MessagingHandset, messageId: string): Promise<void> {
    const { message } = await this.ownDelivery(handset, messageId, "messaging.ack");
    const now = this.service.now();
    if (
      await store.moveDelivery(
        this.service.db,
        { messageId, handsetId: handset.id },
        ["pending"],
        "delivered",
        now,
      )
    ) {
      if (await store.transitionMessage(this.service.db, messageId, "acked", now))
        await this.service.receipt(message, "delivered", handset.id, now);
      await this.eraseEnvelopeIfDone(message);
    }
  }

  /** A read receipt (implies delivered). */
  async markRead(handset: MessagingHandset, messageId: string): Promise<void> {
    const { message } = await this.ownDelivery(handset, messageId, "messaging.read");
    const now = this.service.now();
    if (
      await store.moveDelivery(
        this.service.db,
        { messageId, handsetId: handset.id },
        ["pending", "delivered"],
        "read",
        now,
      )
    ) {
      if (await store.transitionMessage(this.service.db, messageId, "read", now))
        await this.service.receipt(message, "read", handset.id, now);
      await this.eraseEnvelopeIfDone(message);
    }
  }

  /** This handset's copy is gone (its ciphertext dropped); counts as acknowledged for the envelope. */
  async deleteCopy(handset: MessagingHandset, messageId: string): Promise<void> {
    const { message } = await this.ownDelivery(handset, messageId, "messaging.delete");
    const now = this.service.now();
    if (
      await store.moveDelivery(
        this.service.db,
        { messageId, handsetId: handset.id },
        ["pending", "delivered", "read"],
        "deleted",
        now,
        true,
      )
    )
      await this.eraseEnvelopeIfDone(message);
  }

  /**
   * The envelope goes once every handset active for the number acknowledged the message: from then
   * on only HPKE ciphertexts remain, each readable by its own handset only.
   */
  async eraseEnvelopeIfDone(message: store.MessageRow): Promise<void> {
    if ((await store.unacknowledgedHandsets(this.service.db, message.id, message.toNumber)) === 0)
      await store.eraseEnvelope(this.service.db, message.id, this.service.now());
  }

  /** A reply to a message this handset received: stored sealed, forwarded to the sender's webhook. */
  async reply(handset: MessagingHandset, messageId: string, input: unknown): Promise<{ id: string }> {
    const actor = `handset:${handset.id}`;
    const { message } = await this.ownDelivery(handset, messageId, "messaging.reply");
    let body: MessageBody;
    try {
      body = parseMessageBody(input);
    } catch (e) {
      if (e instanceof HandsafeError) return this.service.refuse(e, { actor, action: "messaging.reply" });
      throw e;
    }
    const id = newReplyId();
    const now = this.service.now();
    const bytes = utf8(JSON.stringify(body));
    try {
      await store.insertReply(this.service.db, {
        id,
        messageId,
        senderId: message.senderId,
        handsetId: handset.id,
        sealedBody: this.service.platform.keyring.sealAtRest(bytes, AT_REST.reply(id)),
        createdAt: now,
      });
    } finally {
      bytes.fill(0);
    }
    await this.service.toSender(message, {
      type: "reply",
      messageId,
      replyId: id,
      from: handset.phoneNumber,
      handsetId: handset.id,
      at: now,
    });
    await this.service.audit({
      actor,
      action: "messaging.reply",
      subject: `message:${messageId}`,
      outcome: "allow",
      details: { replyId: id, bodyType: body.type },
    });
    return { id };
  }
}
