import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { inflateSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { decrypt } from "../../src/core/age/age.ts";
import { dearmor } from "../../src/core/age/armor.ts";
import { AGE_ERRORS } from "../../src/core/age/errors.ts";
import { ScryptIdentity } from "../../src/core/age/scrypt-recipient.ts";
import type { AgeIdentity } from "../../src/core/age/stanza.ts";
import { isHandsafeError } from "../../src/core/errors.ts";

/**
 * The C2SP/CCTV age vectors (test/vectors/age/README.md, and the scrypt ones in
 * test/vectors/age-scrypt/README.md): every file decrypts, or fails, exactly as its `expect` says, with the HandsafeError code pinned below; the plaintext released
 * before a failure (or all of it, on success) hashes to the vector's `payload`.
 */

const DIR = join(import.meta.dirname, "../vectors/age");
const SCRYPT_DIR = join(import.meta.dirname, "../vectors/age-scrypt");

/** CCTV's outcome classes → the codes that may stand for them. */
const CLASS_CODES: Record<string, readonly string[]> = {
  success: [],
  "no match": [AGE_ERRORS.noMatch],
  "HMAC failure": [AGE_ERRORS.headerMac],
  "header failure": [
    AGE_ERRORS.versionUnsupported,
    AGE_ERRORS.headerMalformed,
    AGE_ERRORS.stanzaMalformed,
    AGE_ERRORS.x25519LowOrder,
    AGE_ERRORS.nonceMissing,
    AGE_ERRORS.scryptNotAlone,
    AGE_ERRORS.scryptWorkFactorTooHigh,
  ],
  "payload failure": [
    AGE_ERRORS.payloadTruncated,
    AGE_ERRORS.payloadUnterminated,
    AGE_ERRORS.payloadAuth,
    AGE_ERRORS.payloadEmptyChunk,
    AGE_ERRORS.payloadTrailingData,
  ],
  "armor failure": [AGE_ERRORS.armorInvalid],
};

/** The exact code of each failing vector, so a change of behaviour shows up here. */
const EXPECTED_CODE: Record<string, string> = {
  armor_empty: "age.version_unsupported",
  armor_empty_last_line: "age.armor_invalid",
  armor_empty_line_begin: "age.armor_invalid",
  armor_empty_line_end: "age.armor_invalid",
  armor_eol_between_padding: "age.armor_invalid",
  armor_garbage_encoded: "age.payload_trailing_data",
  armor_garbage_leading: "age.armor_invalid",
  armor_garbage_trailing: "age.armor_invalid",
  armor_header_crlf: "age.header_malformed",
  armor_headers: "age.armor_invalid",
  armor_invalid_character_header: "age.armor_invalid",
  armor_invalid_character_payload: "age.armor_invalid",
  armor_long_line: "age.armor_invalid",
  armor_lowercase: "age.armor_invalid",
  armor_no_end_line: "age.armor_invalid",
  armor_no_match: "age.no_match",
  armor_no_padding: "age.armor_invalid",
  armor_not_canonical: "age.armor_invalid",
  armor_pgp_checksum: "age.armor_invalid",
  armor_short_line: "age.armor_invalid",
  armor_whitespace_begin: "age.armor_invalid",
  armor_whitespace_end: "age.armor_invalid",
  armor_whitespace_eol: "age.armor_invalid",
  armor_whitespace_last_line: "age.armor_invalid",
  armor_whitespace_line_start: "age.armor_invalid",
  armor_wrong_type: "age.armor_invalid",
  empty: "age.version_unsupported",
  header_crlf: "age.header_malformed",
  hmac_bad: "age.header_mac",
  hmac_extra_space: "age.header_malformed",
  hmac_garbage: "age.header_malformed",
  hmac_missing: "age.header_malformed",
  hmac_no_space: "age.header_malformed",
  hmac_not_canonical: "age.header_malformed",
  hmac_trailing_space: "age.header_malformed",
  hmac_truncated: "age.header_malformed",
  stanza_bad_start: "age.header_malformed",
  stanza_base64_padding: "age.header_malformed",
  stanza_empty_argument: "age.header_malformed",
  stanza_invalid_character: "age.header_malformed",
  stanza_long_line: "age.header_malformed",
  stanza_missing_body: "age.header_malformed",
  stanza_missing_final_line: "age.header_malformed",
  stanza_multiple_short_lines: "age.header_malformed",
  stanza_no_arguments: "age.header_malformed",
  stanza_not_canonical: "age.header_malformed",
  stanza_spurious_cr: "age.header_malformed",
  stream_bad_tag: "age.payload_auth",
  stream_bad_tag_second_chunk: "age.payload_auth",
  stream_bad_tag_second_chunk_full: "age.payload_auth",
  stream_last_chunk_empty: "age.payload_empty_chunk",
  stream_missing_tag: "age.payload_truncated",
  stream_no_chunks: "age.payload_truncated",
  stream_no_final: "age.payload_unterminated",
  stream_no_final_full: "age.payload_unterminated",
  stream_no_final_two_chunks: "age.payload_unterminated",
  stream_no_final_two_chunks_full: "age.payload_unterminated",
  stream_no_nonce: "age.nonce_missing",
  stream_short_chunk: "age.payload_truncated",
  stream_short_nonce: "age.nonce_missing",
  stream_short_second_chunk: "age.payload_truncated",
  stream_trailing_garbage_long: "age.payload_trailing_data",
  stream_trailing_garbage_short: "age.payload_trailing_data",
  stream_two_final_chunks: "age.payload_trailing_data",
  stream_two_final_chunks_full: "age.payload_trailing_data",
  stream_two_final_chunks_second: "age.payload_trailing_data",
  stream_two_final_chunks_short: "age.payload_auth",
  version_unsupported: "age.version_unsupported",
  x25519_bad_tag: "age.no_match",
  x25519_extra_argument: "age.stanza_malformed",
  x25519_identity: "age.x25519_low_order",
  x25519_long_file_key: "age.stanza_malformed",
  x25519_long_share: "age.stanza_malformed",
  x25519_low_order: "age.x25519_low_order",
  x25519_lowercase: "age.no_match",
  x25519_no_match: "age.no_match",
  x25519_not_canonical_body: "age.header_malformed",
  x25519_not_canonical_share: "age.stanza_malformed",
  x25519_short_share: "age.stanza_malformed",
  // scrypt (passphrase) vectors: test/vectors/age-scrypt.
  scrypt_and_x25519: "age.scrypt_not_alone",
  scrypt_bad_tag: "age.no_match",
  scrypt_double: "age.scrypt_not_alone",
  scrypt_extra_argument: "age.stanza_malformed",
  scrypt_long_file_key: "age.stanza_malformed",
  scrypt_no_match: "age.no_match",
  scrypt_not_canonical_body: "age.header_malformed",
  scrypt_not_canonical_salt: "age.stanza_malformed",
  scrypt_salt_long: "age.stanza_malformed",
  scrypt_salt_missing: "age.stanza_malformed",
  scrypt_salt_short: "age.stanza_malformed",
  scrypt_uppercase: "age.no_match",
  scrypt_work_factor_23: "age.scrypt_work_factor_too_high",
  scrypt_work_factor_hex: "age.stanza_malformed",
  scrypt_work_factor_leading_garbage: "age.stanza_malformed",
  scrypt_work_factor_leading_plus: "age.stanza_malformed",
  scrypt_work_factor_leading_zero_decimal: "age.stanza_malformed",
  scrypt_work_factor_leading_zero_octal: "age.stanza_malformed",
  scrypt_work_factor_missing: "age.stanza_malformed",
  scrypt_work_factor_negative: "age.stanza_malformed",
  scrypt_work_factor_overflow: "age.scrypt_work_factor_too_high",
  scrypt_work_factor_trailing_garbage: "age.stanza_malformed",
  scrypt_work_factor_wrong: "age.no_match",
  scrypt_work_factor_zero: "age.stanza_malformed",
};

interface Vector {
  name: string;
  expect: string;
  payload: string | undefined;
  identities: string[];
  passphrases: string[];
  armored: boolean;
  file: Uint8Array;
}

function load(dir: string, name: string): Vector {
  const bytes = readFileSync(join(dir, name));
  const split = bytes.indexOf("\n\n");
  const meta = bytes.subarray(0, split).toString("latin1").split("\n");
  const get = (key: string) =>
    meta.filter((l) => l.startsWith(`${key}: `)).map((l) => l.slice(key.length + 2));
  return {
    name,
    expect: get("expect")[0]!,
    payload: get("payload")[0],
    identities: get("identity"),
    passphrases: get("passphrase"),
    armored: get("armored")[0] === "yes",
    // Large vectors carry `compressed: zlib`: the age file is stored deflated.
    file: new Uint8Array(
      get("compressed")[0] === "zlib" ? inflateSync(bytes.subarray(split + 2)) : bytes.subarray(split + 2),
    ),
  };
}

function loadAll(dir: string): Vector[] {
  return readdirSync(dir)
    .filter((n) => n !== "README.md")
    .sort()
    .map((n) => load(dir, n));
}

const vectors = loadAll(DIR);
const scryptVectors = loadAll(SCRYPT_DIR);

async function run(v: Vector): Promise<{ code: string | undefined; sha256: string }> {
  const hash = createHash("sha256");
  try {
    const file = v.armored ? dearmor(v.file) : v.file;
    // Fed in uneven pieces, so the reader's buffering is exercised too.
    const pieces: Uint8Array[] = [];
    for (let at = 0; at < file.length; at += 7919) pieces.push(file.subarray(at, at + 7919));
    // The vectors' work factors are 2^10 (one asks for 2^23, above the default limit of 2^22).
    const identities: (AgeIdentity | string)[] = [
      ...v.identities,
      ...v.passphrases.map((p) => new ScryptIdentity(p)),
    ];
    for await (const chunk of decrypt(identities, pieces)) hash.update(chunk);
    return { code: undefined, sha256: hash.digest("hex") };
  } catch (e) {
    if (!isHandsafeError(e)) throw e;
    return { code: e.code, sha256: hash.digest("hex") };
  }
}

describe("C2SP/CCTV age vectors", () => {
  it("has the copied vectors", () => {
    expect(vectors.length).toBe(98);
    expect(scryptVectors.length).toBe(26);
  });

  for (const v of [...vectors, ...scryptVectors]) {
    it(`${v.name}: ${v.expect}`, async () => {
      const { code, sha256 } = await run(v);
      if (v.expect === "success") expect(code).toBeUndefined();
      else {
        expect(CLASS_CODES[v.expect]).toContain(code);
        expect(EXPECTED_CODE[v.name]).toBeDefined();
        expect(code).toBe(EXPECTED_CODE[v.name]);
      }
      if (v.payload !== undefined) expect(sha256).toBe(v.payload);
    });
  }
});
