/**
 * Outbound webhooks (docs/protocols/webhooks.md): a durable outbox any capability writes to, and a
 * dispatcher on every node that delivers it.
 *
 *   await enqueueWebhook(platform, { url, body, secret, keyId, tag, kind });   // one row, sealed secret
 *   const dispatcher = startWebhookDispatcher(platform);                       // server.ts does this
 *
 * Delivery is at least once: a POST over HTTPS signed with RFC 9421 hmac-sha256
 * (webhook-signature.ts); a 2xx answer is `delivered`; anything else, or no answer within 10 s, is
 * tried again after 1 s, 3 s, 10 s, 30 s, 90 s, 4 min and 10 min (+ up to 10 % jitter), and after
 * the 8th try the row is `failed`. Rows are claimed by compare-and-set, so N nodes never send one
 * row at the same time; a node that dies mid-call leaves a lease that lapses after 60 s.
 */
import type { Kysely } from "kysely";
import { utf8 } from "../../core/codec/bytes.ts";
import { randomToken } from "../../core/crypto/random.ts";
import { HandsafeError } from "../../core/errors.ts";
import type { Platform } from "../context.ts";
import { checkWebhookUrl } from "./webhook-post.ts";
import * as store from "./webhook-store.ts";
import { webhookSecretAad } from "./webhook-store.ts";

export {
  startWebhookDispatcher,
  WEBHOOK_LEASE_MS,
  WEBHOOK_RETRY_DELAYS_MS,
  WebhookDispatcher,
  type WebhookDispatcherOptions,
  type WebhookEvent,
} from "./webhook-dispatcher.ts";
export { checkWebhookUrl, WEBHOOK_MAX_RESPONSE_BYTES, WEBHOOK_TIMEOUT_MS } from "./webhook-post.ts";
export {
  signWebhookRequest,
  type VerifiedWebhook,
  verifyWebhookSignature,
  WEBHOOK_COMPONENTS,
  webhookProfile,
} from "./webhook-signature.ts";
export { type WebhookState, webhookMigrations } from "./webhook-store.ts";

export const MAX_WEBHOOK_BODY_BYTES = 1024 * 1024;

const KIND = /^[a-z][a-z0-9_.-]{0,63}$/;
const PRINTABLE = /^[\x20-\x7e]+$/;

type Db = Kysely<store.WebhookTables>;

export interface WebhookRequest {
  /** https:// (http:// only to 127.0.0.1 / localhost). */
  url: string;
  /** Any JSON value; sent as JSON.stringify(body), ≤ 1 MiB. */
  body: unknown;
  /** The receiver's shared secret (16–512 bytes); stored sealed, never in clear. */
  secret: Uint8Array;
  /** RFC 9421 keyid: tells the receiver which secret (e.g. the sender id). Printable ASCII, 1–100. */
  keyId: string;
  /** RFC 9421 tag of the capability's webhook profile, e.g. "handsafe/v1/messaging/webhook". */
  tag: string;
  /** What the call is, for metrics and audit: "messaging.reply", "messaging.receipt". */
  kind: string;
  /** Epoch ms of the first try; now when omitted. */
  notBefore?: number;
}

export interface WebhookStatus {
  id: string;
  kind: string;
  state: store.WebhookState;
  attempts: number;
  /** Of the last try: the receiver's HTTP status (null: no answer) and a short reason when it failed. */
  lastStatus: number | null;
  lastError: string | null;
  nextAttemptAt: number | null;
  createdAt: number;
  finishedAt: number | null;
}

/** What enqueueWebhook needs: a capability's platform, or `{ ...platform, db: trx }` inside its transaction. */
export type WebhookContext = Pick<Platform, "db" | "keyring" | "clock">;

function invalid(message: string): HandsafeError {
  return new HandsafeError("webhook.invalid", message, { status: 400 });
}

/** Stores one call to make; returns its id. webhook.invalid_url / webhook.invalid (400). */
export async function enqueueWebhook(ctx: WebhookContext, request: WebhookRequest): Promise<{ id: string }> {
  checkWebhookUrl(request.url);
  if (typeof request.kind !== "string" || !KIND.test(request.kind))
    throw invalid("kind is 1–64 characters a-z 0-9 _ . -, starting with a letter");
  if (typeof request.keyId !== "string" || request.keyId.length > 100 || !PRINTABLE.test(request.keyId))
    throw invalid("keyId is 1–100 printable ASCII characters");
  if (typeof request.tag !== "string" || request.tag.length > 200 || !PRINTABLE.test(request.tag))
    throw invalid("tag is 1–200 printable ASCII characters");
  if (!(request.secret instanceof Uint8Array) || request.secret.length < 16 || request.secret.length > 512)
    throw invalid("the secret is 16–512 bytes");
  let body: string | undefined;
  try {
    body = JSON.stringify(request.body);
  } catch {
    body = undefined;
  }
  if (body === undefined) throw invalid("the body is not JSON");
  if (utf8(body).length > MAX_WEBHOOK_BODY_BYTES) throw invalid("the body is over 1 MiB");
  const now = ctx.clock();
  const id = `whk_${randomToken(12)}`;
  await store.insertWebhook(
    ctx.db as Db,
    {
      id,
      kind: request.kind,
      url: request.url,
      body,
      sealedSecret: ctx.keyring.sealAtRest(request.secret, webhookSecretAad(id)),
      keyId: request.keyId,
      tag: request.tag,
      nextAttemptAt: Math.max(now, request.notBefore ?? now),
    },
    now,
  );
  return { id };
}

/** Where a webhook stands (undefined: no such id). */
export async function webhookStatus(db: Platform["db"], id: string): Promise<WebhookStatus | undefined> {
  const row = await store.findWebhook(db as Db, id);
  if (!row) return undefined;
  const open = row.state === "pending" || row.state === "sending";
  return {
    id: row.id,
    kind: row.kind,
    state: row.state,
    attempts: row.attempts,
    lastStatus: row.lastStatus,
    lastError: row.lastError,
    nextAttemptAt: open ? row.nextAttemptAt : null,
    createdAt: row.createdAt,
    finishedAt: row.finishedAt,
  };
}
