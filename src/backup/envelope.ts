import { parseRecipient } from "../core/age/keys.ts";
import { base64Standard } from "../core/codec/base64.ts";
import { concatBytes, fromHex, toHex, utf8 } from "../core/codec/bytes.ts";
import { DEFAULT_XML_LIMITS, parseXml, type XmlElement, writeXmlFragment } from "../core/codec/xml.ts";
import { sha256 } from "../core/crypto/hash.ts";
import { HandsafeError } from "../core/errors.ts";
import {
  ACCOUNT_ID,
  agePayloadSize,
  BACKUP_ERRORS,
  BACKUP_ID,
  type BackupEnvelope,
  BLOB_URI,
  backupUri,
  ENVELOPE_KINDS,
  ENVELOPE_NAMESPACE,
  ENVELOPE_VER_DTD,
  ENVELOPE_VER_PROTO,
  type EnvelopeItem,
  type EnvelopeKind,
  HANDSET_URI,
  HASH_ALG,
  INLINE_MAX_BYTES,
  INLINE_PAYLOAD_MAX_BYTES,
  ITEM_COMMANDS,
  ITEM_ID,
  ITEM_KINDS,
  type ItemCommand,
  type ItemKind,
  type ItemPayload,
  LABELS,
  MAX_ENVELOPE_BYTES,
  MAX_ENVELOPE_PARTS,
} from "./protocol.ts";

/**
 * The backup envelope (docs/protocols/backup.md §4): a SyncML-style document listing one backup's
 * items. encodeEnvelope writes it byte-stably (same model, same bytes); parseEnvelope reads it
 * strictly — every element in its place, nothing unknown, every id, size, hash and base64 checked —
 * and names the offending element in `details.path` (`SyncML/SyncBody/Add[3]/Item/Meta/Size`, the
 * index counting siblings of the same name, XPath-style).
 */

const ISO_UTC_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const DECIMAL = /^(0|[1-9][0-9]*)$/;
const HEX_256 = /^[0-9a-f]{64}$/;
/** Base64 characters of the largest inline payload: no need to decode anything longer. */
const INLINE_BASE64_MAX = Math.ceil((INLINE_PAYLOAD_MAX_BYTES * 4) / 3);

function invalid(path: string, message: string): never {
  throw new HandsafeError(BACKUP_ERRORS.envelopeInvalid, `${path}: ${message}`, {
    status: 400,
    details: { path },
  });
}

// --- encoding -------------------------------------------------------------------------------------

const node = (name: string, children: XmlElement[], attributes: Record<string, string> = {}): XmlElement => ({
  name,
  attributes,
  children,
  text: "",
});
const leaf = (name: string, text: string, attributes: Record<string, string> = {}): XmlElement => ({
  name,
  attributes,
  children: [],
  text,
});
const locUri = (uri: string): XmlElement => leaf("LocURI", uri);

/** An item's command; its CmdID is set when it is written (writeCommand). */
function itemCommand(item: EnvelopeItem): XmlElement {
  const payload =
    "inline" in item.payload
      ? leaf("Data", base64Standard.encode(item.payload.inline))
      : node("Blob", [], {
          uri: item.payload.blob.uri,
          size: String(item.payload.blob.size),
          sha256: toHex(item.payload.blob.sha256),
        });
  return node(item.command, [
    leaf("CmdID", "0"),
    node("Item", [
      node("Source", [locUri(item.id)]),
      node("Meta", [
        leaf("Kind", item.kind),
        leaf("Size", String(item.size)),
        leaf("Hash", toHex(item.hash), { alg: HASH_ALG }),
        leaf("Name", base64Standard.encode(item.name)),
      ]),
      leaf("Header", base64Standard.encode(item.header)),
      payload,
    ]),
  ]);
}

