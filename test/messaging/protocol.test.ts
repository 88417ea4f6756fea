/**
 * The messaging protocol core (src/messaging/protocol.ts), no server: bodies, the plaintext and its
 * HPKE binding, the registration state machine, the texts. One sealing function serves the server,
 * one opening function the handset, so these tests drive both sides.
 */
import { describe, expect, it } from "vitest";
import { toBase64url } from "../../src/core/codec/base64url.ts";
import { fromHex, fromUtf8, utf8 } from "../../src/core/codec/bytes.ts";
import { generateHpkeKeyPair, hpkeSeal } from "../../src/core/crypto/hpke.ts";
import {
  appLinkText,
  checkCodeSlotOpen,
  checkEncryptionKey,
  codeAttemptOutcome,
  decodeMessagePlaintext,
  encodeMessagePlaintext,
  formatUtc,
  handsetCodeText,
  LABELS,
  MAX_CODE_TRIES,
  MESSAGE_ID,
  type MessagePlaintext,
  maskNumber,
  messageAad,
  messageTransition,
  messagingHandsetId,
  newMessageId,
  openForHandset,
  parseHandsetCodeText,
  parseMessageBody,
  resolveExpirySeconds,
  sealForHandset,
  serverCodeText,
} from "../../src/messaging/protocol.ts";
import lowOrderKeys from "../vectors/hpke-low-order-keys.json" with { type: "json" };

const code = (c: string) => expect.objectContaining({ code: c });
const NUMBER = "+447911123456";

function plaintextOf(overrides: Partial<MessagePlaintext> = {}): MessagePlaintext {
  return {
    v: 1,
    id: "msg_AAAAAAAAAAAAAAAA",
    senderId: "snd_BBBBBBBBBBBBBBBB",
    senderName: "Clinic",
    to: NUMBER,
    body: { type: "text", text: "Your results are ready" },
    createdAt: 1_800_000_000_000,
    expiresAt: 1_800_604_800_000,
    ...overrides,
  };
}

describe("message bodies are checked once, where they enter", () => {
  it("a text of up to 4096 UTF-8 bytes, an attachment of up to 64 KiB", () => {
    expect(parseMessageBody({ type: "text", text: "é".repeat(2048) })).toEqual({
      type: "text",
      text: "é".repeat(2048),
    });
    const data = toBase64url(new Uint8Array(65536).fill(1));
    expect(parseMessageBody({ type: "attachment", mediaType: "Image/PNG", data })).toEqual({
      type: "attachment",
      mediaType: "image/png",
      data,
    });
  });

  it.each([
    ["not an object", "hello"],
    ["an unknown type", { type: "video", text: "x" }],
    ["an empty text", { type: "text", text: "" }],
    ["a lone surrogate", { type: "text", text: "\ud800" }],
    ["an extra field", { type: "text", text: "x", html: "<b>" }],
    ["a bad media type", { type: "attachment", mediaType: "image", data: "AA" }],
    ["padded base64", { type: "attachment", mediaType: "a/b", data: "AA==" }],
    ["an empty attachment", { type: "attachment", mediaType: "a/b", data: "" }],
  ])("%s is messaging.invalid_body", (_name, body) => {
    expect(() => parseMessageBody(body)).toThrow(code("messaging.invalid_body"));
  });

  it("past the limits is messaging.body_too_large (413)", () => {
    expect(() => parseMessageBody({ type: "text", text: "é".repeat(2049) })).toThrow(
      expect.objectContaining({ code: "messaging.body_too_large", status: 413 }),
    );
    const data = toBase64url(new Uint8Array(65537));
    expect(() => parseMessageBody({ type: "attachment", mediaType: "a/b", data })).toThrow(
      code("messaging.body_too_large"),
    );
    expect(() =>
      parseMessageBody({ type: "attachment", mediaType: "a/b", data: "A".repeat(10_000_000) }),
    ).toThrow(code("messaging.body_too_large"));
  });

  it("expiry is 60 s … 30 days, 7 days by default", () => {
    expect(resolveExpirySeconds(undefined)).toBe(604_800);
    expect(resolveExpirySeconds(60)).toBe(60);
    for (const bad of [59, 2_592_001, 1.5, "600", null])
      expect(() => resolveExpirySeconds(bad)).toThrow(code("messaging.invalid_expiry"));
  });
});

