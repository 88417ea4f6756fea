/**
 * Messaging's constants: labels, the request signature profile, at-rest AAD, identifiers, limits,
 * and the message and delivery states (docs/protocols/messaging.md). Pure.
 */
import { toBase64url } from "../core/codec/base64url.ts";
import { lengthPrefixed, utf8 } from "../core/codec/bytes.ts";
import { timePrefix } from "../core/codec/time-prefix.ts";
import { sha256 } from "../core/crypto/hash.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { defineSignatureProfile } from "../core/http-signatures/index.ts";

/** Every domain-separation label of the protocol (docs/protocols/messaging.md §Labels). */
export const LABELS = {
  hpkeInfo: "handsafe/v1/messaging/message",
  otpMac: "handsafe/v1/messaging/otp",
  handsetId: "handsafe/v1/messaging/handset-id",
  requestTag: "handsafe/v1/messaging",
  webhookTag: "handsafe/v1/messaging/webhook",
} as const;

/**
 * Handset requests (RFC 9421, core/http-signatures): Ed25519 under the handset's auth key, keyid =
 * handset id, tag "handsafe/v1/messaging", covering @method, @target-uri and, with a body,
 * content-digest; created within ±300 s and a 16-byte nonce the server refuses to see twice.
 */
export const REQUEST_SIGNATURE = defineSignatureProfile({
  label: "hs",
  alg: "ed25519",
  tag: LABELS.requestTag,
  requiredComponents: ["@method", "@target-uri"],
  windowSeconds: 300,
  nonceBytes: 16,
});

/** Associated data of records sealed at rest with the keyring (docs/storage.md). */
export const AT_REST = {
  message: (messageId: string) => `messaging/message/${messageId}`,
  reply: (replyId: string) => `messaging/reply/${replyId}`,
  webhookSecret: (senderId: string) => `messaging/webhook-secret/${senderId}`,
  otpKey: "messaging/otp-key",
} as const;

// ---------------------------------------------------------------------------------------------
// Identifiers

const ID_RANDOM_BYTES = 12;
export const SENDER_ID = /^snd_[A-Za-z0-9_-]{16}$/;
/** New ids have the 9-character time prefix (newMessageId); ids without it (written before) stay valid. */
export const MESSAGE_ID_PATTERN = "^msg_(?:[0-9a-z]{9})?[A-Za-z0-9_-]{16}$";
export const MESSAGE_ID = new RegExp(MESSAGE_ID_PATTERN);
export const HANDSET_ID = /^mh_[A-Za-z0-9_-]{16}$/;
export const REGISTRATION_ID = /^reg_[A-Za-z0-9_-]{16}$/;
export const REPLY_ID = /^rpl_[A-Za-z0-9_-]{16}$/;
export const SENDER_API_KEY = /^hs_sk_[A-Za-z0-9_-]{43}$/;

const newId = (prefix: string) => `${prefix}_${toBase64url(randomBytes(ID_RANDOM_BYTES))}`;
export const newSenderId = () => newId("snd");
/**
 * `msg_` + the message's creation time (`timePrefix`: 9 base-36 digits, sorting as the time) +
 * base64url of 12 CSPRNG bytes. The time prefix puts each new message at the end of the messages'
 * primary-key index instead of on a random page: an accepted message's commit writes fewer pages
 * to the WAL, and in process it cost 89–128 µs against 106–137 µs with all-random ids (3 interleaved
 * pairs of 10 one-second runs, medians). `createdAt` is the message's own (the service's clock), so
 * the id tells no more than the status does.
 */
export const newMessageId = (createdAt: number) =>
  `msg_${timePrefix(createdAt)}${toBase64url(randomBytes(ID_RANDOM_BYTES))}`;
export const newRegistrationId = () => newId("reg");
export const newReplyId = () => newId("rpl");
export const newInboundCodeId = () => newId("inc");

