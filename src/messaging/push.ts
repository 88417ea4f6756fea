/**
 * The messaging handset's push stream (docs/protocols/messaging.md §Push): a registered handset
 * holds `GET /v1/messaging/inbox/events` open, signed like any inbox request, and the server writes
 * a `message` event the moment a copy is sealed to it — a message accepted for its number, or one
 * that waited and was sealed to it at registration. The event names the message only; the handset
 * then pulls its inbox as it would after the "message waiting" text. No content travels here.
 *
 *   event: ready     data: {"handsetId":"mh_…","keepAliveMs":15000}   once, first
 *   : keep-alive     (a comment, every keepAliveMs)
 *   event: message   data: {"id":"msg_…"}
 *
 * Streams live in this node's PushHub (platform/notify/push-hub.ts). On PostgreSQL every node also
 * LISTENs on one channel, and a node that seals a copy NOTIFYs it: the node that holds the handset's
 * stream writes the event. A wake-up lost on the way (a node restarting) costs nothing but latency:
 * the text was sent anyway, and a handset pulls its inbox whenever its stream (re)connects.
 */
import { sql } from "kysely";
import pg from "pg";
import { randomToken } from "../core/crypto/random.ts";
import type { Platform } from "../platform/context.ts";
import { parseDatabaseUrl } from "../platform/db/url.ts";
import { type PushConnection, PushHub } from "../platform/notify/push-hub.ts";
import { MESSAGE_ID } from "./labels.ts";
import { MESSAGING_PUSH_DEFAULTS, messageEvent, PUSH_NOTIFY_CHANNEL, readyEvent } from "./push-protocol.ts";

export { EVENTS_CONTENT_TYPE, INBOX_EVENTS_PATH } from "./push-protocol.ts";

const MIN_RETRY_MS = 500;
const MAX_RETRY_MS = 30_000;

export class MessagingPush {
  readonly keepAliveMs: number;
  readonly #hub: PushHub;
  readonly #listen: { connectionString: string } | undefined;
  #client: pg.Client | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #retryMs = MIN_RETRY_MS;
  #closed = false;
  readonly #nodeId = randomToken(9);

  constructor(
    private readonly platform: Platform,
    settings: { keepAliveMs?: number; maxStreamMs?: number } = {},
    private readonly onError: (what: string, err: unknown) => void = () => {},
  ) {
    this.keepAliveMs = settings.keepAliveMs ?? MESSAGING_PUSH_DEFAULTS.keepAliveMs;
    this.#hub = new PushHub({
      keepAliveMs: this.keepAliveMs,
      maxStreamMs: settings.maxStreamMs ?? MESSAGING_PUSH_DEFAULTS.maxStreamMs,
      maxStreamsPerDevice: MESSAGING_PUSH_DEFAULTS.maxStreamsPerHandset,
    });
    const target =
      platform.database.dialect === "postgres" ? parseDatabaseUrl(platform.config.databaseUrl) : undefined;
    this.#listen = target?.dialect === "postgres" ? { connectionString: target.connectionString } : undefined;
  }

  /** A stream for an authenticated handset; its first block is the ready event. */
  open(handsetId: string): PushConnection {
    const connection = this.#hub.open(handsetId);
    if (this.#listen && !this.#client && !this.#retry) this.#connect();
    connection.write(readyEvent(handsetId, this.keepAliveMs));
    return connection;
  }

  /**
   * Tells each handset (here, and through PostgreSQL on the other nodes) that a copy of the
   * message was sealed to it. Best effort: never throws, never holds the caller.
   */
  notify(handsetIds: readonly string[], messageId: string): void {
    if (handsetIds.length === 0) return;
    for (const id of handsetIds) this.#hub.send(id, messageEvent(messageId));
    if (!this.#listen) return;
    // Every listening node hears it, this one too: `from` lets it skip what it wrote above.
    const payload = JSON.stringify({ h: handsetIds, m: messageId, from: this.#nodeId });
    sql`select pg_notify(${PUSH_NOTIFY_CHANNEL}, ${payload})`
      .execute(this.platform.db)
      .catch((err: unknown) => this.onError("messaging push notify", err));
  }

  #connect(): void {
    if (this.#closed || !this.#listen) return;
    const client = new pg.Client({ connectionString: this.#listen.connectionString });
    this.#client = client;
    const lost = (err: unknown) => {
      if (this.#client !== client) return;
      this.#client = undefined;
      client.end().catch(() => {});
      if (this.#closed) return;
      this.onError("messaging push listener", err);
      this.#retry = setTimeout(() => {
        this.#retry = undefined;
        this.#connect();
      }, this.#retryMs);
      this.#retry.unref();
      this.#retryMs = Math.min(MAX_RETRY_MS, this.#retryMs * 2);
    };
    client.on("error", lost);
    client.on("end", () => lost(new Error("listener connection ended")));
    client.on("notification", (n) => {
      if (n.channel !== PUSH_NOTIFY_CHANNEL || !n.payload) return;
      try {
        const { h, m, from } = JSON.parse(n.payload) as { h: unknown; m: unknown; from: unknown };
        if (from === this.#nodeId || !Array.isArray(h) || typeof m !== "string" || !MESSAGE_ID.test(m))
          return;
        for (const id of h)
          if (typeof id === "string" && this.#hub.isConnected(id)) this.#hub.send(id, messageEvent(m));
      } catch {
        // Not ours: ignored.
      }
    });
    client
      .connect()
      .then(() => client.query(`listen ${PUSH_NOTIFY_CHANNEL}`))
      .then(() => {
        this.#retryMs = MIN_RETRY_MS;
      })
      .catch(lost);
  }

  /** Ends every stream (before the HTTP server closes: open streams would hold it). */
  endStreams(): void {
    this.#hub.closeAll();
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#hub.closeAll();
    if (this.#retry) clearTimeout(this.#retry);
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => {});
  }
}
