import { inspect } from "node:util";
import { Chacha20Poly1305 } from "@hpke/chacha20poly1305";
import { CipherSuite, DhkemX25519HkdfSha256 as WebCryptoKem, HkdfSha256 } from "@hpke/core";
import { DhkemX25519HkdfSha256 as NobleKem } from "@hpke/dhkem-x25519";
import { describe, expect, it } from "vitest";
import { fromHex, toHex, utf8 } from "../../src/core/codec/bytes.ts";
import { backend as nodeBackend } from "../../src/core/crypto/backend/node.ts";
import type { CryptoBackend } from "../../src/core/crypto/backend/types.ts";
import { backend as webBackend } from "../../src/core/crypto/backend/web.ts";
import {
  deriveHpkeKeyPair,
  generateHpkeKeyPair,
  HPKE_EXPORT_MAX_LENGTH,
  hpkeInternals,
  hpkeOpen,
  hpkeRecipientKey,
  hpkeSeal,
  isValidHpkePublicKey,
  setupBaseR,
  setupBaseS,
  setupPskR,
  setupPskS,
} from "../../src/core/crypto/hpke.ts";
import lowOrderKeys from "./hpke-low-order-keys.json" with { type: "json" };
import vectors from "./hpke.json" with { type: "json" };

const h = fromHex;
const backends: CryptoBackend[] = [nodeBackend, webBackend];
const openFailed = expect.objectContaining({ code: "hpke.open_failed" });
const invalidPublicKey = expect.objectContaining({ code: "hpke.invalid_public_key" });
const lastSequenceNumber = Math.max(...vectors.cases[0]!.encryptions.map((e) => e.sequence_number));

function pskOf(v: (typeof vectors.cases)[number]): { psk: Uint8Array; pskId: Uint8Array } {
  return "psk" in v
    ? { psk: h(v.psk!), pskId: h(v.psk_id!) }
    : { psk: new Uint8Array(0), pskId: new Uint8Array(0) };
}