/** SyncHdr: the same in every part of one envelope but for MsgID. */
function headerElement(env: BackupEnvelope, msgId: number): XmlElement {
  if (!Number.isSafeInteger(env.createdAt) || Number.isNaN(new Date(env.createdAt).getTime()))
    invalid("SyncML/SyncHdr/Meta/Created", "createdAt is not a whole number of milliseconds");
  const meta = [leaf("Kind", env.kind), leaf("Created", new Date(env.createdAt).toISOString())];
  if (env.parent !== undefined) meta.push(leaf("Parent", env.parent));
  const header = [
    leaf("VerDTD", ENVELOPE_VER_DTD),
    leaf("VerProto", ENVELOPE_VER_PROTO),
    leaf("SessionID", env.backupId),
    leaf("MsgID", String(msgId)),
    node("Target", [locUri(env.target)]),
    node("Source", [locUri(env.source.handset), leaf("LocName", env.source.account)]),
    node("Meta", meta),
    node(
      "Recipients",
      env.recipients.map((r) => leaf("Recipient", r)),
    ),
  ];
  if (env.sharedWith.length > 0)
    header.push(
      node(
        "SharedWith",
        env.sharedWith.map((a) => leaf("Account", a)),
      ),
    );
  return node("SyncHdr", header);
}

/** The snapshot's commands, items first then deletes, made one at a time as asked for. */
function* commandElements(env: BackupEnvelope): Generator<XmlElement> {
  for (const item of env.items) yield itemCommand(item);
  for (const id of env.deleted)
    yield node("Delete", [leaf("CmdID", "0"), node("Item", [node("Source", [locUri(id)])])]);
}

const XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>';

/**
 * One SyncML message from its commands, each already written (writeCommand) at its place: the
 * characters writeXml writes for the whole tree (header, SyncBody of the commands, <Final/> last).
 */
function documentBytes(
  env: BackupEnvelope,
  msgId: number,
  commands: readonly string[],
  final: boolean,
): Uint8Array {
  const body = final ? [...commands, writeXmlFragment(node("Final", []), 2)] : commands;
  const text =
    `${XML_DECLARATION}\n<SyncML xmlns="${ENVELOPE_NAMESPACE}">` +
    `\n  ${writeXmlFragment(headerElement(env, msgId), 1)}` +
    (body.length === 0 ? "\n  <SyncBody/>" : `\n  <SyncBody>\n    ${body.join("\n    ")}\n  </SyncBody>`) +
    "\n</SyncML>\n";
  return utf8(text);
}

/** A command as written inside SyncBody, numbered `cmdId` (CmdID counts within its message). */
function writeCommand(command: XmlElement, cmdId: number): string {
  command.children[0]!.text = String(cmdId);
  return writeXmlFragment(command, 2);
}

/**
 * The envelope as one UTF-8 XML document (MsgID 1, <Final/>). The output is read back with
 * parseEnvelope before it is returned, so what this writes is always what the server and a
 * restoring handset accept (else `backup.envelope_invalid`, naming the path). Past the reader's
 * limits it fails as the reader does (`xml.too_large`, `xml.too_many_nodes`): encodeEnvelopeParts
 * splits such an envelope.
 */
export function encodeEnvelope(env: BackupEnvelope): Uint8Array {
  let n = 0;
  const commands = [...commandElements(env)].map((c) => writeCommand(c, ++n));
  const bytes = documentBytes(env, 1, commands, true);
  parseEnvelope(bytes);
  return bytes;
}

/** How large each part of encodeEnvelopeParts may be: the server reader's limits by default. */
export interface EnvelopePartLimits {
  maxBytes: number;
  maxElements: number;
}

export const DEFAULT_PART_LIMITS: Readonly<EnvelopePartLimits> = Object.freeze({
  maxBytes: MAX_ENVELOPE_BYTES,
  maxElements: DEFAULT_XML_LIMITS.maxNodes,
});

function elementCount(el: XmlElement): number {
  let n = 1;
  for (const c of el.children) n += elementCount(c);
  return n;
}

