import { describe, expect, it } from "vitest";
import {
  combineEnvelopeParts,
  DEFAULT_PART_LIMITS,
  encodeEnvelope,
  encodeEnvelopeParts,
  envelopeSigningInput,
  parseEnvelope,
  parseEnvelopePart,
} from "../../src/backup/envelope.ts";
import {
  agePayloadSize,
  BACKUP_ID,
  type BackupEnvelope,
  BLOB_ID,
  blobIdOfUri,
  INLINE_MAX_BYTES,
  INLINE_PAYLOAD_MAX_BYTES,
  LABELS,
  MAX_ENVELOPE_PARTS,
  newBackupId,
  newBlobId,
  newUploadId,
  UPLOAD_ID,
} from "../../src/backup/protocol.ts";
import { generateIdentity, identityToRecipient } from "../../src/core/age/keys.ts";
import { fromUtf8, utf8 } from "../../src/core/codec/bytes.ts";
import { HandsafeError } from "../../src/core/errors.ts";

const id = (prefix: string, fill: string, length: number) => prefix + fill.repeat(length);
const BK = id("bk_", "A", 22);
const PARENT = id("bk_", "B", 22);
const OWNER = id("acct_", "o", 22);
const FRIEND = id("acct_", "f", 22);
const IT = [id("it_", "1", 24), id("it_", "2", 24), id("it_", "3", 24), id("it_", "4", 24)] as const;
const GONE = [id("it_", "x", 24), id("it_", "y", 24)] as const;
const BLOB = `/v1/backup/blobs/${id("bl_", "Z", 22)}`;
const ME = identityToRecipient(generateIdentity());
const YOU = identityToRecipient(generateIdentity());

const bytes = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);

function fullEnvelope(): BackupEnvelope {
  return {
    backupId: BK,
    kind: "share",
    createdAt: Date.UTC(2026, 11, 1, 16, 0, 0, 123),
    parent: PARENT,
    source: { handset: "handset:imei-356938035643809", account: OWNER },
    target: `/v1/backup/backups/${BK}`,
    recipients: [ME, YOU],
    sharedWith: [FRIEND],
    items: [
      {
        command: "Add",
        id: IT[0],
        kind: "contacts",
        size: 10,
        hash: bytes(32, 1),
        name: bytes(40, 2),
        header: utf8("age-encryption.org/v1\n-> X25519 abc\ndef\n--- mac\n"),
        payload: { inline: bytes(agePayloadSize(10), 3) },
      },
      {
        command: "Replace",
        id: IT[1],
        kind: "files",
        size: 1024 * 1024,
        hash: bytes(32, 4),
        name: bytes(50, 5),
        header: bytes(200, 6),
        payload: { blob: { uri: BLOB, size: agePayloadSize(1024 * 1024), sha256: bytes(32, 7) } },
      },
      {
        command: "Copy",
        id: IT[2],
        kind: "appdata",
        size: INLINE_MAX_BYTES,
        hash: bytes(32, 8),
        name: bytes(17, 9),
        header: bytes(150, 10),
        payload: { inline: bytes(INLINE_PAYLOAD_MAX_BYTES, 11) },
      },
      {
        command: "Add",
        id: IT[3],
        kind: "messages",
        size: 0,
        hash: bytes(32, 12),
        name: bytes(16, 13),
        header: bytes(100, 14),
        payload: { inline: bytes(32, 15) },
      },
    ],
    deleted: [...GONE],
  };
}

function refusal(fn: () => unknown): HandsafeError {
  try {
    fn();
  } catch (e) {
    if (e instanceof HandsafeError) return e;
    throw new Error(`not a HandsafeError: ${String(e)}`);
  }
  throw new Error("expected a refusal");
}

const XML = fromUtf8(encodeEnvelope(fullEnvelope()));

