/**
 * Verifying a request under a profile (RFC 9421 §3.2), in two pure steps around the caller's key
 * lookup and nonce check:
 *
 *   const parsed = parseSignature(profile, request.headers);          // strict, before any lookup
 *   const key = await keyFor(parsed.keyId);                           // the caller's store
 *   verifySignature(profile, parsed, view, key, { nowMs, body });     // components, digest, time, signature
 *   if (!(await replay.claim(scope, parsed.nonce, nonceRetentionUntil(profile, parsed.created)))) …replayed
 */
import { HandsafeError } from "../errors.ts";
import { type SignatureAlgorithm, signatureLength, type VerificationKey, verifyBase } from "./algorithms.ts";
import { checkContentDigest } from "./content-digest.ts";
import { signatureError } from "./errors.ts";
import { BODY_COMPONENT, MAX_KEY_ID_LENGTH, NONCE_PATTERN, type SignatureProfile } from "./profile.ts";
import type { SignedRequestView } from "./request-view.ts";
import { signatureBase } from "./signature-base.ts";
import { type BareItem, type Parameters, parseDictionary } from "./structured-fields.ts";

export interface ParsedSignature {
  components: string[];
  /** As sent, in order: the signature base is rebuilt from these. */
  params: Parameters;
  created: number;
  expires: number | undefined;
  keyId: string;
  nonce: string;
  alg: SignatureAlgorithm;
  tag: string;
  signature: Uint8Array;
}

export type HeaderBag = Readonly<Record<string, string | string[] | undefined>>;

const KNOWN_PARAMS = new Set(["created", "expires", "keyid", "nonce", "alg", "tag"]);

function header(headers: HeaderBag, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(", ") : v;
}

/**
 * Strict parse of the profile's label in Signature-Input and Signature (lower-case header names):
 * every parameter at most once and of the right type, only plain lower-case component names,
 * `alg` and `tag` the profile's, a signature of the algorithm's length. Other labels are ignored
 * (§3.2 lets a verifier choose which signature it checks). signature.missing / malformed /
 * unsupported_algorithm.
 */
export function parseSignature(profile: SignatureProfile, headers: HeaderBag): ParsedSignature {
  const input = header(headers, "signature-input");
  const sig = header(headers, "signature");
  if (input === undefined || sig === undefined)
    throw signatureError("signature.missing", "the request carries no Signature-Input and Signature");
  const inputMember = parseDictionary(input).get(profile.label);
  const sigMember = parseDictionary(sig).get(profile.label);
  if (!inputMember || !sigMember)
    throw signatureError("signature.missing", `no signature labelled ${profile.label}`);
  if (inputMember.kind !== "inner")
    throw signatureError("signature.malformed", "Signature-Input must be an inner list");
  if (
    sigMember.kind !== "item" ||
    !(sigMember.item.value instanceof Uint8Array) ||
    sigMember.item.params.length
  )
    throw signatureError("signature.malformed", "Signature must be a byte sequence");
  const components: string[] = [];
  for (const item of inputMember.list.items) {
    if (typeof item.value !== "string" || item.params.length > 0)
      throw signatureError("signature.malformed", "covered components are plain strings without parameters");
    if (item.value !== item.value.toLowerCase())
      throw signatureError("signature.malformed", "component names are lower-case");
    components.push(item.value);
  }
  const params = inputMember.list.params;
  const get = (k: string): BareItem | undefined => params.find(([n]) => n === k)?.[1];
  for (const [k] of params)
    if (!KNOWN_PARAMS.has(k)) throw signatureError("signature.malformed", `unknown signature parameter ${k}`);
  const created = get("created");
  const expires = get("expires");
  const keyId = get("keyid");
  const nonce = get("nonce");
  const alg = get("alg");
  const tag = get("tag");
  if (typeof created !== "number") throw signatureError("signature.malformed", "created must be an integer");
  if (expires !== undefined && typeof expires !== "number")
    throw signatureError("signature.malformed", "expires must be an integer");
  if (typeof keyId !== "string" || keyId.length === 0 || keyId.length > MAX_KEY_ID_LENGTH)
    throw signatureError("signature.malformed", "keyid is required");
  if (typeof nonce !== "string" || !NONCE_PATTERN.test(nonce))
    throw signatureError("signature.malformed", "nonce must be 16–64 base64url characters");
  if (alg !== profile.alg)
    throw signatureError("signature.unsupported_algorithm", `alg must be "${profile.alg}"`);
  if (tag !== profile.tag) throw signatureError("signature.malformed", `tag must be "${profile.tag}"`);
  const signature = sigMember.item.value;
  if (signature.length !== signatureLength(profile.alg))
    throw signatureError(
      "signature.malformed",
      `an ${profile.alg} signature is ${signatureLength(profile.alg)} bytes`,
    );
  return { components, params, created, expires, keyId, nonce, alg: profile.alg, tag, signature };
}

export interface VerifyContext {
  /** The verifier's clock, epoch milliseconds. */
  nowMs: number;
  /** The exact body bytes (undefined or empty: no body). */
  body: Uint8Array | undefined;
}

/**
 * Checks a parsed signature against the request, in this order: the profile's components covered
 * (content-digest too when there is a body), Content-Digest equal to the body's SHA-256, `created`
 * within the window and `expires` (if sent) in the future, then the signature under `key`.
 * signature.incomplete / malformed / digest_mismatch / stale / invalid. The nonce is the caller's.
 */
export function verifySignature(
  profile: SignatureProfile,
  parsed: ParsedSignature,
  view: SignedRequestView,
  key: VerificationKey,
  context: VerifyContext,
): void {
  if (key.alg !== profile.alg || parsed.alg !== profile.alg)
    throw new HandsafeError("internal", `an ${key.alg} key cannot verify an ${parsed.alg} signature`, {
      status: 500,
    });
  if (parsed.tag !== profile.tag) throw signatureError("signature.malformed", `tag must be "${profile.tag}"`);
  for (const required of profile.requiredComponents)
    if (!parsed.components.includes(required))
      throw signatureError("signature.incomplete", `the signature must cover ${required}`);
  const body = context.body ?? new Uint8Array(0);
  if (body.length > 0 && !parsed.components.includes(BODY_COMPONENT))
    throw signatureError("signature.incomplete", "a request with a body must cover content-digest");
  if (parsed.components.includes(BODY_COMPONENT)) checkContentDigest(view.headers[BODY_COMPONENT], body);
  const now = Math.floor(context.nowMs / 1000);
  if (Math.abs(now - parsed.created) > profile.windowSeconds)
    throw signatureError(
      "signature.stale",
      `created is more than ${profile.windowSeconds} s from the verifier's clock`,
    );
  if (parsed.expires !== undefined && parsed.expires <= now)
    throw signatureError("signature.stale", "the signature has expired");
  const { base } = signatureBase(view, parsed.components, parsed.params);
  if (!verifyBase(key, base, parsed.signature))
    throw signatureError("signature.invalid", "the request signature does not verify");
}
