import { _map_to_curve_elligator2_curve25519 } from "@noble/curves/ed25519.js";
import { describe, expect, it } from "vitest";
import { fromHex, toHex, utf8 } from "../../src/core/codec/bytes.ts";
import { backend as nodeBackend } from "../../src/core/crypto/backend/node.ts";
import { backend as webBackend } from "../../src/core/crypto/backend/web.ts";
import {
  CPACE_DSI,
  calculateGenerator,
  cpaceFinish,
  cpaceInitiate,
  cpaceRespond,
  decodeUCoordinate,
  deriveIsk,
  elligator2Curve25519U,
  encodeUCoordinate,
  generatorString,
  lexicographicallyLarger,
  lvCat,
  oCat,
  powPMinus3Over2,
  prependLen,
  scalarMultVfy,
  transcriptIr,
  transcriptOc,
} from "../../src/core/crypto/cpace.ts";
import vectors from "./cpace-x25519-sha512.json" with { type: "json" };

const P = (1n << 255n) - 19n;
const v = vectors.exchange;
const h = fromHex;

describe("draft-irtf-cfrg-cpace-21 Appendix A: string utilities", () => {
  it("A.1.2 prepend_len", () => {
    for (const c of vectors.prependLen) {
      const input =
        "inputRange" in c ? Uint8Array.from({ length: c.inputRange! }, (_, i) => i) : utf8(c.inputUtf8!);
      expect(toHex(prependLen(input))).toBe(c.output);
    }
  });
  it("A.1.4 lv_cat", () => {
    expect(toHex(lvCat(...vectors.lvCat.argsUtf8.map(utf8)))).toBe(vectors.lvCat.output);
  });
  it("A.3.3 lexiographically_larger and o_cat", () => {
    for (const c of vectors.lexicographicallyLarger)
      expect(lexicographicallyLarger(h(c.a), h(c.b))).toBe(c.larger);
    for (const c of vectors.oCat) expect(toHex(oCat(utf8(c.aUtf8), utf8(c.bUtf8)))).toBe(c.output);
  });
  it("A.3.5 transcript_ir and A.3.7 transcript_oc", () => {
    for (const [list, f] of [
      [vectors.transcriptIr, transcriptIr],
      [vectors.transcriptOc, transcriptOc],
    ] as const)
      for (const c of list)
        expect(toHex(f(utf8(c.yaUtf8), utf8(c.adaUtf8), utf8(c.ybUtf8), utf8(c.adbUtf8)))).toBe(c.output);
  });
});

describe("the u-only Elligator 2 map (RFC 9380 §6.7.1)", () => {
  it("agrees with noble's full map on random and edge inputs", () => {
    const inputs = [0n, 1n, 2n, P - 1n, P, P + 5n, (1n << 255n) - 1n];
    for (let i = 0; i < 200; i++) inputs.push(decodeUCoordinate(nodeBackend.randomBytes(32)));
    for (const r of inputs) {
      const { xMn, xMd } = _map_to_curve_elligator2_curve25519(r % P);
      let inv = 1n;
      for (let e = P - 2n, b = xMd % P; e > 0n; e >>= 1n, b = (b * b) % P) if (e & 1n) inv = (inv * b) % P;
      expect(elligator2Curve25519U(r)).toBe((xMn * inv) % P);
    }
  });
  it("its exponentiation chain computes z^((p-3)/2)", () => {
    const z = decodeUCoordinate(nodeBackend.randomBytes(32)) % P;
    let want = 1n;
    for (let e = (P - 3n) / 2n, b = z; e > 0n; e >>= 1n, b = (b * b) % P) if (e & 1n) want = (want * b) % P;
    expect(powPMinus3Over2(z)).toBe(want);
  });
});