describe("the plaintext and its HPKE binding", () => {
  it("is canonical JSON: the same record gives the same bytes, keys sorted", () => {
    const bytes = encodeMessagePlaintext(plaintextOf());
    expect(fromUtf8(bytes)).toBe(
      '{"body":{"text":"Your results are ready","type":"text"},"createdAt":1800000000000,' +
        '"expiresAt":1800604800000,"id":"msg_AAAAAAAAAAAAAAAA","senderId":"snd_BBBBBBBBBBBBBBBB",' +
        '"senderName":"Clinic","to":"+447911123456","v":1}',
    );
    expect(decodeMessagePlaintext(bytes)).toEqual(plaintextOf());
  });

  it("aad = message id ‖ 0x00 ‖ handset id", () => {
    expect(messageAad("msg_1", "mh_2")).toEqual(utf8("msg_1\u0000mh_2"));
  });

  it("opens where it was sealed, and nowhere else", () => {
    const key = generateHpkeKeyPair();
    const handset = { id: "mh_CCCCCCCCCCCCCCCC", encryptionKey: key.publicKey };
    const p = plaintextOf();
    const sealed = sealForHandset(encodeMessagePlaintext(p), p.id, handset);
    const item = { messageId: p.id, handsetId: handset.id, ...sealed };
    expect(openForHandset(key.privateKey, item, NUMBER)).toEqual(p);

    // moved to another message, to another handset, opened with another key, tampered: no oracle
    expect(() =>
      openForHandset(key.privateKey, { ...item, messageId: "msg_DDDDDDDDDDDDDDDD" }, NUMBER),
    ).toThrow(code("hpke.open_failed"));
    expect(() =>
      openForHandset(key.privateKey, { ...item, handsetId: "mh_EEEEEEEEEEEEEEEE" }, NUMBER),
    ).toThrow(code("hpke.open_failed"));
    expect(() => openForHandset(generateHpkeKeyPair().privateKey, item, NUMBER)).toThrow(
      code("hpke.open_failed"),
    );
    const tampered = sealed.ciphertext.slice();
    tampered[5]! ^= 1;
    expect(() => openForHandset(key.privateKey, { ...item, ciphertext: tampered }, NUMBER)).toThrow(
      code("hpke.open_failed"),
    );
  });

  it("a plaintext that opens but is not the message asked for, or not for this number, is messaging.mismatch", () => {
    const key = generateHpkeKeyPair();
    const handsetId = "mh_CCCCCCCCCCCCCCCC";
    const seal = (p: MessagePlaintext, asId: string) => ({
      messageId: asId,
      handsetId,
      ...hpkeSeal(key.publicKey, encodeMessagePlaintext(p), {
        info: LABELS.hpkeInfo,
        aad: messageAad(asId, handsetId),
      }),
    });
    // A server that sealed message B under message A's id, or another number's message.
    const other = plaintextOf({ id: "msg_ZZZZZZZZZZZZZZZZ" });
    expect(() => openForHandset(key.privateKey, seal(other, "msg_AAAAAAAAAAAAAAAA"), NUMBER)).toThrow(
      code("messaging.mismatch"),
    );
    expect(() =>
      openForHandset(key.privateKey, seal(plaintextOf(), "msg_AAAAAAAAAAAAAAAA"), "+447911654321"),
    ).toThrow(code("messaging.mismatch"));
  });
});

describe("keys and ids", () => {
  it("every low-order X25519 point (RFC 7748 §6.1, with bit 255 set too) is messaging.invalid_public_key", () => {
    expect(lowOrderKeys.lowOrder.length).toBe(14);
    for (const k of lowOrderKeys.lowOrder)
      expect(() => checkEncryptionKey(fromHex(k.u)), k.name).toThrow(code("messaging.invalid_public_key"));
    expect(() => checkEncryptionKey(new Uint8Array(31))).toThrow(code("messaging.invalid_public_key"));
    expect(() => checkEncryptionKey(generateHpkeKeyPair().publicKey)).not.toThrow();
  });

  it("the handset id is derived from number and auth key", () => {
    const authKey = new Uint8Array(32).fill(3);
    const id = messagingHandsetId(NUMBER, authKey);
    expect(id).toMatch(/^mh_[A-Za-z0-9_-]{16}$/);
    expect(messagingHandsetId(NUMBER, authKey)).toBe(id);
    expect(messagingHandsetId("+447911654321", authKey)).not.toBe(id);
    expect(messagingHandsetId(NUMBER, new Uint8Array(32).fill(4))).not.toBe(id);
  });

  it("message ids start with their creation time, sort by it as bytes, and ids of the older form stay valid", () => {
    const t = 1_800_000_000_000;
    const first = newMessageId(t);
    const second = newMessageId(t + 1);
    for (const id of [first, second]) expect(id).toMatch(MESSAGE_ID);
    expect(first.length).toBe(4 + 9 + 16);
    expect(parseInt(first.slice(4, 13), 36)).toBe(t);
    expect(Buffer.compare(Buffer.from(first), Buffer.from(second))).toBe(-1);
    // Random beyond the prefix: a thousand ids of one millisecond, all distinct.
    expect(new Set(Array.from({ length: 1000 }, () => newMessageId(t))).size).toBe(1000);
    expect(MESSAGE_ID.test("msg_AAAAAAAAAAAAAAAA")).toBe(true);
    for (const bad of [
      "msg_AAAAAAAAAAAAAAA",
      "msg_0000000AAAAAAAAAAAAAAAAA",
      "msg_ZZZZZZZZZAAAAAAAAAAAAAAAA",
      "msg_",
    ])
      expect(MESSAGE_ID.test(bad), bad).toBe(false);
  });

  it("numbers in the audit log are masked", () => {
    expect(maskNumber("+447911123456")).toBe("+44••••••3456");
  });
});

