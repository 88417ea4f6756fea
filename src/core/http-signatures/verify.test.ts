/** An Ed25519 profile (the shape messaging uses) and an hmac-sha256 one under attack: each tampering has its code. */
import { describe, expect, it } from "vitest";
import { toBase64url } from "../codec/base64url.ts";
import { utf8 } from "../codec/bytes.ts";
import { generateSigningKey } from "../crypto/ed25519.ts";
import { hmacSha256 } from "../crypto/hash.ts";
import { randomBytes } from "../crypto/random.ts";
import {
  defineSignatureProfile,
  ed25519SigningKey,
  ed25519VerificationKey,
  hmacSha256Key,
  nonceRetentionUntil,
  parseSignature,
  requestViewOfUrl,
  type SignatureProfile,
  signatureBase,
  signRequest,
  type VerificationKey,
  verifySignature,
} from "./index.ts";
import { base64Encode } from "./structured-fields.ts";

const ED = defineSignatureProfile({
  label: "hs",
  alg: "ed25519",
  tag: "handsafe/v1/test",
  requiredComponents: ["@method", "@target-uri"],
});
const HMAC = defineSignatureProfile({ ...ED, alg: "hmac-sha256", tag: "handsafe/v1/test/hmac" });

const PAIR = generateSigningKey();
const PUBLIC = ed25519VerificationKey(PAIR.publicKey);
const SECRET = randomBytes(32);
const NOW = 1_800_000_000_000;
const URL_ = "https://msg.example/v1/messaging/inbox/msg_1/ack?x=1";

interface Req {
  method: string;
  url: string;
  body: Uint8Array | undefined;
  headers: Record<string, string>;
}

function signed(
  opts: {
    profile?: SignatureProfile;
    method?: string;
    body?: Uint8Array;
    created?: number;
    seed?: Uint8Array;
  } = {},
): Req {
  const profile = opts.profile ?? ED;
  const method = opts.method ?? "POST";
  const body = opts.body ?? utf8('{"ok":true}');
  const headers: Record<string, string> = { "content-type": "application/json" };
  const key = profile.alg === "ed25519" ? ed25519SigningKey(opts.seed ?? PAIR.seed) : hmacSha256Key(SECRET);
  const sig = signRequest(
    profile,
    key,
    { method, url: URL_, headers, body },
    {
      keyId: "mh_AAAAAAAAAAAAAAAA",
      created: opts.created ?? NOW / 1000,
    },
  );
  return { method, url: URL_, body, headers: { ...headers, ...sig } };
}

function verify(req: Req, key: VerificationKey = PUBLIC, profile: SignatureProfile = ED, now = NOW) {
  const parsed = parseSignature(profile, req.headers);
  verifySignature(profile, parsed, requestViewOfUrl(req.method, req.url, req.headers), key, {
    nowMs: now,
    body: req.body,
  });
  return parsed;
}

const code = (c: string) => expect.objectContaining({ code: c });
const withHeaders = (req: Req, h: Record<string, string>): Req => ({
  ...req,
  headers: { ...req.headers, ...h },
});

describe("a good Ed25519 signature", () => {
  it("covers the profile's components plus content-digest, and verifies", () => {
    const req = signed();
    expect(req.headers["signature-input"]).toMatch(
      /^hs=\("@method" "@target-uri" "content-digest"\);created=1800000000;keyid="mh_AAAAAAAAAAAAAAAA";nonce="[A-Za-z0-9_-]{22}";alg="ed25519";tag="handsafe\/v1\/test"$/,
    );
    expect(req.headers["signature"]).toMatch(/^hs=:[A-Za-z0-9+/]{86}==:$/);
    const parsed = verify(req);
    expect(parsed).toMatchObject({ keyId: "mh_AAAAAAAAAAAAAAAA", alg: "ed25519", created: NOW / 1000 });
    expect(nonceRetentionUntil(ED, parsed.created)).toBe(NOW + 301_000);
  });
  it("without a body covers no content-digest", () => {
    const req = signed({ method: "GET", body: new Uint8Array(0) });
    expect(req.headers["content-digest"]).toBeUndefined();
    expect(() => verify(req)).not.toThrow();
  });
});

