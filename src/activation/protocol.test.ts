import { describe, expect, it } from "vitest";
import { toBase64url } from "../core/codec/base64url.ts";
import { cpaceFinish, cpaceInitiate, cpaceRespond } from "../core/crypto/cpace.ts";
import { generateSigningKey } from "../core/crypto/ed25519.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import {
  type ActivationGrant,
  type ActivationState,
  checkExchangeConfirm,
  checkExchangeStart,
  confirmationTag,
  cpaceParameters,
  derivePrs,
  deriveSessionKeys,
  exchangePath,
  keyFingerprint,
  openCommand,
  parseSignedGrant,
  pullProof,
  sealCommand,
  serviceKeyId,
  signGrant,
  verifyGrant,
  verifyPullAuth,
} from "./protocol.ts";

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
    return undefined;
  } catch (e) {
    return e instanceof HandsafeError ? e.code : `not a HandsafeError: ${String(e)}`;
  }
};

function makeGrant(over: Partial<ActivationGrant> = {}): ActivationGrant {
  return {
    v: 1,
    activationId: toBase64url(randomBytes(16)),
    serviceUid: "mail",
    handsetId: "hs_AAAAAAAAAAAAAAAAAAAAAA",
    secret: toBase64url(randomBytes(32)),
    exchangeUrl: exchangePath("mail"),
    expiresAt: 2_000_000,
    ...over,
  };
}

describe("the grant", () => {
  const key = generateSigningKey();
  const pinned = { serviceUid: "mail", keyId: serviceKeyId(key.publicKey), publicKey: key.publicKey };
  const expect_ = { handsetId: "hs_AAAAAAAAAAAAAAAAAAAAAA", now: 1_000_000 };

  it("verifies when signed by the pinned key, addressed here and fresh", () => {
    const grant = makeGrant();
    expect(verifyGrant(signGrant(grant, key.seed, pinned.keyId), pinned, expect_)).toEqual(grant);
  });

  it("refuses each way it can be wrong, with its own code", () => {
    const signed = signGrant(makeGrant(), key.seed, pinned.keyId);
    const other = generateSigningKey();
    expect(codeOf(() => verifyGrant(signGrant(makeGrant(), other.seed, pinned.keyId), pinned, expect_))).toBe(
      "activation.bad_signature",
    );
    expect(codeOf(() => verifyGrant({ ...signed, keyId: "svk_other" }, pinned, expect_))).toBe(
      "activation.bad_signature",
    );
    expect(
      codeOf(() => verifyGrant(signed, pinned, { ...expect_, handsetId: "hs_BBBBBBBBBBBBBBBBBBBBBB" })),
    ).toBe("activation.wrong_handset");
    expect(codeOf(() => verifyGrant(signed, pinned, { ...expect_, now: 2_000_000 }))).toBe(
      "activation.secret_expired",
    );
    expect(
      codeOf(() =>
        verifyGrant(signGrant(makeGrant({ serviceUid: "bank" }), key.seed, pinned.keyId), pinned, expect_),
      ),
    ).toBe("activation.wrong_service");
    expect(
      codeOf(() =>
        verifyGrant(
          signGrant(makeGrant({ exchangeUrl: "https://evil/" }), key.seed, pinned.keyId),
          pinned,
          expect_,
        ),
      ),
    ).toBe("activation.bad_grant");
  });

  it("rejects malformed grants before looking at signatures", () => {
    const good = signGrant(makeGrant(), key.seed, pinned.keyId);
    for (const bad of [
      null,
      [],
      "x",
      { ...good, grant: { ...good.grant, v: 2 } },
      { ...good, grant: { ...good.grant, extra: 1 } },
      { ...good, grant: { ...good.grant, secret: "short" } },
      { ...good, grant: { ...good.grant, expiresAt: 1.5 } },
      { grant: good.grant, keyId: good.keyId },
    ])
      expect(codeOf(() => parseSignedGrant(bad))).toMatch(
        /^(activation\.bad_grant|request\.invalid_(encoding|length))$/,
      );
  });
});

