import { base64Url } from "./codec/base64.ts";
import { fromUtf8, utf8 } from "./codec/bytes.ts";
import { canonicalJson } from "./codec/canonical-json.ts";
import {
  ED25519_PUBLIC_KEY_LENGTH,
  ED25519_SIGNATURE_LENGTH,
  sign as ed25519Sign,
  verify as ed25519Verify,
} from "./crypto/ed25519.ts";
import { HandsafeError } from "./errors.ts";

/**
 * JWS compact serialisation (RFC 7515 §7.1) with one algorithm: EdDSA over Ed25519 (RFC 8037 §3.1).
 * Deliberately small: no JWK, no `crit`, no unencoded payloads, no algorithm negotiation — the header
 * is exactly `{"alg":"EdDSA","kid":…}` (plus an optional `typ`), written and accepted in canonical
 * JSON only, so one token has one byte form and a member cannot be smuggled in twice. Every refusal
 * — wrong shape, bad base64url, other alg (`none`, `HS256`, …), unknown kid, bad signature, too
 * large — is HandsafeError("token.invalid"), one code with no oracle.
 */

/** RFC 8037 §3.1: the `alg` value for EdDSA signatures. */
export const JWS_ALG_EDDSA = "EdDSA";
/** Tokens are small; anything larger is refused before any decoding. */
export const JWS_MAX_LENGTH = 8 * 1024;

export interface JwsHeader {
  alg: typeof JWS_ALG_EDDSA;
  kid: string;
  typ?: string;
}

export interface JwsSigner {
  kid: string;
  /** The Ed25519 seed (RFC 8032's 32-byte private key). */
  seed: Uint8Array;
}

/** Public keys by `kid`: a record, a Map, or a lookup function. */
export type JwsKeys =
  | Readonly<Record<string, Uint8Array>>
  | ReadonlyMap<string, Uint8Array>
  | ((kid: string) => Uint8Array | undefined);

export interface VerifiedJws<P = Record<string, unknown>> {
  header: JwsHeader;
  payload: P;
}

const HEADER_MEMBERS = new Set(["alg", "kid", "typ"]);

function invalid(message: string, cause?: unknown): HandsafeError {
  return new HandsafeError("token.invalid", message, { status: 401, cause });
}

function b64(bytes: Uint8Array): string {
  return base64Url.encode(bytes);
}

function unb64(text: string, what: string): Uint8Array {
  const bytes = base64Url.decode(text);
  if (bytes === undefined) throw invalid(`JWS ${what} is not canonical unpadded base64url`);
  return bytes;
}

