/**
 * HTTP Message Signatures (RFC 9421) with Content-Digest (RFC 9530) over Structured Fields
 * (RFC 8941): pure, no I/O, the same code on the server, in the CLI and in a browser. A protocol
 * defines a SignatureProfile (label, alg, tag, components, window) and signs or verifies with it;
 * the nonce check needs storage and stays with the caller (platform/replay.ts on the server).
 */
export {
  type Ed25519SigningKey,
  type Ed25519VerificationKey,
  ed25519SigningKey,
  ed25519VerificationKey,
  HMAC_MIN_SECRET_BYTES,
  type HmacSha256Key,
  hmacSha256Key,
  SIGNATURE_ALGORITHMS,
  type SignatureAlgorithm,
  type SigningKey,
  signatureLength,
  signBase,
  type VerificationKey,
  verifyBase,
} from "./algorithms.ts";
export { checkContentDigest, contentDigest } from "./content-digest.ts";
export {
  BODY_COMPONENT,
  DEFAULT_NONCE_BYTES,
  DEFAULT_WINDOW_SECONDS,
  defineSignatureProfile,
  MAX_KEY_ID_LENGTH,
  NONCE_PATTERN,
  nonceRetentionUntil,
  type SignatureProfile,
} from "./profile.ts";
export { normaliseAuthority, requestViewOfUrl, type SignedRequestView } from "./request-view.ts";
export { type RequestToSign, type SignatureParams, signRequest } from "./sign.ts";
export { componentValue, signatureBase } from "./signature-base.ts";
export {
  type HeaderBag,
  type ParsedSignature,
  parseSignature,
  type VerifyContext,
  verifySignature,
} from "./verify.ts";