/** `hs_sk_` + 32 CSPRNG bytes as base64url; the server keeps its SHA-256 only. */
export function newSenderApiKey(): string {
  return `hs_sk_${toBase64url(randomBytes(32))}`;
}

/** The sender's webhook secret: 32 CSPRNG bytes (HMAC-SHA256 key of webhook signatures). */
export const WEBHOOK_SECRET_BYTES = 32;

/**
 * A handset's id: `mh_` + base64url of the first 12 bytes of
 * SHA-256(lp("handsafe/v1/messaging/handset-id") ‖ lp(E.164 number) ‖ lp(Ed25519 auth key)).
 * Derived, so an id cannot be claimed without its auth key, and one app registering again with the
 * same auth key for the same number is the same handset (its keys are replaced).
 */
export function messagingHandsetId(phoneNumber: string, authKey: Uint8Array): string {
  const digest = sha256(lengthPrefixed(utf8(LABELS.handsetId), utf8(phoneNumber), authKey));
  return `mh_${toBase64url(digest.subarray(0, ID_RANDOM_BYTES))}`;
}

// ---------------------------------------------------------------------------------------------
// Limits

export const MAX_TEXT_BYTES = 4096;
export const MAX_ATTACHMENT_BYTES = 64 * 1024;
export const MIN_EXPIRY_SECONDS = 60;
export const MAX_EXPIRY_SECONDS = 30 * 86_400;
export const DEFAULT_EXPIRY_SECONDS = 7 * 86_400;
export const MAX_IDEMPOTENCY_KEY_LENGTH = 64;
export const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,64}$/;
export const MAX_HANDSETS_PER_NUMBER = 10;
export const MAX_SENDER_NAME_LENGTH = 64;
export const MAX_DEVICE_TYPE_LENGTH = 40;
/** The "message waiting" / app-link texts: at most one per number per this long. */
export const NOTICE_INTERVAL_MS = 10 * 60 * 1000;

export const CODE_DIGITS = 8;
export const MAX_CODE_TRIES = 5;
export const DEFAULT_CODE_TTL_SECONDS = 300;
export const QUOTA_WINDOW_MS = 60 * 60 * 1000;
/** Per number per QUOTA_WINDOW_MS (docs/protocols/messaging.md §Codes and limits). */
export const QUOTAS = { registrations: 5, codesTexted: 3, inboundCodes: 5 } as const;

// ---------------------------------------------------------------------------------------------
// Message and delivery states

export const MESSAGE_STATUSES = ["waiting_registration", "queued", "delivered", "read", "expired"] as const;
export type MessageStatus = (typeof MESSAGE_STATUSES)[number];

export const DELIVERY_STATES = [
  "pending",
  "delivered",
  "read",
  "deleted",
  "replaced",
  "lost_on_reregistration",
  "expired",
] as const;
export type DeliveryState = (typeof DELIVERY_STATES)[number];

/** Delivery states in which the handset has the message (or chose to drop it): the envelope may go. */
export const ACKNOWLEDGED_STATES: readonly DeliveryState[] = ["delivered", "read", "deleted"];

export type MessageEvent = "sealed" | "acked" | "read" | "expired";

/**
 * The message status machine:
 *   waiting_registration ─sealed─► queued ─acked─► delivered ─read─► read
 *   queued ─read─► read;  waiting_registration | queued ─expired─► expired
 * Returns the statuses from which `event` moves and where to; the store applies it as a
 * compare-and-set (`where status in from`), so N nodes move a message once.
 */
export function messageTransition(event: MessageEvent): { from: MessageStatus[]; to: MessageStatus } {
  switch (event) {
    case "sealed":
      return { from: ["waiting_registration"], to: "queued" };
    case "acked":
      return { from: ["queued"], to: "delivered" };
    case "read":
      return { from: ["queued", "delivered"], to: "read" };
    case "expired":
      return { from: ["waiting_registration", "queued"], to: "expired" };
  }
}