/**
 * The envelope as a SyncML session of one or more messages (§4 Parts): the same header in each
 * (MsgID 1, 2, …), the commands in order, as many per message as fit `limits`, <Final/> on the
 * last. One message when everything fits, byte for byte what encodeEnvelope writes. More than
 * MAX_ENVELOPE_PARTS parts, or a single command that fits in no part: `backup.envelope_too_large`
 * (413).
 *
 * Each command is made and written once, and only the current part's text is held. Unlike
 * encodeEnvelope, the parts are not read back here (three 16 MiB parses for 40 000 items, a third
 * of the time and most of the memory): the writer is the same, the tests hold it to the reader,
 * and the server reads every part before it lists anything.
 */
export function encodeEnvelopeParts(
  env: BackupEnvelope,
  limits: EnvelopePartLimits = DEFAULT_PART_LIMITS,
): Uint8Array[] {
  return [...envelopeParts(env, limits)];
}

/**
 * encodeEnvelopeParts one part at a time, written when asked for: a caller that sends each part
 * before asking for the next holds one part's bytes, not all of them. (Past MAX_ENVELOPE_PARTS the
 * refusal comes when part 65 is asked for: count first, with countEnvelopeParts.)
 */
export function envelopeParts(
  env: BackupEnvelope,
  limits: EnvelopePartLimits = DEFAULT_PART_LIMITS,
): Generator<Uint8Array, void, undefined> {
  return cutParts(env, limits, true) as Generator<Uint8Array, void, undefined>;
}

/** How many parts encodeEnvelopeParts would write, or its refusal — without writing them. */
export function countEnvelopeParts(
  env: BackupEnvelope,
  limits: EnvelopePartLimits = DEFAULT_PART_LIMITS,
): number {
  let n = 0;
  for (const _ of cutParts(env, limits, false)) n++;
  return n;
}

/** The parts, in order: each one's bytes when `write`, else undefined (counting only). */
function* cutParts(
  env: BackupEnvelope,
  limits: EnvelopePartLimits,
  write: boolean,
): Generator<Uint8Array | undefined, void, undefined> {
  // The header's cost, at the widest MsgID a part can carry, with <Final/>.
  const empty = documentBytes(env, MAX_ENVELOPE_PARTS, [], true);
  const headerElements = elementCount(parseXml(empty));
  const budgetBytes = limits.maxBytes - empty.length;
  const budgetElements = limits.maxElements - headerElements;
  let count = 0;
  let group: string[] = [];
  let groupSize = 0;
  let bytes = 0;
  let elements = 0;
  const close = (final: boolean): Uint8Array | undefined => {
    count++;
    if (count > MAX_ENVELOPE_PARTS) tooLarge(env, limits, `more than ${MAX_ENVELOPE_PARTS} parts`);
    let doc: Uint8Array | undefined;
    if (write) {
      doc = documentBytes(env, count, group, final);
      if (doc.length > limits.maxBytes)
        throw new HandsafeError("internal", `envelope part ${count} came out over its limits`, {
          status: 500,
        });
    }
    group = [];
    groupSize = 0;
    bytes = 0;
    elements = 0;
    return doc;
  };
  for (const c of commandElements(env)) {
    const nodes = elementCount(c);
    let text = writeCommand(c, groupSize + 1);
    // Every character is ASCII (ids, base64, hex, decimals, names), but measure bytes all the same.
    let cost = utf8Length(text) + 5; // "\n    " before it
    if (cost > budgetBytes || nodes > budgetElements)
      tooLarge(env, limits, "a single item does not fit in a part");
    if (groupSize > 0 && (bytes + cost > budgetBytes || elements + nodes > budgetElements)) {
      yield close(false);
      text = writeCommand(c, 1);
      cost = utf8Length(text) + 5;
    }
    if (write) group.push(text);
    groupSize++;
    bytes += cost;
    elements += nodes;
  }
  yield close(true);
}

function utf8Length(text: string): number {
  // Fast path: nothing but ASCII.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the ASCII range is what it tests
  return /^[\x00-\x7f]*$/.test(text) ? text.length : utf8(text).length;
}