for (const b of backends) {
  for (const v of vectors.cases) {
    describe(`RFC 9180 ${v.name} on the ${b.name} backend`, () => {
      const info = h(v.info);
      const { psk, pskId } = pskOf(v);

      it("the suite is DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305", () => {
        expect([v.kem_id, v.kdf_id, v.aead_id]).toEqual([0x20, 0x01, 0x03]);
      });

      it("§7.1.3 DeriveKeyPair(ikmE) and DeriveKeyPair(ikmR)", () => {
        const e = deriveHpkeKeyPair(h(v.ikmE), b);
        expect([toHex(e.privateKey), toHex(e.publicKey)]).toEqual([v.skEm, v.pkEm]);
        const r = deriveHpkeKeyPair(h(v.ikmR), b);
        expect([toHex(r.privateKey), toHex(r.publicKey)]).toEqual([v.skRm, v.pkRm]);
        expect(toHex(hpkeRecipientKey(h(v.skRm), b).publicKey)).toBe(v.pkRm);
      });

      it("§4.1 Encap with skE gives enc and shared_secret; Decap with skR the same secret", () => {
        const { enc, sharedSecret } = hpkeInternals.encap(h(v.pkRm), h(v.skEm), b);
        expect([toHex(enc), toHex(sharedSecret)]).toEqual([v.enc, v.shared_secret]);
        expect(toHex(hpkeInternals.decap(h(v.skRm), h(v.enc), b))).toBe(v.shared_secret);
      });

      it("§5.1 KeySchedule: key_schedule_context, secret, key, base_nonce, exporter_secret", () => {
        const s = hpkeInternals.keySchedule(h(v.shared_secret), info, psk, pskId, b);
        expect(toHex(s.keyScheduleContext)).toBe(v.key_schedule_context);
        expect(toHex(s.secret)).toBe(v.secret);
        expect(toHex(s.key)).toBe(v.key);
        expect(toHex(s.baseNonce)).toBe(v.base_nonce);
        expect(toHex(s.exporterSecret)).toBe(v.exporter_secret);
      });

      it("§5.2 the sender context seals each listed sequence number to its ct", () => {
        const { enc, context } = hpkeInternals.setupSender(h(v.pkRm), info, h(v.skEm), psk, pskId, b);
        expect(toHex(enc)).toBe(v.enc);
        const byNumber = new Map(v.encryptions.map((e) => [e.sequence_number, e]));
        for (let seq = 0; seq <= lastSequenceNumber; seq++) {
          expect(context.sequenceNumber).toBe(seq);
          const e = byNumber.get(seq);
          const sealed = context.seal(e ? h(e.pt) : new Uint8Array(1), e ? h(e.aad) : undefined);
          if (e) expect(toHex(sealed), `sequence number ${seq}`).toBe(e.ct);
        }
      });

      it("§5.2 the recipient context opens them in order; §5.3 both contexts export the same values", () => {
        const { context: sender } = hpkeInternals.setupSender(h(v.pkRm), info, h(v.skEm), psk, pskId, b);
        const recipient =
          v.mode === 0
            ? setupBaseR(h(v.skRm), h(v.enc), info, b)
            : setupPskR(h(v.skRm), h(v.enc), info, psk, pskId, b);
        const byNumber = new Map(v.encryptions.map((e) => [e.sequence_number, e]));
        for (let seq = 0; seq <= lastSequenceNumber; seq++) {
          const e = byNumber.get(seq);
          // Unlisted numbers: our own sender's message keeps both contexts in step.
          const ct = e ? h(e.ct) : sender.seal(new Uint8Array(1));
          if (e) sender.seal(h(e.pt), h(e.aad));
          const pt = recipient.open(ct, e ? h(e.aad) : undefined);
          if (e) expect(toHex(pt), `sequence number ${seq}`).toBe(e.pt);
        }
        expect(recipient.sequenceNumber).toBe(lastSequenceNumber + 1);
        for (const x of v.exports) {
          expect(toHex(sender.export(h(x.exporter_context), x.L))).toBe(x.exported_value);
          expect(toHex(recipient.export(h(x.exporter_context), x.L))).toBe(x.exported_value);
        }
      });

      if (v.mode === 0)
        it("§6.1 OpenBase opens the first encryption in one call", () => {
          const e = v.encryptions[0]!;
          const pt = hpkeOpen(h(v.skRm), h(v.enc), h(e.ct), { info, aad: h(e.aad) }, b);
          expect(toHex(pt)).toBe(e.pt);
        });
    });
  }
}

