/**
 * HTTP Message Signatures (RFC 9421) with hmac-sha256, and Content-Digest (RFC 9530) — the request
 * authentication of the management channel. Pure: the server's preHandler and the handset SDK both
 * call these. The profile (docs/protocols/management.md §Signature profile):
 *
 *   Signature-Input: hs=("@method" "@authority" "@path" "@query" ["content-digest"])
 *                    ;created=<unix s>;keyid="<dynamic key id>";nonce="<base64url 16 bytes>"
 *                    ;alg="hmac-sha256";tag="handsafe/v1/management"
 *   Signature:       hs=:<base64 HMAC-SHA256(session key, signature base)>:
 */
import { toBase64url } from "../core/codec/base64url.ts";
import { utf8 } from "../core/codec/bytes.ts";
import { constantTimeEqual } from "../core/crypto/ct.ts";
import { hmacSha256, sha256 } from "../core/crypto/hash.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import {
  type BareItem,
  base64Encode,
  type InnerList,
  type Parameters,
  parseDictionary,
  serializeInnerList,
  serializeItem,
} from "./structured-fields.ts";

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

/** What a signature covers of a request, as both sides see it. */
export interface SignedRequestView {
  method: string;
  /** "https" or "http" (only @target-uri and @scheme use it). */
  scheme?: string;
  /** host[:port], lower-case, default port omitted (RFC 9421 §2.2.3). */
  authority: string;
  /** Absolute path as sent, "/" when empty. */
  path: string;
  /** The query without its "?", "" when absent. */
  query: string;
  /** Lower-case field names; repeated fields already joined with ", ". */
  headers: Readonly<Record<string, string | undefined>>;
}

function sigError(code: string, message: string): HandsafeError {
  return new HandsafeError(code, message, { status: 401 });
}

/** RFC 9421 §2.2.3: lower-case host, default port removed. */
export function normaliseAuthority(host: string, scheme: string): string {
  const lower = host.trim().toLowerCase();
  if (scheme === "https" && lower.endsWith(":443")) return lower.slice(0, -4);
  if (scheme === "http" && lower.endsWith(":80")) return lower.slice(0, -3);
  return lower;
}

/** The view of an absolute URL that the signer covers. */
export function requestViewOfUrl(
  method: string,
  url: string,
  headers: Record<string, string | undefined>,
): SignedRequestView {
  const u = new URL(url);
  const scheme = u.protocol.replace(/:$/, "");
  const lowered: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(headers)) lowered[k.toLowerCase()] = v;
  return {
    method,
    scheme,
    authority: normaliseAuthority(u.host, scheme),
    path: u.pathname === "" ? "/" : u.pathname,
    query: u.search.replace(/^\?/, ""),
    headers: lowered,
  };
}

/** RFC 9421 §2.2 (derived components) and §2.1 (fields), for one component identifier. */
function componentValue(view: SignedRequestView, name: string): string {
  switch (name) {
    case "@method":
      return view.method;
    case "@authority":
      return view.authority;
    case "@scheme":
      if (!view.scheme) throw sigError("signature.malformed", "@scheme is unknown for this request");
      return view.scheme.toLowerCase();
    case "@target-uri":
      if (!view.scheme) throw sigError("signature.malformed", "@target-uri needs the scheme");
      return `${view.scheme}://${view.authority}${view.path}${view.query === "" ? "" : `?${view.query}`}`;
    case "@request-target":
      return `${view.path}${view.query === "" ? "" : `?${view.query}`}`;
    case "@path":
      return view.path === "" ? "/" : view.path;
    case "@query":
      return `?${view.query}`;
    default: {
      if (name.startsWith("@"))
        throw sigError("signature.malformed", `derived component ${name} is not supported`);
      const value = view.headers[name];
      if (value === undefined)
        throw sigError("signature.malformed", `covered field ${name} is not in the request`);
      // §2.1: leading and trailing whitespace removed; obs-fold is not allowed in values.
      const trimmed = value.trim();
      if (/[\r\n]/.test(trimmed)) throw sigError("signature.malformed", `field ${name} spans lines`);
      return trimmed;
    }
  }
}

/**
 * RFC 9421 §2.5: one line per covered component, then the "@signature-params" line whose value is
 * the serialised Signature-Input member. Lines are joined by LF with no trailing LF.
 */
export function signatureBase(view: SignedRequestView, components: readonly string[], params: Parameters) {
  const list: InnerList = { items: components.map((c) => ({ value: c, params: [] })), params };
  const lines: string[] = [];
  const seen = new Set<string>();
  for (const name of components) {
    if (seen.has(name)) throw sigError("signature.malformed", `component ${name} covered twice`);
    seen.add(name);
    lines.push(`${serializeItem({ value: name, params: [] })}: ${componentValue(view, name)}`);
  }
  const signatureParams = serializeInnerList(list);
  lines.push(`"@signature-params": ${signatureParams}`);
  return { base: lines.join("\n"), signatureParams };
}

/** RFC 9530 Content-Digest with sha-256: `sha-256=:<base64 digest>:`. */
export function contentDigest(body: Uint8Array): string {
  return `sha-256=:${base64Encode(sha256(body))}:`;
}

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
  const added: Record<string, string> = {};
  const components: string[] = [...REQUIRED_COMPONENTS];
  if (request.body !== undefined && request.body.length > 0) {
    added["content-digest"] = contentDigest(request.body);
    components.push("content-digest");
  }
  const view = requestViewOfUrl(request.method, request.url, { ...request.headers, ...added });
  const params: Parameters = [
    ["created", options.created ?? Math.floor(Date.now() / 1000)],
    ["keyid", options.keyId],
    ["nonce", options.nonce ?? toBase64url(randomBytes(SIGNATURE_NONCE_BYTES))],
    ["alg", SIGNATURE_ALG],
    ["tag", options.tag ?? SIGNATURE_TAG],
  ];
  const { base, signatureParams } = signatureBase(view, components, params);
  const mac = hmacSha256(sessionKey, utf8(base));
  return {
    ...added,
    "signature-input": `${SIGNATURE_LABEL}=${signatureParams}`,
    signature: `${SIGNATURE_LABEL}=:${base64Encode(mac)}:`,
  };
}