function tooLarge(env: BackupEnvelope, limits: EnvelopePartLimits, why: string): never {
  throw new HandsafeError(
    BACKUP_ERRORS.envelopeTooLarge,
    `this backup's envelope does not fit in ${MAX_ENVELOPE_PARTS} parts of ${limits.maxBytes} bytes and ${limits.maxElements} elements (${why}): back up fewer items at once`,
    {
      status: 413,
      details: {
        limit: limits.maxBytes,
        maxElements: limits.maxElements,
        maxParts: MAX_ENVELOPE_PARTS,
        items: env.items.length,
      },
    },
  );
}

/** §4 Signature: Ed25519 signs `"handsafe/v1/backup/envelope" || 0x00 || xml bytes`. */
export function envelopeSigningInput(xml: Uint8Array): Uint8Array {
  return concatBytes(utf8(LABELS.envelope), new Uint8Array([0]), xml);
}

// --- parsing --------------------------------------------------------------------------------------

function attributes(el: XmlElement, path: string, allowed: readonly string[]): void {
  for (const name of Object.keys(el.attributes))
    if (!allowed.includes(name)) invalid(`${path}/@${name}`, "unexpected attribute");
  for (const name of allowed)
    if (!Object.hasOwn(el.attributes, name)) invalid(`${path}/@${name}`, "missing attribute");
}

/**
 * The children of a container element, which must be exactly `names` in that order (those in
 * `optional` may be left out), with no text and no attributes.
 */
function container(
  el: XmlElement,
  path: string,
  names: readonly string[],
  optional: readonly string[] = [],
): Record<string, XmlElement | undefined> {
  attributes(el, path, []);
  if (el.text !== "") invalid(path, "unexpected text");
  const found: Record<string, XmlElement | undefined> = {};
  let next = 0;
  for (const child of el.children) {
    // Unknown, repeated or out of order: the child itself is what is wrong.
    if (names.indexOf(child.name, next) < 0) invalid(`${path}/${child.name}`, "unexpected element");
    while (names[next] !== child.name) {
      if (!optional.includes(names[next]!)) invalid(`${path}/${names[next]}`, "missing element");
      next++;
    }
    found[child.name] = child;
    next++;
  }
  for (; next < names.length; next++)
    if (!optional.includes(names[next]!)) invalid(`${path}/${names[next]}`, "missing element");
  return found;
}

/** The text of a leaf element: no children, and only the attributes named (all required). */
function text(el: XmlElement | undefined, path: string, allowed: readonly string[] = []): string {
  if (el === undefined) return invalid(path, "missing element");
  attributes(el, path, allowed);
  if (el.children.length > 0) invalid(`${path}/${el.children[0]!.name}`, "unexpected element");
  return el.text;
}

function matching(value: string, pattern: RegExp, path: string, what: string): string {
  if (!pattern.test(value)) invalid(path, `not ${what}`);
  return value;
}

function size(value: string, path: string): number {
  const n = Number(value);
  if (!DECIMAL.test(value) || !Number.isSafeInteger(n)) invalid(path, "not a non-negative whole number");
  return n;
}

function hex256(value: string, path: string): Uint8Array {
  if (!HEX_256.test(value)) invalid(path, "not 64 lower-case hex digits");
  return fromHex(value);
}

function base64(value: string, path: string): Uint8Array {
  const bytes = base64Standard.decode(value);
  if (bytes === undefined) invalid(path, "not canonical unpadded base64");
  return bytes;
}

function oneOf<T extends string>(value: string, options: readonly T[], path: string): T {
  if (!(options as readonly string[]).includes(value)) invalid(path, `not one of ${options.join(", ")}`);
  return value as T;
}

function listOf(el: XmlElement, path: string, childName: string, pattern: RegExp, what: string): string[] {
  attributes(el, path, []);
  if (el.text !== "") invalid(path, "unexpected text");
  if (el.children.length === 0) invalid(`${path}/${childName}`, "missing element");
  const seen = new Set<string>();
  return el.children.map((child, i) => {
    const at = `${path}/${childName}[${i + 1}]`;
    if (child.name !== childName) invalid(`${path}/${child.name}`, "unexpected element");
    const value = matching(text(child, at), pattern, at, what);
    if (seen.has(value)) invalid(at, "listed twice");
    seen.add(value);
    return value;
  });
}

