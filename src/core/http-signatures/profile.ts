/**
 * A signature profile: what one application requires of an RFC 9421 signature. Each protocol
 * defines its own (management's requests and push subscriptions, messaging's handset requests,
 * webhooks), so a signature made for one never passes as another: the `tag` differs (§2.3), and
 * the algorithm is the profile's, not the message's.
 *
 * Every profile asks for the same parameters, each exactly once: `created`, `keyid`, `nonce`
 * (against replay, §7.2.2), `alg` and `tag`; `expires` is optional. A request with a body also
 * covers `content-digest` (RFC 9530, sha-256), whose value must match the body.
 */
import { HandsafeError } from "../errors.ts";
import { SIGNATURE_ALGORITHMS, type SignatureAlgorithm } from "./algorithms.ts";

export interface SignatureProfile {
  /** The dictionary key of our signature in Signature-Input and Signature (§4); others are ignored. */
  readonly label: string;
  readonly alg: SignatureAlgorithm;
  /** §2.3 `tag`: names the application profile, e.g. "handsafe/v1/messaging". */
  readonly tag: string;
  /** Covered by every signature, in this order when we sign; a verifier requires each. */
  readonly requiredComponents: readonly string[];
  /** `created` is accepted this far either side of the verifier's clock. */
  readonly windowSeconds: number;
  /** Random bytes in a nonce we make (base64url). */
  readonly nonceBytes: number;
}

/** Added to the covered components when the request has a body. */
export const BODY_COMPONENT = "content-digest";
export const DEFAULT_WINDOW_SECONDS = 300;
export const DEFAULT_NONCE_BYTES = 16;
/** A nonce we accept: 16–64 base64url characters (≥ 96 bits). */
export const NONCE_PATTERN = /^[A-Za-z0-9_-]{16,64}$/;
export const MAX_KEY_ID_LENGTH = 100;

const LABEL = /^[a-z*][a-z0-9_\-.*]*$/;
const COMPONENT = /^@?[a-z0-9!#$%&'*+\-.^_`|~]+$/;

/**
 * A checked, frozen profile: label a structured-field key, tag printable ASCII, components plain
 * lower-case names without repeats, window 1 s … 1 h, nonces of 12–48 bytes.
 */
export function defineSignatureProfile(
  profile: Omit<SignatureProfile, "windowSeconds" | "nonceBytes"> &
    Partial<Pick<SignatureProfile, "windowSeconds" | "nonceBytes">>,
): SignatureProfile {
  const out: SignatureProfile = {
    label: profile.label,
    alg: profile.alg,
    tag: profile.tag,
    requiredComponents: Object.freeze([...profile.requiredComponents]),
    windowSeconds: profile.windowSeconds ?? DEFAULT_WINDOW_SECONDS,
    nonceBytes: profile.nonceBytes ?? DEFAULT_NONCE_BYTES,
  };
  const bad = (why: string) =>
    new HandsafeError("signature.invalid_profile", `signature profile: ${why}`, { status: 500 });
  if (!LABEL.test(out.label)) throw bad("the label must be a structured-field key");
  if (!SIGNATURE_ALGORITHMS.includes(out.alg)) throw bad(`unknown algorithm ${String(out.alg)}`);
  if (!/^[\x20-\x7e]{1,200}$/.test(out.tag)) throw bad("the tag is 1–200 printable ASCII characters");
  if (new Set(out.requiredComponents).size !== out.requiredComponents.length)
    throw bad("a component is listed twice");
  for (const c of out.requiredComponents)
    if (!COMPONENT.test(c) || c === BODY_COMPONENT)
      throw bad(`component ${JSON.stringify(c)} (content-digest is added for a body by itself)`);
  if (!Number.isInteger(out.windowSeconds) || out.windowSeconds < 1 || out.windowSeconds > 3600)
    throw bad("the window is 1–3600 seconds");
  if (!Number.isInteger(out.nonceBytes) || out.nonceBytes < 12 || out.nonceBytes > 48)
    throw bad("nonces are 12–48 bytes");
  return Object.freeze(out);
}

/**
 * Epoch milliseconds until which a verifier must remember a nonce it accepted: after that, a
 * replay carries a `created` outside the window and is refused as stale anyway (one second of slack
 * for the rounding of `created`).
 */
export function nonceRetentionUntil(profile: SignatureProfile, created: number): number {
  return (created + profile.windowSeconds) * 1000 + 1000;
}