for (const b of [nodeBackend, webBackend]) {
  describe(`draft-irtf-cfrg-cpace-21 B.1 CPACE-X25519-SHA512 on the ${b.name} backend`, () => {
    it("B.1.1 calculate_generator, step by step", () => {
      expect(toHex(CPACE_DSI)).toBe(toHex(utf8(v.dsiUtf8)));
      const genStr = generatorString(CPACE_DSI, h(v.prs), h(v.ci), h(v.sid), v.sInBytes);
      expect(toHex(genStr)).toBe(v.generatorString);
      expect(genStr[1 + 8 + 1 + 8]).toBe(v.zpadLength); // prepend_len of the zero padding
      const hash = b.sha512(genStr).subarray(0, 32);
      expect(toHex(hash)).toBe(v.generatorStringHash);
      expect(toHex(encodeUCoordinate(decodeUCoordinate(hash)))).toBe(v.decodedFieldElement);
      expect(toHex(calculateGenerator(h(v.prs), h(v.ci), h(v.sid), b))).toBe(v.g);
    });

    it("B.1.2-B.1.5 Ya, Yb, K, transcript_ir and ISK_IR", () => {
      expect(toHex(scalarMultVfy(h(v.ya), h(v.g), b))).toBe(v.Ya);
      expect(toHex(scalarMultVfy(h(v.yb), h(v.g), b))).toBe(v.Yb);
      expect(toHex(scalarMultVfy(h(v.ya), h(v.Yb), b))).toBe(v.K);
      expect(toHex(scalarMultVfy(h(v.yb), h(v.Ya), b))).toBe(v.K);
      const transcript = transcriptIr(h(v.Ya), h(v.ada), h(v.Yb), h(v.adb));
      expect(toHex(transcript)).toBe(v.transcriptIr);
      expect(toHex(lvCat(h(v.dsiIsk), h(v.sid), h(v.K)))).toBe(v.iskInputIr.slice(0, -v.transcriptIr.length));
      expect(toHex(deriveIsk(h(v.sid), h(v.K), transcript, b))).toBe(v.iskIr);
    });

    it("B.1.6 ISK for the parallel setting (transcript_oc)", () => {
      const transcript = transcriptOc(h(v.Ya), h(v.ada), h(v.Yb), h(v.adb));
      expect(toHex(transcript)).toBe(v.transcriptOc);
      expect(toHex(deriveIsk(h(v.sid), h(v.K), transcript, b))).toBe(v.iskOc);
    });

    it("B.1 the whole exchange through cpaceInitiate / cpaceRespond / cpaceFinish", () => {
      const common = { prs: h(v.prs), ci: h(v.ci), sid: h(v.sid) };
      const a = cpaceInitiate({ ...common, ad: h(v.ada) }, h(v.ya), b);
      expect(toHex(a.message)).toBe(v.Ya);
      const r = cpaceRespond({ ...common, ad: h(v.adb) }, a.message, h(v.ada), h(v.yb), b);
      expect(toHex(r.message)).toBe(v.Yb);
      expect(toHex(r.isk)).toBe(v.iskIr);
      expect(toHex(cpaceFinish(a.state, r.message, h(v.adb)))).toBe(v.iskIr);
    });

    it("B.1.10 scalar_mult_vfy on low-order and non-canonical u", () => {
      const s = h(vectors.scalarMultVfy.s);
      for (const c of vectors.scalarMultVfy.cases)
        expect(toHex(scalarMultVfy(s, h(c.u), b)), c.name).toBe(c.q);
    });

    describe("an attacker who sends a low-order share", () => {
      const common = { prs: h(v.prs), ci: h(v.ci), sid: h(v.sid) };
      for (const c of vectors.scalarMultVfy.cases.filter((x) => x.abort)) {
        it(`as Ya (${c.name}): the responder aborts with cpace.invalid_point`, () => {
          expect(() => cpaceRespond({ ...common, ad: h(v.adb) }, h(c.u), h(v.ada), undefined, b)).toThrow(
            expect.objectContaining({ code: "cpace.invalid_point" }),
          );
        });
        it(`as Yb (${c.name}): the initiator aborts with cpace.invalid_point`, () => {
          const a = cpaceInitiate({ ...common, ad: h(v.ada) }, undefined, b);
          expect(() => cpaceFinish(a.state, h(c.u), h(v.adb))).toThrow(
            expect.objectContaining({ code: "cpace.invalid_point" }),
          );
        });
      }
    });
  });
}

describe("CPace protocol properties", () => {
  const input = (prs: string, ad: string) => ({
    prs: utf8(prs),
    ci: utf8("ci"),
    sid: utf8("sid-1"),
    ad: utf8(ad),
  });

  it("both sides agree on a 64-byte ISK with random scalars", () => {
    const a = cpaceInitiate(input("123456", "A"));
    const r = cpaceRespond(input("123456", "B"), a.message, utf8("A"));
    const isk = cpaceFinish(a.state, r.message, utf8("B"));
    expect(isk).toHaveLength(64);
    expect(toHex(isk)).toBe(toHex(r.isk));
  });

  it("an attacker guessing the wrong password gets a different ISK", () => {
    const a = cpaceInitiate(input("123456", "A"));
    const r = cpaceRespond(input("654321", "B"), a.message, utf8("A"));
    expect(toHex(cpaceFinish(a.state, r.message, utf8("B")))).not.toBe(toHex(r.isk));
  });

  it("an attacker rewriting the clear associated data gets a different ISK", () => {
    const a = cpaceInitiate(input("123456", "A"));
    const r = cpaceRespond(input("123456", "B"), a.message, utf8("A'"));
    expect(toHex(cpaceFinish(a.state, r.message, utf8("B")))).not.toBe(toHex(r.isk));
  });

  it("a node initiator and a web responder agree", () => {
    const a = cpaceInitiate(input("pw", "A"), undefined, nodeBackend);
    const r = cpaceRespond(input("pw", "B"), a.message, utf8("A"), undefined, webBackend);
    expect(toHex(cpaceFinish(a.state, r.message, utf8("B")))).toBe(toHex(r.isk));
  });

  it("messages that are not 32 bytes are cpace.invalid_message", () => {
    const bad = expect.objectContaining({ code: "cpace.invalid_message" });
    expect(() => cpaceRespond(input("pw", "B"), new Uint8Array(31), utf8("A"))).toThrow(bad);
    const a = cpaceInitiate(input("pw", "A"));
    expect(() => cpaceFinish(a.state, new Uint8Array(33), utf8("B"))).toThrow(bad);
  });

  it("a scalar of the wrong length is crypto.invalid_key", () => {
    expect(() => cpaceInitiate(input("pw", "A"), new Uint8Array(31))).toThrow(
      expect.objectContaining({ code: "crypto.invalid_key" }),
    );
  });

  it("an initiator state is refused once used, even after a failed finish", () => {
    const a = cpaceInitiate(input("pw", "A"));
    const r = cpaceRespond(input("pw", "B"), a.message, utf8("A"));
    cpaceFinish(a.state, r.message, utf8("B"));
    const used = expect.objectContaining({ code: "cpace.state_used" });
    expect(() => cpaceFinish(a.state, r.message, utf8("B"))).toThrow(used);
    const b = cpaceInitiate(input("pw", "A"));
    expect(() => cpaceFinish(b.state, new Uint8Array(32), utf8("B"))).toThrow();
    expect(() => cpaceFinish(b.state, r.message, utf8("B"))).toThrow(used);
  });

  it("the state does not show its secrets to JSON.stringify", () => {
    const a = cpaceInitiate(input("pw", "A"));
    expect(JSON.stringify(a.state)).toBe('{"cpace":"initiator","finished":false}');
  });
});
