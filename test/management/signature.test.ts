/** The signature profile under attack: every tampering answers its own code. */
import { describe, expect, it } from "vitest";
import { utf8 } from "../../src/core/codec/bytes.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import {
  parseRequestSignature,
  requestViewOfUrl,
  type SignedRequestView,
  signRequest,
  verifyRequestSignature,
} from "../../src/management/signature.ts";

const KEY = randomBytes(32);
const NOW = 1_800_000_000_000;
const URL_ = "https://mgmt.example:8443/v1/management/ping?x=1";

function signed(
  opts: { method?: string; url?: string; body?: Uint8Array; created?: number; key?: Uint8Array } = {},
) {
  const method = opts.method ?? "POST";
  const url = opts.url ?? URL_;
  const body = opts.body ?? utf8('{"echo":1}');
  const headers: Record<string, string> = { "content-type": "application/json" };
  const sig = signRequest(
    opts.key ?? KEY,
    { method, url, headers, body },
    {
      keyId: "dk_AAAAAAAAAAAAAAAA",
      created: opts.created ?? NOW / 1000,
    },
  );
  const all: Record<string, string> = { ...headers, ...sig };
  return { method, url, body, headers: all };
}

function verify(
  req: { method: string; url: string; body: Uint8Array | undefined; headers: Record<string, string> },
  key = KEY,
  now = NOW,
) {
  const view: SignedRequestView = requestViewOfUrl(req.method, req.url, req.headers);
  verifyRequestSignature(parseRequestSignature(req.headers), view, key, { nowMs: now, body: req.body });
}

const code = (c: string) => expect.objectContaining({ code: c });

describe("a good signature", () => {
  it("verifies, covers the profile's components, and uses the hs label", () => {
    const req = signed();
    expect(req.headers["signature-input"]).toMatch(
      /^hs=\("@method" "@authority" "@path" "@query" "content-digest"\);created=\d+;keyid="dk_[^"]+";nonce="[A-Za-z0-9_-]{22}";alg="hmac-sha256";tag="handsafe\/v1\/management"$/,
    );
    expect(() => verify(req)).not.toThrow();
    expect(() => verify(signed({ method: "GET", body: new Uint8Array(0) }))).not.toThrow();
  });
});

describe("attack: tampered request", () => {
  it("another method", () =>
    expect(() => verify({ ...signed(), method: "PUT" })).toThrow(code("signature.invalid")));
  it("another path", () =>
    expect(() => verify({ ...signed(), url: "https://mgmt.example:8443/v1/admin/devices?x=1" })).toThrow(
      code("signature.invalid"),
    ));
  it("another query", () =>
    expect(() => verify({ ...signed(), url: "https://mgmt.example:8443/v1/management/ping?x=2" })).toThrow(
      code("signature.invalid"),
    ));
  it("another host", () =>
    expect(() => verify({ ...signed(), url: "https://evil.example:8443/v1/management/ping?x=1" })).toThrow(
      code("signature.invalid"),
    ));
  it("another body", () =>
    expect(() => verify({ ...signed(), body: utf8('{"echo":2}') })).toThrow(
      code("signature.digest_mismatch"),
    ));
  it("another body with a recomputed digest", () => {
    const req = signed();
    const other = signed({ body: utf8('{"echo":2}') });
    expect(() =>
      verify({
        ...req,
        body: other.body,
        headers: { ...req.headers, "content-digest": other.headers["content-digest"]! },
      }),
    ).toThrow(code("signature.invalid"));
  });
  it("a body the signature does not cover", () => {
    const req = signed({ method: "GET", body: new Uint8Array(0) });
    expect(() => verify({ ...req, body: utf8("{}") })).toThrow(code("signature.incomplete"));
  });
  it("a trimmed component list", () => {
    const req = signed();
    const input = req.headers["signature-input"]!.replace('"@query" ', "");
    expect(() => verify({ ...req, headers: { ...req.headers, "signature-input": input } })).toThrow(
      code("signature.incomplete"),
    );
  });
});

describe("attack: wrong key", () => {
  it("a signature under another key", () =>
    expect(() => verify(signed({ key: randomBytes(32) }))).toThrow(code("signature.invalid")));
});

describe("attack: stale or future signature", () => {
  it("created more than 300 s ago or ahead", () => {
    expect(() => verify(signed({ created: NOW / 1000 - 301 }))).toThrow(code("signature.stale"));
    expect(() => verify(signed({ created: NOW / 1000 + 301 }))).toThrow(code("signature.stale"));
    expect(() => verify(signed({ created: NOW / 1000 - 299 }))).not.toThrow();
  });
});

describe("attack: malformed headers", () => {
  const withHeaders = (h: Record<string, string>) => ({
    ...signed(),
    headers: { ...signed().headers, ...h },
  });
  it("missing headers or label", () => {
    const req = signed();
    const { signature: _s, ...noSig } = req.headers;
    expect(() => verify({ ...req, headers: noSig })).toThrow(code("signature.missing"));
    expect(() => verify(withHeaders({ signature: "other=:AAAA:" }))).toThrow(code("signature.missing"));
  });
  it("another algorithm, repeated parameters, unknown parameters, bad syntax", () => {
    const input = signed().headers["signature-input"]!;
    expect(() => verify(withHeaders({ "signature-input": input.replace("hmac-sha256", "ed25519") }))).toThrow(
      code("signature.unsupported_algorithm"),
    );
    expect(() => verify(withHeaders({ "signature-input": `${input};created=1` }))).toThrow(
      code("signature.malformed"),
    );
    expect(() => verify(withHeaders({ "signature-input": `${input};foo=1` }))).toThrow(
      code("signature.malformed"),
    );
    expect(() => verify(withHeaders({ "signature-input": "hs=(" }))).toThrow(code("signature.malformed"));
    expect(() => verify(withHeaders({ signature: "hs=:not base64!:" }))).toThrow(code("signature.malformed"));
  });
});