/** Parses the full envelope's XML after `edit`, expecting a refusal: [code, path]. */
function refuse(edit: (xml: string) => string): [string, unknown] {
  const edited = edit(XML);
  expect(edited).not.toBe(XML);
  const e = refusal(() => parseEnvelope(utf8(edited)));
  return [e.code, e.details?.["path"]];
}
const invalidAt = (path: string) => ["backup.envelope_invalid", path];

describe("a full envelope", () => {
  it("round-trips: every command kind, inline and blob payloads, Delete, SharedWith, Parent", () => {
    const env = fullEnvelope();
    expect(parseEnvelope(encodeEnvelope(env))).toEqual(env);
  });

  it("round-trips a minimal backup (no parent, no share, no items)", () => {
    const env: BackupEnvelope = { ...fullEnvelope(), kind: "backup", sharedWith: [], items: [], deleted: [] };
    delete env.parent;
    const back = parseEnvelope(encodeEnvelope(env));
    expect(back).toEqual(env);
    expect("parent" in back).toBe(false);
    expect(fromUtf8(encodeEnvelope(env))).not.toContain("SharedWith");
  });

  it("is byte-stable: the same model always gives the same bytes", () => {
    const a = encodeEnvelope(fullEnvelope());
    expect(encodeEnvelope(fullEnvelope())).toEqual(a);
    expect(encodeEnvelope(parseEnvelope(a))).toEqual(a);
  });

  it("is the SyncML document of §4", () => {
    expect(
      XML.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<SyncML xmlns="urn:handsafe:backup:1">\n'),
    ).toBe(true);
    for (const line of [
      "<VerDTD>1.2</VerDTD>",
      "<VerProto>handsafe-backup/1</VerProto>",
      `<SessionID>${BK}</SessionID>`,
      "<MsgID>1</MsgID>",
      `<LocURI>/v1/backup/backups/${BK}</LocURI>`,
      `<LocName>${OWNER}</LocName>`,
      "<Kind>share</Kind>",
      "<Created>2026-12-01T16:00:00.123Z</Created>",
      `<Parent>${PARENT}</Parent>`,
      `<Recipient>${ME}</Recipient>`,
      `<Account>${FRIEND}</Account>`,
      "<CmdID>1</CmdID>",
      "<CmdID>6</CmdID>",
      `<Hash alg="hmac-sha256">${"0".repeat(0)}`,
      `<Blob uri="${BLOB}" size="${agePayloadSize(1024 * 1024)}" sha256="`,
      "<Final/>\n  </SyncBody>",
    ])
      expect(XML).toContain(line);
    const order = ["<Add>", "<Replace>", "<Copy>", "<Add>", "<Delete>", "<Delete>"];
    let at = 0;
    for (const tag of order) {
      at = XML.indexOf(tag, at);
      expect(at).toBeGreaterThan(0);
    }
  });

  it("signing input is the label, a zero byte, then the XML bytes", () => {
    const xml = encodeEnvelope(fullEnvelope());
    const input = envelopeSigningInput(xml);
    const label = utf8(LABELS.envelope);
    expect(input.subarray(0, label.length)).toEqual(label);
    expect(input[label.length]).toBe(0);
    expect(input.subarray(label.length + 1)).toEqual(xml);
  });
});

describe("ids and URIs", () => {
  it("new ids match their patterns", () => {
    expect(newBackupId()).toMatch(BACKUP_ID);
    expect(newBlobId()).toMatch(BLOB_ID);
    expect(newUploadId()).toMatch(UPLOAD_ID);
  });
  it("blobIdOfUri", () => {
    expect(blobIdOfUri(BLOB)).toBe(id("bl_", "Z", 22));
    expect(blobIdOfUri(`${BLOB}/x`)).toBeUndefined();
    expect(blobIdOfUri("/v1/backup/blobs/bl_short")).toBeUndefined();
  });
  it("age payload sizes: one chunk up to 64 KiB, full last chunks", () => {
    expect(agePayloadSize(0)).toBe(32);
    expect(agePayloadSize(65536)).toBe(16 + 65536 + 16);
    expect(agePayloadSize(65537)).toBe(16 + 65537 + 32);
    expect(INLINE_PAYLOAD_MAX_BYTES).toBe(65568);
  });
});

