/**
 * The strict XML reader (docs/protocols/backup.md §4): one iterative pass over the decoded text — no
 * recursion, no backtracking regular expressions — so its time is linear in the input and its stack
 * is constant whatever the nesting; every limit is checked as soon as it is crossed. No DTD, no
 * entity declarations (so no XXE and no entity expansion), no CDATA, no processing instructions.
 */
import { HandsafeError } from "../errors.ts";
import {
  AMP,
  APOS,
  BANG,
  BRACKET_CLOSE,
  COLON,
  CR,
  DEFAULT_XML_LIMITS,
  DTD_KEYWORDS,
  EQUALS,
  GT,
  HASH,
  isNameChar,
  isNameStart,
  isSpace,
  isXmlChar,
  LF,
  LT,
  PREDEFINED,
  QUESTION,
  QUOT,
  SEMICOLON,
  SLASH,
  SPACE,
  TAB,
  XML_ERRORS,
  type XmlElement,
  type XmlErrorCode,
  type XmlLimits,
} from "./xml-syntax.ts";

/** UTF-8 length of a string, stopping as soon as it passes `max` (lone surrogates count as 3, like U+FFFD). */
function utf8LengthOver(text: string, max: number): boolean {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
    if (n > max) return true;
  }
  return false;
}

interface Frame {
  element: XmlElement;
  /** Text committed so far. */
  text: string;
  /** The current run of character data since the last tag. */
  run: string;
  /** True while the current run is only literal whitespace (a character reference counts as content). */
  runIsSpace: boolean;
  length: number;
}

class XmlReader {
  private pos = 0;
  private readonly s: string;
  private readonly limits: XmlLimits;

  constructor(s: string, limits: XmlLimits) {
    this.s = s;
    this.limits = limits;
  }

  private fail(
    code: XmlErrorCode,
    message: string,
    at = this.pos,
    extra: Record<string, unknown> = {},
  ): never {
    // Line and column are worked out only when failing, so the happy path tracks nothing.
    let line = 1;
    let lineStart = 0;
    const end = Math.min(at, this.s.length);
    for (let i = 0; i < end; i++) {
      if (this.s.charCodeAt(i) === LF) {
        line++;
        lineStart = i + 1;
      }
    }
    throw new HandsafeError(code, `${message} (line ${line}, column ${end - lineStart + 1})`, {
      status: 400,
      details: { line, column: end - lineStart + 1, ...extra },
    });
  }

  document(): XmlElement {
    const s = this.s;
    const n = s.length;
    if (s.startsWith("<?xml") && (isSpace(s.charCodeAt(5)) || s.charCodeAt(5) === QUESTION))
      this.declaration();
    const stack: Frame[] = [];
    let root: XmlElement | undefined;
    let nodes = 0;

    while (this.pos < n) {
      const c = s.charCodeAt(this.pos);
      if (c === LT) {
        const next = s.charCodeAt(this.pos + 1);
        if (next === SLASH) {
          const frame = stack.pop();
          const name = this.endTag(frame);
          const el = frame!.element;
          if (el.name !== name)
            this.fail(XML_ERRORS.malformed, `end tag </${name}> does not close <${el.name}>`);
          if (!(frame!.runIsSpace && el.children.length > 0)) frame!.text += frame!.run;
          el.text = frame!.text;
        } else if (next === BANG) {
          this.markupDeclaration();
        } else if (next === QUESTION) {
          this.fail(XML_ERRORS.malformed, "processing instructions are not allowed");
        } else {
          const start = this.pos;
          const parent = stack[stack.length - 1];
          if (parent === undefined && root !== undefined)
            this.fail(XML_ERRORS.malformed, "a document has one root element");
          if (++nodes > this.limits.maxNodes)
            this.fail(XML_ERRORS.tooManyNodes, `more than ${this.limits.maxNodes} elements`, start, {
              limit: this.limits.maxNodes,
            });
          if (stack.length + 1 > this.limits.maxDepth)
            this.fail(XML_ERRORS.tooDeep, `nesting deeper than ${this.limits.maxDepth}`, start, {
              limit: this.limits.maxDepth,
            });
          const [element, selfClosing] = this.startTag();
          if (parent === undefined) root = element;
          else {
            // The run before a child's start tag is indentation if it is only whitespace.
            if (!parent.runIsSpace) parent.text += parent.run;
            parent.run = "";
            parent.runIsSpace = true;
            parent.element.children.push(element);
          }
          if (!selfClosing) stack.push({ element, text: "", run: "", runIsSpace: true, length: 0 });
        }
      } else {
        const frame = stack[stack.length - 1];
        if (frame === undefined) {
          if (!isSpace(c)) this.fail(XML_ERRORS.malformed, "character data outside the root element");
          this.pos++;
        } else this.characterData(frame);
      }
    }
    if (stack.length > 0)
      this.fail(XML_ERRORS.malformed, `<${stack[stack.length - 1]!.element.name}> is not closed`);
    if (root === undefined) this.fail(XML_ERRORS.malformed, "no root element");
    return root;
  }

