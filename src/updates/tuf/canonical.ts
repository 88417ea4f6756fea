import { canonicalize } from "@tufjs/canonical-json";
import { utf8 } from "../../core/codec/bytes.ts";
import { tufError } from "./errors.ts";

/**
 * TUF signs the OLPC canonical JSON of `signed` (spec §4.2 "Metadata format"): keys sorted, no
 * whitespace, only `"` and `\` escaped, integers only. @tufjs/canonical-json is the same encoder
 * tuf-js uses, pure JS (no node:*), so server, CLI and browser produce identical bytes.
 * Note: this is not RFC 8785 — core/codec/canonical-json.ts is for handsafe's own signatures.
 */
export function canonicalBytes(value: unknown): Uint8Array {
  try {
    return utf8(canonicalize(value));
  } catch (cause) {
    throw tufError("tuf.bad_metadata", `value has no canonical JSON form: ${(cause as Error).message}`);
  }
}
