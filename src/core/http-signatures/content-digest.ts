/** RFC 9530 Content-Digest with sha-256, the field a signature covers to cover a body. */
import { constantTimeEqual } from "../crypto/ct.ts";
import { sha256 } from "../crypto/hash.ts";
import { signatureError } from "./errors.ts";
import { base64Encode, parseDictionary } from "./structured-fields.ts";

/** `sha-256=:<base64 SHA-256(body)>:` */
export function contentDigest(body: Uint8Array): string {
  return `sha-256=:${base64Encode(sha256(body))}:`;
}

/**
 * The field's sha-256 member must equal the SHA-256 of the exact body bytes (other algorithms in the
 * field are ignored: sha-256 is the one we require). signature.malformed / signature.digest_mismatch.
 */
export function checkContentDigest(field: string | undefined, body: Uint8Array): void {
  if (field === undefined) throw signatureError("signature.malformed", "Content-Digest is missing");
  const digest = parseDictionary(field).get("sha-256");
  if (digest?.kind !== "item" || !(digest.item.value instanceof Uint8Array))
    throw signatureError("signature.malformed", "Content-Digest has no sha-256 byte sequence");
  if (!constantTimeEqual(digest.item.value, sha256(body)))
    throw signatureError("signature.digest_mismatch", "the body does not match its Content-Digest");
}