describe("interoperability with @hpke/core 1.9 (an independent RFC 9180 implementation)", () => {
  const kems = [
    { name: "@hpke/dhkem-x25519 (noble X25519)", kem: () => new NobleKem() },
    { name: "@hpke/core's DhkemX25519HkdfSha256 (WebCrypto X25519)", kem: () => new WebCryptoKem() },
  ];
  const info = utf8("handsafe/v1/messaging/message");
  const aad = utf8("msg_1\u0000mh_1");

  for (const { name, kem } of kems)
    for (const b of backends) {
      describe(`${name}, our ${b.name} backend`, () => {
        const suite = new CipherSuite({ kem: kem(), kdf: new HkdfSha256(), aead: new Chacha20Poly1305() });
        const recipient = generateHpkeKeyPair(b);
        const plaintext = b.randomBytes(1000);

        it("derives the same key pair from the same ikm", async () => {
          const ikm = b.randomBytes(32);
          const theirs = await suite.kem.deriveKeyPair(ikm);
          const ours = deriveHpkeKeyPair(ikm, b);
          expect(new Uint8Array(await suite.kem.serializePrivateKey(theirs.privateKey))).toEqual(
            ours.privateKey,
          );
          expect(new Uint8Array(await suite.kem.serializePublicKey(theirs.publicKey))).toEqual(
            ours.publicKey,
          );
        });

        it("opens what we seal (base mode, single shot)", async () => {
          const { enc, ciphertext } = hpkeSeal(recipient.publicKey, plaintext, { info, aad }, b);
          const recipientKey = await suite.kem.deserializePrivateKey(recipient.privateKey);
          const opened = await suite.open({ recipientKey, enc, info }, ciphertext, aad);
          expect(new Uint8Array(opened)).toEqual(plaintext);
        });

        it("seals what we open (base mode, single shot)", async () => {
          const recipientPublicKey = await suite.kem.deserializePublicKey(recipient.publicKey);
          const { enc, ct } = await suite.seal({ recipientPublicKey, info }, plaintext, aad);
          const opened = hpkeOpen(
            recipient.privateKey,
            new Uint8Array(enc),
            new Uint8Array(ct),
            { info, aad },
            b,
          );
          expect(opened).toEqual(plaintext);
        });

        it("agrees on a PSK-mode context: three messages in order and an exported secret", async () => {
          const psk = b.randomBytes(32);
          const pskId = utf8("handsafe-test-psk");
          const { enc, context } = setupPskS(recipient.publicKey, info, psk, pskId, b);
          const theirs = await suite.createRecipientContext({
            recipientKey: await suite.kem.deserializePrivateKey(recipient.privateKey),
            enc,
            info,
            psk: { id: pskId, key: psk },
          });
          for (let i = 0; i < 3; i++) {
            const message = utf8(`message ${i}`);
            expect(new Uint8Array(await theirs.open(context.seal(message, aad), aad))).toEqual(message);
          }
          expect(new Uint8Array(await theirs.export(utf8("handsafe/v1/test"), 48))).toEqual(
            context.export("handsafe/v1/test", 48),
          );
        });
      });
    }
});