function sourceId(
  item: XmlElement | undefined,
  path: string,
  names: readonly string[],
  optional: readonly string[] = [],
): [string, Record<string, XmlElement | undefined>] {
  if (item === undefined) invalid(path, "missing element");
  const parts = container(item, path, names, optional);
  const source = container(parts["Source"]!, `${path}/Source`, ["LocURI"]);
  const id = matching(
    text(source["LocURI"], `${path}/Source/LocURI`),
    ITEM_ID,
    `${path}/Source/LocURI`,
    "an item id",
  );
  return [id, parts];
}

function item(command: ItemCommand, el: XmlElement | undefined, path: string): EnvelopeItem {
  const [id, parts] = sourceId(el, path, ["Source", "Meta", "Header", "Data", "Blob"], ["Data", "Blob"]);
  // The payload is either inline or a blob: exactly one of the two.
  if (parts["Data"] === undefined && parts["Blob"] === undefined) invalid(`${path}/Data`, "missing element");
  if (parts["Data"] !== undefined && parts["Blob"] !== undefined)
    invalid(`${path}/Blob`, "unexpected element");
  return { ...itemFields(parts, path), command, id };
}

function itemFields(
  parts: Record<string, XmlElement | undefined>,
  path: string,
): Omit<EnvelopeItem, "command" | "id"> {
  const metaPath = `${path}/Meta`;
  const meta = container(parts["Meta"]!, metaPath, ["Kind", "Size", "Hash", "Name"]);
  const kind: ItemKind = oneOf(text(meta["Kind"], `${metaPath}/Kind`), ITEM_KINDS, `${metaPath}/Kind`);
  const plaintext = size(text(meta["Size"], `${metaPath}/Size`), `${metaPath}/Size`);
  const hashEl = meta["Hash"]!;
  const hash = hex256(text(hashEl, `${metaPath}/Hash`, ["alg"]), `${metaPath}/Hash`);
  if (hashEl.attributes["alg"] !== HASH_ALG) invalid(`${metaPath}/Hash/@alg`, `not ${HASH_ALG}`);
  const name = base64(text(meta["Name"], `${metaPath}/Name`), `${metaPath}/Name`);
  const header = base64(text(parts["Header"], `${path}/Header`), `${path}/Header`);
  if (header.length === 0) invalid(`${path}/Header`, "empty age header");
  const expected = agePayloadSize(plaintext);
  let payload: ItemPayload;
  if (parts["Data"] !== undefined) {
    const at = `${path}/Data`;
    const data = text(parts["Data"], at);
    if (data.length > INLINE_BASE64_MAX) invalid(at, `inline payload over ${INLINE_PAYLOAD_MAX_BYTES} bytes`);
    const inline = base64(data, at);
    if (plaintext > INLINE_MAX_BYTES)
      invalid(at, `an item over ${INLINE_MAX_BYTES} bytes is a blob, not inline`);
    if (inline.length !== expected) invalid(at, `the age payload of ${plaintext} bytes is ${expected} bytes`);
    payload = { inline };
  } else {
    const at = `${path}/Blob`;
    const blob = parts["Blob"]!;
    text(blob, at, ["uri", "size", "sha256"]);
    if (blob.text !== "") invalid(at, "unexpected text");
    const uri = matching(blob.attributes["uri"]!, BLOB_URI, `${at}/@uri`, "a blob URI");
    const blobSize = size(blob.attributes["size"]!, `${at}/@size`);
    const sha256 = hex256(blob.attributes["sha256"]!, `${at}/@sha256`);
    if (plaintext <= INLINE_MAX_BYTES) invalid(at, `an item of at most ${INLINE_MAX_BYTES} bytes is inline`);
    if (blobSize !== expected)
      invalid(`${at}/@size`, `the age payload of ${plaintext} bytes is ${expected} bytes`);
    payload = { blob: { uri, size: blobSize, sha256 } };
  }
  return { kind, size: plaintext, hash, name, header, payload };
}

