/** Signing a request under a profile (RFC 9421 §3.1): the headers to add. */
import { toBase64url } from "../codec/base64url.ts";
import { randomBytes } from "../crypto/random.ts";
import { HandsafeError } from "../errors.ts";
import { type SigningKey, signBase } from "./algorithms.ts";
import { contentDigest } from "./content-digest.ts";
import { BODY_COMPONENT, type SignatureProfile } from "./profile.ts";
import { requestViewOfUrl } from "./request-view.ts";
import { signatureBase } from "./signature-base.ts";
import { base64Encode, type Parameters } from "./structured-fields.ts";

export interface RequestToSign {
  method: string;
  /** Absolute URL, as the receiver will see it (@target-uri, @authority, @path, @query come from it). */
  url: string;
  /** The request's other headers; covered fields must be among them. */
  headers?: Readonly<Record<string, string>>;
  /** Exact body bytes; a non-empty body adds Content-Digest and covers it. */
  body?: Uint8Array;
}

export interface SignatureParams {
  keyId: string;
  /** Unix seconds; now when omitted. */
  created?: number;
  /** Unix seconds; none when omitted. */
  expires?: number;
  /** base64url; `profile.nonceBytes` random bytes when omitted. */
  nonce?: string;
}

/**
 * The headers that sign the request: `signature-input`, `signature` and, with a body,
 * `content-digest`. Parameters in the order created, [expires,] keyid, nonce, alg, tag.
 */
export function signRequest(
  profile: SignatureProfile,
  key: SigningKey,
  request: RequestToSign,
  params: SignatureParams,
): Record<string, string> {
  if (key.alg !== profile.alg)
    throw new HandsafeError("internal", `an ${key.alg} key cannot sign for an ${profile.alg} profile`, {
      status: 500,
    });
  const added: Record<string, string> = {};
  const components: string[] = [...profile.requiredComponents];
  if (request.body !== undefined && request.body.length > 0) {
    added[BODY_COMPONENT] = contentDigest(request.body);
    components.push(BODY_COMPONENT);
  }
  const view = requestViewOfUrl(request.method, request.url, { ...request.headers, ...added });
  const parameters: Parameters = [["created", params.created ?? Math.floor(Date.now() / 1000)]];
  if (params.expires !== undefined) parameters.push(["expires", params.expires]);
  parameters.push(
    ["keyid", params.keyId],
    ["nonce", params.nonce ?? toBase64url(randomBytes(profile.nonceBytes))],
    ["alg", profile.alg],
    ["tag", profile.tag],
  );
  const { base, signatureParams } = signatureBase(view, components, parameters);
  return {
    ...added,
    "signature-input": `${profile.label}=${signatureParams}`,
    signature: `${profile.label}=:${base64Encode(signBase(key, base))}:`,
  };
}
