/**
 * The subset of Structured Field Values for HTTP (RFC 8941) that HTTP Message Signatures (RFC 9421)
 * and Content-Digest (RFC 9530) need: Dictionaries whose members are Items or Inner Lists, with
 * Parameters; bare items Integer, String, Token, Byte Sequence and Boolean. Pure, no I/O.
 *
 * Stricter than RFC 8941 on purpose (a security header has one meaning): a repeated dictionary key
 * or parameter key is refused instead of "last one wins" (§4.2.2, §4.2.3.2), and Decimals are
 * refused (nothing in our profile uses them). Every failure is `signature.malformed`.
 */
import { HandsafeError } from "../errors.ts";

export class Token {
  constructor(readonly value: string) {}
}

export type BareItem = number | string | boolean | Token | Uint8Array;
/** Parameters in the order they appeared (serialisation keeps it). */
export type Parameters = Array<[string, BareItem]>;

export interface Item {
  value: BareItem;
  params: Parameters;
}

export interface InnerList {
  items: Item[];
  params: Parameters;
}

export type Member = { kind: "item"; item: Item } | { kind: "inner"; list: InnerList };

export type Dictionary = Map<string, Member>;

function malformed(why: string): HandsafeError {
  return new HandsafeError("signature.malformed", `malformed structured field: ${why}`, { status: 401 });
}

const LCALPHA = /[a-z]/;
const KEY_CHAR = /[a-z0-9_\-.*]/;
const DIGIT = /[0-9]/;
// RFC 9110 tchar, plus ":" and "/" which RFC 8941 §3.3.4 allows inside a Token.
const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z:/]/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

class Cursor {
  i = 0;
  constructor(readonly s: string) {}
  peek(): string {
    return this.s[this.i] ?? "";
  }
  eof(): boolean {
    return this.i >= this.s.length;
  }
  skipSp(): void {
    while (this.s[this.i] === " ") this.i++;
  }
  skipOws(): void {
    while (this.s[this.i] === " " || this.s[this.i] === "\t") this.i++;
  }
}

/** RFC 8941 §4.2.2 (strict: repeated keys refused). */
export function parseDictionary(input: string): Dictionary {
  const c = new Cursor(input);
  const out: Dictionary = new Map();
  c.skipSp();
  while (!c.eof()) {
    const key = parseKey(c);
    if (out.has(key)) throw malformed(`dictionary key ${key} repeated`);
    if (c.peek() === "=") {
      c.i++;
      out.set(key, parseItemOrInnerList(c));
    } else {
      out.set(key, { kind: "item", item: { value: true, params: parseParameters(c) } });
    }
    c.skipOws();
    if (c.eof()) break;
    if (c.peek() !== ",") throw malformed("expected ',' between dictionary members");
    c.i++;
    c.skipOws();
    if (c.eof()) throw malformed("trailing comma");
  }
  return out;
}

function parseItemOrInnerList(c: Cursor): Member {
  if (c.peek() === "(") return { kind: "inner", list: parseInnerList(c) };
  const value = parseBareItem(c);
  return { kind: "item", item: { value, params: parseParameters(c) } };
}

function parseInnerList(c: Cursor): InnerList {
  c.i++; // "("
  const items: Item[] = [];
  for (;;) {
    c.skipSp();
    if (c.eof()) throw malformed("unterminated inner list");
    if (c.peek() === ")") {
      c.i++;
      return { items, params: parseParameters(c) };
    }
    const value = parseBareItem(c);
    items.push({ value, params: parseParameters(c) });
    const next = c.peek();
    if (next !== " " && next !== ")") throw malformed("expected a space or ')' in an inner list");
  }
}

function parseParameters(c: Cursor): Parameters {
  const params: Parameters = [];
  while (c.peek() === ";") {
    c.i++;
    c.skipSp();
    const key = parseKey(c);
    if (params.some(([k]) => k === key)) throw malformed(`parameter ${key} repeated`);
    let value: BareItem = true;
    if (c.peek() === "=") {
      c.i++;
      value = parseBareItem(c);
    }
    params.push([key, value]);
  }
  return params;
}

