import { decodeBase64, encodeBase64 } from "./base64.ts";
import { AGE_ERRORS, ageError } from "./errors.ts";

/**
 * age v1 §ASCII armor: strict PEM (RFC 7468 §3, figure 3) with the label "AGE ENCRYPTED FILE" and
 * padded canonical base64 in 64-column lines. Whitespace is allowed before and after the block,
 * lines may end in LF or CRLF, and nothing else is tolerated (armored files are otherwise malleable).
 * Whole-buffer: armor is for small text transports; backups use the binary format.
 */

const BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----";
const END = "-----END AGE ENCRYPTED FILE-----";
const COLUMNS = 64;
const WHITESPACE = /^[ \t\r\n\v\f]*$/;

const invalid = (why: string) => ageError(AGE_ERRORS.armorInvalid, `age armor: ${why}`);

export function armor(file: Uint8Array): string {
  const b64 = encodeBase64(file);
  const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
  let out = BEGIN + "\n";
  for (let k = 0; k < padded.length; k += COLUMNS) out += padded.slice(k, k + COLUMNS) + "\n";
  return out + END + "\n";
}

/** The binary age file inside an armored one. */
export function dearmor(text: string | Uint8Array): Uint8Array {
  let s = "";
  if (typeof text === "string") s = text;
  else for (const b of text) s += String.fromCharCode(b);
  const start = s.search(/[^ \t\r\n\v\f]/);
  if (start < 0) throw invalid("empty");
  const endAt = s.indexOf(END, start);
  if (endAt < 0) throw invalid(`no ${END} line`);
  if (!WHITESPACE.test(s.slice(endAt + END.length))) throw invalid("data after the END line");
  const block = s.slice(start, endAt);
  const lines = block.split("\n");
  if (lines.pop() !== "") throw invalid("the END line must start a line");
  const crlf = lines[0]?.endsWith("\r") ?? false;
  const text2 = lines.map((l) => {
    if (crlf !== l.endsWith("\r")) throw invalid("mixed line endings");
    return crlf ? l.slice(0, -1) : l;
  });
  if (text2[0] !== BEGIN) throw invalid(`the first line must be ${BEGIN}`);
  const body = text2.slice(1);
  for (let i = 0; i < body.length; i++) {
    const line = body[i]!;
    const last = i === body.length - 1;
    if (line.length > COLUMNS || (!last && line.length !== COLUMNS) || line.length === 0)
      throw invalid("base64 lines must be 64 columns, the last one 1 to 64");
  }
  const joined = body.join("");
  if (joined.length % 4 !== 0) throw invalid("base64 must be padded");
  const unpadded = joined.replace(/={1,2}$/, "");
  if (unpadded.includes("=")) throw invalid("padding inside the base64");
  if (joined.length - unpadded.length !== (4 - (unpadded.length % 4)) % 4) throw invalid("wrong padding");
  const bytes = decodeBase64(unpadded);
  if (bytes === undefined) throw invalid("not canonical base64");
  return bytes;
}