describe("HPKE attacks", () => {
  const info = utf8("handsafe/v1/messaging/message");
  const aad = utf8("msg_1\u0000mh_1");

  for (const b of backends) {
    describe(`on the ${b.name} backend`, () => {
      const recipient = generateHpkeKeyPair(b);
      const plaintext = utf8("the secure message");
      const sealed = hpkeSeal(recipient.publicKey, plaintext, { info, aad }, b);
      const open = (enc: Uint8Array, ct: Uint8Array, options = { info, aad }) =>
        hpkeOpen(recipient.privateKey, enc, ct, options, b);

      it("the untouched message opens (the control for every case below)", () => {
        expect(open(sealed.enc, sealed.ciphertext)).toEqual(plaintext);
      });

      describe("an attacker who tampers with the ciphertext", () => {
        it("flips a bit of the body or of the tag", () => {
          for (const index of [0, sealed.ciphertext.length - 1]) {
            const t = sealed.ciphertext.slice();
            t[index]! ^= 0x01;
            expect(() => open(sealed.enc, t)).toThrow(openFailed);
          }
        });
        it("truncates it, or sends less than a tag", () => {
          expect(() => open(sealed.enc, sealed.ciphertext.subarray(0, sealed.ciphertext.length - 1))).toThrow(
            openFailed,
          );
          expect(() => open(sealed.enc, new Uint8Array(15))).toThrow(openFailed);
        });
      });

      describe("an attacker who tampers with enc", () => {
        it("flips a bit of it", () => {
          const t = sealed.enc.slice();
          t[5]! ^= 0x20;
          expect(() => open(t, sealed.ciphertext)).toThrow(openFailed);
        });
        it("sends it one byte short or long", () => {
          expect(() => open(sealed.enc.subarray(0, 31), sealed.ciphertext)).toThrow(openFailed);
          expect(() => open(new Uint8Array(33), sealed.ciphertext)).toThrow(openFailed);
        });
        it("pairs the ciphertext with another message's enc", () => {
          const other = hpkeSeal(recipient.publicKey, plaintext, { info, aad }, b);
          expect(() => open(other.enc, sealed.ciphertext)).toThrow(openFailed);
        });
        it("sends a low-order point as enc: the same failure, no other detail", () => {
          for (const { u } of lowOrderKeys.lowOrder)
            expect(() => open(h(u), sealed.ciphertext)).toThrow(openFailed);
        });
      });

      describe("an attacker who moves the ciphertext to another context", () => {
        it("changes or drops the aad", () => {
          expect(() => open(sealed.enc, sealed.ciphertext, { info, aad: utf8("msg_2\u0000mh_1") })).toThrow(
            openFailed,
          );
          expect(() => hpkeOpen(recipient.privateKey, sealed.enc, sealed.ciphertext, { info }, b)).toThrow(
            openFailed,
          );
        });
        it("changes or drops the info", () => {
          expect(() =>
            open(sealed.enc, sealed.ciphertext, { info: utf8("handsafe/v1/messaging/reply"), aad }),
          ).toThrow(openFailed);
          expect(() => hpkeOpen(recipient.privateKey, sealed.enc, sealed.ciphertext, { aad }, b)).toThrow(
            openFailed,
          );
        });
        it("gives it to another handset's key", () => {
          const other = generateHpkeKeyPair(b);
          expect(() => hpkeOpen(other.privateKey, sealed.enc, sealed.ciphertext, { info, aad }, b)).toThrow(
            openFailed,
          );
        });
      });

      describe("an attacker who registers a low-order public key (RFC 7748 §6.1, RFC 9180 §7.1.4)", () => {
        for (const { name, u } of lowOrderKeys.lowOrder)
          it(`u = ${name}: X25519 refuses it, isValidHpkePublicKey says no, seal refuses it`, () => {
            expect(() => b.x25519(b.randomBytes(32), h(u))).toThrow(
              expect.objectContaining({ code: "crypto.invalid_point" }),
            );
            expect(isValidHpkePublicKey(h(u))).toBe(false);
            expect(() => hpkeSeal(h(u), plaintext, { info }, b)).toThrow(invalidPublicKey);
            expect(() => setupBaseS(h(u), info, b)).toThrow(invalidPublicKey);
          });
        it("a key of the wrong length is refused the same way", () => {
          for (const n of [0, 31, 33]) {
            expect(isValidHpkePublicKey(new Uint8Array(n).fill(9))).toBe(false);
            expect(() => hpkeSeal(new Uint8Array(n).fill(9), plaintext, {}, b)).toThrow(invalidPublicKey);
          }
        });
        it("ordinary keys are valid", () => {
          for (let i = 0; i < 20; i++)
            expect(isValidHpkePublicKey(generateHpkeKeyPair(b).publicKey)).toBe(true);
        });
      });

      describe("an attacker who replays or reorders messages of one context", () => {
        it("message 1 does not open as message 0; a failed open does not advance the context", () => {
          const { enc, context } = setupBaseS(recipient.publicKey, info, b);
          const first = context.seal(utf8("first"));
          const second = context.seal(utf8("second"));
          const r = setupBaseR(recipient.privateKey, enc, info, b);
          expect(() => r.open(second)).toThrow(openFailed);
          expect(r.sequenceNumber).toBe(0);
          expect(r.open(first)).toEqual(utf8("first"));
          expect(() => r.open(first)).toThrow(openFailed);
          expect(r.open(second)).toEqual(utf8("second"));
        });
      });

      describe("an attacker who guesses the pre-shared key", () => {
        it("a wrong psk or psk_id does not open", () => {
          const psk = b.randomBytes(32);
          const pskId = utf8("id");
          const { enc, context } = setupPskS(recipient.publicKey, info, psk, pskId, b);
          const ct = context.seal(plaintext);
          expect(setupPskR(recipient.privateKey, enc, info, psk, pskId, b).open(ct)).toEqual(plaintext);
          expect(() =>
            setupPskR(recipient.privateKey, enc, info, b.randomBytes(32), pskId, b).open(ct),
          ).toThrow(openFailed);
          expect(() => setupPskR(recipient.privateKey, enc, info, psk, utf8("other"), b).open(ct)).toThrow(
            openFailed,
          );
          expect(() => setupBaseR(recipient.privateKey, enc, info, b).open(ct)).toThrow(openFailed);
        });
      });
    });
  }
});