describe("the key exchange and key schedule", () => {
  it("both sides derive the same service key and their tags cross-check", () => {
    const grant = makeGrant();
    const secret = Buffer.from(grant.secret, "base64url");
    const p = cpaceParameters(derivePrs(secret), grant.activationId, "mail", grant.handsetId);
    const a = cpaceInitiate({ prs: p.prs, ci: p.ci, sid: p.sid, ad: p.adA });
    const b = cpaceRespond({ prs: p.prs, ci: p.ci, sid: p.sid, ad: p.adB }, a.message, p.adA);
    const ka = deriveSessionKeys(cpaceFinish(a.state, b.message, p.adB), p.sid);
    const kb = deriveSessionKeys(b.isk, p.sid);
    expect(ka.serviceKey).toEqual(kb.serviceKey);
    expect(keyFingerprint(ka.serviceKey)).toMatch(/^([0-9a-f]{4}:){4}[0-9a-f]{4}$/);
    expect(confirmationTag(ka.confirmResponder, a.message, b.message)).toEqual(
      confirmationTag(kb.confirmResponder, a.message, b.message),
    );
    expect(confirmationTag(ka.confirmInitiator, a.message, b.message)).not.toEqual(
      confirmationTag(ka.confirmResponder, a.message, b.message),
    );
  });

  it("the channel binds service and handset: another handset id gives another key", () => {
    const grant = makeGrant();
    const prs = derivePrs(Buffer.from(grant.secret, "base64url"));
    const p1 = cpaceParameters(prs, grant.activationId, "mail", grant.handsetId);
    const p2 = cpaceParameters(prs, grant.activationId, "mail", "hs_BBBBBBBBBBBBBBBBBBBBBB");
    const a = cpaceInitiate({ prs, ci: p1.ci, sid: p1.sid, ad: p1.adA }, new Uint8Array(32).fill(7));
    const b = cpaceRespond({ prs, ci: p2.ci, sid: p2.sid, ad: p2.adB }, a.message, p1.adA);
    expect(cpaceFinish(a.state, b.message, p1.adB)).not.toEqual(b.isk);
  });
});

describe("the server's activation state machine", () => {
  const now = 1000;
  const cases: Array<[ActivationState, number, string | undefined, string | undefined]> = [
    // state, expiresAt, start → , confirm →
    ["issued", 2000, undefined, "activation.bad_state"],
    ["issued", 500, "activation.secret_expired", "activation.bad_state"],
    ["pending", 2000, "activation.bad_state", "activation.bad_state"],
    ["exchanging", 2000, "activation.exchange_in_progress", undefined],
    ["exchanging", 500, "activation.exchange_in_progress", "activation.secret_expired"],
    ["active", 2000, "activation.secret_used", "activation.secret_used"],
    ["failed", 2000, "activation.secret_used", "activation.secret_used"],
    ["expired", 2000, "activation.secret_expired", "activation.secret_used"],
  ];
  it.each(cases)("%s (expires %d): start → %s, confirm → %s", (state, expiresAt, start, confirm) => {
    expect(codeOf(() => checkExchangeStart({ state, expiresAt }, now))).toBe(start);
    expect(codeOf(() => checkExchangeConfirm({ state, expiresAt }, now))).toBe(confirm);
  });
  it("an unknown activation is refused on both steps", () => {
    expect(codeOf(() => checkExchangeStart(undefined, now))).toBe("activation.unknown");
    expect(codeOf(() => checkExchangeConfirm(undefined, now))).toBe("activation.unknown");
  });
});

describe("service commands", () => {
  const key = randomBytes(32);
  const base = {
    v: 1 as const,
    commandId: "cmd_1",
    serviceUid: "mail",
    handsetId: "hs_A",
    name: "sync",
    args: { full: true },
    seq: 3,
    issuedAt: 1,
  };
  const expect_ = { serviceUid: "mail", handsetId: "hs_A", lastSeq: 2 };

  it("opens under the right key, refuses tampering, misaddressing and replay", () => {
    const sealed = sealCommand(key, base);
    expect(openCommand(key, sealed, expect_)).toEqual(base);
    expect(codeOf(() => openCommand(randomBytes(32), sealed, expect_))).toBe("command.bad_mac");
    expect(
      codeOf(() => openCommand(key, { ...sealed, command: { ...base, args: { full: false } } }, expect_)),
    ).toBe("command.bad_mac");
    expect(codeOf(() => openCommand(key, sealCommand(key, { ...base, handsetId: "hs_B" }), expect_))).toBe(
      "command.misaddressed",
    );
    expect(codeOf(() => openCommand(key, sealed, { ...expect_, lastSeq: 3 }))).toBe("command.replayed");
  });

  it("pull proofs: right key and fresh only", () => {
    const req = { serviceUid: "mail", handsetId: "hs_A", afterSeq: 0, timestamp: 10_000_000 };
    const proof = pullProof(key, req);
    expect(() => verifyPullAuth(key, { ...req, proof, now: req.timestamp + 1000 })).not.toThrow();
    expect(codeOf(() => verifyPullAuth(randomBytes(32), { ...req, proof, now: req.timestamp }))).toBe(
      "command.bad_proof",
    );
    expect(codeOf(() => verifyPullAuth(key, { ...req, afterSeq: 1, proof, now: req.timestamp }))).toBe(
      "command.bad_proof",
    );
    expect(codeOf(() => verifyPullAuth(key, { ...req, proof, now: req.timestamp + 6 * 60_000 }))).toBe(
      "command.stale_proof",
    );
  });
});
