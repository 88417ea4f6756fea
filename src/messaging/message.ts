/**
 * Message bodies, the plaintext record and its HPKE binding to one message and one handset
 * (docs/protocols/messaging.md §HPKE). Pure: the server seals with sealForHandset, the handset SDK
 * opens with openForHandset.
 */
import { fromBase64url } from "../core/codec/base64url.ts";
import { concatBytes, fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { canonicalJson } from "../core/codec/canonical-json.ts";
import { type HpkeRecipientKey, type HpkeSealed, hpkeOpen, hpkeSeal } from "../core/crypto/hpke.ts";
import { HandsafeError } from "../core/errors.ts";
import {
  DEFAULT_EXPIRY_SECONDS,
  LABELS,
  MAX_ATTACHMENT_BYTES,
  MAX_EXPIRY_SECONDS,
  MAX_TEXT_BYTES,
  MIN_EXPIRY_SECONDS,
} from "./labels.ts";

export type MessageBody =
  | { type: "text"; text: string }
  | { type: "attachment"; mediaType: string; data: string };

function invalidBody(why: string): HandsafeError {
  return new HandsafeError("messaging.invalid_body", `invalid message body: ${why}`, { status: 400 });
}

function tooLarge(why: string): HandsafeError {
  return new HandsafeError("messaging.body_too_large", why, { status: 413 });
}

/** RFC 6838 §4.2 restricted-name: a letter or digit, then up to 126 of the allowed characters. */
const RESTRICTED_NAME = "[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}";
export const MEDIA_TYPE = new RegExp(`^${RESTRICTED_NAME}/${RESTRICTED_NAME}$`);

function isWellFormed(text: string): boolean {
  try {
    return fromUtf8(utf8(text)) === text;
  } catch {
    return false;
  }
}

function onlyKeys(v: Record<string, unknown>, allowed: readonly string[]): void {
  const extra = Object.keys(v).filter((k) => !allowed.includes(k));
  if (extra.length > 0) throw invalidBody(`unexpected fields ${extra.join(", ")}`);
}

/**
 * The one check of a body (a message or a reply) where it enters: `messaging.invalid_body` (400) for
 * anything malformed, `messaging.body_too_large` (413) past 4096 UTF-8 bytes of text or 64 KiB of
 * attachment. Returns a fresh object holding only the known fields.
 */
export function parseMessageBody(input: unknown): MessageBody {
  if (typeof input !== "object" || input === null || Array.isArray(input)) throw invalidBody("not an object");
  const v = input as Record<string, unknown>;
  if (v["type"] === "text") {
    onlyKeys(v, ["type", "text"]);
    const text = v["text"];
    if (typeof text !== "string" || text.length === 0) throw invalidBody("text must be a non-empty string");
    if (!isWellFormed(text)) throw invalidBody("text must be well-formed Unicode");
    const bytes = utf8(text).length;
    if (bytes > MAX_TEXT_BYTES)
      throw tooLarge(`a text is at most ${MAX_TEXT_BYTES} UTF-8 bytes, got ${bytes}`);
    return { type: "text", text };
  }
  if (v["type"] === "attachment") {
    onlyKeys(v, ["type", "mediaType", "data"]);
    const mediaType = v["mediaType"];
    const data = v["data"];
    if (typeof mediaType !== "string" || !MEDIA_TYPE.test(mediaType))
      throw invalidBody("mediaType must be type/subtype (RFC 6838)");
    if (typeof data !== "string") throw invalidBody("data must be base64url");
    // Length first: a huge string is refused before it is decoded.
    if (data.length > Math.ceil((MAX_ATTACHMENT_BYTES * 4) / 3))
      throw tooLarge(`an attachment is at most ${MAX_ATTACHMENT_BYTES} bytes`);
    let decoded: Uint8Array;
    try {
      decoded = fromBase64url(data, "data");
    } catch {
      throw invalidBody("data must be canonical unpadded base64url");
    }
    if (decoded.length === 0) throw invalidBody("an attachment must not be empty");
    if (decoded.length > MAX_ATTACHMENT_BYTES)
      throw tooLarge(`an attachment is at most ${MAX_ATTACHMENT_BYTES} bytes`);
    return { type: "attachment", mediaType: mediaType.toLowerCase(), data };
  }
  throw invalidBody('type must be "text" or "attachment"');
}

/** expiresInSeconds → seconds; `messaging.invalid_expiry` (400) outside 60 s … 30 days. */
export function resolveExpirySeconds(input: unknown): number {
  if (input === undefined) return DEFAULT_EXPIRY_SECONDS;
  if (
    typeof input !== "number" ||
    !Number.isSafeInteger(input) ||
    input < MIN_EXPIRY_SECONDS ||
    input > MAX_EXPIRY_SECONDS
  )
    throw new HandsafeError(
      "messaging.invalid_expiry",
      `expiresInSeconds is a whole number from ${MIN_EXPIRY_SECONDS} to ${MAX_EXPIRY_SECONDS}`,
      { status: 400 },
    );
  return input;
}

/** A sender's or device's display name: 1..max characters, no control characters. */
export function checkDisplayName(name: unknown, max: number, code: string, what: string): string {
  if (typeof name !== "string") throw new HandsafeError(code, `${what} must be a string`, { status: 400 });
  const trimmed = name.trim();
  if (trimmed.length === 0 || trimmed.length > max || /\p{Cc}/u.test(trimmed) || !isWellFormed(trimmed))
    throw new HandsafeError(code, `${what} is 1..${max} printable characters`, { status: 400 });
  return trimmed;
}

// ---------------------------------------------------------------------------------------------
// The plaintext and its HPKE binding

export interface MessagePlaintext {
  v: 1;
  id: string;
  senderId: string;
  senderName: string;
  /** E.164 */
  to: string;
  body: MessageBody;
  /** Epoch milliseconds. */
  createdAt: number;
  expiresAt: number;
}

/** plaintext = UTF-8 of the canonical JSON of the record (core/codec/canonical-json.ts). */
export function encodeMessagePlaintext(p: MessagePlaintext): Uint8Array {
  return utf8(
    canonicalJson({
      v: 1,
      id: p.id,
      senderId: p.senderId,
      senderName: p.senderName,
      to: p.to,
      body: p.body,
      createdAt: p.createdAt,
      expiresAt: p.expiresAt,
    }),
  );
}

function malformed(why: string): HandsafeError {
  return new HandsafeError("messaging.malformed_message", `the opened message is malformed: ${why}`, {
    status: 0,
  });
}

/** The handset's strict parse of an opened plaintext. */
export function decodeMessagePlaintext(bytes: Uint8Array): MessagePlaintext {
  let v: unknown;
  try {
    v = JSON.parse(fromUtf8(bytes));
  } catch {
    throw malformed("not UTF-8 JSON");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw malformed("not an object");
  const p = v as Record<string, unknown>;
  const allowed = ["v", "id", "senderId", "senderName", "to", "body", "createdAt", "expiresAt"];
  if (Object.keys(p).some((k) => !allowed.includes(k))) throw malformed("unexpected fields");
  if (p["v"] !== 1) throw malformed("unknown version");
  for (const k of ["id", "senderId", "senderName", "to"])
    if (typeof p[k] !== "string") throw malformed(`${k} must be a string`);
  for (const k of ["createdAt", "expiresAt"])
    if (typeof p[k] !== "number" || !Number.isSafeInteger(p[k])) throw malformed(`${k} must be an integer`);
  let body: MessageBody;
  try {
    body = parseMessageBody(p["body"]);
  } catch {
    throw malformed("bad body");
  }
  return {
    v: 1,
    id: p["id"] as string,
    senderId: p["senderId"] as string,
    senderName: p["senderName"] as string,
    to: p["to"] as string,
    body,
    createdAt: p["createdAt"] as number,
    expiresAt: p["expiresAt"] as number,
  };
}

/** HPKE aad = utf8(messageId) ‖ 0x00 ‖ utf8(handsetId): a ciphertext opens only where it was sealed. */
export function messageAad(messageId: string, handsetId: string): Uint8Array {
  return concatBytes(utf8(messageId), Uint8Array.of(0), utf8(handsetId));
}

/**
 * (enc, ct) = SealBase(pkR = the handset's X25519 key, info = LABELS.hpkeInfo,
 *                      aad = messageAad(messageId, handsetId), plaintext)   — RFC 9180 §6.1
 */
export function sealForHandset(
  plaintext: Uint8Array,
  messageId: string,
  handset: { id: string; encryptionKey: Uint8Array },
): HpkeSealed {
  return hpkeSeal(handset.encryptionKey, plaintext, {
    info: LABELS.hpkeInfo,
    aad: messageAad(messageId, handset.id),
  });
}

/**
 * The handset's side: OpenBase with its private key and the same info and aad, then the strict parse
 * and the check that it is the message asked for and addressed to its number. `hpke.open_failed`
 * for anything that does not open (tampered, moved to another message or handset, another key);
 * `messaging.mismatch` for a plaintext that opens but is not this message for this number.
 */
export function openForHandset(
  recipient: Uint8Array | HpkeRecipientKey,
  sealed: { messageId: string; handsetId: string; enc: Uint8Array; ciphertext: Uint8Array },
  phoneNumber: string,
): MessagePlaintext {
  const plaintext = hpkeOpen(recipient, sealed.enc, sealed.ciphertext, {
    info: LABELS.hpkeInfo,
    aad: messageAad(sealed.messageId, sealed.handsetId),
  });
  try {
    const message = decodeMessagePlaintext(plaintext);
    checkOpenedMessage(message, { id: sealed.messageId, to: phoneNumber });
    return message;
  } finally {
    plaintext.fill(0);
  }
}

/** The handset's check after opening: the message it asked for, addressed to its own number. */
export function checkOpenedMessage(p: MessagePlaintext, expected: { id: string; to: string }): void {
  if (p.id !== expected.id || p.to !== expected.to)
    throw new HandsafeError(
      "messaging.mismatch",
      "the opened message is not the one asked for, or not for this number",
      { status: 0 },
    );
}