describe("attack: wrong key", () => {
  it("a signature by another handset's key", () =>
    expect(() => verify(signed({ seed: generateSigningKey().seed }))).toThrow(code("signature.invalid")));
  it("checked against another handset's public key", () =>
    expect(() => verify(signed(), ed25519VerificationKey(generateSigningKey().publicKey))).toThrow(
      code("signature.invalid"),
    ));
});

describe("attack: tampered component", () => {
  it("another method", () =>
    expect(() => verify({ ...signed(), method: "PUT" })).toThrow(code("signature.invalid")));
  for (const url of [
    "https://msg.example/v1/messaging/inbox/msg_2/ack?x=1",
    "https://msg.example/v1/messaging/inbox/msg_1/ack?x=2",
    "https://evil.example/v1/messaging/inbox/msg_1/ack?x=1",
    "http://msg.example/v1/messaging/inbox/msg_1/ack?x=1",
  ])
    it(`another target URI: ${url}`, () =>
      expect(() => verify({ ...signed(), url })).toThrow(code("signature.invalid")));
  it("another body", () =>
    expect(() => verify({ ...signed(), body: utf8('{"ok":false}') })).toThrow(
      code("signature.digest_mismatch"),
    ));
  it("another body with its own digest", () => {
    const other = signed({ body: utf8('{"ok":false}') });
    expect(() =>
      verify(
        withHeaders(
          { ...signed(), body: other.body },
          { "content-digest": other.headers["content-digest"]! },
        ),
      ),
    ).toThrow(code("signature.invalid"));
  });
  it("a body the signature does not cover", () =>
    expect(() => verify({ ...signed({ method: "GET", body: new Uint8Array(0) }), body: utf8("{}") })).toThrow(
      code("signature.incomplete"),
    ));
  it("a component dropped from the list", () => {
    const req = signed();
    const input = req.headers["signature-input"]!.replace('"@target-uri" ', "");
    expect(() => verify(withHeaders(req, { "signature-input": input }))).toThrow(
      code("signature.incomplete"),
    );
  });
  it("a flipped signature bit", () => {
    const req = signed();
    const sig = Buffer.from(req.headers["signature"]!.slice(4, -1), "base64");
    sig[10]! ^= 1;
    expect(() => verify(withHeaders(req, { signature: `hs=:${sig.toString("base64")}:` }))).toThrow(
      code("signature.invalid"),
    );
  });
});

describe("attack: wrong algorithm", () => {
  it('alg="hmac-sha256" on the Ed25519 profile', () => {
    const req = signed();
    const input = req.headers["signature-input"]!.replace('alg="ed25519"', 'alg="hmac-sha256"');
    expect(() => verify(withHeaders(req, { "signature-input": input }))).toThrow(
      code("signature.unsupported_algorithm"),
    );
  });
  it("an HMAC keyed with the (public) Ed25519 key: refused by alg, and by length when labelled ed25519", () => {
    const req = signed();
    for (const alg of ["hmac-sha256", "ed25519"]) {
      const input = req.headers["signature-input"]!.replace('alg="ed25519"', `alg="${alg}"`);
      const view = requestViewOfUrl(req.method, req.url, { ...req.headers, "signature-input": input });
      const parsed = parseSignature(ED, req.headers);
      const { base } = signatureBase(
        view,
        parsed.components,
        parsed.params.map(([k, v]) => [k, k === "alg" ? alg : v]),
      );
      const forged = `hs=:${base64Encode(hmacSha256(PAIR.publicKey, utf8(base)))}:`;
      expect(() => verify(withHeaders(req, { "signature-input": input, signature: forged }))).toThrow(
        code(alg === "ed25519" ? "signature.malformed" : "signature.unsupported_algorithm"),
      );
    }
  });
  it("no alg at all", () => {
    const req = signed();
    const input = req.headers["signature-input"]!.replace(';alg="ed25519"', "");
    expect(() => verify(withHeaders(req, { "signature-input": input }))).toThrow(
      code("signature.unsupported_algorithm"),
    );
  });
  it("an hmac-sha256 key cannot verify or sign for an Ed25519 profile (a programming error)", () => {
    expect(() => verify(signed(), hmacSha256Key(SECRET))).toThrow(code("internal"));
    expect(() =>
      signRequest(ED, hmacSha256Key(SECRET), { method: "GET", url: URL_ }, { keyId: "k" }),
    ).toThrow(code("internal"));
  });
});

