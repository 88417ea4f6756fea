import { toBase64url } from "./codec/base64url.ts";
import { concatBytes, utf8 } from "./codec/bytes.ts";
import { sha256 } from "./crypto/hash.ts";

/**
 * A handset's id: `hs_` + 22 base64url characters of SHA-256("handsafe/v1/handset-id" ‖ its
 * Ed25519 identity key). Derived, so no one can claim an id without the key it names.
 */
export function handsetIdOf(identityKey: Uint8Array): string {
  return `hs_${toBase64url(sha256(concatBytes(utf8("handsafe/v1/handset-id"), identityKey))).slice(0, 22)}`;
}