function parseJsonObject(bytes: Uint8Array, what: string): Record<string, unknown> {
  let value: unknown;
  let canonical: string;
  try {
    const text = fromUtf8(bytes);
    value = JSON.parse(text);
    canonical = canonicalJson(value);
    if (canonical !== text) throw new TypeError("not canonical JSON");
  } catch (cause) {
    throw invalid(`JWS ${what} is not canonical JSON`, cause);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw invalid(`JWS ${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

function checkHeader(header: Record<string, unknown>, requireKid: boolean): void {
  for (const name of Object.keys(header))
    if (!HEADER_MEMBERS.has(name)) throw invalid(`JWS header member ${JSON.stringify(name)} is not allowed`);
  // RFC 8725 §3.1: the verifier decides the algorithm; anything but EdDSA (none, HS256…) is refused.
  if (header.alg !== JWS_ALG_EDDSA) throw invalid("JWS alg must be EdDSA");
  if (header.kid !== undefined && (typeof header.kid !== "string" || header.kid.length === 0))
    throw invalid("JWS kid must be a non-empty string");
  if (requireKid && header.kid === undefined) throw invalid("JWS kid is missing");
  if (header.typ !== undefined && typeof header.typ !== "string") throw invalid("JWS typ must be a string");
}

interface ParsedCompact {
  header: Record<string, unknown>;
  payload: Uint8Array;
  signingInput: Uint8Array;
  signature: Uint8Array;
}

function parseCompact(compact: unknown, requireKid: boolean): ParsedCompact {
  if (typeof compact !== "string") throw invalid("JWS must be a string");
  if (compact.length > JWS_MAX_LENGTH) throw invalid(`JWS longer than ${JWS_MAX_LENGTH} characters`);
  const parts = compact.split(".");
  if (parts.length !== 3) throw invalid("JWS compact form has three parts");
  const [h, p, s] = parts as [string, string, string];
  if (h.length === 0 || s.length === 0) throw invalid("JWS header and signature must not be empty");
  const header = parseJsonObject(unb64(h, "header"), "header");
  checkHeader(header, requireKid);
  const payload = unb64(p, "payload");
  const signature = unb64(s, "signature");
  if (signature.length !== ED25519_SIGNATURE_LENGTH) throw invalid("JWS signature must be 64 bytes");
  return { header, payload, signature, signingInput: utf8(`${h}.${p}`) };
}

/**
 * RFC 7515 §5.1 over raw parts: BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(Ed25519 sig).
 * `headerJson` is written as given (the RFC 8037 §A.4 vector signs `{"alg":"EdDSA"}`, without kid).
 */
export function signCompact(headerJson: string, payload: Uint8Array, seed: Uint8Array): string {
  const header = parseJsonObject(utf8(headerJson), "header");
  checkHeader(header, false);
  const signingInput = `${b64(utf8(headerJson))}.${b64(payload)}`;
  return `${signingInput}.${b64(ed25519Sign(seed, utf8(signingInput)))}`;
}

/**
 * RFC 7515 §5.2 against one known public key; returns the header and the raw payload bytes. A kid in
 * the header is allowed but not required here (the caller chose the key).
 */
export function verifyCompact(
  compact: string,
  publicKey: Uint8Array,
): { header: Record<string, unknown>; payload: Uint8Array } {
  const parsed = parseCompact(compact, false);
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== ED25519_PUBLIC_KEY_LENGTH)
    throw invalid("JWS verification key must be a 32-byte Ed25519 public key");
  if (!ed25519Verify(publicKey, parsed.signingInput, parsed.signature))
    throw invalid("JWS signature does not verify");
  return { header: parsed.header, payload: parsed.payload };
}

/** Signs a JSON object (written as canonical JSON) with header `{"alg":"EdDSA","kid",typ?}`. */
export function signJws(
  payload: Record<string, unknown>,
  signer: JwsSigner,
  options: { typ?: string } = {},
): string {
  if (typeof signer.kid !== "string" || signer.kid.length === 0)
    throw new HandsafeError("crypto.invalid_key", "JWS signer needs a non-empty kid", { status: 500 });
  const header: JwsHeader = {
    alg: JWS_ALG_EDDSA,
    kid: signer.kid,
    ...(options.typ ? { typ: options.typ } : {}),
  };
  return signCompact(canonicalJson(header), utf8(canonicalJson(payload)), signer.seed);
}

function keyFor(keys: JwsKeys, kid: string): Uint8Array | undefined {
  if (typeof keys === "function") return keys(kid);
  if (keys instanceof Map) return keys.get(kid);
  const record = keys as Readonly<Record<string, Uint8Array>>;
  return Object.hasOwn(record, kid) ? record[kid] : undefined;
}

/**
 * Verifies a token signed by `signJws`: the header must name a kid found in `keys`, the signature
 * must verify under that key, and the payload must be a canonical-JSON object. Claims are NOT
 * checked here (expiry, audience…): that is the protocol's job on the returned payload.
 */
export function verifyJws<P = Record<string, unknown>>(compact: string, keys: JwsKeys): VerifiedJws<P> {
  const parsed = parseCompact(compact, true);
  const kid = parsed.header.kid as string;
  const publicKey = keyFor(keys, kid);
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== ED25519_PUBLIC_KEY_LENGTH)
    throw invalid("JWS kid is not a known key");
  if (!ed25519Verify(publicKey, parsed.signingInput, parsed.signature))
    throw invalid("JWS signature does not verify");
  const payload = parseJsonObject(parsed.payload, "payload");
  return { header: parsed.header as unknown as JwsHeader, payload: payload as P };
}

/**
 * The header and payload WITHOUT verifying anything (to route a token to its zone or show it). Never
 * trust what this returns; the structure checks are the same as verifyJws's.
 */
export function decodeJwsUnverified(compact: string): VerifiedJws<Record<string, unknown>> {
  const parsed = parseCompact(compact, true);
  return {
    header: parsed.header as unknown as JwsHeader,
    payload: parseJsonObject(parsed.payload, "payload"),
  };
}

/** The names the brief uses: `sign(payload, {kid, seed})`, `verify(compact, keysByKid)`. */
export { signJws as sign, verifyJws as verify };
