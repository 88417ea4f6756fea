/**
 * Server-sent events (WHATWG HTML §9.2, "Server-sent events"): the subset the push channels speak —
 * the fields `event`, `data`, `id`, `retry` and comments. Pure: the server frames events with
 * formatEvent / formatComment, the handset reads them back with SseParser.
 */
import { HandsafeError } from "../errors.ts";

export interface SseEvent {
  /** "message" when the block named none (§9.2.6). */
  event: string;
  data: string;
  /** The `id` field of this block, when it had one. */
  id?: string;
  /** A `retry` field of this block (milliseconds), when it had a valid one. */
  retry?: number;
}

/** Largest event (or unterminated line) the parser buffers; a push event is a few hundred bytes. */
export const MAX_SSE_EVENT_CHARS = 16 * 1024;

const FIELD_VALUE = /^[^\r\n\0]*$/;

function malformed(message: string, code = "sse.malformed"): HandsafeError {
  return new HandsafeError(code, message, { status: 0 });
}

/** One event block: `event:` / `id:` / `retry:` lines, one `data:` line per line of data, a blank line. */
export function formatEvent(e: { event?: string; data: string; id?: string; retry?: number }): string {
  let out = "";
  if (e.event !== undefined) {
    if (!FIELD_VALUE.test(e.event)) throw malformed("an event name is one line");
    out += `event: ${e.event}\n`;
  }
  if (e.id !== undefined) {
    if (!FIELD_VALUE.test(e.id)) throw malformed("an event id is one line without NUL");
    out += `id: ${e.id}\n`;
  }
  if (e.retry !== undefined) {
    if (!Number.isSafeInteger(e.retry) || e.retry < 0) throw malformed("retry is a whole number of ms");
    out += `retry: ${e.retry}\n`;
  }
  for (const line of e.data.split(/\r\n|\r|\n/)) out += `data: ${line}\n`;
  return `${out}\n`;
}

/** A comment block: ignored by every reader, but it keeps the connection (and proxies) busy. */
export function formatComment(text: string): string {
  if (!FIELD_VALUE.test(text)) throw malformed("a comment is one line");
  return `: ${text}\n\n`;
}

/**
 * Incremental reader of an event stream (§9.2.6 "Interpreting an event stream"): feed it decoded
 * text as it arrives, get back the events completed so far. Lines end in CRLF, LF or CR; a block
 * without data dispatches nothing. Throws `code` (default sse.malformed) past MAX_SSE_EVENT_CHARS.
 */
export class SseParser {
  #buffer = "";
  #started = false;
  #event = "";
  #data = "";
  #hasData = false;
  #id: string | undefined;
  #retry: number | undefined;

  /** `code`: the error code of a stream past `maxChars` (a protocol names its own). */
  constructor(
    private readonly maxChars = MAX_SSE_EVENT_CHARS,
    private readonly code = "sse.malformed",
  ) {}

  push(text: string): SseEvent[] {
    this.#buffer += text;
    if (!this.#started && this.#buffer.length > 0) {
      this.#started = true;
      // §9.2.6: one leading U+FEFF is not part of the stream.
      if (this.#buffer.charCodeAt(0) === 0xfeff) this.#buffer = this.#buffer.slice(1);
    }
    const events: SseEvent[] = [];
    for (;;) {
      const end = this.#buffer.search(/[\r\n]/);
      if (end < 0) break;
      // A CR that ends the text so far may be the first half of a CRLF: wait for the next piece.
      if (this.#buffer[end] === "\r" && end === this.#buffer.length - 1) break;
      const line = this.#buffer.slice(0, end);
      const skip = this.#buffer[end] === "\r" && this.#buffer[end + 1] === "\n" ? 2 : 1;
      this.#buffer = this.#buffer.slice(end + skip);
      const event = this.#line(line);
      if (event) events.push(event);
    }
    if (this.#buffer.length + this.#data.length > this.maxChars)
      throw malformed(`an event is longer than ${this.maxChars} characters`, this.code);
    return events;
  }

  #line(line: string): SseEvent | undefined {
    if (line === "") return this.#dispatch();
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.#event = value;
        break;
      case "data":
        this.#data += this.#hasData ? `\n${value}` : value;
        this.#hasData = true;
        break;
      case "id":
        if (!value.includes("\0")) this.#id = value;
        break;
      case "retry":
        if (/^[0-9]{1,9}$/.test(value)) this.#retry = Number(value);
        break;
      default:
        // §9.2.6: any other field is ignored.
        break;
    }
    return undefined;
  }

  #dispatch(): SseEvent | undefined {
    const event: SseEvent | undefined = this.#hasData
      ? {
          event: this.#event === "" ? "message" : this.#event,
          data: this.#data,
          ...(this.#id !== undefined ? { id: this.#id } : {}),
          ...(this.#retry !== undefined ? { retry: this.#retry } : {}),
        }
      : undefined;
    this.#event = "";
    this.#data = "";
    this.#hasData = false;
    this.#id = undefined;
    this.#retry = undefined;
    return event;
  }
}
