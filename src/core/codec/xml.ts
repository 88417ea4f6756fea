/**
 * A strict reader and writer of the XML 1.0 subset our documents use (docs/protocols/backup.md §4):
 * an optional `<?xml version="1.0" encoding="UTF-8"?>`, elements, attributes, character data, the five
 * predefined entities, numeric character references and short comments. No DTD, no entity
 * declarations (so no XXE and no entity expansion), no CDATA, no processing instructions.
 *
 * Isomorphic (no node:* imports). The reader is one iterative pass over the decoded text — no
 * recursion, no backtracking regular expressions — so its time is linear in the input and its stack
 * is constant whatever the nesting; every limit is checked as soon as it is crossed.
 *
 * The parts: xml-syntax.ts (model, limits, error codes, character classes), xml-reader.ts
 * (parseXml), xml-writer.ts (writeXml). This module is the one to import.
 */

export { parseXml } from "./xml-reader.ts";
export {
  DEFAULT_XML_LIMITS,
  isXmlName,
  XML_ERRORS,
  type XmlElement,
  type XmlErrorCode,
  type XmlLimits,
} from "./xml-syntax.ts";
export { type WriteXmlOptions, writeXml, writeXmlFragment } from "./xml-writer.ts";