/** One message of an envelope (§4 Parts): its MsgID, whether it is the last, and what it holds. */
export interface EnvelopePart {
  msgId: number;
  final: boolean;
  /** The envelope's header, with this message's commands only. */
  envelope: BackupEnvelope;
}

/**
 * Reads a whole envelope — one message, MsgID 1 with <Final/>; refuses with
 * `backup.envelope_invalid` (details.path), or the reader's `xml.*`. A part of a larger envelope
 * is read with parseEnvelopePart and joined with combineEnvelopeParts.
 */
export function parseEnvelope(xml: Uint8Array): BackupEnvelope {
  const part = parseEnvelopePart(xml);
  if (part.msgId !== 1) invalid("SyncML/SyncHdr/MsgID", "not 1 (a later part of an envelope in parts)");
  if (!part.final)
    invalid("SyncML/SyncBody/Final", "missing element (the first part of an envelope in parts)");
  return part.envelope;
}

/** Reads one message of an envelope: as parseEnvelope, with MsgID 1..MAX_ENVELOPE_PARTS and <Final/> optional. */
export function parseEnvelopePart(xml: Uint8Array): EnvelopePart {
  const root = parseXml(xml);
  if (root.name !== "SyncML") invalid(root.name, "the root element is SyncML");
  if (root.attributes["xmlns"] !== ENVELOPE_NAMESPACE) invalid("SyncML/@xmlns", `not ${ENVELOPE_NAMESPACE}`);
  const { xmlns: _, ...others } = root.attributes;
  for (const name of Object.keys(others)) invalid(`SyncML/@${name}`, "unexpected attribute");
  if (root.text !== "") invalid("SyncML", "unexpected text");
  const top = container({ ...root, attributes: {} }, "SyncML", ["SyncHdr", "SyncBody"]);

  const h = "SyncML/SyncHdr";
  const hdr = container(
    top["SyncHdr"]!,
    h,
    ["VerDTD", "VerProto", "SessionID", "MsgID", "Target", "Source", "Meta", "Recipients", "SharedWith"],
    ["SharedWith"],
  );
  if (text(hdr["VerDTD"], `${h}/VerDTD`) !== ENVELOPE_VER_DTD)
    invalid(`${h}/VerDTD`, `not ${ENVELOPE_VER_DTD}`);
  if (text(hdr["VerProto"], `${h}/VerProto`) !== ENVELOPE_VER_PROTO)
    invalid(`${h}/VerProto`, `not ${ENVELOPE_VER_PROTO}`);
  const backupId = matching(
    text(hdr["SessionID"], `${h}/SessionID`),
    BACKUP_ID,
    `${h}/SessionID`,
    "a backup id",
  );
  const msgId = size(text(hdr["MsgID"], `${h}/MsgID`), `${h}/MsgID`);
  if (msgId < 1 || msgId > MAX_ENVELOPE_PARTS) invalid(`${h}/MsgID`, `not 1..${MAX_ENVELOPE_PARTS}`);
  const target = text(container(hdr["Target"]!, `${h}/Target`, ["LocURI"])["LocURI"], `${h}/Target/LocURI`);
  if (target !== backupUri(backupId)) invalid(`${h}/Target/LocURI`, `not ${backupUri(backupId)}`);
  const src = container(hdr["Source"]!, `${h}/Source`, ["LocURI", "LocName"]);
  const handset = matching(
    text(src["LocURI"], `${h}/Source/LocURI`),
    HANDSET_URI,
    `${h}/Source/LocURI`,
    "handset:…",
  );
  const account = matching(
    text(src["LocName"], `${h}/Source/LocName`),
    ACCOUNT_ID,
    `${h}/Source/LocName`,
    "acct_…",
  );

  const meta = container(hdr["Meta"]!, `${h}/Meta`, ["Kind", "Created", "Parent"], ["Parent"]);
  const kind: EnvelopeKind = oneOf(text(meta["Kind"], `${h}/Meta/Kind`), ENVELOPE_KINDS, `${h}/Meta/Kind`);
  const created = text(meta["Created"], `${h}/Meta/Created`);
  const createdAt = Date.parse(created);
  // The round trip through Date refuses impossible dates (2026-02-30) that the pattern lets by.
  if (!ISO_UTC_MS.test(created) || Number.isNaN(createdAt) || new Date(createdAt).toISOString() !== created)
    invalid(`${h}/Meta/Created`, "not ISO-8601 UTC with milliseconds (2026-12-01T16:00:00.000Z)");
  let parent: string | undefined;
  if (meta["Parent"] !== undefined) {
    parent = matching(text(meta["Parent"], `${h}/Meta/Parent`), BACKUP_ID, `${h}/Meta/Parent`, "a backup id");
    if (parent === backupId) invalid(`${h}/Meta/Parent`, "a backup cannot be its own parent");
  }

  const recipients = listOf(
    hdr["Recipients"]!,
    `${h}/Recipients`,
    "Recipient",
    /^age1/,
    "an age1… recipient",
  );
  recipients.forEach((r, i) => {
    try {
      parseRecipient(r);
    } catch (cause) {
      throw new HandsafeError(
        BACKUP_ERRORS.envelopeInvalid,
        `${h}/Recipients/Recipient[${i + 1}]: not an age1… recipient`,
        {
          status: 400,
          details: { path: `${h}/Recipients/Recipient[${i + 1}]` },
          cause,
        },
      );
    }
  });
  const sharedWith =
    hdr["SharedWith"] === undefined
      ? []
      : listOf(hdr["SharedWith"], `${h}/SharedWith`, "Account", ACCOUNT_ID, "acct_…");

  const b = "SyncML/SyncBody";
  const body = top["SyncBody"]!;
  attributes(body, b, []);
  if (body.text !== "") invalid(b, "unexpected text");
  const items: EnvelopeItem[] = [];
  const deleted: string[] = [];
  const ids = new Set<string>();
  const counts: Record<string, number> = {};
  // <Final/>, empty, closes the last message of an envelope.
  const last = body.children.at(-1);
  const final = last?.name === "Final";
  if (final) {
    text(last, `${b}/Final`);
    if (last.text !== "") invalid(`${b}/Final`, "unexpected text");
  }
  const commands = final ? body.children.slice(0, -1) : body.children;
  commands.forEach((cmd, i) => {
    counts[cmd.name] = (counts[cmd.name] ?? 0) + 1;
    const path = `${b}/${cmd.name}[${counts[cmd.name]}]`;
    const isItem = (ITEM_COMMANDS as readonly string[]).includes(cmd.name);
    // Every Add | Replace | Copy comes before the first Delete.
    if (!(isItem && deleted.length === 0) && cmd.name !== "Delete") invalid(path, "unexpected element");
    const parts = container(cmd, path, ["CmdID", "Item"]);
    if (text(parts["CmdID"], `${path}/CmdID`) !== String(i + 1)) invalid(`${path}/CmdID`, `not ${i + 1}`);
    if (isItem) {
      const entry = item(cmd.name as ItemCommand, parts["Item"], `${path}/Item`);
      if (ids.has(entry.id)) invalid(`${path}/Item/Source/LocURI`, "item listed twice");
      ids.add(entry.id);
      items.push(entry);
    } else {
      const [id] = sourceId(parts["Item"], `${path}/Item`, ["Source"]);
      if (ids.has(id))
        invalid(`${path}/Item/Source/LocURI`, "item both listed and deleted, or deleted twice");
      ids.add(id);
      deleted.push(id);
    }
  });

  const envelope: BackupEnvelope = {
    backupId,
    kind,
    createdAt,
    source: { handset, account },
    target,
    recipients,
    sharedWith,
    items,
    deleted,
  };
  if (parent !== undefined) envelope.parent = parent;
  return { msgId, final, envelope };
}

