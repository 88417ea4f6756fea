import { HandsafeError } from "../errors.ts";

/**
 * A strict reader and writer of the XML 1.0 subset our documents use (docs/protocols/backup.md §4):
 * an optional `<?xml version="1.0" encoding="UTF-8"?>`, elements, attributes, character data, the five
 * predefined entities, numeric character references and short comments. No DTD, no entity
 * declarations (so no XXE and no entity expansion), no CDATA, no processing instructions.
 *
 * Isomorphic (no node:* imports). The reader is one iterative pass over the decoded text — no
 * recursion, no backtracking regular expressions — so its time is linear in the input and its stack
 * is constant whatever the nesting; every limit is checked as soon as it is crossed.
 */

export interface XmlElement {
  /** The qualified name as written (`prefix:local` or `local`); namespaces are not resolved. */
  name: string;
  /** In document order; `xmlns` and `xmlns:*` are kept as ordinary attributes. */
  attributes: Record<string, string>;
  children: XmlElement[];
  /**
   * The character data directly inside, concatenated. A whitespace-only run between tags is dropped
   * when the element has child elements (indentation); the text of an element without children is
   * kept as is.
   */
  text: string;
}

export interface XmlLimits {
  /** UTF-8 bytes of the whole document, checked before decoding. */
  maxBytes: number;
  /** The root element is at depth 1. */
  maxDepth: number;
  maxAttributes: number;
  /** UTF-16 code units of one attribute value, after references are replaced. */
  maxAttributeLength: number;
  /** Elements in the document. */
  maxNodes: number;
  /** UTF-16 code units of one element's text. */
  maxText: number;
  /** UTF-16 code units between `<!--` and `-->`. */
  maxComment: number;
}

export const DEFAULT_XML_LIMITS: Readonly<XmlLimits> = Object.freeze({
  maxBytes: 16 * 1024 * 1024,
  maxDepth: 16,
  maxAttributes: 8,
  maxAttributeLength: 4096,
  maxNodes: 200_000,
  maxText: 16 * 1024 * 1024,
  maxComment: 1024,
});

export const XML_ERRORS = {
  /** A `<!DOCTYPE` or any other DTD markup (`<!ENTITY`, `<!ELEMENT`, …): no external or expanded entities. */
  dtdForbidden: "xml.dtd_forbidden",
  /** An entity reference other than `&lt; &gt; &amp; &quot; &apos;`. */
  entityForbidden: "xml.entity_forbidden",
  /** Not well-formed, or outside the subset: CDATA, a processing instruction, a long comment, bad UTF-8… */
  malformed: "xml.malformed",
  tooLarge: "xml.too_large",
  tooDeep: "xml.too_deep",
  /** An attribute value too long, or too many attributes on one element. */
  attributeTooLarge: "xml.attribute_too_large",
  tooManyNodes: "xml.too_many_nodes",
  textTooLarge: "xml.text_too_large",
  /** writeXml was given a name or a character that XML 1.0 cannot hold. */
  unwritable: "xml.unwritable",
} as const;

export type XmlErrorCode = (typeof XML_ERRORS)[keyof typeof XML_ERRORS];

const LT = 0x3c;
const GT = 0x3e;
const AMP = 0x26;
const SLASH = 0x2f;
const BANG = 0x21;
const QUESTION = 0x3f;
const EQUALS = 0x3d;
const QUOT = 0x22;
const APOS = 0x27;
const SEMICOLON = 0x3b;
const COLON = 0x3a;
const HASH = 0x23;
const BRACKET_CLOSE = 0x5d;
const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;

const PREDEFINED: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };
const DTD_KEYWORDS = ["DOCTYPE", "ENTITY", "ELEMENT", "ATTLIST", "NOTATION"];

const isSpace = (c: number): boolean => c === SPACE || c === TAB || c === LF || c === CR;

/** XML 1.0 §2.2 Char, as a code point. */
function isXmlChar(cp: number): boolean {
  return (
    cp === TAB ||
    cp === LF ||
    cp === CR ||
    (cp >= 0x20 && cp <= 0xd7ff) ||
    (cp >= 0xe000 && cp <= 0xfffd) ||
    (cp >= 0x10000 && cp <= 0x10ffff)
  );
}

/** XML 1.0 (5th ed.) §2.3 NameStartChar, without `:` (Namespaces in XML §3: a QName's parts are NCNames). */
function isNameStart(cp: number): boolean {
  return (
    (cp >= 0x61 && cp <= 0x7a) ||
    (cp >= 0x41 && cp <= 0x5a) ||
    cp === 0x5f ||
    (cp >= 0xc0 && cp <= 0xd6) ||
    (cp >= 0xd8 && cp <= 0xf6) ||
    (cp >= 0xf8 && cp <= 0x2ff) ||
    (cp >= 0x370 && cp <= 0x37d) ||
    (cp >= 0x37f && cp <= 0x1fff) ||
    (cp >= 0x200c && cp <= 0x200d) ||
    (cp >= 0x2070 && cp <= 0x218f) ||
    (cp >= 0x2c00 && cp <= 0x2fef) ||
    (cp >= 0x3001 && cp <= 0xd7ff) ||
    (cp >= 0xf900 && cp <= 0xfdcf) ||
    (cp >= 0xfdf0 && cp <= 0xfffd) ||
    (cp >= 0x10000 && cp <= 0xeffff)
  );
}

