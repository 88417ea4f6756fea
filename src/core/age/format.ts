import { constantTimeEqual } from "../crypto/ct.ts";
import { hmacSha256 } from "../crypto/hash.ts";
import { hkdfSha256 } from "../crypto/hkdf.ts";
import { decodeBase64, encodeBase64 } from "./base64.ts";
import { AGE_ERRORS, ageError } from "./errors.ts";
import type { ByteReader } from "./reader.ts";
import type { Stanza } from "./stanza.ts";

/**
 * age v1 §Header, read as its ABNF:
 *
 *   header     = v1-line 1*stanza end
 *   v1-line    = "age-encryption.org/v1" LF
 *   end        = "--- " 43base64char LF
 *   stanza     = arg-line *full-line final-line
 *   arg-line   = "-> " argument *(SP argument) LF        argument = 1*VCHAR
 *   full-line  = 64base64char LF                        final-line = *63base64char LF
 *
 * The MAC is HMAC-SHA-256 under HKDF-SHA-256(ikm = file key, salt = empty, info = "header") over the
 * header up to and including "---" (without the following space).
 */

export const VERSION_LINE = "age-encryption.org/v1";
const VERSION_PREFIX = "age-encryption.org/";
export const HEADER_MAC_INFO = "header";
const COLUMNS = 64;
const MAC_LENGTH = 32;
/** We hold the whole header in memory to check its MAC; a real one is a few hundred bytes per recipient. */
export const MAX_HEADER_LENGTH = 1 << 20;

export interface Header {
  readonly stanzas: readonly Stanza[];
  readonly mac: Uint8Array;
  /** The bytes the MAC covers: everything up to and including "---". */
  readonly macInput: Uint8Array;
}

const malformed = (why: string) => ageError(AGE_ERRORS.headerMalformed, `age header: ${why}`);

function isVchar(c: number): boolean {
  return c >= 0x21 && c <= 0x7e;
}

function isBase64Char(c: number): boolean {
  return (
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x61 && c <= 0x7a) ||
    (c >= 0x30 && c <= 0x39) ||
    c === 0x2b ||
    c === 0x2f
  );
}

/** Latin-1 view of bytes already known to be ASCII (every check below is per byte). */
function ascii(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}

function asciiBytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

export function headerMacKey(fileKey: Uint8Array): Uint8Array {
  return hkdfSha256(fileKey, undefined, HEADER_MAC_INFO, 32);
}

/**
 * Reads the raw header from the stream: lines up to and including the one starting with "---"
 * (no base64 line can start with "-"). Leaves the reader at the first payload byte.
 */
export async function readHeaderBytes(reader: ByteReader): Promise<Uint8Array> {
  const lines: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { line, tooLong } = await reader.readLine(MAX_HEADER_LENGTH - total);
    if (tooLong) throw ageError(AGE_ERRORS.headerTooLarge, `age header is over ${MAX_HEADER_LENGTH} bytes`);
    if (line === undefined) {
      if (lines.length === 0) throw ageError(AGE_ERRORS.versionUnsupported, "not an age file");
      throw malformed("the file ends inside the header");
    }
    lines.push(line);
    total += line.length;
    if (lines.length === 1) continue; // the version line is checked by parseHeader
    if (line[0] === 0x2d && line[1] === 0x2d && line[2] === 0x2d) break;
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (const l of lines) {
    out.set(l, o);
    o += l.length;
  }
  return out;
}