/**
 * The header fields every part of one envelope must share, as 64 hex digits (SHA-256 of them as
 * JSON): what the server keeps of a staged part to hold the next ones to it without reading it.
 */
export function envelopeHeaderKey(env: BackupEnvelope): string {
  return toHex(sha256(utf8(headerFields(env))));
}

function headerFields(env: BackupEnvelope): string {
  return JSON.stringify([
    env.backupId,
    env.kind,
    env.createdAt,
    env.parent ?? null,
    env.source.handset,
    env.source.account,
    env.target,
    env.recipients,
    env.sharedWith,
  ]);
}

/**
 * The whole envelope from its parts, in MsgID order: MsgID 1, 2, … with <Final/> on the last only,
 * the same header in each, an item id once across all of them, and every Add | Replace | Copy
 * before the first Delete across the session. Refuses with `backup.envelope_invalid`, details
 * `{path, part}`.
 */
export function combineEnvelopeParts(parts: readonly EnvelopePart[]): BackupEnvelope {
  const items: EnvelopeItem[] = [];
  const deleted: string[] = [];
  const joiner = new EnvelopeJoiner({
    item: (i) => items.push(i),
    deleted: (id) => deleted.push(id),
  });
  for (const p of parts) joiner.add(p);
  return { ...joiner.finish().header, items, deleted };
}