  /** XML 1.0 §2.8 XMLDecl, limited to version 1.0, encoding UTF-8 and standalone. */
  private declaration(): void {
    this.pos = 5;
    const version = this.pseudoAttribute("version", true);
    if (version !== "1.0") this.fail(XML_ERRORS.malformed, "only XML version 1.0 is read");
    const encoding = this.pseudoAttribute("encoding", false);
    if (encoding !== undefined && encoding.toLowerCase() !== "utf-8")
      this.fail(XML_ERRORS.malformed, "only UTF-8 documents are read");
    const standalone = this.pseudoAttribute("standalone", false);
    if (standalone !== undefined && standalone !== "yes" && standalone !== "no")
      this.fail(XML_ERRORS.malformed, "standalone is yes or no");
    this.skipSpace();
    if (!this.s.startsWith("?>", this.pos)) this.fail(XML_ERRORS.malformed, "malformed XML declaration");
    this.pos += 2;
  }

  private pseudoAttribute(name: string, required: boolean): string | undefined {
    const save = this.pos;
    const spaced = this.skipSpace();
    if (!spaced || !this.s.startsWith(name, this.pos)) {
      if (required) this.fail(XML_ERRORS.malformed, `the XML declaration needs ${name}`);
      this.pos = save;
      return undefined;
    }
    this.pos += name.length;
    this.skipSpace();
    if (this.s.charCodeAt(this.pos) !== EQUALS) this.fail(XML_ERRORS.malformed, "malformed XML declaration");
    this.pos++;
    this.skipSpace();
    const quote = this.s.charCodeAt(this.pos);
    if (quote !== QUOT && quote !== APOS) this.fail(XML_ERRORS.malformed, "malformed XML declaration");
    const end = this.s.indexOf(String.fromCharCode(quote), this.pos + 1);
    if (end < 0 || end - this.pos > 32) this.fail(XML_ERRORS.malformed, "malformed XML declaration");
    const value = this.s.slice(this.pos + 1, end);
    this.pos = end + 1;
    return value;
  }

  private skipSpace(): boolean {
    const start = this.pos;
    while (this.pos < this.s.length && isSpace(this.s.charCodeAt(this.pos))) this.pos++;
    return this.pos > start;
  }

  private name(what: string): string {
    const s = this.s;
    const start = this.pos;
    let atStart = true;
    let colons = 0;
    while (this.pos < s.length) {
      const cp = s.codePointAt(this.pos)!;
      if (cp === COLON) {
        if (atStart || ++colons > 1) this.fail(XML_ERRORS.malformed, `bad ${what} name`);
        atStart = true;
      } else if (atStart ? isNameStart(cp) : isNameChar(cp)) {
        atStart = false;
      } else break;
      this.pos += cp > 0xffff ? 2 : 1;
    }
    if (atStart) this.fail(XML_ERRORS.malformed, `bad ${what} name`);
    return s.slice(start, this.pos);
  }

  /** At `<`: the element with its attributes, and whether it closed itself (`/>`). */
  private startTag(): [XmlElement, boolean] {
    const s = this.s;
    this.pos++;
    const name = this.name("element");
    const entries: [string, string][] = [];
    for (;;) {
      const spaced = this.skipSpace();
      const c = s.charCodeAt(this.pos);
      if (c === GT) {
        this.pos++;
        return [{ name, attributes: Object.fromEntries(entries), children: [], text: "" }, false];
      }
      if (c === SLASH && s.charCodeAt(this.pos + 1) === GT) {
        this.pos += 2;
        return [{ name, attributes: Object.fromEntries(entries), children: [], text: "" }, true];
      }
      if (this.pos >= s.length) this.fail(XML_ERRORS.malformed, `<${name}> is not closed`);
      if (!spaced) this.fail(XML_ERRORS.malformed, `malformed start tag <${name}>`);
      if (entries.length >= this.limits.maxAttributes)
        this.fail(
          XML_ERRORS.attributeTooLarge,
          `more than ${this.limits.maxAttributes} attributes on <${name}>`,
        );
      const at = this.pos;
      const attribute = this.name("attribute");
      // At most maxAttributes entries, so the linear search is bounded.
      if (entries.some(([k]) => k === attribute))
        this.fail(XML_ERRORS.malformed, `duplicate attribute ${attribute} on <${name}>`, at);
      this.skipSpace();
      if (s.charCodeAt(this.pos) !== EQUALS)
        this.fail(XML_ERRORS.malformed, `attribute ${attribute} has no value`);
      this.pos++;
      this.skipSpace();
      entries.push([attribute, this.attributeValue()]);
    }
  }