/** Parses a complete header (as readHeaderBytes returns it). Does not verify the MAC. */
export function parseHeader(bytes: Uint8Array): Header {
  if (bytes.length === 0 || bytes[bytes.length - 1] !== 0x0a) throw malformed("must end with a line feed");
  const lines = ascii(bytes).split("\n");
  lines.pop(); // after the final LF
  let offset = 0; // byte offset of lines[i]
  const version = lines[0]!;
  if (version !== VERSION_LINE) {
    const rest = version.slice(VERSION_PREFIX.length);
    if (
      version.startsWith(VERSION_PREFIX) &&
      rest.length > 0 &&
      [...rest].every((c) => isVchar(c.charCodeAt(0)))
    )
      throw ageError(AGE_ERRORS.versionUnsupported, `age version ${JSON.stringify(rest)} is not supported`);
    throw malformed("the first line is not age-encryption.org/v1");
  }
  offset += version.length + 1;
  const stanzas: Stanza[] = [];
  let i = 1;
  for (;;) {
    const line = lines[i];
    if (line === undefined) throw malformed("no --- MAC line");
    if (line.startsWith("---")) {
      if (stanzas.length === 0) throw malformed("no recipient stanza");
      if (i !== lines.length - 1) throw malformed("data after the MAC line");
      if (!line.startsWith("--- ")) throw malformed("the MAC line must be '--- ' and the MAC");
      const encoded = line.slice(4);
      const mac = encoded.length === 43 ? decodeBase64(encoded) : undefined;
      if (mac === undefined || mac.length !== MAC_LENGTH)
        throw malformed("the MAC must be canonical base64 of 32 bytes");
      return { stanzas, mac, macInput: bytes.slice(0, offset + 3) };
    }
    if (!line.startsWith("-> ")) throw malformed(`line ${i + 1} is neither a stanza nor the MAC`);
    const args = line.slice(3).split(" ");
    for (const arg of args)
      if (arg.length === 0 || ![...arg].every((c) => isVchar(c.charCodeAt(0))))
        throw malformed("a stanza argument must be one or more visible ASCII characters");
    offset += line.length + 1;
    i++;
    let body = "";
    for (;;) {
      const bodyLine = lines[i];
      if (bodyLine === undefined) throw malformed("a stanza has no final body line");
      if (bodyLine.length > COLUMNS) throw malformed("a stanza body line is longer than 64 columns");
      for (let k = 0; k < bodyLine.length; k++)
        if (!isBase64Char(bodyLine.charCodeAt(k))) throw malformed("a stanza body line is not base64");
      body += bodyLine;
      offset += bodyLine.length + 1;
      i++;
      if (bodyLine.length < COLUMNS) break;
    }
    const decoded = decodeBase64(body);
    if (decoded === undefined) throw malformed("a stanza body is not canonical unpadded base64");
    stanzas.push({ args, body: decoded });
  }
}

function encodeStanzas(stanzas: readonly Stanza[]): string {
  let out = VERSION_LINE + "\n";
  for (const s of stanzas) {
    if (s.args.length === 0) throw malformed("a stanza needs at least one argument");
    out += "-> " + s.args.join(" ") + "\n";
    const body = encodeBase64(s.body);
    // Wrapped at 64 columns; the last line is always shorter than 64, possibly empty.
    for (let k = 0; k <= body.length; k += COLUMNS) out += body.slice(k, k + COLUMNS) + "\n";
  }
  return out + "---";
}

/** The header bytes for `stanzas`, MAC'd under `fileKey`. */
export function encodeHeader(stanzas: readonly Stanza[], fileKey: Uint8Array): Uint8Array {
  const macInput = asciiBytes(encodeStanzas(stanzas));
  const mac = hmacSha256(headerMacKey(fileKey), macInput);
  const out = new Uint8Array(macInput.length + 1 + 43 + 1);
  out.set(macInput);
  out.set(asciiBytes(" " + encodeBase64(mac) + "\n"), macInput.length);
  return out;
}

/** Throws age.header_mac unless the header's MAC verifies under `fileKey`. */
export function verifyHeaderMac(header: Header, fileKey: Uint8Array): void {
  const expected = hmacSha256(headerMacKey(fileKey), header.macInput);
  if (!constantTimeEqual(expected, header.mac))
    throw ageError(AGE_ERRORS.headerMac, "age header MAC does not verify: the header was altered");
}