describe("the registration state machine", () => {
  const open = { state: "pending" as const, tries: 0, expiresAt: 2000 };

  it("locked before used before expired", () => {
    expect(() => checkCodeSlotOpen(open, 1000)).not.toThrow();
    expect(() => checkCodeSlotOpen({ ...open, state: "locked" }, 5000)).toThrow(
      code("messaging.registration_locked"),
    );
    expect(() => checkCodeSlotOpen({ ...open, tries: MAX_CODE_TRIES }, 1000)).toThrow(
      code("messaging.registration_locked"),
    );
    expect(() => checkCodeSlotOpen({ ...open, state: "confirmed" }, 5000)).toThrow(
      code("messaging.code_used"),
    );
    expect(() => checkCodeSlotOpen({ ...open, state: "used" }, 1000)).toThrow(code("messaging.code_used"));
    expect(() => checkCodeSlotOpen(open, 2000)).toThrow(code("messaging.code_expired"));
  });

  it("a wrong code leaves tries, the fifth locks; a right one confirms", () => {
    expect(codeAttemptOutcome(1, true)).toEqual({ state: "confirmed" });
    for (let tries = 1; tries < MAX_CODE_TRIES; tries++) {
      const o = codeAttemptOutcome(tries, false);
      expect(o.state).toBe("pending");
      expect(o.error).toMatchObject({
        code: "messaging.code_invalid",
        status: 401,
        details: { triesLeft: 5 - tries },
      });
    }
    expect(codeAttemptOutcome(MAX_CODE_TRIES, false)).toMatchObject({
      state: "locked",
      error: { code: "messaging.code_invalid", details: { triesLeft: 0 } },
    });
  });

  it("message statuses move forward only", () => {
    expect(messageTransition("sealed")).toEqual({ from: ["waiting_registration"], to: "queued" });
    expect(messageTransition("acked")).toEqual({ from: ["queued"], to: "delivered" });
    expect(messageTransition("read")).toEqual({ from: ["queued", "delivered"], to: "read" });
    expect(messageTransition("expired")).toEqual({ from: ["waiting_registration", "queued"], to: "expired" });
  });
});

describe("texts", () => {
  it("the server's code, the handset's code, the app link", () => {
    expect(serverCodeText("01234567", 300)).toBe("Your handsafe code is 01234567. It expires in 5 minutes.");
    expect(handsetCodeText("01234567")).toBe("HSREG 01234567");
    expect(() => handsetCodeText("1234")).toThrow(code("messaging.invalid_code"));
    expect(appLinkText("Clinic", "https://get.example/app", Date.UTC(2026, 11, 1, 14, 5))).toBe(
      "Clinic sent you a secure message. Get the handsafe app: https://get.example/app - it expires 2026-12-01 14:05 UTC.",
    );
  });

  it("writes each time to the minute, whatever came before (formatUtc remembers the last minute)", () => {
    const at = (m: number, s = 0) => Date.UTC(2026, 11, 31, 23, m, s);
    expect(formatUtc(at(59, 59))).toBe("2026-12-31 23:59 UTC");
    expect(formatUtc(at(59, 1))).toBe("2026-12-31 23:59 UTC");
    expect(formatUtc(at(59, 59) + 1000)).toBe("2027-01-01 00:00 UTC");
    expect(formatUtc(at(58, 30))).toBe("2026-12-31 23:58 UTC");
    expect(formatUtc(0)).toBe("1970-01-01 00:00 UTC");
  });

  it.each([
    ["HSREG 01234567", "01234567"],
    ["  hsreg   01234567 ", "01234567"],
    ["HSREG 0123456", undefined],
    ["HSREG 012345678", undefined],
    ["HSREG01234567", undefined],
    ["Hello", undefined],
    ["HSREG 0123456a", undefined],
  ])("%j → %s", (text, expected) => {
    expect(parseHandsetCodeText(text)).toBe(expected);
  });
});
