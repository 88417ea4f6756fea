import { describe, expect, it } from "vitest";
import { base64Url } from "../../src/core/codec/base64.ts";
import { fromHex, toHex, utf8 } from "../../src/core/codec/bytes.ts";
import { sign as ed25519Sign, generateSigningKey } from "../../src/core/crypto/ed25519.ts";
import { isHandsafeError } from "../../src/core/errors.ts";
import {
  decodeJwsUnverified,
  JWS_MAX_LENGTH,
  signCompact,
  signJws,
  verifyCompact,
  verifyJws,
} from "../../src/core/jws.ts";
import vectors from "../vectors/jws/rfc8037.json" with { type: "json" };

const b64 = (s: string) => base64Url.encode(utf8(s));

function expectInvalid(fn: () => unknown): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(isHandsafeError(caught, "token.invalid"), `expected token.invalid, got ${String(caught)}`).toBe(
    true,
  );
}

describe("RFC 8037 Appendix A", () => {
  for (const v of vectors.cases) {
    const seed = fromHex(v.privateKeyHex);
    const publicKey = fromHex(v.publicKeyHex);

    it(`${v.name}: the JWK is the hex key`, () => {
      expect(toHex(base64Url.decode(v.jwk.d)!)).toBe(v.privateKeyHex);
      expect(toHex(base64Url.decode(v.jwk.x)!)).toBe(v.publicKeyHex);
      expect(v.jws.split(".")[2]).toBe(base64Url.encode(fromHex(v.signatureHex)));
    });

    it(`${v.name}: our signer reproduces the JWS byte for byte`, () => {
      expect(signCompact(v.protectedHeader, utf8(v.payload), seed)).toBe(v.jws);
      expect(v.jws.startsWith(`${v.signingInput}.`)).toBe(true);
    });

    it(`${v.name} / A.5 validation: the RFC's JWS verifies`, () => {
      const { header, payload } = verifyCompact(v.jws, publicKey);
      expect(header).toEqual({ alg: "EdDSA" });
      expect(new TextDecoder().decode(payload)).toBe(v.payload);
    });

    it(`${v.name}: one flipped signature bit fails`, () => {
      const parts = v.jws.split(".");
      const sig = fromHex(v.signatureHex);
      sig[0]! ^= 1;
      expectInvalid(() => verifyCompact(`${parts[0]}.${parts[1]}.${base64Url.encode(sig)}`, publicKey));
    });
  }
});

describe("signJws / verifyJws", () => {
  const key = generateSigningKey();
  const signer = { kid: "tz-1", seed: key.seed };
  const keys = { "tz-1": key.publicKey };
  const payload = { aud: "zone-1", exp: 2, n: [1, 2] };

  it("round-trips a claims object with header {alg, kid}", () => {
    const jws = signJws(payload, signer);
    expect(JSON.parse(new TextDecoder().decode(base64Url.decode(jws.split(".")[0]!)!))).toEqual({
      alg: "EdDSA",
      kid: "tz-1",
    });
    const out = verifyJws(jws, keys);
    expect(out.payload).toEqual(payload);
    expect(out.header.kid).toBe("tz-1");
    expect(verifyJws(jws, new Map(Object.entries(keys))).payload).toEqual(payload);
    expect(verifyJws(jws, (kid) => (kid === "tz-1" ? key.publicKey : undefined)).payload).toEqual(payload);
    expect(verifyJws(signJws(payload, signer, { typ: "tsm+jwt" }), keys).header.typ).toBe("tsm+jwt");
    expect(decodeJwsUnverified(jws).payload).toEqual(payload);
  });
});

