/**
 * Secure messaging under attack, on both databases: one `describe` per attack, named as the
 * attacker would name it. Each asserts the stable code the attacker gets, that the refusal is in
 * the audit log, and that nothing changed — no handset, no delivery, no message, no text.
 */
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBase64url, toBase64url } from "../../src/core/codec/base64url.ts";
import { fromHex } from "../../src/core/codec/bytes.ts";
import { generateSigningKey } from "../../src/core/crypto/ed25519.ts";
import { generateHpkeKeyPair } from "../../src/core/crypto/hpke.ts";
import { ed25519SigningKey, signRequest } from "../../src/core/http-signatures/index.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { REQUEST_SIGNATURE } from "../../src/messaging/protocol.ts";
import { codeOfText, type SimulatedMessagingHandset } from "../../src/messaging/simulator.ts";
import type { MessagingTables } from "../../src/messaging/store.ts";
import lowOrderKeys from "../vectors/hpke-low-order-keys.json" with { type: "json" };
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { type MessagingHarness, startMessagingServer, type TestSender } from "./harness.ts";

const pgOk = await postgresAvailable();
const HOUR = 3_600_000;
const refusedWith = (code: string, status?: number) =>
  expect.objectContaining({ code, ...(status === undefined ? {} : { status }) });

/** A new app's public keys, as a registration request carries them. */
function freshKeys() {
  return {
    encryptionKey: toBase64url(generateHpkeKeyPair().publicKey),
    authKey: toBase64url(generateSigningKey().publicKey),
  };
}

