import { parseRecipient } from "../core/age/keys.ts";
import { base64Standard } from "../core/codec/base64.ts";
import { concatBytes, fromHex, toHex, utf8 } from "../core/codec/bytes.ts";
import { parseXml, writeXml, type XmlElement } from "../core/codec/xml.ts";
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

function itemCommand(item: EnvelopeItem, cmdId: number): XmlElement {
  const payload =
    "inline" in item.payload
      ? leaf("Data", base64Standard.encode(item.payload.inline))
      : node("Blob", [], {
          uri: item.payload.blob.uri,
          size: String(item.payload.blob.size),
          sha256: toHex(item.payload.blob.sha256),
        });
  return node(item.command, [
    leaf("CmdID", String(cmdId)),
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

/**
 * The envelope as UTF-8 XML. The output is read back with parseEnvelope before it is returned, so
 * what this writes is always what the server and a restoring handset accept (else
 * `backup.envelope_invalid`, naming the path).
 */
export function encodeEnvelope(env: BackupEnvelope): Uint8Array {
  if (!Number.isSafeInteger(env.createdAt) || Number.isNaN(new Date(env.createdAt).getTime()))
    invalid("SyncML/SyncHdr/Meta/Created", "createdAt is not a whole number of milliseconds");
  const meta = [leaf("Kind", env.kind), leaf("Created", new Date(env.createdAt).toISOString())];
  if (env.parent !== undefined) meta.push(leaf("Parent", env.parent));
  const header = [
    leaf("VerDTD", ENVELOPE_VER_DTD),
    leaf("VerProto", ENVELOPE_VER_PROTO),
    leaf("SessionID", env.backupId),
    leaf("MsgID", "1"),
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
  let cmdId = 0;
  const body = env.items.map((item) => itemCommand(item, ++cmdId));
  for (const id of env.deleted)
    body.push(node("Delete", [leaf("CmdID", String(++cmdId)), node("Item", [node("Source", [locUri(id)])])]));
  const root = node("SyncML", [node("SyncHdr", header), node("SyncBody", body)], {
    xmlns: ENVELOPE_NAMESPACE,
  });
  const bytes = utf8(writeXml(root, { declaration: true }));
  parseEnvelope(bytes);
  return bytes;
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

/** Reads an envelope; refuses with `backup.envelope_invalid` (details.path), or the reader's `xml.*`. */
export function parseEnvelope(xml: Uint8Array): BackupEnvelope {
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
  if (text(hdr["MsgID"], `${h}/MsgID`) !== "1") invalid(`${h}/MsgID`, "not 1");
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
  body.children.forEach((cmd, i) => {
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
  return envelope;
}