describe("an attacker forging or bending a token", () => {
  const key = generateSigningKey();
  const other = generateSigningKey();
  const keys = { "tz-1": key.publicKey, "tz-2": other.publicKey };
  const good = signJws({ aud: "zone-1" }, { kid: "tz-1", seed: key.seed });
  const [h, p, s] = good.split(".") as [string, string, string];

  /** A JWS with any header, correctly Ed25519-signed by tz-1 (so only the header check can refuse it). */
  const forge = (header: string, payload = p) => {
    const input = `${b64(header)}.${payload}`;
    return `${input}.${base64Url.encode(ed25519Sign(key.seed, utf8(input)))}`;
  };

  it("alg none with an empty signature", () => {
    expectInvalid(() => verifyJws(`${b64('{"alg":"none","kid":"tz-1"}')}.${p}.`, keys));
    expectInvalid(() => verifyJws(`${b64('{"alg":"none","kid":"tz-1"}')}.${p}`, keys));
    expectInvalid(() => verifyJws(forge('{"alg":"none","kid":"tz-1"}'), keys));
  });

  it("alg HS256 (key confusion) and other algs", () => {
    for (const alg of ["HS256", "ES256", "RS256", "Ed25519", "eddsa"])
      expectInvalid(() => verifyJws(forge(`{"alg":"${alg}","kid":"tz-1"}`), keys));
  });

  it("extra header members: crit, jwk, b64, duplicates, whitespace", () => {
    expectInvalid(() => verifyJws(forge('{"alg":"EdDSA","crit":["x"],"kid":"tz-1"}'), keys));
    expectInvalid(() => verifyJws(forge('{"alg":"EdDSA","jwk":{},"kid":"tz-1"}'), keys));
    expectInvalid(() => verifyJws(forge('{"alg":"EdDSA","b64":false,"kid":"tz-1"}'), keys));
    expectInvalid(() => verifyJws(forge('{"alg":"EdDSA","alg":"EdDSA","kid":"tz-1"}'), keys));
    expectInvalid(() => verifyJws(forge('{"alg":"none","alg":"EdDSA","kid":"tz-1"}'), keys));
    expectInvalid(() => verifyJws(forge('{ "alg":"EdDSA","kid":"tz-1"}'), keys));
    expectInvalid(() => verifyJws(forge('{"kid":"tz-1","alg":"EdDSA"}'), keys));
    expectInvalid(() => verifyJws(forge('["EdDSA"]'), keys));
  });

  it("a tampered payload", () => {
    expectInvalid(() => verifyJws(`${h}.${b64('{"aud":"zone-2"}')}.${s}`, keys));
  });

  it("a wrong or unknown kid", () => {
    expectInvalid(() => verifyJws(forge('{"alg":"EdDSA","kid":"tz-2"}'), keys));
    expectInvalid(() => verifyJws(forge('{"alg":"EdDSA","kid":"tz-9"}'), keys));
    expectInvalid(() => verifyJws(forge('{"alg":"EdDSA"}'), keys));
    expectInvalid(() => verifyJws(forge('{"alg":"EdDSA","kid":"__proto__"}'), keys));
    expectInvalid(() => verifyJws(good, {}));
  });

  it("bad base64url: padding, standard alphabet, junk, wrong part count", () => {
    expectInvalid(() => verifyJws(`${h}=.${p}.${s}`, keys));
    expectInvalid(() => verifyJws(`${h}.${p}.${s.replace(/-/g, "+").replace(/_/g, "/")}+`, keys));
    expectInvalid(() => verifyJws(`${h}.${p}.${s} `, keys));
    expectInvalid(() => verifyJws(`${h}.${p}`, keys));
    expectInvalid(() => verifyJws(`${h}.${p}.${s}.${s}`, keys));
    expectInvalid(() => verifyJws(`${h}.${p}.${s.slice(0, -2)}`, keys));
    expectInvalid(() => verifyJws(42 as unknown as string, keys));
  });

  it("a payload that is not a canonical JSON object", () => {
    expectInvalid(() => verifyJws(forge('{"alg":"EdDSA","kid":"tz-1"}', b64("[1]")), keys));
    expectInvalid(() => verifyJws(forge('{"alg":"EdDSA","kid":"tz-1"}', b64('{"b":1,"a":2}')), keys));
    expectInvalid(() => verifyJws(forge('{"alg":"EdDSA","kid":"tz-1"}', b64('{"a":1.5}')), keys));
  });

  it(`an oversized token (> ${JWS_MAX_LENGTH} characters)`, () => {
    const big = signJws({ pad: "x".repeat(JWS_MAX_LENGTH) }, { kid: "tz-1", seed: key.seed });
    expect(big.length).toBeGreaterThan(JWS_MAX_LENGTH);
    expectInvalid(() => verifyJws(big, keys));
  });
});
