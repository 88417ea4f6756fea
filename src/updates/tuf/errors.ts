import { HandsafeError } from "../../core/errors.ts";

/**
 * The TUF error codes, a small tree (docs/protocols/updates-tuf.md lists when each happens):
 * - metadata refused: bad_metadata, bad_signature, threshold_not_met, expired, rollback, version_mismatch
 * - download refused: length_mismatch, hash_mismatch, not_found
 * - lookup: unknown_target
 * - caller's mistake: bad_request (repository misuse), bad_state (client used before it is ready)
 * Tests assert on these codes, never on messages.
 */
export const TUF_ERROR_STATUS = {
  /** Not UTF-8 / JSON, a field of the wrong type or range, wrong `_type`, unsupported spec or key type. */
  "tuf.bad_metadata": 422,
  /** Fewer valid signatures than the threshold and at least one authorised key's signature does not verify. */
  "tuf.bad_signature": 422,
  /** Fewer valid signatures from distinct authorised keys than the role's threshold. */
  "tuf.threshold_not_met": 422,
  /** The metadata expired before the fixed update start time (freeze attack). */
  "tuf.expired": 422,
  /** A version lower than the trusted one (or a file dropped from snapshot meta). */
  "tuf.rollback": 422,
  /** A file's version is not the one its parent role names (mix-and-match), or root is not N+1. */
  "tuf.version_mismatch": 422,
  /** More bytes than allowed (endless data) or a length other than the one declared. */
  "tuf.length_mismatch": 422,
  /** The bytes do not hash to the digest the parent role names. */
  "tuf.hash_mismatch": 422,
  /** The repository has no such metadata file (timestamp, snapshot or targets). */
  "tuf.not_found": 502,
  /** The trusted targets metadata lists no such target path. */
  "tuf.unknown_target": 404,
  /** A repository operation that cannot be done: bad path, threshold, key, unpublished changes. */
  "tuf.bad_request": 400,
  /** The client's trusted state is unusable or not yet refreshed. */
  "tuf.bad_state": 409,
} as const;

export type TufErrorCode = keyof typeof TUF_ERROR_STATUS;

export function tufError(
  code: TufErrorCode,
  message: string,
  details?: Record<string, unknown>,
): HandsafeError {
  return new HandsafeError(code, message, {
    status: TUF_ERROR_STATUS[code],
    ...(details ? { details } : {}),
  });
}
