/**
 * The draft envelope (blob stand-ins of the final length) is split as publish will split it — each
 * part within the server's limits, 16 MiB and the XML reader's 200 000 elements — and a backup too
 * big for MAX_ENVELOPE_PARTS parts is refused by the SDK before anything is uploaded, so no blob is
 * left holding quota for PUTs that cannot succeed.
 */
import { describe, expect, it } from "vitest";
import { countEnvelopeParts } from "../../src/backup/envelope.ts";
import {
  type BackupEnvelope,
  backupUri,
  blobUri,
  type EnvelopeItem,
  MAX_ENVELOPE_PARTS,
} from "../../src/backup/protocol.ts";
import { isHandsafeError } from "../../src/core/errors.ts";

const BACKUP = `bk_${"B".repeat(22)}`;
const bytes = (length: number) => Uint8Array.from({ length }, (_, i) => (i * 31 + 7) & 0xff);

function item(i: number, payload: EnvelopeItem["payload"], size: number): EnvelopeItem {
  return {
    command: "Add",
    id: `it_${i.toString(36).padStart(24, "0")}`,
    kind: "contacts",
    size,
    hash: bytes(32),
    name: bytes(90),
    header: bytes(200),
    payload,
  };
}

function envelope(items: EnvelopeItem[]): BackupEnvelope {
  return {
    backupId: BACKUP,
    kind: "backup",
    createdAt: Date.UTC(2026, 11, 1),
    source: { handset: "handset:test", account: `acct_${"A".repeat(22)}` },
    target: backupUri(BACKUP),
    recipients: ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"],
    sharedWith: [],
    items,
    deleted: [],
  };
}

const code = (f: () => void) => {
  try {
    f();
  } catch (e) {
    return isHandsafeError(e) ? { code: e.code, status: e.status, details: e.details } : e;
  }
  return undefined;
};

describe("an envelope past one message goes in parts; past its parts it is refused before anything is uploaded", () => {
  it("fits in one: 1 000 inline records", () => {
    const items = Array.from({ length: 1000 }, (_, i) => item(i, { inline: bytes(332) }, 300));
    expect(countEnvelopeParts(envelope(items))).toBe(1);
  });

  it("over 16 MiB (200 full inline items): two parts", () => {
    const items = Array.from({ length: 200 }, (_, i) => item(i, { inline: bytes(65_568) }, 65_536));
    expect(countEnvelopeParts(envelope(items))).toBe(2);
  });

  it("under 16 MiB but over 200 000 elements (17 000 blob items): two parts", () => {
    const blob = { uri: blobUri(`bl_${"A".repeat(22)}`), size: 1_048_848, sha256: bytes(32) };
    const items = Array.from({ length: 17_000 }, (_, i) => item(i, { blob }, 1_048_576));
    expect(countEnvelopeParts(envelope(items))).toBe(2);
  });

  it(`more than ${MAX_ENVELOPE_PARTS} parts: backup.envelope_too_large 413`, () => {
    const items = Array.from({ length: 3000 }, (_, i) => item(i, { inline: bytes(332) }, 300));
    const limits = { maxBytes: 32 * 1024, maxElements: 200_000 };
    expect(code(() => countEnvelopeParts(envelope(items), limits))).toMatchObject({
      code: "backup.envelope_too_large",
      status: 413,
      details: { items: 3000, limit: 32 * 1024, maxParts: MAX_ENVELOPE_PARTS },
    });
  });
});