describe("HPKE boundaries", () => {
  const recipient = generateHpkeKeyPair();

  it("a node sender and a web recipient agree (and the reverse)", () => {
    const a = hpkeSeal(recipient.publicKey, utf8("x"), { info: "i", aad: utf8("a") }, nodeBackend);
    expect(
      hpkeOpen(recipient.privateKey, a.enc, a.ciphertext, { info: "i", aad: utf8("a") }, webBackend),
    ).toEqual(utf8("x"));
    const prepared = hpkeRecipientKey(recipient.privateKey, nodeBackend);
    const c = hpkeSeal(recipient.publicKey, utf8("y"), { info: "i" }, webBackend);
    expect(hpkeOpen(prepared, c.enc, c.ciphertext, { info: "i" })).toEqual(utf8("y"));
  });

  it("a string info is its UTF-8 bytes", () => {
    const s = hpkeSeal(recipient.publicKey, utf8("x"), { info: "handsafe/v1/test" });
    expect(hpkeOpen(recipient.privateKey, s.enc, s.ciphertext, { info: utf8("handsafe/v1/test") })).toEqual(
      utf8("x"),
    );
  });

  it("each seal uses a fresh ephemeral key", () => {
    const a = hpkeSeal(recipient.publicKey, utf8("same"));
    const c = hpkeSeal(recipient.publicKey, utf8("same"));
    expect(toHex(a.enc)).not.toBe(toHex(c.enc));
    expect(toHex(a.ciphertext)).not.toBe(toHex(c.ciphertext));
  });

  it("private keys and ikm of the wrong length are crypto.invalid_key", () => {
    const bad = expect.objectContaining({ code: "crypto.invalid_key" });
    const s = hpkeSeal(recipient.publicKey, utf8("x"));
    expect(() => hpkeOpen(new Uint8Array(31), s.enc, s.ciphertext)).toThrow(bad);
    expect(() => hpkeRecipientKey(new Uint8Array(33))).toThrow(bad);
    expect(() => deriveHpkeKeyPair(new Uint8Array(31))).toThrow(bad);
  });

  it("a psk under 32 bytes or an empty psk_id is hpke.invalid_psk", () => {
    const bad = expect.objectContaining({ code: "hpke.invalid_psk" });
    expect(() => setupPskS(recipient.publicKey, "i", new Uint8Array(31), utf8("id"))).toThrow(bad);
    expect(() => setupPskS(recipient.publicKey, "i", new Uint8Array(32), new Uint8Array(0))).toThrow(bad);
  });

  it("export lengths outside 1..255·32 are crypto.invalid_length", () => {
    const { context } = setupBaseS(recipient.publicKey);
    for (const length of [0, -1, 1.5, HPKE_EXPORT_MAX_LENGTH + 1])
      expect(() => context.export("x", length)).toThrow(
        expect.objectContaining({ code: "crypto.invalid_length" }),
      );
    expect(context.export("x", HPKE_EXPORT_MAX_LENGTH)).toHaveLength(HPKE_EXPORT_MAX_LENGTH);
  });

  it("contexts and prepared keys do not show their secrets to JSON.stringify or inspect", () => {
    const { enc, context } = setupBaseS(recipient.publicKey, "i");
    context.seal(utf8("x"));
    const r = setupBaseR(recipient.privateKey, enc, "i");
    expect(JSON.stringify(context)).toBe('{"hpke":"sender","sequenceNumber":1}');
    expect(JSON.stringify(r)).toBe('{"hpke":"recipient","sequenceNumber":0}');
    for (const c of [context, r])
      expect(inspect(c, { showHidden: true, depth: 10 })).not.toContain("Uint8Array");
    const key = hpkeRecipientKey(recipient.privateKey);
    expect(JSON.stringify(key)).toBe(`{"hpke":"recipient-key","publicKey":"${toHex(recipient.publicKey)}"}`);
    // The one Uint8Array inspect shows is the public key.
    expect(inspect(key, { showHidden: true, depth: 10 }).match(/Uint8Array/g)).toHaveLength(1);
  });
});
