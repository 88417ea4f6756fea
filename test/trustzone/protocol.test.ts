import { createHash, createHmac, hkdfSync } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { toBase64url } from "../../src/core/codec/base64url.ts";
import { concatBytes, toHex, utf8 } from "../../src/core/codec/bytes.ts";
import { canonicalJson } from "../../src/core/codec/canonical-json.ts";
import { generateSigningKey } from "../../src/core/crypto/ed25519.ts";
import { generateHpkeKeyPair } from "../../src/core/crypto/hpke.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import { isHandsafeError } from "../../src/core/errors.ts";
import { signJws } from "../../src/core/jws.ts";
import {
  buildFreeingSignal,
  buildKeyedSignal,
  checkTokenClaims,
  deriveContainerKey,
  deriveFreeContainerKey,
  deriveStorageKey,
  deriveSubKey,
  deriveUserKey,
  deriveZoneAdminKey,
  deriveZoneRequestKey,
  issueToken,
  keyCheck,
  LABELS,
  macSignal,
  newTokenId,
  openPackage,
  openSubKey,
  packageAad,
  type RelayCommand,
  relayProof,
  sealPackage,
  sealSubKeyForManager,
  type TokenClaims,
  unwrapSignalKey,
  verifyRelayProof,
  verifySignal,
  verifyToken,
  wrapSignalKey,
  type ZoneSignal,
} from "../../src/trustzone/protocol.ts";

const hex = (b: Uint8Array | Buffer) => Buffer.from(b).toString("hex");
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
/** The spec's edges, computed with node:crypto only. */
const nodeHkdf = (ikm: Uint8Array, salt: Uint8Array, info: Uint8Array | string) =>
  Buffer.from(hkdfSync("sha256", ikm, salt, typeof info === "string" ? Buffer.from(info) : info, 32));
const nodeHmac = (key: Uint8Array, data: Uint8Array | string) =>
  createHmac("sha256", key).update(data).digest();
const nodeSha256 = (data: Uint8Array | string) => createHash("sha256").update(data).digest();

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return isHandsafeError(e) ? e.code : `not a HandsafeError: ${String(e)}`;
  }
  return undefined;
}

const zmk = randomBytes(32);
const uk = deriveUserKey(zmk, "msisdn:+33612345678", 1);

describe("labels", () => {
  it("every label the spec names is in LABELS, and LABELS are distinct", () => {
    const spec = readFileSync(new URL("../../docs/protocols/trustzone.md", import.meta.url), "utf8");
    const inSpec = new Set(spec.match(/handsafe\/v1\/trustzone\/[a-z-]+/g));
    const values = Object.values(LABELS) as string[];
    for (const label of inSpec) expect(values, label).toContain(label);
    for (const label of values) expect(inSpec.has(label), label).toBe(true);
    expect(new Set(values).size).toBe(values.length);
    expect(inSpec.size).toBeGreaterThanOrEqual(15);
  });
});

