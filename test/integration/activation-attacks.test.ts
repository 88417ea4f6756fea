/**
 * Activation under attack, on both databases: every bad input answers a stable code and changes
 * no state — no key stored, no secret left usable for the attacker.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  activate,
  handleActivationResponse,
  login,
  pinService,
  pullCommands,
  revoke,
  signInProof,
} from "../../src/activation/handset.ts";
import {
  ACTIVATION_CONTENT_TYPE,
  confirmationTag,
  cpaceParameters,
  derivePrs,
  deriveSessionKeys,
  type SignedGrant,
  signGrant,
  verifyGrant,
} from "../../src/activation/protocol.ts";
import { fromBase64url, toBase64url } from "../../src/core/codec/base64url.ts";
import { cpaceFinish, cpaceInitiate } from "../../src/core/crypto/cpace.ts";
import { generateSigningKey } from "../../src/core/crypto/ed25519.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import { HandsafeError } from "../../src/core/errors.ts";
import type { Handset } from "../../src/handset/handset.ts";
import { databaseKinds } from "../helpers/databases.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

const PASSWORD = "correct horse battery";

async function expectCode(p: Promise<unknown>, code: string, status?: number): Promise<HandsafeError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, `expected ${code}`).toBeInstanceOf(HandsafeError);
  expect((e as HandsafeError).code).toBe(code);
  if (status !== undefined) expect((e as HandsafeError).status).toBe(status);
  return e as HandsafeError;
}

describe.each(databaseKinds)("activation attacks on %s", (kind) => {
  let t: TestServer;
  let now = Date.now();
  let email = "";
  let seq = 0;

  beforeAll(async () => {
    t = await startTestServer(kind, {}, { clock: () => now });
    await t.admin.post("/v1/admin/services", { uid: "mail", name: "Mail" });
    await t.admin.post("/v1/admin/services", { uid: "bank", name: "Bank" });
  });
  afterAll(async () => t?.close());

  /** A fresh user on a fresh handset, signed in. */
  async function enrolled(): Promise<{ handset: Handset; session: Awaited<ReturnType<typeof login>> }> {
    email = `user${++seq}@example.org`;
    await t.admin.post("/v1/admin/users", { email, password: PASSWORD });
    const handset = await t.newHandset();
    return { handset, session: await login(handset, { email, password: PASSWORD }) };
  }

  async function grantFor(handset: Handset, token: string, serviceUid = "mail"): Promise<SignedGrant> {
    const { body } = await handset.http.post<SignedGrant>(
      "/v1/activation/grants",
      { serviceUid },
      { headers: { authorization: `Bearer ${token}` } },
    );
    return body;
  }

  async function activeKeys(handset: Handset): Promise<string[]> {
    const { body } = await t.admin.get<Array<{ serviceUid: string; state: string }>>(
      `/v1/handsets/${handset.id}/keys`,
    );
    return body.filter((k) => k.state === "active").map((k) => k.serviceUid);
  }

  /** The handset's first CPace message for a grant, with the secret it was given (or another). */
  function initiate(grant: SignedGrant["grant"], secret = fromBase64url(grant.secret)) {
    const params = cpaceParameters(derivePrs(secret), grant.activationId, grant.serviceUid, grant.handsetId);
    const { state, message } = cpaceInitiate({
      prs: params.prs,
      ci: params.ci,
      sid: params.sid,
      ad: params.adA,
    });
    return { params, state, ya: message };
  }

  describe("the attacker tries passwords", () => {
    it("wrong password and unknown account answer alike, with no session", async () => {
      const { handset } = await enrolled();
      await expectCode(
        login(handset, { email, password: "wrong password!" }),
        "auth.invalid_credentials",
        401,
      );
      await expectCode(
        login(handset, { email: "nobody@example.org", password: PASSWORD }),
        "auth.invalid_credentials",
        401,
      );
    });

    it("is rate-limited per account and audited", async () => {
      const { handset } = await enrolled();
      const results: string[] = [];
      for (let i = 0; i < 12; i++) {
        const e = await login(handset, { email, password: `wrong-${i}-password` }).catch(
          (err: HandsafeError) => err,
        );
        results.push((e as HandsafeError).code);
      }
      // Ten sign-ins a minute per address and account; the successful one in enrolled() counted too.
      expect(results.slice(0, 9).every((c) => c === "auth.invalid_credentials")).toBe(true);
      expect(results.slice(9)).toEqual([
        "request.rate_limited",
        "request.rate_limited",
        "request.rate_limited",
      ]);
      const { body } = await t.admin.get<{ records: Array<{ action: string; outcome: string }> }>(
        "/v1/admin/audit?limit=1000",
      );
      expect(body.records.some((r) => r.action === "auth.rate_limited" && r.outcome === "deny")).toBe(true);
    });
  });

  describe("the attacker has a password but not the handset's identity key", () => {
    it("a sign-in with someone else's public key, a bad or a stale proof is refused", async () => {
      const { handset } = await enrolled();
      const other = await t.newHandset();
      const good = await signInProof(handset, email);
      const login = (fields: Record<string, unknown>) =>
        handset.http.post("/v1/activation/login", { email, password: PASSWORD, ...good, ...fields });
      // The victim's public key with a proof the attacker made with their own key.
      const forged = await signInProof(other, email);
      await expectCode(login({ identityKey: good.identityKey, proof: forged.proof }), "auth.bad_proof", 401);
      await expectCode(login({ proof: toBase64url(randomBytes(64)) }), "auth.bad_proof", 401);
      const stale = await signInProof(handset, email, now - 10 * 60_000);
      await expectCode(login(stale), "auth.stale_proof", 401);
      expect((await login({})).status).toBe(200);
    });
  });

  describe("the attacker names things that do not exist", () => {
    it("an unknown service is refused at grant and at exchange", async () => {
      const { handset, session } = await enrolled();
      await expectCode(grantFor(handset, session.token, "nope"), "activation.unknown_service", 404);
      await expectCode(
        handset.http.post("/v1/activation/exchange/nope/start", {
          activationId: toBase64url(randomBytes(16)),
          ya: toBase64url(randomBytes(32)),
        }),
        "activation.unknown_service",
        404,
      );
    });

    it("pulling commands for a service the handset does not have looks like a bad proof", async () => {
      const { handset } = await enrolled();
      const query = new URLSearchParams({
        handsetId: handset.id,
        after: "0",
        ts: String(now),
        proof: toBase64url(randomBytes(32)),
      });
      await expectCode(handset.http.get(`/v1/activation/commands/mail?${query}`), "command.bad_proof", 401);
    });

    it("an unknown activation id is refused", async () => {
      const { handset } = await enrolled();
      await expectCode(
        handset.http.post("/v1/activation/exchange/mail/start", {
          activationId: toBase64url(randomBytes(16)),
          ya: toBase64url(randomBytes(32)),
        }),
        "activation.unknown",
        404,
      );
    });
  });

  describe("the attacker uses an old, used or guessed secret", () => {
    it("an expired secret cannot start an exchange and leaves no key", async () => {
      const { handset, session } = await enrolled();
      const { grant } = await grantFor(handset, session.token);
      now += 301_000;
      try {
        await expectCode(
          handset.http.post(`${grant.exchangeUrl}/start`, {
            activationId: grant.activationId,
            ya: toBase64url(initiate(grant).ya),
          }),
          "activation.secret_expired",
          410,
        );
      } finally {
        now -= 301_000;
      }
      expect(await activeKeys(handset)).toEqual([]);
    });

    it("the handset refuses an expired grant before any exchange", async () => {
      const { handset, session } = await enrolled();
      const signed = await grantFor(handset, session.token);
      const pinned = await pinService(handset, "mail");
      expect(() =>
        verifyGrant(signed, pinned, { handsetId: handset.id, now: signed.grant.expiresAt + 1 }),
      ).toThrow(/expired/);
    });

    it("a used secret cannot be used again", async () => {
      const { handset, session } = await enrolled();
      const signed = await grantFor(handset, session.token);
      await pinService(handset, "mail");
      await handleActivationResponse(handset, ACTIVATION_CONTENT_TYPE, JSON.stringify(signed));
      await expectCode(
        handset.http.post(`${signed.grant.exchangeUrl}/start`, {
          activationId: signed.grant.activationId,
          ya: toBase64url(initiate(signed.grant).ya),
        }),
        "activation.secret_used",
        410,
      );
      expect(await activeKeys(handset)).toEqual(["mail"]);
    });

    it("a guessed secret fails key confirmation, burns the activation and stores no key", async () => {
      const { handset, session } = await enrolled();
      const { grant } = await grantFor(handset, session.token);
      const guess = initiate(grant, randomBytes(32));
      const { body } = await handset.http.post<{ yb: string; confirm: string }>(
        `${grant.exchangeUrl}/start`,
        {
          activationId: grant.activationId,
          ya: toBase64url(guess.ya),
        },
      );
      const yb = fromBase64url(body.yb);
      const keys = deriveSessionKeys(cpaceFinish(guess.state, yb, guess.params.adB), guess.params.sid);
      // The service's proof does not verify under the guessed key...
      expect(toBase64url(confirmationTag(keys.confirmResponder, guess.ya, yb))).not.toBe(body.confirm);
      // ...and the attacker's own proof is refused.
      await expectCode(
        handset.http.post(`${grant.exchangeUrl}/confirm`, {
          activationId: grant.activationId,
          confirm: toBase64url(confirmationTag(keys.confirmInitiator, guess.ya, yb)),
        }),
        "activation.confirmation_failed",
        403,
      );
      // One try per secret: the genuine holder must ask again.
      await expectCode(
        handset.http.post(`${grant.exchangeUrl}/start`, {
          activationId: grant.activationId,
          ya: toBase64url(initiate(grant).ya),
        }),
        "activation.secret_used",
      );
      expect(await activeKeys(handset)).toEqual([]);
    });
  });

  describe("the attacker forges the service's signature", () => {
    it("a tampered grant is refused before any exchange", async () => {
      const { handset, session } = await enrolled();
      const signed = await grantFor(handset, session.token);
      await pinService(handset, "mail");
      const tampered = { ...signed, grant: { ...signed.grant, exchangeUrl: "/v1/activation/exchange/bank" } };
      await expectCode(
        handleActivationResponse(handset, ACTIVATION_CONTENT_TYPE, JSON.stringify(tampered)),
        "activation.bad_signature",
      );
      const swapped = { ...signed, grant: { ...signed.grant, secret: toBase64url(randomBytes(32)) } };
      await expectCode(
        handleActivationResponse(handset, ACTIVATION_CONTENT_TYPE, JSON.stringify(swapped)),
        "activation.bad_signature",
      );
      // The genuine grant still works: nothing was spent by the refused ones.
      await handleActivationResponse(handset, ACTIVATION_CONTENT_TYPE, JSON.stringify(signed));
      expect(await activeKeys(handset)).toEqual(["mail"]);
    });

    it("a grant signed by any other key is refused, even with a matching key id", async () => {
      const { handset, session } = await enrolled();
      const signed = await grantFor(handset, session.token);
      await pinService(handset, "mail");
      const forger = generateSigningKey();
      const forged = signGrant(signed.grant, forger.seed, signed.keyId);
      await expectCode(
        handleActivationResponse(handset, ACTIVATION_CONTENT_TYPE, JSON.stringify(forged)),
        "activation.bad_signature",
      );
      await expectCode(
        handleActivationResponse(handset, "application/json", JSON.stringify(signed)),
        "activation.bad_content_type",
      );
      await expectCode(
        handleActivationResponse(handset, ACTIVATION_CONTENT_TYPE, "{not json"),
        "activation.bad_grant",
      );
    });

    it("a grant for another handset is refused", async () => {
      const a = await enrolled();
      const b = await enrolled();
      const signed = await grantFor(a.handset, a.session.token);
      await pinService(b.handset, "mail");
      await expectCode(
        handleActivationResponse(b.handset, ACTIVATION_CONTENT_TYPE, JSON.stringify(signed)),
        "activation.wrong_handset",
      );
    });
  });

  describe("the attacker replays or reorders key-exchange messages", () => {
    it("confirm before start, start twice, confirm twice", async () => {
      const { handset, session } = await enrolled();
      const { grant } = await grantFor(handset, session.token);
      const mine = initiate(grant);
      await expectCode(
        handset.http.post(`${grant.exchangeUrl}/confirm`, {
          activationId: grant.activationId,
          confirm: toBase64url(randomBytes(32)),
        }),
        "activation.bad_state",
        409,
      );
      const { body } = await handset.http.post<{ yb: string; confirm: string }>(
        `${grant.exchangeUrl}/start`,
        {
          activationId: grant.activationId,
          ya: toBase64url(mine.ya),
        },
      );
      await expectCode(
        handset.http.post(`${grant.exchangeUrl}/start`, {
          activationId: grant.activationId,
          ya: toBase64url(mine.ya),
        }),
        "activation.exchange_in_progress",
        409,
      );
      const yb = fromBase64url(body.yb);
      const keys = deriveSessionKeys(cpaceFinish(mine.state, yb, mine.params.adB), mine.params.sid);
      const confirm = toBase64url(confirmationTag(keys.confirmInitiator, mine.ya, yb));
      await handset.http.post(`${grant.exchangeUrl}/confirm`, { activationId: grant.activationId, confirm });
      await expectCode(
        handset.http.post(`${grant.exchangeUrl}/confirm`, { activationId: grant.activationId, confirm }),
        "activation.secret_used",
        410,
      );
      expect(await activeKeys(handset)).toEqual(["mail"]);
    });

    it("two concurrent exchanges for one secret: exactly one proceeds", async () => {
      const { handset, session } = await enrolled();
      const { grant } = await grantFor(handset, session.token);
      const attempts = await Promise.allSettled(
        [0, 1, 2, 3].map(() =>
          handset.http.post(`${grant.exchangeUrl}/start`, {
            activationId: grant.activationId,
            ya: toBase64url(initiate(grant).ya),
          }),
        ),
      );
      expect(attempts.filter((a) => a.status === "fulfilled")).toHaveLength(1);
      for (const a of attempts)
        if (a.status === "rejected")
          expect((a.reason as HandsafeError).code).toMatch(
            /^activation\.(exchange_in_progress|secret_used)$/,
          );
    });

    it("an activation id of another service is no activation there", async () => {
      const { handset, session } = await enrolled();
      const { grant } = await grantFor(handset, session.token);
      await expectCode(
        handset.http.post("/v1/activation/exchange/bank/start", {
          activationId: grant.activationId,
          ya: toBase64url(initiate(grant).ya),
        }),
        "activation.unknown",
        404,
      );
    });

    it("a low-order point instead of Ya fails the exchange and burns the secret", async () => {
      const { handset, session } = await enrolled();
      const { grant } = await grantFor(handset, session.token);
      await expectCode(
        handset.http.post(`${grant.exchangeUrl}/start`, {
          activationId: grant.activationId,
          ya: toBase64url(new Uint8Array(32)),
        }),
        "cpace.invalid_point",
      );
      await expectCode(
        handset.http.post(`${grant.exchangeUrl}/start`, {
          activationId: grant.activationId,
          ya: toBase64url(initiate(grant).ya),
        }),
        "activation.secret_used",
      );
    });
  });

  describe("the attacker sends malformed or oversized requests", () => {
    it("malformed JSON, wrong types, extra fields, bad base64url, oversized body", async () => {
      const client = t.anonymous();
      await expectCode(
        client.post("/v1/activation/exchange/mail/start", { activationId: 5, ya: "x" }),
        "request.invalid",
        400,
      );
      await expectCode(
        client.post("/v1/activation/exchange/mail/start", {
          activationId: toBase64url(randomBytes(16)),
          ya: toBase64url(randomBytes(32)),
          extra: 1,
        }),
        "request.invalid",
        400,
      );
      await expectCode(
        client.post("/v1/activation/exchange/mail/start", {
          activationId: toBase64url(randomBytes(15)),
          ya: toBase64url(randomBytes(32)),
        }),
        "request.invalid_length",
        400,
      );
      await expectCode(
        client.post("/v1/activation/login", {
          email: "a@b.c",
          password: "x".repeat(70_000),
          identityKey: toBase64url(randomBytes(32)),
        }),
        "request.too_large",
        413,
      );
      const res = await fetchRaw(t, "/v1/activation/login", "{not json");
      expect(res.status).toBe(400);
      expect(JSON.parse(res.body)).toEqual({
        error: { code: "request.malformed_json", message: expect.any(String) },
      });
      expect(res.body).not.toMatch(/at \w+ \(/); // no stack trace
    });
  });

  describe("a handset tries to read another handset's keys", () => {
    it("is refused and audited; its own keys it may list", async () => {
      const a = await enrolled();
      await activate(a.handset, a.session, "mail");
      const b = await enrolled();
      await expectCode(
        b.handset.http.get(`/v1/handsets/${a.handset.id}/keys`, {
          headers: { authorization: `Bearer ${b.session.token}` },
        }),
        "auth.forbidden",
        403,
      );
      await expectCode(
        b.handset.http.delete(`/v1/handsets/${a.handset.id}/keys/mail`, {
          headers: { authorization: `Bearer ${b.session.token}` },
        }),
        "auth.forbidden",
        403,
      );
      await expectCode(b.handset.http.get(`/v1/handsets/${a.handset.id}/keys`), "auth.unauthenticated", 401);
      const own = await a.handset.http.get<unknown[]>(`/v1/handsets/${a.handset.id}/keys`, {
        headers: { authorization: `Bearer ${a.session.token}` },
      });
      expect(own.body).toHaveLength(1);
      expect(JSON.stringify(own.body)).not.toMatch(/sealed|key"/);
      const { body } = await t.admin.get<{ records: Array<{ action: string; subject: string }> }>(
        "/v1/admin/audit?limit=1000",
      );
      expect(body.records.some((r) => r.action === "auth.cross_handset" && r.subject === a.handset.id)).toBe(
        true,
      );
      expect(await activeKeys(a.handset)).toEqual(["mail"]);
    });

    it("a session cannot act as admin", async () => {
      const { handset, session } = await enrolled();
      await expectCode(
        handset.http.post(
          "/v1/admin/services",
          { uid: "evil", name: "Evil" },
          { headers: { authorization: `Bearer ${session.token}` } },
        ),
        "auth.forbidden",
        403,
      );
    });
  });

  describe("lapsed state does not linger", () => {
    it("the sweeper expires lapsed grants and drops their sealed PRS", async () => {
      const { handset, session } = await enrolled();
      const { grant } = await grantFor(handset, session.token);
      now += 301_000;
      try {
        const swept = await t.server.activation.sweepExpired();
        expect(swept.activations).toBeGreaterThanOrEqual(1);
      } finally {
        now -= 301_000;
      }
      const row = await t.server.platform.db
        .selectFrom("activations")
        .select(["state", "sealed_prs"])
        .where("id", "=", grant.activationId)
        .executeTakeFirstOrThrow();
      expect(row).toEqual({ state: "expired", sealed_prs: null });
    });
  });

  describe("commands after a re-activation", () => {
    it("the handset sees the commands under its new key, not the old ones", async () => {
      const { handset, session } = await enrolled();
      await activate(handset, session, "mail");
      await t.admin.post("/v1/admin/services/mail/commands", { handsetId: handset.id, name: "old" });
      await revoke(handset, session, "mail");
      await activate(handset, session, "mail");
      await t.admin.post("/v1/admin/services/mail/commands", { handsetId: handset.id, name: "new" });
      const pulled = await pullCommands(handset, "mail");
      expect(pulled.accepted.map((c) => c.name)).toEqual(["new"]);
      expect(pulled.refused).toEqual([]);
    });

    it("a fractional number argument is a bad request, not a server error", async () => {
      const { handset, session } = await enrolled();
      await activate(handset, session, "mail");
      await expectCode(
        t.admin.post("/v1/admin/services/mail/commands", {
          handsetId: handset.id,
          name: "x",
          args: { n: 1.5 },
        }),
        "request.invalid",
        400,
      );
    });
  });

  it("the audit chain still verifies after all of it", async () => {
    const { body } = await t.admin.get<{ ok: boolean }>("/v1/admin/audit/verify");
    expect(body.ok).toBe(true);
  });
});

async function fetchRaw(
  t: TestServer,
  path: string,
  body: string,
): Promise<{ status: number; body: string }> {
  const { request } = await import("node:https");
  return new Promise((resolve, reject) => {
    const req = request(
      `${t.server.url}${path}`,
      { method: "POST", rejectUnauthorized: false, headers: { "content-type": "application/json" } },
      (res) => {
        let data = "";
        res.on("data", (c: Buffer) => {
          data += c.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: data }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}
