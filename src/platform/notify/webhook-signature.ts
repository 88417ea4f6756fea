/**
 * The signature of an outbound webhook call (docs/protocols/webhooks.md): RFC 9421 with
 * hmac-sha256 under the receiver's shared secret, over the method, the full target URI and the
 * body's Content-Digest; `tag` names the capability's profile ("handsafe/v1/messaging/webhook"),
 * `keyid` tells the receiver which of its secrets to use.
 *
 *   Signature-Input: hs=("@method" "@target-uri" "content-digest");created=<unix s>;keyid="<key id>"
 *                    ;nonce="<base64url 16 bytes>";alg="hmac-sha256";tag="<tag>"
 *   Signature:       hs=:<base64 HMAC-SHA256(secret, signature base)>:
 *   Content-Digest:  sha-256=:<base64 SHA-256(body)>:
 *
 * Pure: the dispatcher signs with it, and a receiver written in TypeScript verifies with it.
 */
import { HandsafeError } from "../../core/errors.ts";
import {
  defineSignatureProfile,
  type HeaderBag,
  hmacSha256Key,
  nonceRetentionUntil,
  parseSignature,
  requestViewOfUrl,
  type SignatureProfile,
  signRequest,
  verifySignature,
} from "../../core/http-signatures/index.ts";

export const WEBHOOK_SIGNATURE_LABEL = "hs";
/** Covered by every webhook signature; content-digest is added (every call has a body). */
export const WEBHOOK_COMPONENTS = ["@method", "@target-uri"] as const;
export const WEBHOOK_WINDOW_SECONDS = 300;

const profiles = new Map<string, SignatureProfile>();

/** The profile of webhooks tagged `tag` (checked once, then cached). */
export function webhookProfile(tag: string): SignatureProfile {
  let p = profiles.get(tag);
  if (!p) {
    p = defineSignatureProfile({
      label: WEBHOOK_SIGNATURE_LABEL,
      alg: "hmac-sha256",
      tag,
      requiredComponents: WEBHOOK_COMPONENTS,
      windowSeconds: WEBHOOK_WINDOW_SECONDS,
    });
    profiles.set(tag, p);
  }
  return p;
}

/** The headers that sign one POST of `body` to `url`: content-digest, signature-input, signature. */
export function signWebhookRequest(input: {
  url: string;
  body: Uint8Array;
  secret: Uint8Array;
  keyId: string;
  tag: string;
  /** Unix seconds; now when omitted. */
  created?: number;
  nonce?: string;
}): Record<string, string> {
  return signRequest(
    webhookProfile(input.tag),
    hmacSha256Key(input.secret),
    { method: "POST", url: input.url, headers: { "content-type": "application/json" }, body: input.body },
    {
      keyId: input.keyId,
      ...(input.created !== undefined ? { created: input.created } : {}),
      ...(input.nonce !== undefined ? { nonce: input.nonce } : {}),
    },
  );
}

export interface VerifiedWebhook {
  keyId: string;
  nonce: string;
  /** Unix seconds. */
  created: number;
  /**
   * Epoch ms until which the receiver must remember `nonce` and refuse it again (a ReplayGuard:
   * platform/replay.ts). After that a replay is refused as stale.
   */
  rememberNonceUntil: number;
}

/**
 * For the receiving side: checks a webhook call as it arrived. `url` is the URL the call was sent
 * to — the one configured at the sender, scheme and host included (behind a proxy, the public URL,
 * not the internal one); `body` the exact bytes received; `headers` with lower-case names (as
 * node:http gives them). Throws HandsafeError (status 401), checking in this order: the headers
 * (signature.missing / malformed / unsupported_algorithm), the keyid (signature.unknown_key), the
 * covered components (incomplete), Content-Digest (digest_mismatch), `created` (stale), the HMAC (invalid).
 * The nonce is the receiver's to check: claim it until `rememberNonceUntil`.
 */
export function verifyWebhookSignature(input: {
  secret: Uint8Array;
  tag: string;
  url: string;
  headers: HeaderBag;
  body: Uint8Array;
  method?: string;
  /** When given, the keyid the call must carry. */
  keyId?: string;
  /** Epoch ms; Date.now() when omitted. */
  nowMs?: number;
}): VerifiedWebhook {
  const profile = webhookProfile(input.tag);
  const headers: Record<string, string | string[] | undefined> = {};
  for (const [k, v] of Object.entries(input.headers)) headers[k.toLowerCase()] = v;
  const parsed = parseSignature(profile, headers);
  if (input.keyId !== undefined && parsed.keyId !== input.keyId)
    throw new HandsafeError("signature.unknown_key", "the webhook's keyid is not the expected one", {
      status: 401,
    });
  const flat: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(headers)) flat[k] = Array.isArray(v) ? v.join(", ") : v;
  verifySignature(
    profile,
    parsed,
    requestViewOfUrl(input.method ?? "POST", input.url, flat),
    hmacSha256Key(input.secret),
    {
      nowMs: input.nowMs ?? Date.now(),
      body: input.body,
    },
  );
  if (!parsed.components.includes("content-digest"))
    throw new HandsafeError("signature.incomplete", "a webhook signature covers content-digest", {
      status: 401,
    });
  return {
    keyId: parsed.keyId,
    nonce: parsed.nonce,
    created: parsed.created,
    rememberNonceUntil: nonceRetentionUntil(profile, parsed.created),
  };
}
