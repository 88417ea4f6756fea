import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  type ContentHasher,
  collectBytes,
  ITEM_NAME_LABEL,
  type ItemUnwrapper,
  newItemKeys,
  openItem,
  openName,
  payloadLength,
  rewrapHeader,
  sealItem,
  sealName,
} from "../../src/backup/item-crypto.ts";
import { decryptBytes } from "../../src/core/age/age.ts";
import { parseHeader } from "../../src/core/age/format.ts";
import { generateIdentity, identityToRecipient } from "../../src/core/age/keys.ts";
import { CHUNK_SIZE } from "../../src/core/age/stream.ts";
import { X25519Identity } from "../../src/core/age/x25519-recipient.ts";
import { concatBytes } from "../../src/core/codec/bytes.ts";
import { hmacSha256, sha256 } from "../../src/core/crypto/hash.ts";
import { isHandsafeError } from "../../src/core/errors.ts";

const HASH_KEY = new Uint8Array(32).fill(7);

/** A content hasher over a buffer (the module's is HMAC under its derived key). */
function hasher(): ContentHasher {
  const parts: Uint8Array[] = [];
  return {
    update: (d) => void parts.push(d.slice()),
    digest: async () => hmacSha256(HASH_KEY, concatBytes(...parts)),
    release: () => {},
  };
}

function party(): { identity: string; recipient: string; unwrapper: ItemUnwrapper } {
  const identity = generateIdentity();
  const id = new X25519Identity(identity);
  return {
    identity,
    recipient: identityToRecipient(identity),
    unwrapper: { unwrapFileKey: (s) => id.unwrap(s) },
  };
}

async function* pieces(bytes: Uint8Array, size = 10_000): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}

async function expectCode(p: Promise<unknown> | (() => unknown), code: string): Promise<void> {
  let caught: unknown;
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    caught = e;
  }
  expect(isHandsafeError(caught) ? caught.code : caught).toBe(code);
}

const meta = {
  path: "files/photos/a.jpg",
  modifiedAt: "2026-12-01T16:00:00.000Z",
  contentType: "image/jpeg",
};

function seal(plaintext: Uint8Array, recipients: string[], itemId = "it_test") {
  return sealItem({ itemId, metadata: meta, recipients, plaintext: () => pieces(plaintext), hasher });
}

describe("an item is a standard age file (backup.md §3)", () => {
  const owner = party();
  for (const size of [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 5]) {
    it(`header || payload of ${size} bytes opens with plain age decryption`, async () => {
      const plaintext = new Uint8Array(randomBytes(size));
      const item = seal(plaintext, [owner.recipient]);
      let digest: Parameters<NonNullable<Parameters<typeof item.payload>[1]>>[0] | undefined;
      const payload = await collectBytes(item.payload(0, (d) => (digest = d)));
      expect(payload.length).toBe(payloadLength(size));
      expect(digest!.size).toBe(size);
      expect(digest!.payloadSize).toBe(payload.length);
      expect(Buffer.from(digest!.payloadSha256).equals(Buffer.from(sha256(payload)))).toBe(true);
      expect(Buffer.from(digest!.hash!).equals(Buffer.from(hmacSha256(HASH_KEY, plaintext)))).toBe(true);
      const opened = await decryptBytes([owner.identity], concatBytes(item.header, payload));
      expect(Buffer.compare(opened, plaintext)).toBe(0);
    });
  }

  it("seals the same bytes on every pass, and from any offset (resumed uploads)", async () => {
    const plaintext = new Uint8Array(randomBytes(2 * CHUNK_SIZE + 3));
    const item = seal(plaintext, [owner.recipient]);
    const first = await collectBytes(item.payload());
    expect(Buffer.compare(await collectBytes(item.payload()), first)).toBe(0);
    for (const offset of [1, 16, CHUNK_SIZE + 17, first.length - 1, first.length])
      expect(Buffer.compare(await collectBytes(item.payload(offset)), first.subarray(offset))).toBe(0);
  });

  it("opens with its metadata, size and HMAC hash checked", async () => {
    const plaintext = new Uint8Array(randomBytes(CHUNK_SIZE + 100));
    const item = seal(plaintext, [owner.recipient]);
    const payload = await collectBytes(item.payload());
    const opened = openItem({
      itemId: "it_test",
      header: item.header,
      name: item.name,
      payload: pieces(payload, 777),
      unlocked: owner.unwrapper,
      expected: { size: plaintext.length, hash: hmacSha256(HASH_KEY, plaintext), hasher: hasher() },
    });
    expect(opened.metadata).toEqual(meta);
    expect(Buffer.compare(await collectBytes(opened.plaintext), plaintext)).toBe(0);
  });
});