describe("attack: another profile's signature", () => {
  it("an hmac-sha256 signature of another tag", () => {
    const req = signed({ profile: HMAC });
    expect(() => verify(req, hmacSha256Key(SECRET), HMAC)).not.toThrow();
    const input = req.headers["signature-input"]!.replace("handsafe/v1/test/hmac", "handsafe/v1/other");
    expect(() => verify(withHeaders(req, { "signature-input": input }), hmacSha256Key(SECRET), HMAC)).toThrow(
      code("signature.malformed"),
    );
  });
  it("an hmac-sha256 signature under the wrong secret", () =>
    expect(() => verify(signed({ profile: HMAC }), hmacSha256Key(randomBytes(32)), HMAC)).toThrow(
      code("signature.invalid"),
    ));
});

describe("attack: stale, expired or malformed", () => {
  it("created more than the window away", () => {
    expect(() => verify(signed({ created: NOW / 1000 - 301 }))).toThrow(code("signature.stale"));
    expect(() => verify(signed({ created: NOW / 1000 + 301 }))).toThrow(code("signature.stale"));
    expect(() => verify(signed({ created: NOW / 1000 - 300 }))).not.toThrow();
  });
  it("an expired signature", () => {
    const req = signRequest(
      ED,
      ed25519SigningKey(PAIR.seed),
      { method: "GET", url: URL_ },
      {
        keyId: "k",
        created: NOW / 1000 - 10,
        expires: NOW / 1000 - 1,
      },
    );
    expect(() => verify({ method: "GET", url: URL_, body: undefined, headers: req })).toThrow(
      code("signature.stale"),
    );
  });
  it("a short signature, a short nonce, missing headers", () => {
    const req = signed();
    expect(() => verify(withHeaders(req, { signature: `hs=:${base64Encode(randomBytes(32))}:` }))).toThrow(
      code("signature.malformed"),
    );
    const input = req.headers["signature-input"]!.replace(
      /nonce="[^"]+"/,
      `nonce="${toBase64url(randomBytes(6))}"`,
    );
    expect(() => verify(withHeaders(req, { "signature-input": input }))).toThrow(code("signature.malformed"));
    const { signature: _s, ...noSig } = req.headers;
    expect(() => verify({ ...req, headers: noSig })).toThrow(code("signature.missing"));
  });
});

describe("keys and profiles", () => {
  it("keys never serialise their secret", () => {
    expect(JSON.stringify({ k: hmacSha256Key(SECRET), s: ed25519SigningKey(PAIR.seed) })).toBe(
      '{"k":"[redacted]","s":"[redacted]"}',
    );
  });
  it("refuses short HMAC secrets and wrong-length Ed25519 keys", () => {
    expect(() => hmacSha256Key(randomBytes(15))).toThrow(code("crypto.invalid_key"));
    expect(() => ed25519SigningKey(randomBytes(31))).toThrow(code("crypto.invalid_key"));
    expect(() => ed25519VerificationKey(randomBytes(33))).toThrow(code("crypto.invalid_key"));
  });
  it("refuses a profile that lists content-digest, repeats a component, or has a bad label", () => {
    const base = { label: "hs", alg: "ed25519", tag: "t", requiredComponents: ["@method"] } as const;
    expect(() => defineSignatureProfile({ ...base, requiredComponents: ["content-digest"] })).toThrow(
      code("signature.invalid_profile"),
    );
    expect(() => defineSignatureProfile({ ...base, requiredComponents: ["@method", "@method"] })).toThrow(
      code("signature.invalid_profile"),
    );
    expect(() => defineSignatureProfile({ ...base, label: "Hs" })).toThrow(code("signature.invalid_profile"));
    expect(() => defineSignatureProfile({ ...base, windowSeconds: 0 })).toThrow(
      code("signature.invalid_profile"),
    );
  });
});
