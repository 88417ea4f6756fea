/**
 * Management's RFC 9421 profile (docs/protocols/management.md §Signature profile) on the shared,
 * pure implementation in src/core/http-signatures/. Two profiles, one per tag — handset requests
 * under the session key K_requests, push subscriptions under K_push:
 *
 *   Signature-Input: hs=("@method" "@authority" "@path" "@query" ["content-digest"])
 *                    ;created=<unix s>;keyid="<dynamic key id>";nonce="<base64url 16 bytes>"
 *                    ;alg="hmac-sha256";tag="handsafe/v1/management"
 *   Signature:       hs=:<base64 HMAC-SHA256(session key, signature base)>:
 *
 * The names exported here are the ones the server, the SDK and the tests always used.
 */
import {
  contentDigest,
  defineSignatureProfile,
  type HeaderBag,
  hmacSha256Key,
  normaliseAuthority,
  type ParsedSignature,
  parseSignature,
  requestViewOfUrl,
  type SignatureProfile,
  type SignedRequestView,
  signatureBase,
  signRequest as signWithProfile,
  verifySignature,
} from "../core/http-signatures/index.ts";

export { contentDigest, normaliseAuthority, type ParsedSignature, requestViewOfUrl, signatureBase };
export type { SignedRequestView };

export const SIGNATURE_LABEL = "hs";
export const SIGNATURE_ALG = "hmac-sha256";
/** RFC 9421 §2.3 `tag`: names this application's profile, so no other profile's signature fits. */
export const SIGNATURE_TAG = "handsafe/v1/management";
/**
 * The `tag` of a push subscription (GET /v1/management/push), signed with the push authentication
 * key: a signature made for one profile is refused by the other before any key is looked up.
 */
export const PUSH_SIGNATURE_TAG = "handsafe/v1/management/push";
export type SignatureTag = typeof SIGNATURE_TAG | typeof PUSH_SIGNATURE_TAG;
/** `created` is accepted this far either side of the verifier's clock. */
export const SIGNATURE_WINDOW_SECONDS = 300;
export const SIGNATURE_NONCE_BYTES = 16;
/** Always covered; "content-digest" is added when the request has a body. */
export const REQUIRED_COMPONENTS = ["@method", "@authority", "@path", "@query"] as const;

const profileOf = (tag: SignatureTag): SignatureProfile =>
  defineSignatureProfile({
    label: SIGNATURE_LABEL,
    alg: SIGNATURE_ALG,
    tag,
    requiredComponents: REQUIRED_COMPONENTS,
    windowSeconds: SIGNATURE_WINDOW_SECONDS,
    nonceBytes: SIGNATURE_NONCE_BYTES,
  });

/** The two management profiles, by tag. */
export const MANAGEMENT_PROFILES: Readonly<Record<SignatureTag, SignatureProfile>> = Object.freeze({
  [SIGNATURE_TAG]: profileOf(SIGNATURE_TAG),
  [PUSH_SIGNATURE_TAG]: profileOf(PUSH_SIGNATURE_TAG),
});

export interface SignOptions {
  keyId: string;
  /** Unix seconds; now when omitted. */
  created?: number;
  nonce?: string;
  /** The profile; SIGNATURE_TAG when omitted. */
  tag?: SignatureTag;
}

/**
 * The headers that sign a request: Signature-Input, Signature and, with a body, Content-Digest.
 * `headers` are the request's other headers (a covered content-digest must be among them or is added).
 */
export function signRequest(
  sessionKey: Uint8Array,
  request: { method: string; url: string; headers?: Record<string, string>; body?: Uint8Array },
  options: SignOptions,
): Record<string, string> {
  return signWithProfile(
    MANAGEMENT_PROFILES[options.tag ?? SIGNATURE_TAG],
    hmacSha256Key(sessionKey),
    request,
    {
      keyId: options.keyId,
      ...(options.created !== undefined ? { created: options.created } : {}),
      ...(options.nonce !== undefined ? { nonce: options.nonce } : {}),
    },
  );
}

/**
 * Strict parse of our label in Signature-Input and Signature: the profile's parameters each once,
 * right types, only plain component names, alg hmac-sha256 and the expected tag. Other labels are
 * ignored (RFC 9421 §3.2 lets a verifier choose which signature it checks).
 */
export function parseRequestSignature(
  headers: HeaderBag,
  expectedTag: SignatureTag = SIGNATURE_TAG,
): ParsedSignature {
  return parseSignature(MANAGEMENT_PROFILES[expectedTag], headers);
}

/**
 * Checks a parsed signature against the request: required components covered (content-digest
 * when there is a body, and its value the body's SHA-256), `created` within the window, the
 * HMAC equal in constant time. The caller looks the key up by keyid and checks the nonce once.
 */
export function verifyRequestSignature(
  parsed: ParsedSignature,
  view: SignedRequestView,
  sessionKey: Uint8Array,
  context: { nowMs: number; body: Uint8Array | undefined },
): void {
  const profile =
    parsed.tag === PUSH_SIGNATURE_TAG
      ? MANAGEMENT_PROFILES[PUSH_SIGNATURE_TAG]
      : MANAGEMENT_PROFILES[SIGNATURE_TAG];
  verifySignature(profile, parsed, view, hmacSha256Key(sessionKey), context);
}