describe("a forged or damaged document: backup.envelope_invalid with its path", () => {
  it("another root element", () => {
    expect(refuse((x) => x.replace("<SyncML ", "<SyncMX ").replace("</SyncML>", "</SyncMX>"))).toEqual(
      invalidAt("SyncMX"),
    );
  });
  it("another namespace, or an extra attribute on the root", () => {
    expect(refuse((x) => x.replace("urn:handsafe:backup:1", "urn:evil"))).toEqual(invalidAt("SyncML/@xmlns"));
    expect(refuse((x) => x.replace('<SyncML xmlns="urn:handsafe:backup:1"', '$& v="1"'))).toEqual(
      invalidAt("SyncML/@v"),
    );
  });
  it("an unexpected element", () => {
    expect(refuse((x) => x.replace("<MsgID>1</MsgID>", "$&<Extra/>"))).toEqual(
      invalidAt("SyncML/SyncHdr/Extra"),
    );
    expect(refuse((x) => x.replace("<CmdID>3</CmdID>", "$&<Evil>x</Evil>"))).toEqual(
      invalidAt("SyncML/SyncBody/Copy[1]/Evil"),
    );
    expect(refuse((x) => x.replace("<Final/>", "<Exec><CmdID>7</CmdID></Exec>$&"))).toEqual(
      invalidAt("SyncML/SyncBody/Exec[1]"),
    );
    expect(refuse((x) => x.replace("<Size>10</Size>", "<Size>10<b/></Size>"))).toEqual(
      invalidAt("SyncML/SyncBody/Add[1]/Item/Meta/Size/b"),
    );
  });
  it("an element out of its place", () => {
    const size = "<Size>10</Size>";
    expect(refuse((x) => x.replace(size, "").replace("<Kind>contacts</Kind>", size + "$&"))).toEqual(
      invalidAt("SyncML/SyncBody/Add[1]/Item/Meta/Kind"),
    );
  });
  it("a missing element", () => {
    expect(refuse((x) => x.replace("<MsgID>1</MsgID>", ""))).toEqual(invalidAt("SyncML/SyncHdr/MsgID"));
    expect(refuse((x) => x.replace(/<Recipients>[\s\S]*<\/Recipients>/, ""))).toEqual(
      invalidAt("SyncML/SyncHdr/Recipients"),
    );
    expect(refuse((x) => x.replace(/<Data>[^<]*<\/Data>/, ""))).toEqual(
      invalidAt("SyncML/SyncBody/Add[1]/Item/Data"),
    );
  });
  it("both Data and Blob", () => {
    expect(refuse((x) => x.replace(/<Blob [^>]*\/>/, "<Data>AAAA</Data>$&"))).toEqual(
      invalidAt("SyncML/SyncBody/Replace[1]/Item/Blob"),
    );
  });
  it("bad ids", () => {
    expect(refuse((x) => x.replace(`<SessionID>${BK}`, "<SessionID>bk_short"))).toEqual(
      invalidAt("SyncML/SyncHdr/SessionID"),
    );
    expect(
      refuse((x) => x.replace(`<LocURI>/v1/backup/backups/${BK}`, `<LocURI>/v1/backup/backups/${PARENT}`)),
    ).toEqual(invalidAt("SyncML/SyncHdr/Target/LocURI"));
    expect(refuse((x) => x.replace(`<LocName>${OWNER}`, "<LocName>acct_x"))).toEqual(
      invalidAt("SyncML/SyncHdr/Source/LocName"),
    );
    expect(refuse((x) => x.replace("handset:imei", "phone:imei"))).toEqual(
      invalidAt("SyncML/SyncHdr/Source/LocURI"),
    );
    expect(refuse((x) => x.replace(`<Parent>${PARENT}`, "<Parent>bk_!"))).toEqual(
      invalidAt("SyncML/SyncHdr/Meta/Parent"),
    );
    expect(refuse((x) => x.replace(`<Parent>${PARENT}`, `<Parent>${BK}`))).toEqual(
      invalidAt("SyncML/SyncHdr/Meta/Parent"),
    );
    expect(refuse((x) => x.replace(`<LocURI>${IT[2]}`, "<LocURI>it_short"))).toEqual(
      invalidAt("SyncML/SyncBody/Copy[1]/Item/Source/LocURI"),
    );
    expect(refuse((x) => x.replace(`<LocURI>${GONE[1]}`, "<LocURI>../../etc"))).toEqual(
      invalidAt("SyncML/SyncBody/Delete[2]/Item/Source/LocURI"),
    );
    expect(refuse((x) => x.replace(`<Account>${FRIEND}`, "<Account>bob"))).toEqual(
      invalidAt("SyncML/SyncHdr/SharedWith/Account[1]"),
    );
  });
  it("recipients that are not age1…", () => {
    expect(refuse((x) => x.replace(`<Recipient>${YOU}`, "<Recipient>ssh-ed25519 AAAA"))).toEqual(
      invalidAt("SyncML/SyncHdr/Recipients/Recipient[2]"),
    );
    // A bad Bech32 checksum: looks like a recipient, is not one.
    const broken = YOU.slice(0, -1) + (YOU.endsWith("q") ? "p" : "q");
    expect(refuse((x) => x.replace(`<Recipient>${YOU}`, `<Recipient>${broken}`))).toEqual(
      invalidAt("SyncML/SyncHdr/Recipients/Recipient[2]"),
    );
    expect(refuse((x) => x.replace(/<Recipients>[\s\S]*<\/Recipients>/, "<Recipients/>"))).toEqual(
      invalidAt("SyncML/SyncHdr/Recipients/Recipient"),
    );
  });
  it("Kind not backup | share, an unknown item kind", () => {
    expect(refuse((x) => x.replace("<Kind>share</Kind>", "<Kind>public</Kind>"))).toEqual(
      invalidAt("SyncML/SyncHdr/Meta/Kind"),
    );
    expect(refuse((x) => x.replace("<Kind>files</Kind>", "<Kind>secrets</Kind>"))).toEqual(
      invalidAt("SyncML/SyncBody/Replace[1]/Item/Meta/Kind"),
    );
  });
  it("Created not ISO-8601 UTC with milliseconds", () => {
    for (const created of [
      "2026-12-01T16:00:00Z",
      "2026-12-01T16:00:00.123+01:00",
      "2026-02-30T16:00:00.000Z",
      "1764604800123",
      " 2026-12-01T16:00:00.123Z",
    ])
      expect(refuse((x) => x.replace("2026-12-01T16:00:00.123Z", created))).toEqual(
        invalidAt("SyncML/SyncHdr/Meta/Created"),
      );
  });
  it("sizes that are not safe non-negative integers", () => {
    for (const size of ["-1", "010", "1.5", "1e3", "9007199254740993", "", " 10"])
      expect(refuse((x) => x.replace("<Size>10</Size>", `<Size>${size}</Size>`))).toEqual(
        invalidAt("SyncML/SyncBody/Add[1]/Item/Meta/Size"),
      );
    expect(refuse((x) => x.replace(/size="\d+"/, 'size="-5"'))).toEqual(
      invalidAt("SyncML/SyncBody/Replace[1]/Item/Blob/@size"),
    );
  });
  it("bad hex", () => {
    expect(
      refuse((x) => x.replace(/(<Hash alg="hmac-sha256">)([0-9a-f]{64})/, (_, a, h) => a + h.toUpperCase())),
    ).toEqual(invalidAt("SyncML/SyncBody/Add[1]/Item/Meta/Hash"));
    expect(
      refuse((x) => x.replace(/(<Hash alg="hmac-sha256">)([0-9a-f]{64})/, (_, a, h) => a + h.slice(2))),
    ).toEqual(invalidAt("SyncML/SyncBody/Add[1]/Item/Meta/Hash"));
    expect(refuse((x) => x.replace('alg="hmac-sha256"', 'alg="md5"'))).toEqual(
      invalidAt("SyncML/SyncBody/Add[1]/Item/Meta/Hash/@alg"),
    );
    expect(refuse((x) => x.replace(/sha256="[0-9a-f]{64}"/, `sha256="${"g".repeat(64)}"`))).toEqual(
      invalidAt("SyncML/SyncBody/Replace[1]/Item/Blob/@sha256"),
    );
  });
  it("bad base64: padding, url alphabet, whitespace, non-canonical bits", () => {
    for (const bad of ["AAAA====", "AB-_", "AA AA", "AB"])
      expect(refuse((x) => x.replace(/<Name>[^<]*<\/Name>/, `<Name>${bad}</Name>`))).toEqual(
        invalidAt("SyncML/SyncBody/Add[1]/Item/Meta/Name"),
      );
    expect(refuse((x) => x.replace(/<Header>[^<]*<\/Header>/, "<Header>!</Header>"))).toEqual(
      invalidAt("SyncML/SyncBody/Add[1]/Item/Header"),
    );
  });
  it("an inline payload over 64 KiB of plaintext (16 nonce + 65 536 + 16 tag bytes at most)", () => {
    const big = { ...fullEnvelope() };
    const copy = big.items[2]!;
    big.items = [
      {
        ...copy,
        size: INLINE_MAX_BYTES + 1,
        payload: { inline: new Uint8Array(agePayloadSize(INLINE_MAX_BYTES + 1)) },
      },
    ];
    const e = refusal(() => encodeEnvelope(big));
    expect([e.code, e.details?.["path"]]).toEqual(invalidAt("SyncML/SyncBody/Copy[1]/Item/Data"));
    // Sizes that disagree with the payload: one byte more than 64 KiB needs, or than Size says.
    expect(refuse((x) => x.replace("<Size>10</Size>", "<Size>11</Size>"))).toEqual(
      invalidAt("SyncML/SyncBody/Add[1]/Item/Data"),
    );
    expect(refuse((x) => x.replace(/size="\d+"/, `size="${agePayloadSize(1024 * 1024) + 1}"`))).toEqual(
      invalidAt("SyncML/SyncBody/Replace[1]/Item/Blob/@size"),
    );
    // A blob for an item that must be inline.
    expect(refuse((x) => x.replace("<Size>1048576</Size>", "<Size>100</Size>"))).toEqual(
      invalidAt("SyncML/SyncBody/Replace[1]/Item/Blob"),
    );
  });
  it("a blob URI that is not /v1/backup/blobs/bl_…", () => {
    expect(refuse((x) => x.replace(BLOB, "https://evil.example/blob"))).toEqual(
      invalidAt("SyncML/SyncBody/Replace[1]/Item/Blob/@uri"),
    );
  });
  it("the same item twice, or listed and deleted", () => {
    expect(refuse((x) => x.replace(`<LocURI>${IT[3]}`, `<LocURI>${IT[0]}`))).toEqual(
      invalidAt("SyncML/SyncBody/Add[2]/Item/Source/LocURI"),
    );
    expect(refuse((x) => x.replace(`<LocURI>${GONE[0]}`, `<LocURI>${IT[1]}`))).toEqual(
      invalidAt("SyncML/SyncBody/Delete[1]/Item/Source/LocURI"),
    );
  });
  it("CmdIDs out of sequence, and an item command after a Delete", () => {
    expect(refuse((x) => x.replace("<CmdID>2</CmdID>", "<CmdID>7</CmdID>"))).toEqual(
      invalidAt("SyncML/SyncBody/Replace[1]/CmdID"),
    );
    const add = XML.slice(XML.indexOf("    <Add>"), XML.indexOf("    <Replace>"))
      .replace("<CmdID>1", "<CmdID>7")
      .replace(IT[0], id("it_", "9", 24));
    expect(refuse((x) => x.replace("    <Final/>", add + "$&"))).toEqual(invalidAt("SyncML/SyncBody/Add[3]"));
  });
  it("a fixed header value changed", () => {
    expect(refuse((x) => x.replace("<VerDTD>1.2", "<VerDTD>1.1"))).toEqual(
      invalidAt("SyncML/SyncHdr/VerDTD"),
    );
    expect(refuse((x) => x.replace("handsafe-backup/1", "handsafe-backup/2"))).toEqual(
      invalidAt("SyncML/SyncHdr/VerProto"),
    );
  });
  it("the XML reader's refusals pass through unchanged", () => {
    const e = refusal(() =>
      parseEnvelope(
        utf8(XML.replace("<SyncML", '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><SyncML')),
      ),
    );
    expect(e.code).toBe("xml.dtd_forbidden");
    expect(refusal(() => parseEnvelope(utf8(XML.replace("<MsgID>1", "<MsgID>&e;")))).code).toBe(
      "xml.entity_forbidden",
    );
  });
});

