/**
 * The two RFC 9421 signature profiles of the backup API (docs/protocols/backup.md §5). Pure: the
 * handset SDK signs with them, the server (request-auth.ts) verifies with them — one definition, so
 * the two cannot drift, and the SDK needs no server module to sign.
 */
import { verify } from "../core/crypto/ed25519.ts";
import { defineSignatureProfile } from "../core/http-signatures/index.ts";
import { envelopeSigningInput } from "./envelope.ts";

/** The `tag`s of the two profiles: a signature made for one never passes as the other. */
export const SIGNATURE_TAGS = {
  request: "handsafe/v1/backup",
  upload: "handsafe/v1/backup/upload",
} as const;

/**
 * Every backup request but an upload PATCH: Ed25519 under the account key, keyid = account id,
 * covering @method, @target-uri and, with a body, content-digest (RFC 9530 sha-256); created within
 * ±300 s and a 16-byte nonce the server refuses to see twice.
 */
export const REQUEST_SIGNATURE = defineSignatureProfile({
  label: "hs",
  alg: "ed25519",
  tag: SIGNATURE_TAGS.request,
  requiredComponents: ["@method", "@target-uri"],
  windowSeconds: 300,
  nonceBytes: 16,
});

/**
 * An upload PATCH: @method, @target-uri (the upload's URI), upload-offset and content-length. The
 * body is not digested — a chunk of up to 64 MiB streams to the blob store unbuffered — so what
 * binds the bytes is the size and SHA-256 the signed `POST /v1/backup/uploads` declared, checked at
 * completion (backup.upload_mismatch). A replayed PATCH is refused by its nonce; one whose
 * offset is no longer the upload's length by backup.offset_mismatch.
 */
export const UPLOAD_SIGNATURE = defineSignatureProfile({
  label: "hs",
  alg: "ed25519",
  tag: SIGNATURE_TAGS.upload,
  requiredComponents: ["@method", "@target-uri", "upload-offset", "content-length"],
  windowSeconds: 300,
  nonceBytes: 16,
});

/** §4: `"handsafe/v1/backup/envelope" || 0x00 || xml`, verified against the owner's account key. */
export function verifyEnvelopeSignature(
  xml: Uint8Array,
  signature: Uint8Array,
  ownerKey: Uint8Array,
): boolean {
  return verify(ownerKey, envelopeSigningInput(xml), signature);
}
