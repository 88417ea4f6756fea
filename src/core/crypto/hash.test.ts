import { describe, expect, it } from "vitest";
import { backend as chosen } from "#crypto-backend";
import { utf8 } from "../codec/bytes.ts";
import { backend as nodeBackend } from "./backend/node.ts";
import { backend as webBackend } from "./backend/web.ts";
import { hmacSha256, sha256, sha512 } from "./hash.ts";

// Known answers for SHA-512 and HMAC-SHA256 come from the RFC 8032 (TEST SHA(abc)) and RFC 5869
// vectors in test/vectors; here the two backends are checked against each other on many lengths.
describe("hashes", () => {
  it("Node resolves #crypto-backend to node:crypto", () => {
    expect(chosen.name).toBe("node");
  });

  it("both backends agree on SHA-256, SHA-512 and HMAC-SHA256 across block boundaries", () => {
    for (const n of [0, 1, 55, 56, 63, 64, 65, 111, 112, 127, 128, 129, 1000]) {
      const data = nodeBackend.randomBytes(n);
      const key = nodeBackend.randomBytes(n % 100);
      expect(webBackend.sha256(data)).toEqual(nodeBackend.sha256(data));
      expect(webBackend.sha512(data)).toEqual(nodeBackend.sha512(data));
      expect(webBackend.hmacSha256(key, data)).toEqual(nodeBackend.hmacSha256(key, data));
    }
  });

  it("the public functions return digests of the right length", () => {
    expect(sha256(utf8("abc"))).toHaveLength(32);
    expect(sha512(utf8("abc"))).toHaveLength(64);
    expect(hmacSha256(new Uint8Array(0), utf8("abc"))).toHaveLength(32);
  });
});