  /** XML 1.0 §3.3.3: references replaced, each literal TAB, LF, CR or CRLF becomes one space. */
  private attributeValue(): string {
    const s = this.s;
    const quote = s.charCodeAt(this.pos);
    if (quote !== QUOT && quote !== APOS) this.fail(XML_ERRORS.malformed, "attribute values are quoted");
    this.pos++;
    const max = this.limits.maxAttributeLength;
    let value = "";
    let start = this.pos;
    for (;;) {
      if (this.pos >= s.length) this.fail(XML_ERRORS.malformed, "unterminated attribute value");
      if (value.length + (this.pos - start) > max)
        this.fail(XML_ERRORS.attributeTooLarge, `attribute value longer than ${max}`, this.pos, {
          limit: max,
        });
      const c = s.charCodeAt(this.pos);
      if (c === quote) {
        value += s.slice(start, this.pos);
        this.pos++;
        return value;
      }
      if (c === LT) this.fail(XML_ERRORS.malformed, "< in an attribute value");
      if (c === AMP) {
        value += s.slice(start, this.pos);
        value += this.reference();
        start = this.pos;
      } else if (c === TAB || c === LF || c === CR) {
        value += s.slice(start, this.pos) + " ";
        this.pos += c === CR && s.charCodeAt(this.pos + 1) === LF ? 2 : 1;
        start = this.pos;
      } else this.char(c);
    }
  }