export interface ParsedSignature {
  components: string[];
  params: Parameters;
  created: number;
  expires: number | undefined;
  keyId: string;
  nonce: string;
  signature: Uint8Array;
}

const NONCE = /^[A-Za-z0-9_-]{16,64}$/;
const KNOWN_PARAMS = new Set(["created", "expires", "keyid", "nonce", "alg", "tag"]);

function header(headers: Readonly<Record<string, string | string[] | undefined>>, name: string) {
  const v = headers[name];
  return Array.isArray(v) ? v.join(", ") : v;
}

/**
 * Strict parse of our label in Signature-Input and Signature: the profile's parameters each once,
 * right types, only plain component names. Other labels are ignored (RFC 9421 §3.2 lets a
 * verifier choose which signature it checks).
 */
export function parseRequestSignature(
  headers: Readonly<Record<string, string | string[] | undefined>>,
  expectedTag: SignatureTag = SIGNATURE_TAG,
): ParsedSignature {
  const input = header(headers, "signature-input");
  const sig = header(headers, "signature");
  if (input === undefined || sig === undefined)
    throw sigError("signature.missing", "the request carries no Signature-Input and Signature");
  const inputMember = parseDictionary(input).get(SIGNATURE_LABEL);
  const sigMember = parseDictionary(sig).get(SIGNATURE_LABEL);
  if (!inputMember || !sigMember)
    throw sigError("signature.missing", `no signature labelled ${SIGNATURE_LABEL}`);
  if (inputMember.kind !== "inner")
    throw sigError("signature.malformed", "Signature-Input must be an inner list");
  if (
    sigMember.kind !== "item" ||
    !(sigMember.item.value instanceof Uint8Array) ||
    sigMember.item.params.length
  )
    throw sigError("signature.malformed", "Signature must be a byte sequence");
  const components: string[] = [];
  for (const item of inputMember.list.items) {
    if (typeof item.value !== "string" || item.params.length > 0)
      throw sigError("signature.malformed", "covered components are plain strings without parameters");
    if (item.value !== item.value.toLowerCase())
      throw sigError("signature.malformed", "component names are lower-case");
    components.push(item.value);
  }
  const params = inputMember.list.params;
  const get = (k: string): BareItem | undefined => params.find(([n]) => n === k)?.[1];
  for (const [k] of params)
    if (!KNOWN_PARAMS.has(k)) throw sigError("signature.malformed", `unknown signature parameter ${k}`);
  const created = get("created");
  const expires = get("expires");
  const keyId = get("keyid");
  const nonce = get("nonce");
  const alg = get("alg");
  const tag = get("tag");
  if (typeof created !== "number") throw sigError("signature.malformed", "created must be an integer");
  if (expires !== undefined && typeof expires !== "number")
    throw sigError("signature.malformed", "expires must be an integer");
  if (typeof keyId !== "string" || keyId.length === 0 || keyId.length > 100)
    throw sigError("signature.malformed", "keyid is required");
  if (typeof nonce !== "string" || !NONCE.test(nonce))
    throw sigError("signature.malformed", "nonce must be 16–64 base64url characters");
  if (alg !== SIGNATURE_ALG)
    throw sigError("signature.unsupported_algorithm", `alg must be "${SIGNATURE_ALG}"`);
  if (tag !== expectedTag) throw sigError("signature.malformed", `tag must be "${expectedTag}"`);
  const signature = sigMember.item.value;
  if (signature.length !== 32) throw sigError("signature.malformed", "an HMAC-SHA256 signature is 32 bytes");
  return { components, params, created, expires, keyId, nonce, signature };
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
  for (const required of REQUIRED_COMPONENTS)
    if (!parsed.components.includes(required))
      throw sigError("signature.incomplete", `the signature must cover ${required}`);
  const hasBody = context.body !== undefined && context.body.length > 0;
  if (hasBody && !parsed.components.includes("content-digest"))
    throw sigError("signature.incomplete", "a request with a body must cover content-digest");
  if (parsed.components.includes("content-digest")) {
    const field = view.headers["content-digest"];
    if (field === undefined) throw sigError("signature.malformed", "Content-Digest is missing");
    const digest = parseDictionary(field).get("sha-256");
    if (digest?.kind !== "item" || !(digest.item.value instanceof Uint8Array))
      throw sigError("signature.malformed", "Content-Digest has no sha-256 byte sequence");
    if (!constantTimeEqual(digest.item.value, sha256(context.body ?? new Uint8Array(0))))
      throw sigError("signature.digest_mismatch", "the body does not match its Content-Digest");
  }
  const now = Math.floor(context.nowMs / 1000);
  if (Math.abs(now - parsed.created) > SIGNATURE_WINDOW_SECONDS)
    throw sigError(
      "signature.stale",
      `created is more than ${SIGNATURE_WINDOW_SECONDS} s from the server's clock`,
    );
  if (parsed.expires !== undefined && parsed.expires <= now)
    throw sigError("signature.stale", "the signature has expired");
  const { base } = signatureBase(view, parsed.components, parsed.params);
  if (!constantTimeEqual(hmacSha256(sessionKey, utf8(base)), parsed.signature))
    throw sigError("signature.invalid", "the request signature does not verify");
}
