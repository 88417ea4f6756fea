/**
 * A sender's side of the messaging API, for `handsafe send`, the demo and a sender's own system:
 * post a message, follow its status, read its replies, check its webhook calls. Isomorphic (no
 * node:* imports): it takes any HttpClient and adds the API key.
 *
 *   const sender = new MessagingSender(http, apiKey);
 *   const { id } = await sender.send("+447911123456", { type: "text", text: "Your results are ready" });
 *   const status = await sender.status(id);
 */
import type { HttpClient } from "../handset/http-client.ts";
import type { MessageBody } from "./protocol.ts";

export interface SendOptions {
  /** 60 s … 30 days; 7 days when omitted. */
  expiresInSeconds?: number;
  /** The same key again returns the first answer and makes no second message. */
  idempotencyKey?: string;
  /** Where this message's replies and receipts go instead of the sender's webhook URL. */
  replyWebhook?: string;
}

export interface MessageStatus {
  id: string;
  to: string;
  status: "waiting_registration" | "queued" | "delivered" | "read" | "expired";
  createdAt: number;
  expiresAt: number;
  deliveredAt: number | null;
  readAt: number | null;
  deliveries: Array<{
    handsetId: string;
    deviceType: string;
    state: string;
    deliveredAt?: number;
    readAt?: number;
  }>;
  replies: number;
}

export interface Reply {
  id: string;
  handsetId: string;
  at: number;
  body: MessageBody;
}

export class MessagingSender {
  constructor(
    private readonly http: HttpClient,
    private readonly apiKey: string,
  ) {}

  private get headers(): Record<string, string> {
    return { authorization: `Bearer ${this.apiKey}` };
  }

  async send(
    to: string,
    body: MessageBody,
    options: SendOptions = {},
  ): Promise<{ id: string; status: MessageStatus["status"]; duplicate: boolean }> {
    const res = await this.http.post<{ id: string; status: MessageStatus["status"] }>(
      "/v1/messages",
      {
        to,
        body,
        ...(options.expiresInSeconds === undefined ? {} : { expiresInSeconds: options.expiresInSeconds }),
        ...(options.replyWebhook === undefined ? {} : { replyWebhook: options.replyWebhook }),
      },
      {
        headers: {
          ...this.headers,
          ...(options.idempotencyKey === undefined ? {} : { "idempotency-key": options.idempotencyKey }),
        },
      },
    );
    return { ...res.body, duplicate: res.headers["idempotent-replayed"] === "true" };
  }

  async status(messageId: string): Promise<MessageStatus> {
    return (await this.http.get<MessageStatus>(`/v1/messages/${messageId}`, { headers: this.headers })).body;
  }

  async replies(messageId: string): Promise<Reply[]> {
    return (
      await this.http.get<{ replies: Reply[] }>(`/v1/messages/${messageId}/replies`, {
        headers: this.headers,
      })
    ).body.replies;
  }

  /** Polls until the message reaches one of `states` (e.g. ["delivered", "read"]) or the time is up. */
  async waitFor(
    messageId: string,
    states: ReadonlyArray<MessageStatus["status"]>,
    options: { timeoutMs?: number; pollMs?: number } = {},
  ): Promise<MessageStatus> {
    const deadline = Date.now() + (options.timeoutMs ?? 30_000);
    for (;;) {
      const s = await this.status(messageId);
      if (states.includes(s.status) || Date.now() > deadline) return s;
      await new Promise((r) => setTimeout(r, options.pollMs ?? 200));
    }
  }
}
