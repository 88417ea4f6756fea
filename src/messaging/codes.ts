/**
 * Registration's pure parts: key checks, the code MAC context, the code state machine, the texts,
 * and the webhook payloads (docs/protocols/messaging.md §Registration, §Replies and webhooks).
 */
import { fromBase64url } from "../core/codec/base64url.ts";
import { concatBytes, utf8 } from "../core/codec/bytes.ts";
import { isValidHpkePublicKey } from "../core/crypto/hpke.ts";
import { HandsafeError } from "../core/errors.ts";
import { CODE_DIGITS, LABELS, MAX_CODE_TRIES, MAX_HANDSETS_PER_NUMBER } from "./labels.ts";

export const REGISTRATION_VARIANTS = ["server_otp", "handset_otp"] as const;
export type RegistrationVariant = (typeof REGISTRATION_VARIANTS)[number];
export const REGISTRATION_STATES = ["pending", "confirmed", "expired", "locked"] as const;
export type RegistrationState = (typeof REGISTRATION_STATES)[number];
export type InboundCodeState = "live" | "used" | "locked";

/** `messaging.invalid_public_key` (400) unless an X25519 key HPKE can seal to (RFC 9180 §7.1.4). */
export function checkEncryptionKey(key: Uint8Array): void {
  if (!isValidHpkePublicKey(key))
    throw new HandsafeError(
      "messaging.invalid_public_key",
      "encryptionKey is not a usable X25519 public key (32 bytes, not of low order)",
      { status: 400 },
    );
}

export function decodePublicKey(text: unknown, field: string): Uint8Array {
  let bytes: Uint8Array | undefined;
  if (typeof text === "string") {
    try {
      bytes = fromBase64url(text, field);
    } catch {
      bytes = undefined;
    }
  }
  if (bytes === undefined || bytes.length !== 32)
    throw new HandsafeError("messaging.invalid_public_key", `${field} must be 32 bytes of base64url`, {
      status: 400,
    });
  return bytes;
}

/** A code's MAC context: "handsafe/v1/messaging/otp" ‖ 0x00 ‖ registration id (a) or E.164 number (b). */
export function codeContext(scope: string): Uint8Array {
  return concatBytes(utf8(LABELS.otpMac), Uint8Array.of(0), utf8(scope));
}

export const CODE_PATTERN = /^[0-9]{8}$/;

function codeError(code: string, status: number, message: string, details?: Record<string, unknown>) {
  return new HandsafeError(code, message, { status, ...(details ? { details } : {}) });
}

export const registrationErrors = {
  locked: () =>
    codeError("messaging.registration_locked", 423, "too many wrong codes: this registration is locked"),
  used: () => codeError("messaging.code_used", 409, "this code was already used"),
  expired: () => codeError("messaging.code_expired", 410, "this code has expired; start again"),
  invalid: (triesLeft: number) =>
    codeError("messaging.code_invalid", 401, `wrong code (${triesLeft} tries left)`, { triesLeft }),
};

export function tooManyHandsets(): HandsafeError {
  return new HandsafeError(
    "messaging.too_many_handsets",
    `a number has at most ${MAX_HANDSETS_PER_NUMBER} active handsets`,
    { status: 409 },
  );
}

export interface CodeSlot {
  state: RegistrationState | InboundCodeState;
  tries: number;
  expiresAt: number;
}

/**
 * Can a code still be tried against this registration (or inbound code)? Throws the refusal a
 * caller gets: locked (423), used (409), expired (410) — in that order, so a locked registration
 * says locked even once it expired.
 */
export function checkCodeSlotOpen(slot: CodeSlot, now: number): void {
  if (slot.state === "locked" || slot.tries >= MAX_CODE_TRIES) throw registrationErrors.locked();
  if (slot.state === "confirmed" || slot.state === "used") throw registrationErrors.used();
  if (slot.state === "expired" || slot.expiresAt <= now) throw registrationErrors.expired();
}

/**
 * After one attempt was counted (tries already incremented to `triesAfter`): the state to move to
 * and the answer. A right code confirms; a wrong one leaves `MAX_CODE_TRIES - triesAfter` tries and
 * locks at zero.
 */
export function codeAttemptOutcome(
  triesAfter: number,
  matched: boolean,
): { state: "confirmed" | "pending" | "locked"; error?: HandsafeError } {
  if (matched) return { state: "confirmed" };
  const left = Math.max(0, MAX_CODE_TRIES - triesAfter);
  return { state: left === 0 ? "locked" : "pending", error: registrationErrors.invalid(left) };
}

// ---------------------------------------------------------------------------------------------
// Texts (every one fits the SMS path's 1600 characters; GSM-7 when names and URLs are)

export function serverCodeText(code: string, ttlSeconds: number): string {
  return `Your handsafe code is ${code}. It expires in ${Math.max(1, Math.round(ttlSeconds / 60))} minutes.`;
}

export function messageWaitingText(senderName: string): string {
  return `${senderName} sent you a secure message. Open handsafe to read it.`;
}

/** The minute formatUtc wrote last, and what it wrote: a burst of messages expires in the same minute. */
let lastMinute = Number.NaN;
let lastText = "";

/** "2026-12-01 14:05 UTC" */
export function formatUtc(epochMs: number): string {
  const minute = Math.floor(epochMs / 60_000);
  if (minute !== lastMinute) {
    lastText = `${new Date(minute * 60_000).toISOString().slice(0, 16).replace("T", " ")} UTC`;
    lastMinute = minute;
  }
  return lastText;
}

export function appLinkText(senderName: string, appUrl: string, expiresAt: number): string {
  return `${senderName} sent you a secure message. Get the handsafe app: ${appUrl} - it expires ${formatUtc(expiresAt)}.`;
}

export const HANDSET_CODE_PREFIX = "HSREG";

/** The text the app sends from its number to the service number (variant b). */
export function handsetCodeText(code: string): string {
  if (!CODE_PATTERN.test(code))
    throw new HandsafeError("messaging.invalid_code", `a code is ${CODE_DIGITS} digits`, { status: 400 });
  return `${HANDSET_CODE_PREFIX} ${code}`;
}

/** The code of an inbound "HSREG 12345678" text (case of the prefix and outer spaces ignored), or undefined. */
export function parseHandsetCodeText(text: string): string | undefined {
  const m = /^\s*HSREG\s+([0-9]{8})\s*$/i.exec(text);
  return m?.[1];
}

/** A number as the audit log shows it: "+44•••••••3456" (the log is kept forever). */
export function maskNumber(e164: string): string {
  if (e164.length <= 7) return "•".repeat(e164.length);
  return `${e164.slice(0, 3)}${"•".repeat(e164.length - 7)}${e164.slice(-4)}`;
}

// ---------------------------------------------------------------------------------------------
// Webhook payloads (replies and receipts to the sender). The platform stores a webhook call in clear
// until it is delivered, so no payload carries a body: the sender reads replies with its API key.

export type WebhookPayload =
  | {
      type: "reply";
      messageId: string;
      replyId: string;
      from: string;
      handsetId: string;
      at: number;
    }
  | {
      type: "receipt";
      messageId: string;
      status: "delivered" | "read" | "expired";
      handsetId?: string;
      at: number;
    };