describe.each(databaseKinds)("secure messaging attacks on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let t: MessagingHarness;
    let db: Kysely<MessagingTables>;
    let clinic: TestSender;
    let numberSeq = 0;
    /** A fresh number per test, so quotas and notice gates of one test never touch another. */
    const nextNumber = () => `+4479112${String(10_000 + numberSeq++).slice(-5)}`;

    beforeAll(async () => {
      t = await startMessagingServer(kind);
      db = t.server.platform.db;
      clinic = await t.sender("Clinic");
    }, 60_000);
    afterAll(async () => t?.close());

    /** Everything an attack could change, as one comparable value (audit and quota rows excluded). */
    async function state() {
      const rows = async (table: keyof MessagingTables, order: string) =>
        JSON.stringify(
          await db
            .selectFrom(table)
            .selectAll()
            .orderBy(order as never)
            .execute(),
        );
      return {
        handsets: await rows("messaging_handsets", "id"),
        deliveries: await rows("messaging_deliveries", "handset_id"),
        messages: await rows("messaging_messages", "id"),
        replies: await rows("messaging_replies", "id"),
        texts: JSON.stringify(
          await db
            .selectFrom("sms_messages" as never)
            .select(["id" as never])
            .execute(),
        ),
      };
    }

    async function denials(action: string, code?: string): Promise<number> {
      const rows = await db
        .selectFrom("audit_log" as never)
        .select(["details" as never])
        .where("action" as never, "=", action as never)
        .where("outcome" as never, "=", "deny" as never)
        .execute();
      return rows.filter(
        (r) => code === undefined || (r as { details: string }).details.includes(`"${code}"`),
      ).length;
    }

    async function registered(number: string, deviceType = "pixel-9"): Promise<SimulatedMessagingHandset> {
      const h = await t.handset(number);
      await h.registerByHandsetCode(deviceType, { textFirst: true });
      return h;
    }

    const post = (path: string, body: unknown) => t.anonymous.post(path, body);

    describe("a number that is not a number", () => {
      it.each(["not-a-number", "12", "+44", "+999123456789", "+4479111234560000000"])("%j", async (to) => {
        const before = await state();
        const denied = await denials("messaging.message_accepted", "phone.invalid");
        await expect(
          clinic.http.post("/v1/messages", { to, body: { type: "text", text: "hi" } }),
        ).rejects.toEqual(refusedWith("phone.invalid", 400));
        await expect(
          post("/v1/messaging/registrations", {
            variant: "server_otp",
            phoneNumber: to,
            deviceType: "x",
            ...freshKeys(),
          }),
        ).rejects.toEqual(refusedWith("phone.invalid", 400));
        expect(await state()).toEqual(before);
        expect(await denials("messaging.message_accepted", "phone.invalid")).toBe(denied + 1);
      });
    });

    describe("a code guessed", () => {
      it("five wrong codes lock the registration; the right code then is refused", async () => {
        const number = nextNumber();
        const h = await t.handset(number);
        const reg = await h.app.startRegistration({ phoneNumber: number, deviceType: "pixel-9" });
        const right = codeOfText((await h.phone.nextText()).text)!;
        const wrong = right === "00000000" ? "11111111" : "00000000";
        const before = await state();
        for (let left = 4; left >= 0; left--)
          await expect(
            post(`/v1/messaging/registrations/${reg.registrationId}/confirm`, {
              phoneNumber: number,
              code: wrong,
            }),
          ).rejects.toEqual(
            expect.objectContaining({
              code: "messaging.code_invalid",
              status: 401,
              details: { triesLeft: left },
            }),
          );
        await expect(h.app.confirmRegistration(right)).rejects.toEqual(
          refusedWith("messaging.registration_locked", 423),
        );
        expect(await state()).toEqual(before);
        expect(await denials("messaging.registration_locked")).toBeGreaterThanOrEqual(1);
        expect(
          await denials("messaging.registration_confirm", "messaging.code_invalid"),
        ).toBeGreaterThanOrEqual(5);
      });

      it("guesses in parallel get five comparisons between them, never more", async () => {
        const number = nextNumber();
        const h = await t.handset(number);
        const reg = await h.app.startRegistration({ phoneNumber: number, deviceType: "pixel-9" });
        const right = codeOfText((await h.phone.nextText()).text)!;
        const guesses = Array.from({ length: 12 }, (_, i) => String(i).padStart(8, "9")).filter(
          (g) => g !== right,
        );
        const answers = await Promise.allSettled(
          guesses.map((code) =>
            post(`/v1/messaging/registrations/${reg.registrationId}/confirm`, { phoneNumber: number, code }),
          ),
        );
        const codes = answers.map((a) =>
          a.status === "rejected" ? (a.reason as { code: string }).code : "ok",
        );
        expect(codes.filter((c) => c === "messaging.code_invalid")).toHaveLength(5);
        expect(
          codes
            .filter((c) => c !== "messaging.code_invalid")
            .every((c) => c === "messaging.registration_locked"),
        ).toBe(true);
      });
    });

    describe("a code expired, reused, or confirmed from another number", () => {
      it("expired: messaging.code_expired (410)", async () => {
        const number = nextNumber();
        const h = await t.handset(number);
        await h.app.startRegistration({ phoneNumber: number, deviceType: "pixel-9" });
        const code = codeOfText((await h.phone.nextText()).text)!;
        t.clock.advance(301_000);
        const before = await state();
        await expect(h.app.confirmRegistration(code)).rejects.toEqual(
          refusedWith("messaging.code_expired", 410),
        );
        expect(await state()).toEqual(before);
      });

      it("reused (server code): messaging.code_used (409)", async () => {
        const number = nextNumber();
        const h = await t.handset(number);
        const reg = await h.app.startRegistration({ phoneNumber: number, deviceType: "pixel-9" });
        const code = codeOfText((await h.phone.nextText()).text)!;
        await h.app.confirmRegistration(code);
        const before = await state();
        await expect(
          post(`/v1/messaging/registrations/${reg.registrationId}/confirm`, { phoneNumber: number, code }),
        ).rejects.toEqual(refusedWith("messaging.code_used", 409));
        expect(await state()).toEqual(before);
      });

      it("reused (handset code): the text already registered one app; a second app with it is refused", async () => {
        const number = nextNumber();
        const h = await t.handset(number);
        const { code, text, to } = await h.app.prepareHandsetCode();
        await h.phone.send(text, to);
        await h.app.registerWithHandsetCode({ phoneNumber: number, deviceType: "pixel-9", code });
        const before = await state();
        await expect(
          post("/v1/messaging/registrations", {
            variant: "handset_otp",
            phoneNumber: number,
            deviceType: "attacker",
            code,
            ...freshKeys(),
          }),
        ).rejects.toEqual(refusedWith("messaging.code_used", 409));
        expect(await state()).toEqual(before);
      });

      it("confirmed from another number: messaging.code_invalid, for either number", async () => {
        const victim = nextNumber();
        const attacker = nextNumber();
        const h = await t.handset(victim);
        const reg = await h.app.startRegistration({ phoneNumber: victim, deviceType: "pixel-9" });
        const code = codeOfText((await h.phone.nextText()).text)!;
        const before = await state();
        await expect(
          post(`/v1/messaging/registrations/${reg.registrationId}/confirm`, { phoneNumber: attacker, code }),
        ).rejects.toEqual(refusedWith("messaging.code_invalid", 401));
        expect(await state()).toEqual(before);
        // The code texted to one number does not register another by the handset variant either.
        await expect(
          post("/v1/messaging/registrations", {
            variant: "handset_otp",
            phoneNumber: attacker,
            deviceType: "x",
            code,
            ...freshKeys(),
          }),
        ).resolves.toMatchObject({ status: 202, body: { state: "pending" } });
        expect(
          await db
            .selectFrom("messaging_handsets")
            .select("id")
            .where("phone_number", "=", attacker)
            .execute(),
        ).toEqual([]);
      });

      it("a handset code texted from another number does not confirm a registration of this one", async () => {
        const victim = nextNumber();
        const attacker = t.phone(nextNumber());
        const h = await t.handset(victim);
        const { code, text, to } = await h.app.prepareHandsetCode();
        const pending = await h.app.registerWithHandsetCode({
          phoneNumber: victim,
          deviceType: "pixel-9",
          code,
        });
        expect(pending.state).toBe("pending");
        await attacker.send(text, to); // the right code, the wrong sender
        expect((await h.app.registrationStatus()).state).toBe("pending");
        expect(
          await db.selectFrom("messaging_handsets").select("id").where("phone_number", "=", victim).execute(),
        ).toEqual([]);
      });
    });

    describe("a public key that is not a valid X25519 point", () => {
      it("each of the 14 low-order encodings is messaging.invalid_public_key; no code is texted", async () => {
        const number = nextNumber();
        const before = await state();
        for (const k of lowOrderKeys.lowOrder)
          await expect(
            post("/v1/messaging/registrations", {
              variant: "server_otp",
              phoneNumber: number,
              deviceType: "x",
              encryptionKey: toBase64url(fromHex(k.u)),
              authKey: toBase64url(generateSigningKey().publicKey),
            }),
            k.name,
          ).rejects.toEqual(refusedWith("messaging.invalid_public_key", 400));
        for (const bad of ["AAAA", "!!", toBase64url(new Uint8Array(33))])
          await expect(
            post("/v1/messaging/registrations", {
              variant: "server_otp",
              phoneNumber: number,
              deviceType: "x",
              encryptionKey: bad,
              authKey: freshKeys().authKey,
            }),
          ).rejects.toEqual(refusedWith("messaging.invalid_public_key", 400));
        expect(await state()).toEqual(before);
        expect(
          await denials("messaging.registration_started", "messaging.invalid_public_key"),
        ).toBeGreaterThanOrEqual(17);
      });
    });

    describe("a handset fetching another number's messages", () => {
      it("its inbox holds its own only; acting on another's message is messaging.unknown_message", async () => {
        const mine = await registered(nextNumber());
        const theirs = await registered(nextNumber());
        const { body } = await clinic.http.post<{ id: string }>("/v1/messages", {
          to: theirs.phone.number,
          body: { type: "text", text: "for them" },
        });
        expect(await mine.app.fetchInbox()).toEqual([]);
        const before = await state();
        for (const act of [
          () => mine.app.ack(body.id),
          () => mine.app.read(body.id),
          () => mine.app.delete(body.id),
          () => mine.app.reply(body.id, { type: "text", text: "hijack" }),
        ])
          await expect(act()).rejects.toEqual(refusedWith("messaging.unknown_message", 404));
        // a message id that does not exist answers the same
        await expect(mine.app.ack("msg_AAAAAAAAAAAAAAAA")).rejects.toEqual(
          refusedWith("messaging.unknown_message", 404),
        );
        expect(await state()).toEqual(before);
        expect(await denials("messaging.ack", "messaging.unknown_message")).toBeGreaterThanOrEqual(2);
      });

      it("claiming another handset's keyid with its own key: signature.invalid", async () => {
        const mine = await registered(nextNumber());
        const theirs = await registered(nextNumber());
        const keystore = new MemoryKeystore();
        const spy = await t.handset(mine.phone.number, keystore);
        await spy.registerByHandsetCode("spy", { textFirst: true });
        const seed = (await keystore.get(`messaging/${spy.app.handsetId}/ed25519`))!;
        const url = `${t.server.url}/v1/messaging/inbox`;
        const headers = signRequest(
          REQUEST_SIGNATURE,
          ed25519SigningKey(seed),
          { method: "GET", url },
          { keyId: theirs.app.handsetId!, created: Math.floor(t.clock.ms / 1000) },
        );
        await expect(t.anonymous.get("/v1/messaging/inbox", { headers })).rejects.toEqual(
          refusedWith("signature.invalid", 401),
        );
      });

      it("no signature, an unknown keyid, a stale one: signature.missing / unknown_key / stale", async () => {
        await expect(t.anonymous.get("/v1/messaging/inbox")).rejects.toEqual(
          refusedWith("signature.missing", 401),
        );
        const seed = generateSigningKey().seed;
        const url = `${t.server.url}/v1/messaging/inbox`;
        const sign = (keyId: string, created: number) =>
          signRequest(REQUEST_SIGNATURE, ed25519SigningKey(seed), { method: "GET", url }, { keyId, created });
        await expect(
          t.anonymous.get("/v1/messaging/inbox", {
            headers: sign("mh_AAAAAAAAAAAAAAAA", Math.floor(t.clock.ms / 1000)),
          }),
        ).rejects.toEqual(refusedWith("signature.unknown_key", 401));
        const keystore = new MemoryKeystore();
        const h = await t.handset(nextNumber(), keystore);
        await h.registerByHandsetCode("pixel-9", { textFirst: true });
        const own = (await keystore.get(`messaging/${h.app.handsetId}/ed25519`))!;
        const stale = signRequest(
          REQUEST_SIGNATURE,
          ed25519SigningKey(own),
          { method: "GET", url },
          { keyId: h.app.handsetId!, created: Math.floor(t.clock.ms / 1000) - 301 },
        );
        await expect(t.anonymous.get("/v1/messaging/inbox", { headers: stale })).rejects.toEqual(
          refusedWith("signature.stale", 401),
        );
        expect(await denials("messaging.handset_request", "signature.missing")).toBeGreaterThanOrEqual(1);
      });
    });

    describe("a sender reading another sender's messages", () => {
      it("answers exactly as for a message that does not exist, and is audited", async () => {
        const bank = await t.sender("Bank");
        const { body } = await clinic.http.post<{ id: string }>("/v1/messages", {
          to: nextNumber(),
          body: { type: "text", text: "private" },
        });
        const theirs = await bank.http.get(`/v1/messages/${body.id}`).catch((e: unknown) => e);
        const missing = await bank.http.get("/v1/messages/msg_AAAAAAAAAAAAAAAA").catch((e: unknown) => e);
        expect(theirs).toEqual(refusedWith("messaging.unknown_message", 404));
        expect({ ...(theirs as object) }).toEqual({ ...(missing as object) });
        expect((theirs as Error).message).toBe((missing as Error).message);
        await expect(bank.http.get(`/v1/messages/${body.id}/replies`)).rejects.toEqual(
          refusedWith("messaging.unknown_message", 404),
        );
        expect(await denials("messaging.message_status", "messaging.unknown_message")).toBeGreaterThanOrEqual(
          2,
        );
      });

      it("no key, a wrong key, an admin token: auth.unauthenticated", async () => {
        const before = await state();
        for (const client of [
          t.anonymous,
          t.bearer(`hs_sk_${"A".repeat(43)}`),
          t.bearer(t.server.adminToken!),
        ])
          await expect(
            client.post("/v1/messages", { to: nextNumber(), body: { type: "text", text: "x" } }),
          ).rejects.toEqual(refusedWith("auth.unauthenticated", 401));
        expect(await state()).toEqual(before);
        expect(await denials("messaging.sender_auth", "auth.unauthenticated")).toBeGreaterThanOrEqual(3);
      });
    });

    describe("a replayed delivery request", () => {
      it("the same signed request twice: the second is signature.replayed, and nothing happens twice", async () => {
        const keystore = new MemoryKeystore();
        const h = await t.handset(nextNumber(), keystore);
        await h.registerByHandsetCode("pixel-9", { textFirst: true });
        const { body } = await clinic.http.post<{ id: string }>("/v1/messages", {
          to: h.phone.number,
          body: { type: "text", text: "once" },
        });
        const seed = (await keystore.get(`messaging/${h.app.handsetId}/ed25519`))!;
        const path = `/v1/messaging/inbox/${body.id}/reply`;
        const json = { body: { type: "text", text: "yes" } };
        const headers = signRequest(
          REQUEST_SIGNATURE,
          ed25519SigningKey(seed),
          {
            method: "POST",
            url: `${t.server.url}${path}`,
            body: new TextEncoder().encode(JSON.stringify(json)),
          },
          { keyId: h.app.handsetId!, created: Math.floor(t.clock.ms / 1000) },
        );
        await expect(t.anonymous.post(path, json, { headers })).resolves.toMatchObject({ status: 202 });
        const before = await state();
        await expect(t.anonymous.post(path, json, { headers })).rejects.toEqual(
          refusedWith("signature.replayed", 401),
        );
        expect(await state()).toEqual(before);
        // a body swapped under the same signature does not verify
        await expect(
          t.anonymous.post(path, { body: { type: "text", text: "no" } }, { headers }),
        ).rejects.toEqual(refusedWith("signature.digest_mismatch", 401));
        expect(await denials("messaging.handset_request", "signature.replayed")).toBeGreaterThanOrEqual(1);
      });
    });

    describe("a tampered ciphertext", () => {
      it("the handset refuses it (hpke.open_failed), as it does a ciphertext moved to another message", async () => {
        const h = await registered(nextNumber());
        const ids: string[] = [];
        for (const text of ["one", "two"])
          ids.push(
            (
              await clinic.http.post<{ id: string }>("/v1/messages", {
                to: h.phone.number,
                body: { type: "text", text },
              })
            ).body.id,
          );
        const inbox = await h.app.fetchInbox();
        const [a, b] = ids.map((id) => inbox.find((m) => m.id === id));
        const bytes = fromBase64url(a!.ciphertext);
        bytes[bytes.length - 1]! ^= 0x01;
        await expect(h.app.open({ ...a!, ciphertext: toBase64url(bytes) })).rejects.toEqual(
          refusedWith("hpke.open_failed"),
        );
        await expect(h.app.open({ ...a!, enc: b!.enc, ciphertext: b!.ciphertext })).rejects.toEqual(
          refusedWith("hpke.open_failed"),
        );
        await expect(h.app.open({ ...a!, enc: toBase64url(new Uint8Array(32)) })).rejects.toEqual(
          refusedWith("hpke.open_failed"),
        );
        // the untouched ones still open; nothing was acknowledged
        expect((await h.app.open(a!)).body).toEqual({ type: "text", text: "one" });
        expect((await h.app.fetchInbox()).map((m) => m.state)).toEqual(["pending", "pending"]);
      });
    });

    describe("a flood of registration texts to one number", () => {
      it("three codes texted an hour, then messaging.too_many_registrations (429, audited), no fourth text", async () => {
        const number = nextNumber();
        const phone = t.phone(number);
        const start = () =>
          post("/v1/messaging/registrations", {
            variant: "server_otp",
            phoneNumber: number,
            deviceType: "x",
            ...freshKeys(),
          });
        for (let i = 0; i < 3; i++) await start();
        expect((await phone.texts()).filter((x) => codeOfText(x.text))).toHaveLength(3);
        const denied = await denials("messaging.registration_started", "messaging.too_many_registrations");
        const before = await state();
        await expect(start()).rejects.toEqual(refusedWith("messaging.too_many_registrations", 429));
        await expect(start()).rejects.toEqual(refusedWith("messaging.too_many_registrations", 429));
        expect(await state()).toEqual(before);
        expect(await phone.texts()).toEqual([]);
        expect(await denials("messaging.registration_started", "messaging.too_many_registrations")).toBe(
          denied + 2,
        );
        // the window ends: codes again
        t.clock.advance(HOUR + 1000);
        await expect(start()).resolves.toMatchObject({ status: 201 });
      });

      it("five registrations an hour per number, whatever the variant", async () => {
        const number = nextNumber();
        const start = (code: string) =>
          post("/v1/messaging/registrations", {
            variant: "handset_otp",
            phoneNumber: number,
            deviceType: "x",
            code,
            ...freshKeys(),
          });
        for (let i = 0; i < 5; i++)
          await expect(start(`1234567${i}`)).resolves.toMatchObject({ status: 202 });
        await expect(start("12345679")).rejects.toEqual(refusedWith("messaging.too_many_registrations", 429));
      });

      it("five handset-code texts an hour from one number; the sixth is refused and audited", async () => {
        const phone = t.phone(nextNumber());
        const denied = await denials("messaging.inbound_code", "messaging.too_many_registrations");
        for (let i = 0; i < 6; i++) await phone.send(`HSREG 8765432${i}`);
        const rows = await db
          .selectFrom("messaging_inbound_codes")
          .select("id")
          .where("phone_number", "=", phone.number)
          .execute();
        expect(rows).toHaveLength(5);
        expect(await denials("messaging.inbound_code", "messaging.too_many_registrations")).toBe(denied + 1);
      });

      it("at most ten active handsets per number: messaging.too_many_handsets (409)", async () => {
        const number = nextNumber();
        for (let i = 0; i < 10; i++) {
          if (i > 0 && i % 5 === 0) t.clock.advance(HOUR + 1000);
          await registered(number, `device-${i}`);
        }
        t.clock.advance(HOUR + 1000);
        const before = await state();
        await expect(
          post("/v1/messaging/registrations", {
            variant: "server_otp",
            phoneNumber: number,
            deviceType: "x",
            ...freshKeys(),
          }),
        ).rejects.toEqual(refusedWith("messaging.too_many_handsets", 409));
        expect(await state()).toEqual(before);
      });
    });

    describe("bad input never gets a 500", () => {
      it("bodies, expiries, webhooks, JSON, sizes: each its own 4xx code, nothing stored", async () => {
        const to = nextNumber();
        const before = await state();
        const cases: Array<[unknown, string, number]> = [
          [{ to, body: { type: "text" } }, "messaging.invalid_body", 400],
          [{ to, body: { type: "text", text: "é".repeat(2049) } }, "messaging.body_too_large", 413],
          [{ to, body: { type: "html", text: "x" } }, "messaging.invalid_body", 400],
          [{ to, body: null }, "messaging.invalid_body", 400],
          [{ to, body: { type: "text", text: "x" }, expiresInSeconds: 5 }, "messaging.invalid_expiry", 400],
          [
            { to, body: { type: "text", text: "x" }, expiresInSeconds: "600" },
            "messaging.invalid_expiry",
            400,
          ],
          [
            { to, body: { type: "text", text: "x" }, replyWebhook: "http://example.com/x" },
            "webhook.invalid_url",
            400,
          ],
          [{ to, body: { type: "text", text: "x" }, extra: 1 }, "request.invalid", 400],
          [{ to: 5, body: { type: "text", text: "x" } }, "request.invalid", 400],
          [[1, 2], "request.invalid", 400],
        ];
        for (const [json, code, status] of cases)
          await expect(clinic.http.post("/v1/messages", json), code).rejects.toEqual(
            refusedWith(code, status),
          );
        await expect(
          clinic.http.post("/v1/messages", undefined, {
            headers: { "content-type": "application/json" },
          }),
        ).rejects.toEqual(expect.objectContaining({ status: 400 }));
        await expect(
          clinic.http.post("/v1/messages", {
            to,
            body: { type: "attachment", mediaType: "a/b", data: "A".repeat(200_000) },
          }),
        ).rejects.toEqual(expect.objectContaining({ status: 413 }));
        await expect(
          clinic.http.post(
            "/v1/messages",
            { to, body: { type: "text", text: "x" } },
            { headers: { "idempotency-key": "a b" } },
          ),
        ).rejects.toEqual(refusedWith("messaging.invalid_idempotency_key", 400));
        for (const [path, json] of [
          [
            "/v1/messaging/registrations",
            { variant: "sms", phoneNumber: to, deviceType: "x", ...freshKeys() },
          ],
          [
            "/v1/messaging/registrations",
            { variant: "server_otp", phoneNumber: to, deviceType: "\u0000", ...freshKeys() },
          ],
          [
            "/v1/messaging/registrations",
            { variant: "handset_otp", phoneNumber: to, deviceType: "x", code: "12", ...freshKeys() },
          ],
          [
            "/v1/messaging/registrations",
            { variant: "server_otp", phoneNumber: to, deviceType: "x", replaces: "mh_x", ...freshKeys() },
          ],
          ["/v1/messaging/registrations/reg_AAAAAAAAAAAAAAAA/confirm", { phoneNumber: to, code: "12345678" }],
          ["/v1/messaging/registrations/nope/confirm", { phoneNumber: to, code: "12345678" }],
          ["/v1/admin/senders", { name: "" }],
        ] as const) {
          const answer = await t.admin.post(path, json).catch((e: { status: number; code: string }) => e);
          expect(
            (answer as { status: number }).status,
            `${path} ${JSON.stringify(json)}`,
          ).toBeGreaterThanOrEqual(400);
          expect((answer as { status: number }).status).toBeLessThan(500);
        }
        expect(await state()).toEqual(before);
      });
    });
  });
});
