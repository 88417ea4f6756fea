/**
 * The XML writer: a document parseXml (xml-reader.ts) reads back deep-equal — characters the reader
 * would normalise are written as references, and anything XML 1.0 cannot hold is refused.
 */
import { HandsafeError } from "../errors.ts";
import {
  AMP,
  CR,
  GT,
  isXmlChar,
  isXmlName,
  LF,
  LT,
  QUOT,
  SPACE,
  TAB,
  XML_ERRORS,
  type XmlElement,
} from "./xml-syntax.ts";

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

/**
 * One element as it appears inside a document that writeXml indents, at depth `level`: the same
 * characters writeXml writes for it there (its first line unindented, no trailing newline). For a
 * writer that assembles a large document from pieces made one at a time.
 */
export function writeXmlFragment(el: XmlElement, level: number): string {
  const out: string[] = [];
  writeElement(el, level, true, out);
  return out.join("");
}
