import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { decrypt, decryptBytes, encrypt, encryptBytes } from "../../src/core/age/age.ts";
import { armor, dearmor } from "../../src/core/age/armor.ts";
import { AGE_ERRORS } from "../../src/core/age/errors.ts";
import { encodeHeader, MAX_HEADER_LENGTH, parseHeader } from "../../src/core/age/format.ts";
import {
  encodeIdentity,
  generateIdentity,
  identityToRecipient,
  parseIdentity,
  parseRecipient,
} from "../../src/core/age/keys.ts";
import { CHUNK_SIZE } from "../../src/core/age/stream.ts";
import { X25519Identity, X25519Recipient } from "../../src/core/age/x25519-recipient.ts";

const code = (c: string) => expect.objectContaining({ code: c });

describe("keys (age v1 §X25519 recipient type)", () => {
  it("the spec's example identity gives the spec's example recipient", () => {
    const identity = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX";
    expect(identityToRecipient(identity)).toBe(
      "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj",
    );
    expect(encodeIdentity(parseIdentity(identity))).toBe(identity);
    expect(parseIdentity(identity.toLowerCase())).toEqual(parseIdentity(identity));
  });

  it("refuses mixed case, a bad checksum, the wrong HRP and the wrong length", () => {
    const identity = generateIdentity();
    const recipient = identityToRecipient(identity);
    const bad = [
      recipient.slice(0, 10) + recipient.slice(10).toUpperCase(),
      recipient.slice(0, -1) + (recipient.endsWith("q") ? "p" : "q"),
      identity,
      "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqs",
    ];
    for (const b of bad) expect(() => parseRecipient(b)).toThrow(code(AGE_ERRORS.keyInvalid));
    expect(() => parseIdentity(recipient)).toThrow(code(AGE_ERRORS.keyInvalid));
  });
});

describe("round trips", () => {
  const identity = generateIdentity();
  const recipient = identityToRecipient(identity);

  for (const size of [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE]) {
    it(`${size} bytes`, async () => {
      const plaintext = new Uint8Array(randomBytes(size));
      const sealed = await encryptBytes([recipient], plaintext);
      expect(await decryptBytes([identity], sealed)).toEqual(plaintext);
    });
  }

  it("streams: input in odd pieces, output one chunk at a time, never more than 64 KiB", async () => {
    const plaintext = new Uint8Array(randomBytes(5 * CHUNK_SIZE + 3));
    async function* pieces(bytes: Uint8Array) {
      for (let at = 0; at < bytes.length; at += 10_007) yield bytes.subarray(at, at + 10_007);
    }
    const sealed: Uint8Array[] = [];
    for await (const c of encrypt([recipient], pieces(plaintext))) {
      expect(c.length).toBeLessThanOrEqual(CHUNK_SIZE + 16);
      sealed.push(c);
    }
    const out: Uint8Array[] = [];
    for await (const c of decrypt([identity], sealed)) {
      expect(c.length).toBeLessThanOrEqual(CHUNK_SIZE);
      out.push(c);
    }
    expect(Buffer.concat(out)).toEqual(Buffer.from(plaintext));
  });

  it("several recipients: each identity opens the file; a stranger gets age.no_match", async () => {
    const other = generateIdentity();
    const sealed = await encryptBytes([recipient, identityToRecipient(other)], new Uint8Array([1, 2, 3]));
    expect(await decryptBytes([other], sealed)).toEqual(new Uint8Array([1, 2, 3]));
    expect(await decryptBytes([generateIdentity(), identity], sealed)).toEqual(new Uint8Array([1, 2, 3]));
    await expect(decryptBytes([generateIdentity()], sealed)).rejects.toThrow(code(AGE_ERRORS.noMatch));
  });

  it("armor round-trips", async () => {
    const sealed = await encryptBytes([recipient], new Uint8Array(randomBytes(1000)));
    expect(dearmor(armor(sealed))).toEqual(sealed);
  });

  it("an X25519Identity does not leak its key through JSON", () => {
    expect(JSON.stringify({ id: new X25519Identity(identity) })).not.toContain(identity);
  });
});

describe("an attacker who edits the file", () => {
  const identity = generateIdentity();
  const recipient = identityToRecipient(identity);

  it("changing a stanza argument breaks the header MAC (age.header_mac)", async () => {
    const sealed = await encryptBytes(
      [recipient, new X25519Recipient(identityToRecipient(generateIdentity()))],
      new Uint8Array(10),
    );
    const text = Buffer.from(sealed).toString("latin1");
    // Add a grease stanza before the MAC line: the header still parses, but the MAC no longer covers it.
    const edited = text.replace("\n---", "\n-> grease\n\n---");
    await expect(decryptBytes([identity], Buffer.from(edited, "latin1"))).rejects.toThrow(
      code(AGE_ERRORS.headerMac),
    );
  });

  it("cutting the file at a chunk boundary is age.payload_unterminated", async () => {
    const sealed = await encryptBytes([recipient], new Uint8Array(2 * CHUNK_SIZE + 5));
    const cut = sealed.subarray(0, sealed.length - (5 + 16));
    await expect(decryptBytes([identity], cut)).rejects.toThrow(code(AGE_ERRORS.payloadUnterminated));
  });

  it("appending bytes is age.payload_trailing_data or age.payload_auth", async () => {
    const sealed = await encryptBytes([recipient], new Uint8Array(CHUNK_SIZE));
    const longer = Buffer.concat([sealed, Buffer.from([0])]);
    await expect(decryptBytes([identity], longer)).rejects.toThrow(code(AGE_ERRORS.payloadTrailingData));
  });

  it("a header without end is refused in bounded memory (age.header_too_large)", async () => {
    async function* endless() {
      yield new TextEncoder().encode("age-encryption.org/v1\n-> X25519 ");
      for (let i = 0; i < 40; i++) yield new Uint8Array(MAX_HEADER_LENGTH / 32).fill(0x41);
    }
    await expect(decryptBytes([identity], endless())).rejects.toThrow(code(AGE_ERRORS.headerTooLarge));
  });

  it("a low-order recipient is refused when encrypting (age.x25519_low_order)", async () => {
    await expect(encryptBytes([new X25519Recipient(new Uint8Array(32))], new Uint8Array(1))).rejects.toThrow(
      code(AGE_ERRORS.x25519LowOrder),
    );
  });
});

describe("header encoding (age v1 §Header)", () => {
  it("wraps bodies at 64 columns with a shorter final line, and parses back", () => {
    for (const length of [0, 32, 48, 96]) {
      const stanzas = [{ args: ["test", "a"], body: new Uint8Array(randomBytes(length)) }];
      const bytes = encodeHeader(stanzas, new Uint8Array(16));
      const lines = Buffer.from(bytes).toString("latin1").split("\n");
      for (const l of lines.slice(2, -2)) expect(l.length).toBeLessThanOrEqual(64);
      const header = parseHeader(bytes);
      expect(header.stanzas[0]!.body).toEqual(stanzas[0]!.body);
      expect(header.stanzas[0]!.args).toEqual(["test", "a"]);
    }
  });
});
