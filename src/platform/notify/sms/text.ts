/**
 * What a text may hold, and how a long one is cut into SMPP segments (sans-I/O: bytes in, bytes
 * out; smpp.ts only sends them).
 *
 * Alphabet (3GPP TS 23.038): a text made only of GSM 7-bit default alphabet characters (with its
 * extension table, escaped by 0x1B) goes as data_coding 0x00, one septet per octet (SMPP carries
 * septets unpacked; the SMSC packs them). Anything else goes as UCS-2 (data_coding 0x08),
 * UTF-16BE — code points outside the BMP travel as surrogate pairs.
 *
 * Concatenation (TS 23.040 §9.2.3.24.1): a text that does not fit one SMS is sent as parts, each
 * starting with a 6-octet user data header 05 00 03 <ref> <total> <seq> and with esm_class UDHI
 * (0x40). Limits per part: 160 septets / 140 octets alone; 153 septets / 134 octets with the
 * header. A part never ends between an escape and its character, nor inside a surrogate pair.
 */
import { HandsafeError } from "../../../core/errors.ts";

/** The longest text we accept: 10 UCS-2 parts or ~10 GSM parts, what commercial APIs allow. */
export const MAX_TEXT_LENGTH = 1600;
/** TS 23.040: the reference number is one octet, so at most 255 parts. */
const MAX_PARTS = 255;

export const DATA_CODING_GSM = 0x00;
export const DATA_CODING_UCS2 = 0x08;
export const ESM_CLASS_UDHI = 0x40;

/** Throws sms.text_empty / sms.text_too_long unless `text` is something we will send. */
export function checkSmsText(text: string): void {
  if (typeof text !== "string" || text.length === 0)
    throw new HandsafeError("sms.text_empty", "an SMS needs some text", { status: 400 });
  if (text.length > MAX_TEXT_LENGTH)
    throw new HandsafeError(
      "sms.text_too_long",
      `an SMS text is at most ${MAX_TEXT_LENGTH} characters, got ${text.length}`,
      { status: 400 },
    );
}

// TS 23.038 §6.2.1: the default alphabet, code 0x00…0x7F in order (0x1B is the escape).
const GSM_BASIC =
  "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
  "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
// TS 23.038 §6.2.1.1: the extension table, reached by 0x1B <code>.
const GSM_EXTENSION: ReadonlyMap<string, number> = new Map([
  ["\f", 0x0a],
  ["^", 0x14],
  ["{", 0x28],
  ["}", 0x29],
  ["\\", 0x2f],
  ["[", 0x3c],
  ["~", 0x3d],
  ["]", 0x3e],
  ["|", 0x40],
  ["€", 0x65],
]);
const GSM_BASIC_CODES: ReadonlyMap<string, number> = new Map(
  [...GSM_BASIC].map((ch, code) => [ch, code] as const).filter(([ch]) => ch !== "\x1b"),
);

/** GSM 7-bit septets (one per octet), or undefined when `text` leaves the alphabet. */
export function encodeGsm7(text: string): Uint8Array | undefined {
  const out: number[] = [];
  for (const ch of text) {
    const basic = GSM_BASIC_CODES.get(ch);
    if (basic !== undefined) {
      out.push(basic);
      continue;
    }
    const ext = GSM_EXTENSION.get(ch);
    if (ext === undefined) return undefined;
    out.push(0x1b, ext);
  }
  return Uint8Array.from(out);
}

export function encodeUcs2(text: string): Uint8Array {
  const out = new Uint8Array(text.length * 2);
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    out[2 * i] = unit >> 8;
    out[2 * i + 1] = unit & 0xff;
  }
  return out;
}

export interface SmppSegments {
  dataCoding: typeof DATA_CODING_GSM | typeof DATA_CODING_UCS2;
  /** esm_class for every part: UDHI when there is more than one. */
  esmClass: number;
  /** short_message octets of each part, header included. */
  parts: Uint8Array[];
}

/** Cuts `text` into SMPP short_message payloads; `reference` (0…255) ties the parts together. */
export function segmentForSmpp(text: string, reference: number): SmppSegments {
  checkSmsText(text);
  const gsm = encodeGsm7(text);
  const dataCoding = gsm ? DATA_CODING_GSM : DATA_CODING_UCS2;
  const body = gsm ?? encodeUcs2(text);
  const single = gsm ? 160 : 140;
  if (body.length <= single) return { dataCoding, esmClass: 0, parts: [body] };

  const perPart = gsm ? 153 : 134;
  const chunks: Uint8Array[] = [];
  for (let offset = 0; offset < body.length; ) {
    let end = Math.min(offset + perPart, body.length);
    if (end < body.length) {
      // Never end a part on an escape (GSM) or on a high surrogate (UCS-2).
      // 0x1B is only ever emitted as the first octet of a pair (the basic table's own 0x1B is
      // never produced), so a part ending on it would split the pair.
      if (gsm && body[end - 1] === 0x1b) end -= 1;
      if (!gsm && isHighSurrogate(body[end - 2]!, body[end - 1]!)) end -= 2;
    }
    chunks.push(body.subarray(offset, end));
    offset = end;
  }
  if (chunks.length > MAX_PARTS)
    throw new HandsafeError("sms.text_too_long", "a text needs more than 255 parts", { status: 400 });
  const ref = reference & 0xff;
  const parts = chunks.map((chunk, i) => {
    const part = new Uint8Array(6 + chunk.length);
    part.set([0x05, 0x00, 0x03, ref, chunks.length, i + 1]);
    part.set(chunk, 6);
    return part;
  });
  return { dataCoding, esmClass: ESM_CLASS_UDHI, parts };
}

function isHighSurrogate(hi: number, lo: number): boolean {
  const unit = (hi << 8) | lo;
  return unit >= 0xd800 && unit <= 0xdbff;
}

/** A concatenation header found in an inbound part (8-bit IEI 0x00 or 16-bit IEI 0x08). */
export interface ConcatInfo {
  reference: number;
  total: number;
  sequence: number;
}

/** Reads the concatenation element out of user data header elements ([iei, length, …data]). */
export function findConcatInfo(elements: readonly Uint8Array[]): ConcatInfo | undefined {
  for (const ie of elements) {
    if (ie[0] === 0x00 && ie[1] === 3 && ie.length >= 5)
      return valid({ reference: ie[2]!, total: ie[3]!, sequence: ie[4]! });
    if (ie[0] === 0x08 && ie[1] === 4 && ie.length >= 6)
      return valid({ reference: (ie[2]! << 8) | ie[3]!, total: ie[4]!, sequence: ie[5]! });
  }
  return undefined;
}

function valid(info: ConcatInfo): ConcatInfo | undefined {
  return info.total >= 1 && info.sequence >= 1 && info.sequence <= info.total ? info : undefined;
}