  /** Checks the character at pos is an XML Char and steps over it (two code units for a surrogate pair). */
  private char(c: number): void {
    if (c >= 0x20 && c < 0xd800) {
      this.pos++;
      return;
    }
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = this.s.charCodeAt(this.pos + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        this.pos += 2;
        return;
      }
    } else if (isXmlChar(c)) {
      this.pos++;
      return;
    }
    this.fail(
      XML_ERRORS.malformed,
      `character U+${c.toString(16).toUpperCase().padStart(4, "0")} is not allowed`,
    );
  }

  /** At `&`: XML 1.0 §4.1 — a character reference or one of the five predefined entities. */
  private reference(): string {
    const s = this.s;
    const at = this.pos;
    if (s.charCodeAt(this.pos + 1) === HASH) {
      const hex = s.charCodeAt(this.pos + 2) === 0x78;
      this.pos += hex ? 3 : 2;
      let cp = 0;
      let digits = 0;
      for (; this.pos < s.length; this.pos++) {
        const c = s.charCodeAt(this.pos);
        let d: number;
        if (c >= 0x30 && c <= 0x39) d = c - 0x30;
        else if (hex && c >= 0x61 && c <= 0x66) d = c - 0x57;
        else if (hex && c >= 0x41 && c <= 0x46) d = c - 0x37;
        else break;
        cp = cp * (hex ? 16 : 10) + d;
        digits++;
        if (cp > 0x10ffff) this.fail(XML_ERRORS.malformed, "character reference out of range", at);
      }
      if (digits === 0 || s.charCodeAt(this.pos) !== SEMICOLON)
        this.fail(XML_ERRORS.malformed, "malformed character reference", at);
      if (!isXmlChar(cp))
        this.fail(XML_ERRORS.malformed, "character reference to a character XML excludes", at);
      this.pos++;
      return String.fromCodePoint(cp);
    }
    this.pos++;
    if (this.pos >= s.length || !isNameStart(s.codePointAt(this.pos)!))
      this.fail(XML_ERRORS.malformed, "& must start a reference (write &amp;)", at);
    const name = this.name("entity");
    if (s.charCodeAt(this.pos) !== SEMICOLON)
      this.fail(XML_ERRORS.malformed, "malformed entity reference", at);
    this.pos++;
    const value = Object.hasOwn(PREDEFINED, name) ? PREDEFINED[name] : undefined;
    if (value === undefined) this.fail(XML_ERRORS.entityForbidden, `entity &${name}; is not allowed`, at);
    return value;
  }

  /** Character data up to the next `<`, with line ends normalised (§2.11) and references replaced. */
  private characterData(frame: Frame): void {
    const s = this.s;
    const start = this.pos;
    let isSpaceOnly = frame.runIsSpace;
    let piece: string;
    for (;;) {
      if (this.pos >= s.length) {
        piece = s.slice(start, this.pos);
        break;
      }
      const c = s.charCodeAt(this.pos);
      if (c === LT) {
        piece = s.slice(start, this.pos);
        break;
      }
      if (c === AMP) {
        piece = s.slice(start, this.pos) + this.reference();
        isSpaceOnly = false;
        break;
      }
      if (c === CR) {
        piece = s.slice(start, this.pos) + "\n";
        this.pos += s.charCodeAt(this.pos + 1) === LF ? 2 : 1;
        break;
      }
      if (
        c === GT &&
        s.charCodeAt(this.pos - 1) === BRACKET_CLOSE &&
        s.charCodeAt(this.pos - 2) === BRACKET_CLOSE
      )
        this.fail(XML_ERRORS.malformed, "]]> in character data", this.pos - 2);
      if (c !== SPACE && c !== LF && c !== TAB) isSpaceOnly = false;
      if (c === LF || c === TAB) this.pos++;
      else this.char(c);
    }
    frame.length += piece.length;
    if (frame.length > this.limits.maxText)
      this.fail(
        XML_ERRORS.textTooLarge,
        `text of <${frame.element.name}> longer than ${this.limits.maxText}`,
        start,
        {
          limit: this.limits.maxText,
        },
      );
    frame.run += piece;
    frame.runIsSpace = isSpaceOnly;
  }

  /** At `</`: the name, after checking there is an open element to close. */
  private endTag(frame: Frame | undefined): string {
    const at = this.pos;
    this.pos += 2;
    const name = this.name("element");
    this.skipSpace();
    if (this.s.charCodeAt(this.pos) !== GT) this.fail(XML_ERRORS.malformed, `malformed end tag </${name}>`);
    this.pos++;
    if (frame === undefined) this.fail(XML_ERRORS.malformed, `end tag </${name}> without a start tag`, at);
    return name;
  }

  /** At `<!`: a comment (kept short), or refused — DTD markup, CDATA sections, anything else. */
  private markupDeclaration(): void {
    const s = this.s;
    const at = this.pos;
    if (s.startsWith("<!--", at)) {
      const body = at + 4;
      const end = s.indexOf("--", body);
      if (end < 0) this.fail(XML_ERRORS.malformed, "unterminated comment");
      if (end - body > this.limits.maxComment)
        this.fail(XML_ERRORS.malformed, `comment longer than ${this.limits.maxComment}`, at, {
          limit: this.limits.maxComment,
        });
      // §2.5: "--" must not occur inside a comment, so the first one must close it.
      if (s.charCodeAt(end + 2) !== GT) this.fail(XML_ERRORS.malformed, "-- inside a comment", end);
      this.pos = body;
      while (this.pos < end) this.char(s.charCodeAt(this.pos));
      this.pos = end + 3;
      return;
    }
    if (s.startsWith("<![CDATA[", at)) this.fail(XML_ERRORS.malformed, "CDATA sections are not allowed");
    const word = s.slice(at + 2, at + 10).toUpperCase();
    if (DTD_KEYWORDS.some((k) => word.startsWith(k)))
      this.fail(XML_ERRORS.dtdForbidden, "DTDs and entity declarations are not allowed");
    this.fail(XML_ERRORS.malformed, "unknown markup declaration");
  }
}

/**
 * Reads one document. Throws HandsafeError (status 400) with an `xml.*` code and, where there is a
 * position, `details: { line, column }`.
 */
export function parseXml(input: Uint8Array | string, limits: Partial<XmlLimits> = {}): XmlElement {
  const l: XmlLimits = { ...DEFAULT_XML_LIMITS, ...limits };
  const tooLarge = () =>
    new HandsafeError(XML_ERRORS.tooLarge, `document larger than ${l.maxBytes} bytes`, {
      status: 400,
      details: { limit: l.maxBytes },
    });
  let text: string;
  if (typeof input === "string") {
    // A UTF-16 code unit is at least one UTF-8 byte, so the length alone refuses most oversized input.
    if (input.length > l.maxBytes || utf8LengthOver(input, l.maxBytes)) throw tooLarge();
    text = input.charCodeAt(0) === 0xfeff ? input.slice(1) : input;
  } else {
    if (input.length > l.maxBytes) throw tooLarge();
    try {
      // Fatal: invalid UTF-8 is refused, not replaced. A leading BOM is consumed by the decoder.
      text = new TextDecoder("utf-8", { fatal: true }).decode(input);
    } catch (cause) {
      throw new HandsafeError(XML_ERRORS.malformed, "document is not valid UTF-8", { status: 400, cause });
    }
  }
  return new XmlReader(text, l).document();
}
