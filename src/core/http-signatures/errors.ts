import { HandsafeError } from "../errors.ts";

/**
 * Every refusal of a signed request is a 401 with a `signature.*` code (docs/protocols/management.md
 * §Errors): missing, malformed, unsupported_algorithm, incomplete, stale, invalid, digest_mismatch.
 */
export function signatureError(code: string, message: string): HandsafeError {
  return new HandsafeError(code, message, { status: 401 });
}