/** §2.3 NameChar, without `:`. */
function isNameChar(cp: number): boolean {
  return (
    isNameStart(cp) ||
    cp === 0x2d ||
    cp === 0x2e ||
    (cp >= 0x30 && cp <= 0x39) ||
    cp === 0xb7 ||
    (cp >= 0x300 && cp <= 0x36f) ||
    (cp >= 0x203f && cp <= 0x2040)
  );
}

/** Namespaces in XML §4 QName: `NCName` or `NCName:NCName`. */
export function isXmlName(name: string): boolean {
  let i = 0;
  let colons = 0;
  let atStart = true;
  while (i < name.length) {
    const cp = name.codePointAt(i)!;
    if (cp === COLON) {
      if (atStart || ++colons > 1) return false;
      atStart = true;
    } else {
      if (atStart ? !isNameStart(cp) : !isNameChar(cp)) return false;
      atStart = false;
    }
    i += cp > 0xffff ? 2 : 1;
  }
  return !atStart;
}

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

export interface WriteXmlOptions {
  /** Start with `<?xml version="1.0" encoding="UTF-8"?>` (default true). */
  declaration?: boolean;
  /** Two-space indentation, one element per line, text on its element's line (default true). */
  indent?: boolean;
}

function unwritable(message: string): never {
  throw new HandsafeError(XML_ERRORS.unwritable, message, { status: 500 });
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for
const NEEDS_ESCAPE = /[\u0000-\u001f&<>"\ud800-\udfff\ufffe\uffff]/;

/**
 * Escapes text for content (`attribute` false) or a double-quoted attribute value. Characters the
 * reader would normalise are written as references so they read back as written: CR in content,
 * TAB/LF/CR in attributes, and — for a whitespace-only run the reader would take for indentation —
 * every whitespace character.
 */
function escapeXml(text: string, attribute: boolean, spaceAsReference: boolean): string {
  // Most text (ids, base64, hex) needs nothing: one native scan instead of a loop in JS.
  if (!spaceAsReference && !NEEDS_ESCAPE.test(text)) return text;
  let out = "";
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    let replacement: string | undefined;
    if (c === AMP) replacement = "&amp;";
    else if (c === LT) replacement = "&lt;";
    else if (c === GT) replacement = "&gt;";
    else if (c === QUOT) replacement = "&quot;";
    else if (c === CR) replacement = "&#xD;";
    else if (c === LF) replacement = attribute || spaceAsReference ? "&#xA;" : undefined;
    else if (c === TAB) replacement = attribute || spaceAsReference ? "&#x9;" : undefined;
    else if (c === SPACE) replacement = spaceAsReference ? "&#x20;" : undefined;
    else if (c >= 0xd800 && c <= 0xdbff) {
      const d = text.charCodeAt(i + 1);
      if (!(d >= 0xdc00 && d <= 0xdfff)) unwritable("lone surrogate in text");
      i++;
    } else if (!isXmlChar(c))
      unwritable(`character U+${c.toString(16).toUpperCase().padStart(4, "0")} cannot be written in XML`);
    if (replacement !== undefined) {
      out += text.slice(start, i) + replacement;
      start = i + 1;
    }
  }
  return start === 0 ? text : out + text.slice(start);
}

function writeElement(el: XmlElement, level: number, indent: boolean, out: string[]): void {
  if (!isXmlName(el.name)) unwritable(`${JSON.stringify(el.name)} is not an XML name`);
  let open = "<" + el.name;
  for (const [name, value] of Object.entries(el.attributes)) {
    if (!isXmlName(name)) unwritable(`${JSON.stringify(name)} is not an XML attribute name`);
    open += ` ${name}="${escapeXml(value, true, false)}"`;
  }
  if (el.children.length === 0) {
    out.push(el.text === "" ? open + "/>" : `${open}>${escapeXml(el.text, false, false)}</${el.name}>`);
    return;
  }
  if (el.text !== "" || !indent) {
    // Mixed content is written without indentation, which would otherwise become part of the text.
    const spaceOnly = /^[ \t\n\r]*$/.test(el.text);
    out.push(`${open}>${escapeXml(el.text, false, spaceOnly)}`);
    for (const child of el.children) writeElement(child, level + 1, false, out);
    out.push(`</${el.name}>`);
    return;
  }
  out.push(open + ">");
  const pad = "  ".repeat(level + 1);
  for (const child of el.children) {
    out.push("\n" + pad);
    writeElement(child, level + 1, true, out);
  }
  out.push("\n" + "  ".repeat(level) + `</${el.name}>`);
}

/**
 * Writes a document that parseXml reads back deep-equal. Throws `xml.unwritable` for a name that is
 * not a QName or a character outside XML 1.0 Char. Limits are the reader's business, not checked here.
 */
export function writeXml(root: XmlElement, options: WriteXmlOptions = {}): string {
  const indent = options.indent ?? true;
  const out: string[] = [];
  if (options.declaration ?? true) out.push('<?xml version="1.0" encoding="UTF-8"?>' + (indent ? "\n" : ""));
  writeElement(root, 0, indent, out);
  if (indent) out.push("\n");
  return out.join("");
}