describe("errors", () => {
  it("every error code the trust-zone code throws is listed in the spec", () => {
    const spec = readFileSync(new URL("../../docs/protocols/trustzone.md", import.meta.url), "utf8");
    const dirs = [
      new URL("../../src/trustzone/", import.meta.url),
      new URL("../../src/handset/", import.meta.url),
    ];
    const codes = new Set<string>();
    for (const dir of dirs)
      for (const file of readdirSync(dir)) {
        if (!file.endsWith(".ts") || (dir.pathname.endsWith("/handset/") && !file.startsWith("secure-zone")))
          continue;
        const code = readFileSync(new URL(file, dir), "utf8");
        for (const m of code.matchAll(
          /(?:HandsafeError|tsmError|zoneError|tokenError)\(\s*"([a-z]+\.[a-z_]+)"/g,
        ))
          codes.add(m[1]!);
      }
    expect(codes.size).toBeGreaterThan(25);
    expect([...codes].filter((c) => !spec.includes(`\`${c}\``)).sort()).toEqual([]);
  });
});

describe("§2 key tree against node:crypto", () => {
  it("SSK = HKDF(HUK, storage)", () => {
    const huk = randomBytes(32);
    expect(hex(deriveStorageKey(huk))).toBe(hex(nodeHkdf(huk, new Uint8Array(0), LABELS.storage)));
  });

  it("UK = HKDF(ZMK, SHA-256(userInfo ‖ u32be(epoch)), user-key)", () => {
    const salt = nodeSha256(Buffer.concat([Buffer.from("msisdn:+33612345678"), u32(1)]));
    expect(hex(uk)).toBe(hex(nodeHkdf(zmk, salt, LABELS.userKey)));
    expect(hex(deriveUserKey(zmk, "msisdn:+33612345678", 2))).not.toBe(hex(uk));
    expect(hex(deriveUserKey(zmk, "msisdn:+33600000000", 1))).not.toBe(hex(uk));
  });

  it("ZAK, ZRK, FK_i", () => {
    const none = new Uint8Array(0);
    expect(hex(deriveZoneAdminKey(uk))).toBe(hex(nodeHkdf(uk, none, LABELS.zoneAdmin)));
    expect(hex(deriveZoneRequestKey(uk))).toBe(hex(nodeHkdf(uk, none, LABELS.zoneRequest)));
    for (const i of [0, 3, 0xffffffff])
      expect(hex(deriveFreeContainerKey(uk, i))).toBe(
        hex(nodeHkdf(uk, none, Buffer.concat([Buffer.from(LABELS.freeContainer), u32(i)]))),
      );
  });

  it("SK = HKDF(UK, SHA-256(token), sub-key); CK_i = HKDF(SK, container ‖ u32be(i)); KC = HMAC(CK, key-check)", () => {
    const token = "eyJhbGciOiJFZERTQSJ9.e30.sig";
    const sk = deriveSubKey(uk, token);
    expect(hex(sk)).toBe(hex(nodeHkdf(uk, nodeSha256(token), LABELS.subKey)));
    const ck = deriveContainerKey(sk, 4);
    expect(hex(ck)).toBe(
      hex(nodeHkdf(sk, new Uint8Array(0), Buffer.concat([Buffer.from(LABELS.container), u32(4)]))),
    );
    expect(hex(keyCheck(ck))).toBe(hex(nodeHmac(ck, LABELS.keyCheck)));
    expect(hex(deriveSubKey(uk, `${token}x`))).not.toBe(hex(sk));
    expect(hex(deriveContainerKey(sk, 5))).not.toBe(hex(ck));
  });

  it("refuses keys of the wrong length and indices that are not u32", () => {
    expect(codeOf(() => deriveUserKey(new Uint8Array(16), "u", 1))).toBe("crypto.invalid_key");
    expect(codeOf(() => deriveContainerKey(uk, -1))).toBe("tsm.invalid_index");
    expect(codeOf(() => deriveContainerKey(uk, 2 ** 32))).toBe("tsm.invalid_index");
    expect(codeOf(() => deriveUserKey(zmk, "u", 0))).toBe("tsm.invalid_epoch");
  });
});

describe("§3 tokens", () => {
  const key = generateSigningKey();
  const signer = { kid: "tz-1", seed: key.seed };
  const keys = { "tz-1": key.publicKey };
  const now = 1_764_600_000_000;
  const claims: TokenClaims = {
    iss: "handsafe-mtsm",
    sub: "mgr_bank",
    aud: "zone-1",
    jti: newTokenId(),
    iat: now / 1000,
    exp: now / 1000 + 86400,
    maxUses: 1,
    containers: [3, 4],
    limits: { containerSeconds: 86400, maxAttempts: 5 },
  };

  it("issues and verifies", () => {
    const token = issueToken(claims, signer);
    expect(verifyToken(token, keys, { now, zoneId: "zone-1", managerId: "mgr_bank" })).toEqual(claims);
  });

  it("an expired token", () => {
    expect(codeOf(() => checkTokenClaims(claims, { now: claims.exp * 1000, zoneId: "zone-1" }))).toBe(
      "token.expired",
    );
    expect(
      codeOf(() => checkTokenClaims(claims, { now: claims.exp * 1000 - 1, zoneId: "zone-1" })),
    ).toBeUndefined();
  });

  it("a token for another zone or another manager", () => {
    expect(codeOf(() => checkTokenClaims(claims, { now, zoneId: "zone-2" }))).toBe("token.wrong_zone");
    expect(codeOf(() => checkTokenClaims(claims, { now, zoneId: "zone-1", managerId: "mgr_other" }))).toBe(
      "token.wrong_manager",
    );
  });

  it("a token issued in the future, or of the wrong shape", () => {
    expect(codeOf(() => checkTokenClaims(claims, { now: now - 3_600_000, zoneId: "zone-1" }))).toBe(
      "token.invalid",
    );
    for (const bad of [
      { ...claims, iss: "someone" },
      { ...claims, containers: [] },
      { ...claims, containers: [1, 1] },
      { ...claims, containers: [-1] },
      { ...claims, limits: { containerSeconds: 0, maxAttempts: 5 } },
      { ...claims, exp: claims.iat },
      { ...claims, admin: true },
      { ...claims, jti: "x" },
    ])
      expect(codeOf(() => checkTokenClaims(bad, { now, zoneId: "zone-1" }))).toBe("token.invalid");
  });

  it("a token signed by a key that is not pinned", () => {
    const rogue = generateSigningKey();
    const token = signJws(claims as unknown as Record<string, unknown>, { kid: "tz-1", seed: rogue.seed });
    expect(codeOf(() => verifyToken(token, keys, { now, zoneId: "zone-1" }))).toBe("token.invalid");
  });
});

describe("§4 sub-key delivery", () => {
  it("seals SK to the manager's X25519 key, bound to the jti", () => {
    const manager = generateHpkeKeyPair();
    const sk = deriveSubKey(uk, "t");
    const sealed = sealSubKeyForManager(sk, manager.publicKey, "tok_1");
    expect(hex(openSubKey(manager.privateKey, sealed, "tok_1"))).toBe(hex(sk));
    expect(codeOf(() => openSubKey(manager.privateKey, sealed, "tok_2"))).toBe("hpke.open_failed");
    expect(codeOf(() => openSubKey(generateHpkeKeyPair().privateKey, sealed, "tok_1"))).toBe(
      "hpke.open_failed",
    );
    expect(codeOf(() => sealSubKeyForManager(sk, new Uint8Array(32), "tok_1"))).toBe(
      "hpke.invalid_public_key",
    );
  });
});

describe("§5 signals", () => {
  const zak = deriveZoneAdminKey(uk);
  const ck = randomBytes(32);
  const expectation = { zoneId: "zone-1", epoch: 1, lastSeq: 6 };
  const { signal, mac } = buildKeyedSignal({
    type: "bind",
    zak,
    zoneId: "zone-1",
    epoch: 1,
    seq: 7,
    managerId: "mgr_bank",
    jti: "tok_1",
    containerKeys: [{ index: 3, ck }],
    notAfter: 1_764_686_400_000,
    maxAttempts: 5,
  });

  it("mac = HMAC(ZAK, signal ‖ 0 ‖ canonical JSON), and it verifies", () => {
    const expected = nodeHmac(
      zak,
      concatBytes(utf8(LABELS.signal), new Uint8Array([0]), utf8(canonicalJson(signal))),
    );
    expect(hex(mac)).toBe(hex(expected));
    expect(verifySignal(zak, signal, mac, expectation)).toEqual(signal);
    expect(verifySignal(zak, signal, toBase64url(mac), expectation)).toEqual(signal);
    expect(hex(unwrapSignalKey(zak, "zone-1", 1, 3, signal.keys!["3"]!))).toBe(hex(ck));
  });

  it("a forged or altered signal", () => {
    const tampered: ZoneSignal = { ...signal, containers: [3], maxAttempts: 1000 };
    expect(codeOf(() => verifySignal(zak, tampered, mac, expectation))).toBe("zone.signal_invalid");
    expect(codeOf(() => verifySignal(deriveZoneAdminKey(randomBytes(32)), signal, mac, expectation))).toBe(
      "zone.signal_invalid",
    );
    expect(codeOf(() => verifySignal(zak, signal, "not base64!", expectation))).toBe("zone.signal_invalid");
    expect(codeOf(() => verifySignal(zak, { ...signal, extra: 1 }, mac, expectation))).toBe(
      "zone.signal_invalid",
    );
  });

  it("a replayed signal (seq not above the last applied)", () => {
    expect(codeOf(() => verifySignal(zak, signal, mac, { ...expectation, lastSeq: 7 }))).toBe(
      "zone.signal_invalid",
    );
    expect(codeOf(() => verifySignal(zak, signal, mac, { ...expectation, lastSeq: 8 }))).toBe(
      "zone.signal_invalid",
    );
  });

  it("a signal for another epoch or zone", () => {
    expect(codeOf(() => verifySignal(zak, signal, mac, { ...expectation, epoch: 2 }))).toBe(
      "zone.signal_invalid",
    );
    expect(codeOf(() => verifySignal(zak, signal, mac, { ...expectation, zoneId: "zone-2" }))).toBe(
      "zone.signal_invalid",
    );
  });

  it("a wrapped key moved to another container or epoch does not open", () => {
    const wrapped = wrapSignalKey(zak, "zone-1", 1, 3, ck);
    expect(codeOf(() => unwrapSignalKey(zak, "zone-1", 1, 4, wrapped))).toBe("zone.signal_invalid");
    expect(codeOf(() => unwrapSignalKey(zak, "zone-1", 2, 3, wrapped))).toBe("zone.signal_invalid");
  });

  it("reclaim/unbind carry no keys; bind must carry one per container", () => {
    const freeing = buildFreeingSignal({
      type: "reclaim",
      zak,
      zoneId: "zone-1",
      epoch: 1,
      seq: 8,
      containers: [3],
    });
    expect(verifySignal(zak, freeing.signal, freeing.mac, expectation).type).toBe("reclaim");
    const noKeys = { ...signal, keys: {} };
    expect(codeOf(() => verifySignal(zak, noKeys, macSignal(zak, noKeys)))).toBe("zone.signal_invalid");
  });
});

describe("§2 / §6 packages and relay proofs", () => {
  const ck = deriveContainerKey(deriveSubKey(uk, "t"), 3);

  it("aad = package ‖ 0 ‖ zoneId ‖ 0 ‖ u32be(i) ‖ 0 ‖ name", () => {
    const expected = Buffer.concat([
      Buffer.from(LABELS.package),
      Buffer.from([0]),
      Buffer.from("zone-1"),
      Buffer.from([0]),
      u32(3),
      Buffer.from([0]),
      Buffer.from("card"),
    ]);
    expect(toHex(packageAad("zone-1", 3, "card"))).toBe(hex(expected));
  });

  it("seals and opens; another name, container, zone or key does not open it", () => {
    const sealed = sealPackage(ck, "zone-1", 3, "card", utf8("PAN 4111"));
    expect(new TextDecoder().decode(openPackage(ck, "zone-1", 3, "card", sealed))).toBe("PAN 4111");
    expect(codeOf(() => openPackage(ck, "zone-1", 3, "card2", sealed))).toBe("crypto.decrypt_failed");
    expect(codeOf(() => openPackage(ck, "zone-1", 4, "card", sealed))).toBe("crypto.decrypt_failed");
    expect(codeOf(() => openPackage(ck, "zone-2", 3, "card", sealed))).toBe("crypto.decrypt_failed");
    expect(codeOf(() => openPackage(randomBytes(32), "zone-1", 3, "card", sealed))).toBe(
      "crypto.decrypt_failed",
    );
    expect(codeOf(() => sealPackage(ck, "zone-1", 3, "a\u0000b", utf8("x")))).toBe("tsm.invalid_name");
  });

  it("proof = HMAC(CK, relay ‖ 0 ‖ canonical command)", () => {
    const command: RelayCommand = {
      op: "get",
      zoneId: "zone-1",
      epoch: 1,
      container: 3,
      name: "card",
      id: "cmd_1",
      created: 1,
    };
    const proof = relayProof(ck, command);
    const expected = nodeHmac(
      ck,
      concatBytes(utf8(LABELS.relay), new Uint8Array([0]), utf8(canonicalJson(command))),
    );
    expect(hex(proof)).toBe(hex(expected));
    expect(verifyRelayProof(ck, command, proof)).toBe(true);
    expect(verifyRelayProof(ck, command, toBase64url(proof))).toBe(true);
    expect(verifyRelayProof(ck, { ...command, op: "delete" }, proof)).toBe(false);
    expect(verifyRelayProof(randomBytes(32), command, proof)).toBe(false);
  });
});
