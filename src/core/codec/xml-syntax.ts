/**
 * The XML 1.0 subset's vocabulary, shared by xml-reader.ts and xml-writer.ts: the element model,
 * the limits, the error codes and the character classes (XML 1.0 5th ed. §2.2, §2.3; Namespaces in
 * XML §4). Isomorphic, no I/O.
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

export const LT = 0x3c;
export const GT = 0x3e;
export const AMP = 0x26;
export const SLASH = 0x2f;
export const BANG = 0x21;
export const QUESTION = 0x3f;
export const EQUALS = 0x3d;
export const QUOT = 0x22;
export const APOS = 0x27;
export const SEMICOLON = 0x3b;
export const COLON = 0x3a;
export const HASH = 0x23;
export const BRACKET_CLOSE = 0x5d;
export const TAB = 0x09;
export const LF = 0x0a;
export const CR = 0x0d;
export const SPACE = 0x20;

export const PREDEFINED: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };
export const DTD_KEYWORDS = ["DOCTYPE", "ENTITY", "ELEMENT", "ATTLIST", "NOTATION"];

export const isSpace = (c: number): boolean => c === SPACE || c === TAB || c === LF || c === CR;

/** XML 1.0 §2.2 Char, as a code point. */
export function isXmlChar(cp: number): boolean {
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
export function isNameStart(cp: number): boolean {
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
export function isNameChar(cp: number): boolean {
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