describe("an attacker who edits the stored item", () => {
  const owner = party();
  const plaintext = new Uint8Array(randomBytes(2 * CHUNK_SIZE + 9));

  async function attempt(
    edit: (p: Uint8Array) => Uint8Array,
    expected: { size?: number; hash?: Uint8Array } = {},
  ) {
    const item = seal(plaintext, [owner.recipient]);
    const payload = edit(await collectBytes(item.payload()));
    const opened = openItem({
      itemId: "it_test",
      header: item.header,
      name: item.name,
      payload: pieces(payload),
      unlocked: owner.unwrapper,
      expected: { hasher: hasher(), ...expected },
    });
    return collectBytes(opened.plaintext);
  }

  it("flips a payload bit: age.payload_auth", async () => {
    await expectCode(
      attempt((p) => {
        p[100]! ^= 1;
        return p;
      }),
      "age.payload_auth",
    );
  });

  it("cuts the payload at a chunk boundary: age.payload_unterminated", async () => {
    await expectCode(
      attempt((p) => p.subarray(0, 16 + 2 * (CHUNK_SIZE + 16))),
      "age.payload_unterminated",
    );
  });

  it("cuts inside the nonce: age.nonce_missing", async () => {
    await expectCode(
      attempt((p) => p.subarray(0, 5)),
      "age.nonce_missing",
    );
  });

  it("swaps in another item's payload: age.payload_auth", async () => {
    const other = await collectBytes(seal(plaintext, [owner.recipient]).payload());
    await expectCode(
      attempt(() => other),
      "age.payload_auth",
    );
  });

  it("lists another size or hash: backup.size_mismatch / backup.hash_mismatch", async () => {
    await expectCode(
      attempt((p) => p, { size: plaintext.length - 1 }),
      "backup.size_mismatch",
    );
    await expectCode(
      attempt((p) => p, { size: plaintext.length + 1 }),
      "backup.size_mismatch",
    );
    await expectCode(
      attempt((p) => p, { hash: new Uint8Array(32) }),
      "backup.hash_mismatch",
    );
  });

  it("moves the sealed name to another item id: backup.name_invalid", async () => {
    const item = seal(plaintext, [owner.recipient]);
    await expectCode(
      () =>
        openItem({
          itemId: "it_other",
          header: item.header,
          name: item.name,
          payload: pieces(new Uint8Array()),
          unlocked: owner.unwrapper,
        }),
      "backup.name_invalid",
    );
  });

  it("alters the header (a stanza of another file): age.header_mac", async () => {
    const a = seal(plaintext, [owner.recipient]);
    const b = seal(plaintext, [owner.recipient]);
    const ha = parseHeader(a.header);
    const hb = parseHeader(b.header);
    // b's header text with a's stanza: unwraps a's file key, but b's MAC.
    const text = Buffer.from(b.header).toString("latin1");
    const stanzaB = `-> ${hb.stanzas[0]!.args.join(" ")}`;
    const stanzaA = `-> ${ha.stanzas[0]!.args.join(" ")}`;
    const bodyA = Buffer.from(ha.stanzas[0]!.body).toString("base64").replace(/=+$/, "");
    const bodyB = Buffer.from(hb.stanzas[0]!.body).toString("base64").replace(/=+$/, "");
    const forged = new Uint8Array(
      Buffer.from(text.replace(stanzaB, stanzaA).replace(bodyB, bodyA), "latin1"),
    );
    await expectCode(
      () =>
        openItem({
          itemId: "it_test",
          header: forged,
          name: a.name,
          payload: pieces(new Uint8Array()),
          unlocked: owner.unwrapper,
        }),
      "age.header_mac",
    );
  });
});

describe("someone who is not a recipient", () => {
  it("cannot unwrap the header: backup.not_a_recipient", async () => {
    const owner = party();
    const stranger = party();
    const item = seal(new Uint8Array(10), [owner.recipient]);
    await expectCode(
      () =>
        openItem({
          itemId: "it_test",
          header: item.header,
          name: item.name,
          payload: pieces(new Uint8Array()),
          unlocked: stranger.unwrapper,
        }),
      "backup.not_a_recipient",
    );
  });
});

describe("sharing re-wraps the file key and leaves the payload alone (§7)", () => {
  it("a new header for owner + friend opens the same payload, for both", async () => {
    const owner = party();
    const friend = party();
    const plaintext = new Uint8Array(randomBytes(CHUNK_SIZE * 2));
    const item = seal(plaintext, [owner.recipient]);
    const payload = await collectBytes(item.payload());
    const shared = rewrapHeader(item.header, owner.unwrapper, [owner.recipient, friend.recipient]);
    expect(parseHeader(shared).stanzas).toHaveLength(2);
    for (const who of [owner, friend]) {
      const opened = openItem({
        itemId: "it_test",
        header: shared,
        name: item.name,
        payload: pieces(payload),
        unlocked: who.unwrapper,
      });
      expect(opened.metadata.path).toBe(meta.path);
      expect(Buffer.compare(await collectBytes(opened.plaintext), plaintext)).toBe(0);
      expect(
        Buffer.compare(await decryptBytes([who.identity], concatBytes(shared, payload)), plaintext),
      ).toBe(0);
    }
  });

  it("only a recipient can re-wrap", async () => {
    const owner = party();
    const item = seal(new Uint8Array(1), [owner.recipient]);
    await expectCode(
      () => rewrapHeader(item.header, party().unwrapper, [owner.recipient]),
      "backup.not_a_recipient",
    );
  });
});

describe("the sealed metadata", () => {
  it("is ChaCha20-Poly1305 under HKDF(fileKey, item-name) with the item id as aad", () => {
    expect(ITEM_NAME_LABEL).toBe("handsafe/v1/backup/item-name");
    const { fileKey } = newItemKeys();
    const sealed = sealName(fileKey, "it_a", meta);
    expect(openName(fileKey, "it_a", sealed)).toEqual(meta);
    expect(() => openName(fileKey, "it_b", sealed)).toThrow(/does not open/);
    expect(() => openName(newItemKeys().fileKey, "it_a", sealed)).toThrow(/does not open/);
  });
});