/**
 * combineEnvelopeParts one part at a time (`add` them in order, then `finish`): only one part need
 * be in memory, every item and deleted id goes to `visit`, and `finish` returns the header (items
 * and deleted empty) with the number of items.
 */
export class EnvelopeJoiner {
  #header: BackupEnvelope | undefined;
  #key = "";
  #n = 0;
  #final = false;
  #items = 0;
  #deleted = 0;
  readonly #ids = new Set<string>();

  constructor(private readonly visit: { item(item: EnvelopeItem): void; deleted(id: string): void }) {}

  add(p: EnvelopePart): void {
    const n = ++this.#n;
    if (this.#final) refusePart(n, "SyncML", "a part after the one with <Final/>");
    if (p.msgId !== n) refusePart(n, "SyncML/SyncHdr/MsgID", `not ${n}`);
    if (this.#header === undefined) {
      this.#header = { ...p.envelope, items: [], deleted: [] };
      this.#key = headerFields(p.envelope);
    } else if (headerFields(p.envelope) !== this.#key)
      refusePart(n, "SyncML/SyncHdr", "not the first part's header");
    if (this.#deleted > 0 && p.envelope.items.length > 0)
      refusePart(n, "SyncML/SyncBody", "an item listed after a Delete of an earlier part");
    for (const item of p.envelope.items) {
      if (this.#ids.has(item.id)) refusePart(n, "SyncML/SyncBody", `item ${item.id} listed twice`);
      this.#ids.add(item.id);
      this.#items++;
      this.visit.item(item);
    }
    for (const id of p.envelope.deleted) {
      if (this.#ids.has(id))
        refusePart(n, "SyncML/SyncBody", `item ${id} both listed and deleted, or deleted twice`);
      this.#ids.add(id);
      this.#deleted++;
      this.visit.deleted(id);
    }
    this.#final = p.final;
  }

  finish(): { header: BackupEnvelope; items: number } {
    if (this.#header === undefined) return refusePart(1, "SyncML", "missing part");
    if (!this.#final) refusePart(this.#n, "SyncML/SyncBody/Final", "missing element");
    return { header: this.#header, items: this.#items };
  }
}

/** `backup.envelope_invalid` for part `part` of an envelope in parts, details `{path, part}`. */
export function partRefusal(part: number, path: string, message: string): HandsafeError {
  return new HandsafeError(BACKUP_ERRORS.envelopeInvalid, `part ${part}: ${path}: ${message}`, {
    status: 400,
    details: { path, part },
  });
}

function refusePart(part: number, path: string, message: string): never {
  throw partRefusal(part, path, message);
}
