/**
 * A message sealed by our server (HPKE on our synchronous primitives) opens with @hpke/core, an
 * independent RFC 9180 implementation, given only the handset's private key, the published info
 * and the aad the spec defines — so a handset written against the spec alone can read our messages.
 */
import { Chacha20Poly1305 } from "@hpke/chacha20poly1305";
import { CipherSuite, HkdfSha256 } from "@hpke/core";
import { DhkemX25519HkdfSha256 } from "@hpke/dhkem-x25519";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBase64url } from "../../src/core/codec/base64url.ts";
import { fromUtf8, utf8 } from "../../src/core/codec/bytes.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { type MessagingHarness, startMessagingServer } from "./harness.ts";

describe("interoperability: our server's messages open with @hpke/core", () => {
  let t: MessagingHarness;
  beforeAll(async () => {
    t = await startMessagingServer("sqlite");
  }, 60_000);
  afterAll(async () => t?.close());

  it("OpenBase(enc, skR, info = handsafe/v1/messaging/message, aad = id ‖ 0x00 ‖ handset id)", async () => {
    const keystore = new MemoryKeystore();
    const number = "+447911123499";
    const h = await t.handset(number, keystore);
    const handsetId = await h.registerByServerCode("pixel-9");
    const clinic = await t.sender("Clinic");
    const { body } = await clinic.http.post<{ id: string }>("/v1/messages", {
      to: number,
      body: { type: "text", text: "interop ✓" },
    });
    const [item] = await h.app.fetchInbox();
    const privateKey = (await keystore.get(`messaging/${handsetId}/x25519`))!;

    const service = (
      await t.anonymous.get<{ hpke: { kem: number; kdf: number; aead: number; info: string } }>(
        "/v1/messaging/service",
      )
    ).body;
    expect(service.hpke).toEqual({ kem: 0x20, kdf: 0x01, aead: 0x03, info: "handsafe/v1/messaging/message" });

    const suite = new CipherSuite({
      kem: new DhkemX25519HkdfSha256(),
      kdf: new HkdfSha256(),
      aead: new Chacha20Poly1305(),
    });
    const opened = await suite.open(
      {
        recipientKey: await suite.kem.deserializePrivateKey(privateKey),
        enc: fromBase64url(item!.enc),
        info: utf8(service.hpke.info),
      },
      fromBase64url(item!.ciphertext),
      utf8(`${body.id}\u0000${handsetId}`),
    );
    const plaintext = JSON.parse(fromUtf8(new Uint8Array(opened))) as Record<string, unknown>;
    expect(plaintext).toMatchObject({
      v: 1,
      id: body.id,
      to: number,
      senderId: clinic.id,
      senderName: "Clinic",
      body: { type: "text", text: "interop ✓" },
    });

    // the aad binds it: under another handset id, @hpke/core refuses it too
    await expect(
      suite.open(
        {
          recipientKey: await suite.kem.deserializePrivateKey(privateKey),
          enc: fromBase64url(item!.enc),
          info: utf8(service.hpke.info),
        },
        fromBase64url(item!.ciphertext),
        utf8(`${body.id}\u0000mh_AAAAAAAAAAAAAAAA`),
      ),
    ).rejects.toThrow();
  });
});
