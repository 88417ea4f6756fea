/**
 * The handset side of the trust zone (handset/secure-zone.ts and the pure protocol modules it uses)
 * in a browser bundle: no node:* module in its import graph, no zone-server module either, the web
 * crypto backend chosen — and that bundle's zone verifies a token, derives a sub-key, and keeps a
 * manager's package, as a page would run it.
 */
import { readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromUtf8, utf8 } from "../../src/core/codec/bytes.ts";
import { generateSigningKey } from "../../src/core/crypto/ed25519.ts";
import { generateHpkeKeyPair } from "../../src/core/crypto/hpke.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import { issueToken, newTokenId } from "../../src/trustzone/protocol.ts";
import { type BrowserBundle, buildBrowserBundle, hasNodeImports } from "../helpers/browser-bundle.ts";

type Bundle = typeof import("./browser-entry.ts");

const root = join(import.meta.dirname, "../..");

/** Every repository file reachable from `entry` through relative imports and re-exports. */
function importGraph(entry: string): Set<string> {
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const code = readFileSync(file, "utf8");
    for (const m of code.matchAll(/(?:import|export)\s[^;]*?from\s+"(\.[^"]+)"/g))
      visit(resolve(dirname(file), m[1]!));
  };
  visit(entry);
  return new Set([...seen].map((f) => relative(root, f)));
}

describe("the secure zone's import graph", () => {
  const graph = importGraph(join(root, "src/handset/secure-zone.ts"));

  it("reaches the pure trust-zone modules only, never the zone server or the platform", () => {
    const trustzone = [...graph].filter((f) => f.startsWith("src/trustzone/")).sort();
    expect(trustzone).toEqual([
      "src/trustzone/encoding.ts",
      "src/trustzone/protocol.ts",
      "src/trustzone/relay-protocol.ts",
      "src/trustzone/signal-protocol.ts",
      "src/trustzone/token-claims.ts",
    ]);
    expect([...graph].filter((f) => f.startsWith("src/platform/"))).toEqual([]);
  });

  it("imports no node:* module (source)", () => {
    for (const f of graph) expect(readFileSync(join(root, f), "utf8"), f).not.toMatch(/from\s+["']node:/);
  });
});

describe("the secure zone in a browser bundle", () => {
  let bundle: BrowserBundle<Bundle> | undefined;
  let sdk: Bundle;
  beforeAll(async () => {
    bundle = await buildBrowserBundle<Bundle>(join(import.meta.dirname, "browser-entry.ts"), "trustzone-sdk");
    sdk = bundle.module;
  }, 120_000);
  afterAll(() => bundle?.remove());

  it("has no node:* import and runs on the web backend", () => {
    const code = bundle!.code;
    expect(hasNodeImports(code)).toBe(false);
    expect(code).not.toMatch(/better-sqlite3|kysely|fastify/);
    expect(sdk.cryptoBackend.name).toBe("web");
  });

  it("verifies a token, derives the sub-key (handset placement) and keeps the manager's package", async () => {
    const tz = generateSigningKey();
    const manager = generateHpkeKeyPair();
    const now = Date.now();
    const zone = await sdk.SecureZone.open(new sdk.MemoryKeystore(), { containers: 4, now: () => now });
    await zone.personalise({
      zoneId: "zone-browser",
      zmk: randomBytes(32),
      userInfo: "alice",
      epoch: 1,
      trustZonePublicKeys: { "tz-1": tz.publicKey },
    });
    const token = issueToken(
      {
        iss: "handsafe-mtsm",
        sub: "mgr_bank",
        aud: "zone-browser",
        jti: newTokenId(),
        iat: Math.floor(now / 1000),
        exp: Math.floor(now / 1000) + 600,
        maxUses: 1,
        containers: [1],
        limits: { containerSeconds: 3600, maxAttempts: 3 },
      },
      { kid: "tz-1", seed: tz.seed },
    );
    const result = await zone.generateSubKey(token, manager.publicKey);
    const sk = sdk.openSubKey(manager.privateKey, result.sealedSubKey, result.jti);
    const ck = sdk.deriveContainerKey(sk, 1);
    const handle = await zone.openContainer(1, ck);
    await handle.put("card", sdk.sealPackage(ck, "zone-browser", 1, "card", utf8("PAN 4111")));
    const stored = await handle.get("card");
    expect(fromUtf8(sdk.openPackage(ck, "zone-browser", 1, "card", stored!))).toBe("PAN 4111");
    expect(zone.masterView()[1]).toMatchObject({ state: "bound", occupant: "mgr_bank", packages: 1 });
    expect(sdk.ZONE_REQUEST_SIGNATURE.tag).toBe("handsafe/v1/trustzone/zone-request");
  });
});