describe("an envelope in parts (a SyncML session of several messages)", () => {
  /** The full envelope with `n` more small records, so that small part limits split it. */
  function manyItems(n: number): BackupEnvelope {
    const env = fullEnvelope();
    for (let i = 0; i < n; i++)
      env.items.push({
        command: "Add",
        id: `it_${String(i).padStart(24, "0")}`,
        kind: "contacts",
        size: 300,
        hash: bytes(32, i),
        name: bytes(40, i + 1),
        header: bytes(180, i + 2),
        payload: { inline: bytes(agePayloadSize(300), i + 3) },
      });
    return env;
  }
  const small = { maxBytes: 128 * 1024, maxElements: 2000 };

  it("is one message, byte for byte encodeEnvelope's, when everything fits", () => {
    const env = fullEnvelope();
    expect(encodeEnvelopeParts(env)).toEqual([encodeEnvelope(env)]);
    expect(DEFAULT_PART_LIMITS.maxBytes).toBe(16 * 1024 * 1024);
  });

  it("splits past the limits: MsgID 1, 2, …, <Final/> on the last only, each within them; joined it is the envelope", () => {
    const env = manyItems(300);
    const parts = encodeEnvelopeParts(env, small);
    expect(parts.length).toBeGreaterThan(3);
    const read = parts.map((xml) => parseEnvelopePart(xml));
    read.forEach((p, i) => {
      expect(p.msgId).toBe(i + 1);
      expect(p.final).toBe(i === parts.length - 1);
      expect(parts[i]!.length).toBeLessThanOrEqual(small.maxBytes);
      expect(p.envelope.items.length + p.envelope.deleted.length).toBeGreaterThan(0);
    });
    expect(combineEnvelopeParts(read)).toEqual(env);
    // The element limit binds too: 12 elements an item.
    const byElements = encodeEnvelopeParts(env, { maxBytes: 16 * 1024 * 1024, maxElements: 1000 });
    expect(byElements.length).toBe(Math.ceil((env.items.length * 12 + 2 * 5) / (1000 - 30)));
    expect(combineEnvelopeParts(byElements.map(parseEnvelopePart))).toEqual(env);
    // Byte-stable as a whole.
    expect(encodeEnvelopeParts(env, small)).toEqual(parts);
  });

  it("a part alone is not an envelope: parseEnvelope refuses a later part and an unfinished first one", () => {
    const parts = encodeEnvelopeParts(manyItems(300), small);
    expect([
      refusal(() => parseEnvelope(parts[1]!)).code,
      refusal(() => parseEnvelope(parts[1]!)).details?.["path"],
    ]).toEqual(invalidAt("SyncML/SyncHdr/MsgID"));
    expect(refusal(() => parseEnvelope(parts[0]!)).details?.["path"]).toBe("SyncML/SyncBody/Final");
  });

  it("joining refuses a missing, repeated or reordered part, an early or missing <Final/>, another header", () => {
    const env = manyItems(300);
    const read = encodeEnvelopeParts(env, small).map(parseEnvelopePart);
    const code = (parts: typeof read) => {
      const e = refusal(() => combineEnvelopeParts(parts));
      return [e.code, e.details?.["part"], e.details?.["path"]];
    };
    const n = read.length;
    expect(code([read[0]!, ...read.slice(2)])).toEqual([
      "backup.envelope_invalid",
      2,
      "SyncML/SyncHdr/MsgID",
    ]);
    expect(code([read[1]!, read[0]!, ...read.slice(2)])).toEqual([
      "backup.envelope_invalid",
      1,
      "SyncML/SyncHdr/MsgID",
    ]);
    expect(code(read.slice(0, -1))).toEqual(["backup.envelope_invalid", n - 1, "SyncML/SyncBody/Final"]);
    expect(code([])).toEqual(["backup.envelope_invalid", 1, "SyncML"]);
    // Another backup's part 2 (same items, another SessionID) in this session.
    const other = encodeEnvelopeParts(
      { ...env, backupId: PARENT, target: `/v1/backup/backups/${PARENT}`, parent: BK },
      small,
    ).map(parseEnvelopePart);
    expect(code([read[0]!, other[1]!, ...read.slice(2)])).toEqual([
      "backup.envelope_invalid",
      2,
      "SyncML/SyncHdr",
    ]);
    // A part that repeats an item of an earlier part.
    const dup = { ...read[1]!, envelope: { ...read[1]!.envelope, items: [read[0]!.envelope.items[0]!] } };
    expect(code([read[0]!, dup, ...read.slice(2)])).toEqual([
      "backup.envelope_invalid",
      2,
      "SyncML/SyncBody",
    ]);
    // An item after a Delete of an earlier part.
    const withDelete = { ...read[0]!, envelope: { ...read[0]!.envelope, deleted: [GONE[0]] } };
    expect(code([withDelete, ...read.slice(1)])).toEqual(["backup.envelope_invalid", 2, "SyncML/SyncBody"]);
  });

  it("MsgID is a canonical 1..MAX_ENVELOPE_PARTS; <Final/> is empty and last", () => {
    for (const bad of ["0", "01", String(MAX_ENVELOPE_PARTS + 1), "x"])
      expect(refuse((x) => x.replace("<MsgID>1</MsgID>", `<MsgID>${bad}</MsgID>`))).toEqual(
        invalidAt("SyncML/SyncHdr/MsgID"),
      );
    expect(refuse((x) => x.replace("<Final/>", "<Final>yes</Final>"))).toEqual(
      invalidAt("SyncML/SyncBody/Final"),
    );
    expect(refuse((x) => x.replace("<Final/>", '<Final a="1"/>'))).toEqual(
      invalidAt("SyncML/SyncBody/Final/@a"),
    );
    expect(refuse((x) => x.replace("    <Delete>", "    <Final/>\n$&"))[1]).toBe("SyncML/SyncBody/Final[1]");
  });

  it("refuses with backup.envelope_too_large past MAX_ENVELOPE_PARTS, or an item no part can hold", () => {
    const many = refusal(() =>
      encodeEnvelopeParts(manyItems(300), { maxBytes: 8 * 1024, maxElements: 2000 }),
    );
    expect([many.code, many.status, many.details?.["maxParts"]]).toEqual([
      "backup.envelope_too_large",
      413,
      MAX_ENVELOPE_PARTS,
    ]);
    const one = refusal(() =>
      encodeEnvelopeParts(fullEnvelope(), { maxBytes: 64 * 1024, maxElements: 2000 }),
    );
    expect(one.code).toBe("backup.envelope_too_large");
  });
});