function parseKey(c: Cursor): string {
  const first = c.peek();
  if (!(LCALPHA.test(first) || first === "*")) throw malformed("a key must start with a-z or '*'");
  let key = "";
  while (!c.eof() && KEY_CHAR.test(c.peek())) key += c.s[c.i++];
  return key;
}

function parseBareItem(c: Cursor): BareItem {
  const ch = c.peek();
  if (ch === "-" || DIGIT.test(ch)) return parseInteger(c);
  if (ch === '"') return parseString(c);
  if (ch === ":") return parseByteSequence(c);
  if (ch === "?") return parseBoolean(c);
  if (/[A-Za-z*]/.test(ch)) return parseToken(c);
  throw malformed("unknown item type");
}

function parseInteger(c: Cursor): number {
  let text = "";
  if (c.peek() === "-") text += c.s[c.i++];
  while (!c.eof() && DIGIT.test(c.peek())) text += c.s[c.i++];
  if (c.peek() === ".") throw malformed("decimals are not used in this profile");
  const digits = text.replace("-", "");
  if (digits.length === 0 || digits.length > 15) throw malformed("an integer has 1 to 15 digits");
  return Number(text);
}

function parseString(c: Cursor): string {
  c.i++; // opening quote
  let out = "";
  for (;;) {
    if (c.eof()) throw malformed("unterminated string");
    const ch = c.s[c.i++]!;
    if (ch === "\\") {
      const next = c.s[c.i++];
      if (next !== '"' && next !== "\\") throw malformed("bad escape in string");
      out += next;
    } else if (ch === '"') {
      return out;
    } else {
      const code = ch.charCodeAt(0);
      if (code < 0x20 || code > 0x7e) throw malformed("strings are printable ASCII");
      out += ch;
    }
  }
}

function parseToken(c: Cursor): Token {
  let out = "";
  while (!c.eof() && TOKEN_CHAR.test(c.peek())) out += c.s[c.i++];
  return new Token(out);
}

function parseByteSequence(c: Cursor): Uint8Array {
  c.i++;
  const end = c.s.indexOf(":", c.i);
  if (end < 0) throw malformed("unterminated byte sequence");
  const b64 = c.s.slice(c.i, end);
  c.i = end + 1;
  if (!BASE64.test(b64) || b64.length % 4 === 1) throw malformed("byte sequence is not base64");
  return base64Decode(b64);
}

function parseBoolean(c: Cursor): boolean {
  c.i++;
  const ch = c.s[c.i++];
  if (ch === "1") return true;
  if (ch === "0") return false;
  throw malformed("a boolean is ?0 or ?1");
}

// --- serialisation (RFC 8941 §4.1) --------------------------------------------------------------

export function serializeBareItem(value: BareItem): string {
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value) || Math.abs(value) > 999_999_999_999_999)
      throw new TypeError("structured-field integers have at most 15 digits");
    return String(value);
  }
  if (typeof value === "boolean") return value ? "?1" : "?0";
  if (typeof value === "string") {
    if (!/^[\x20-\x7e]*$/.test(value)) throw new TypeError("structured-field strings are printable ASCII");
    return `"${value.replace(/[\\"]/g, (m) => `\\${m}`)}"`;
  }
  if (value instanceof Token) return value.value;
  return `:${base64Encode(value)}:`;
}

export function serializeParameters(params: Parameters): string {
  return params.map(([k, v]) => (v === true ? `;${k}` : `;${k}=${serializeBareItem(v)}`)).join("");
}

export function serializeItem(item: Item): string {
  return serializeBareItem(item.value) + serializeParameters(item.params);
}

export function serializeInnerList(list: InnerList): string {
  return `(${list.items.map(serializeItem).join(" ")})${serializeParameters(list.params)}`;
}

// --- base64 with padding (RFC 4648 §4), as Byte Sequences use it ---------------------------------

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

export function base64Encode(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    out += B64[n >> 18]! + B64[(n >> 12) & 63]!;
    out += i + 1 < bytes.length ? B64[(n >> 6) & 63]! : "=";
    out += i + 2 < bytes.length ? B64[n & 63]! : "=";
  }
  return out;
}

function base64Decode(text: string): Uint8Array {
  const clean = text.replace(/=+$/, "");
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (const ch of clean) {
    acc = (acc << 6) | B64.indexOf(ch);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return out;
}
