import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { toBase64url } from "../../src/core/codec/base64url.ts";
import { fromUtf8, utf8 } from "../../src/core/codec/bytes.ts";
import { generateSigningKey } from "../../src/core/crypto/ed25519.ts";
import { generateHpkeKeyPair, type HpkeKeyPair } from "../../src/core/crypto/hpke.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import { isHandsafeError } from "../../src/core/errors.ts";
import { signJws } from "../../src/core/jws.ts";
import { FolderKeystore } from "../../src/handset/folder-keystore.ts";
import { type Keystore, MemoryKeystore } from "../../src/handset/keystore.ts";
import {
  MAX_PACKAGE_BYTES,
  MAX_PACKAGES_PER_CONTAINER,
  MAX_SECURITY_EVENTS,
  SecureZone,
} from "../../src/handset/secure-zone.ts";
import {
  buildFreeingSignal,
  buildKeyedSignal,
  deriveContainerKey,
  deriveFreeContainerKey,
  deriveUserKey,
  deriveZoneAdminKey,
  generateSubKeyMaterial,
  issueToken,
  newTokenId,
  openPackage,
  openSubKey,
  type RelayCommand,
  relayProof,
  sealPackage,
  type TokenClaims,
} from "../../src/trustzone/protocol.ts";

const T0 = 1_764_600_000_000;
const ZONE = "zone-1";
const tz = generateSigningKey();
const pins = { "tz-1": tz.publicKey };

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const e = await promise.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isHandsafeError(e, code), `expected ${code}, got ${String(e)}`).toBe(true);
}

interface World {
  keystore: Keystore;
  zone: SecureZone;
  zmk: Uint8Array;
  clock: { now: number };
  token(
    managerId: string,
    containers: number[],
    limits?: Partial<TokenClaims["limits"]>,
    zoneId?: string,
  ): string;
  /** Handset placement: returns the manager's SK as it opens it. */
  enrol(
    manager: HpkeKeyPair,
    managerId: string,
    containers: number[],
    limits?: Partial<TokenClaims["limits"]>,
  ): Promise<{ sk: Uint8Array; jti: string }>;
}

async function world(keystore: Keystore = new MemoryKeystore(), userInfo = "alice"): Promise<World> {
  const clock = { now: T0 };
  const zone = await SecureZone.open(keystore, { containers: 8, now: () => clock.now });
  const zmk = randomBytes(32);
  await zone.personalise({ zoneId: ZONE, zmk, userInfo, epoch: 1, trustZonePublicKeys: pins });
  const token: World["token"] = (managerId, containers, limits = {}, zoneId = ZONE) =>
    issueToken(
      {
        iss: "handsafe-mtsm",
        sub: managerId,
        aud: zoneId,
        jti: newTokenId(),
        iat: Math.floor(clock.now / 1000),
        exp: Math.floor(clock.now / 1000) + 3600,
        maxUses: 1,
        containers,
        limits: { containerSeconds: 86400, maxAttempts: 3, ...limits },
      },
      { kid: "tz-1", seed: tz.seed },
    );
  const enrol: World["enrol"] = async (manager, managerId, containers, limits) => {
    const jws = token(managerId, containers, limits);
    const result = await zone.generateSubKey(jws, manager.publicKey);
    return { sk: openSubKey(manager.privateKey, result.sealedSubKey, result.jti), jti: result.jti };
  };
  return { keystore, zone, zmk, clock, token, enrol };
}

const bank = generateHpkeKeyPair();
const transit = generateHpkeKeyPair();

describe("zone isolation: a manager's sub-key opens only its own containers", () => {
  it("A's key opens A's containers, B's key nothing of A's, A's key nothing of B's or free ones", async () => {
    const w = await world();
    const a = await w.enrol(bank, "mgr_bank", [3, 4]);
    const b = await w.enrol(transit, "mgr_transit", [5]);
    const ckA3 = deriveContainerKey(a.sk, 3);
    const handle = await w.zone.openContainer(3, ckA3);
    await handle.put("card", sealPackage(ckA3, ZONE, 3, "card", utf8("PAN 4111")));
    const stored = await handle.get("card");
    expect(fromUtf8(openPackage(ckA3, ZONE, 3, "card", stored!))).toBe("PAN 4111");
    expect(await handle.list()).toEqual(["card"]);
    await w.zone.openContainer(4, deriveContainerKey(a.sk, 4));

    await expectCode(w.zone.openContainer(3, deriveContainerKey(b.sk, 3)), "zone.wrong_key");
    await expectCode(w.zone.openContainer(3, deriveContainerKey(b.sk, 5)), "zone.wrong_key");
    await expectCode(w.zone.openContainer(5, deriveContainerKey(a.sk, 5)), "zone.wrong_key");
    await expectCode(w.zone.openContainer(5, ckA3), "zone.wrong_key");
    await expectCode(w.zone.openContainer(0, ckA3), "zone.wrong_key");
    await w.zone.openContainer(5, deriveContainerKey(b.sk, 5));
  });

  it("a token for another zone, expired, unsigned by a pinned key, or for taken containers", async () => {
    const w = await world();
    await expectCode(
      w.zone.generateSubKey(w.token("mgr_bank", [1], {}, "zone-2"), bank.publicKey),
      "token.wrong_zone",
    );
    const old = w.token("mgr_bank", [1]);
    w.clock.now += 3601_000;
    await expectCode(w.zone.generateSubKey(old, bank.publicKey), "token.expired");
    const rogue = generateSigningKey();
    const forged = signJws(
      {
        iss: "handsafe-mtsm",
        sub: "m",
        aud: ZONE,
        jti: "tok_x",
        iat: 1,
        exp: 4e9,
        maxUses: 1,
        containers: [1],
        limits: { containerSeconds: 60, maxAttempts: 3 },
      },
      { kid: "tz-1", seed: rogue.seed },
    );
    await expectCode(w.zone.generateSubKey(forged, bank.publicKey), "token.invalid");
    await w.enrol(bank, "mgr_bank", [1]);
    await expectCode(
      w.zone.generateSubKey(w.token("mgr_evil", [1, 2]), transit.publicKey),
      "token.containers_taken",
    );
    await expectCode(
      w.zone.generateSubKey(w.token("mgr_evil", [99]), transit.publicKey),
      "token.containers_taken",
    );
    expect(w.zone.masterView()[2]!.state).toBe("free");
  });
});

describe("the master key (carrier): free containers only", () => {
  it("FK opens a free container and no bound one; FK_i opens only container i", async () => {
    const w = await world();
    const uk = deriveUserKey(w.zmk, "alice", 1);
    const master = await w.zone.masterOpenFree(0, deriveFreeContainerKey(uk, 0));
    await master.put("note", utf8("opaque"));
    await w.zone.openContainer(1, deriveFreeContainerKey(uk, 1));
    await expectCode(w.zone.masterOpenFree(1, deriveFreeContainerKey(uk, 0)), "zone.wrong_key");

    await w.enrol(bank, "mgr_bank", [3]);
    await expectCode(w.zone.masterOpenFree(3, deriveFreeContainerKey(uk, 3)), "zone.wrong_key");
    await expectCode(w.zone.openContainer(3, deriveFreeContainerKey(uk, 3)), "zone.wrong_key");
    await expectCode(w.zone.openContainer(3, uk), "zone.wrong_key");
  });
});

describe("guessing keys: the attempt limit locks the container", () => {
  it("maxAttempts wrong keys lock it (a right key in between gives none back); then even the right key is refused, and the log says so", async () => {
    const w = await world();
    const a = await w.enrol(bank, "mgr_bank", [2], { maxAttempts: 3 });
    const ck = deriveContainerKey(a.sk, 2);
    await expectCode(w.zone.openContainer(2, randomBytes(32)), "zone.wrong_key");
    expect(w.zone.masterView()[2]!.attemptsLeft).toBe(2);
    await w.zone.openContainer(2, ck); // a right key gives no attempt back
    expect(w.zone.masterView()[2]!.attemptsLeft).toBe(2);
    await expectCode(w.zone.openContainer(2, new Uint8Array(5)), "zone.wrong_key");
    await expectCode(w.zone.openContainer(2, randomBytes(32)), "zone.locked");
    await expectCode(w.zone.openContainer(2, ck), "zone.locked");
    const view = w.zone.masterView()[2]!;
    expect(view).toMatchObject({ state: "locked", attemptsLeft: 0, occupant: "mgr_bank" });
    expect(w.zone.events().some((e) => e.type === "locked" && e.container === 2)).toBe(true);
  });

  it("an open handle dies when the container locks", async () => {
    const w = await world();
    const a = await w.enrol(bank, "mgr_bank", [2], { maxAttempts: 1 });
    const handle = await w.zone.openContainer(2, deriveContainerKey(a.sk, 2));
    await expectCode(w.zone.openContainer(2, randomBytes(32)), "zone.locked");
    await expectCode(handle.list(), "zone.wrong_key");
  });
});

describe("an expired container opens for nobody", () => {
  it("past notAfter: zone.expired, for new opens and open handles, without spending attempts", async () => {
    const w = await world();
    const a = await w.enrol(bank, "mgr_bank", [2], { containerSeconds: 60 });
    const ck = deriveContainerKey(a.sk, 2);
    const handle = await w.zone.openContainer(2, ck);
    expect(w.zone.masterView()[2]!.notAfter).toBe(T0 + 60_000);
    w.clock.now = T0 + 60_000;
    await expectCode(w.zone.openContainer(2, ck), "zone.expired");
    await expectCode(handle.get("x"), "zone.expired");
    expect(w.zone.masterView()[2]!.attemptsLeft).toBe(3);
  });
});

describe("server placement: bind / renew / reclaim signals", () => {
  async function serverBind(w: World, seq: number, containers: number[], token: string) {
    const uk = deriveUserKey(w.zmk, "alice", 1);
    const material = generateSubKeyMaterial(uk, token, containers);
    const { signal, mac } = buildKeyedSignal({
      type: "bind",
      zak: deriveZoneAdminKey(uk),
      zoneId: ZONE,
      epoch: 1,
      seq,
      managerId: "mgr_bank",
      jti: "tok_server",
      containerKeys: material.containers,
      notAfter: w.clock.now + 3_600_000,
      maxAttempts: 4,
    });
    return { signal, mac, sk: material.sk, uk };
  }

  it("bind stores CK_i and drops FK_i; a replayed, forged or other-epoch signal is refused", async () => {
    const w = await world();
    const { signal, mac, sk, uk } = await serverBind(w, 1, [6], "token-text");
    expect(await w.zone.applySignal(signal, mac)).toEqual({ type: "bind", containers: [6] });
    expect(w.zone.lastSeq).toBe(1);
    expect(w.zone.masterView()[6]).toMatchObject({ state: "bound", occupant: "mgr_bank", maxAttempts: 4 });
    await w.zone.openContainer(6, deriveContainerKey(sk, 6));
    await expectCode(w.zone.masterOpenFree(6, deriveFreeContainerKey(uk, 6)), "zone.wrong_key");

    await expectCode(w.zone.applySignal(signal, mac), "zone.signal_invalid");
    const zak = deriveZoneAdminKey(uk);
    const reclaimOtherEpoch = buildFreeingSignal({
      type: "reclaim",
      zak,
      zoneId: ZONE,
      epoch: 2,
      seq: 9,
      containers: [6],
    });
    await expectCode(
      w.zone.applySignal(reclaimOtherEpoch.signal, reclaimOtherEpoch.mac),
      "zone.signal_invalid",
    );
    const forged = buildFreeingSignal({
      type: "reclaim",
      zak: randomBytes(32),
      zoneId: ZONE,
      epoch: 1,
      seq: 9,
      containers: [6],
    });
    await expectCode(w.zone.applySignal(forged.signal, forged.mac), "zone.signal_invalid");
    await expectCode(w.zone.applySignal({ ...signal, seq: 2 }, mac), "zone.signal_invalid");
    expect(w.zone.masterView()[6]!.state).toBe("bound");
    expect(w.zone.refusals().signal.count).toBe(4);
  });

  it("the server's bind after handset placement only confirms it (same token, same keys)", async () => {
    const w = await world();
    const token = w.token("mgr_bank", [2]);
    const r = await w.zone.generateSubKey(token, bank.publicKey);
    const { signal, mac } = await serverBind(w, 1, [2], token);
    await expectCode(w.zone.applySignal(signal, mac), "zone.signal_invalid"); // jti differs: tok_server
    const uk = deriveUserKey(w.zmk, "alice", 1);
    const confirm = buildKeyedSignal({
      type: "bind",
      zak: deriveZoneAdminKey(uk),
      zoneId: ZONE,
      epoch: 1,
      seq: 2,
      managerId: r.managerId,
      jti: r.jti,
      containerKeys: generateSubKeyMaterial(uk, token, [2]).containers,
      notAfter: r.notAfter,
      maxAttempts: r.maxAttempts,
    });
    await w.zone.applySignal(confirm.signal, confirm.mac);
    const sk = openSubKey(bank.privateKey, r.sealedSubKey, r.jti);
    await w.zone.openContainer(2, deriveContainerKey(sk, 2));
  });

  it("reclaim wipes the packages and keys and frees the container for the master again", async () => {
    const w = await world();
    const a = await w.enrol(bank, "mgr_bank", [3]);
    const ck = deriveContainerKey(a.sk, 3);
    const h = await w.zone.openContainer(3, ck);
    await h.put("card", sealPackage(ck, ZONE, 3, "card", utf8("secret")));
    expect(w.zone.masterView()[3]).toMatchObject({ packages: 1 });
    expect(await w.keystore.list("zone/pkg/3/")).toHaveLength(1);

    const uk = deriveUserKey(w.zmk, "alice", 1);
    const reclaim = buildFreeingSignal({
      type: "reclaim",
      zak: deriveZoneAdminKey(uk),
      zoneId: ZONE,
      epoch: 1,
      seq: 1,
      containers: [3],
    });
    await w.zone.applySignal(reclaim.signal, toBase64url(reclaim.mac));
    expect(w.zone.masterView()[3]).toMatchObject({ state: "free", occupant: null, packages: 0, bytes: 0 });
    expect(await w.keystore.list("zone/pkg/3/")).toEqual([]);
    await expectCode(h.get("card"), "zone.wrong_key");
    await expectCode(w.zone.openContainer(3, ck), "zone.wrong_key");
    const master = await w.zone.masterOpenFree(3, deriveFreeContainerKey(uk, 3));
    expect(await master.list()).toEqual([]);
  });

  it("renew sets new limits and keys of the new token on the same containers", async () => {
    const w = await world();
    const a = await w.enrol(bank, "mgr_bank", [3], { containerSeconds: 60 });
    const uk = deriveUserKey(w.zmk, "alice", 1);
    const newToken = w.token("mgr_bank", [3]);
    const material = generateSubKeyMaterial(uk, newToken, [3]);
    const renew = buildKeyedSignal({
      type: "renew",
      zak: deriveZoneAdminKey(uk),
      zoneId: ZONE,
      epoch: 1,
      seq: 1,
      managerId: "mgr_bank",
      jti: "tok_new",
      containerKeys: material.containers,
      notAfter: T0 + 7_200_000,
      maxAttempts: 5,
    });
    await w.zone.applySignal(renew.signal, renew.mac);
    w.clock.now = T0 + 120_000;
    await expectCode(w.zone.openContainer(3, deriveContainerKey(a.sk, 3)), "zone.wrong_key");
    await w.zone.openContainer(3, deriveContainerKey(material.sk, 3));
    expect(w.zone.masterView()[3]).toMatchObject({
      jti: "tok_new",
      notAfter: T0 + 7_200_000,
      maxAttempts: 5,
    });
  });
});

describe("the relay (server) forging or replaying commands", () => {
  it("put/get/list/delete with a proof under CK_i; replay, staleness and wrong proofs refused", async () => {
    const w = await world();
    const a = await w.enrol(bank, "mgr_bank", [4]);
    const ck = deriveContainerKey(a.sk, 4);
    let n = 0;
    const cmd = (c: Partial<RelayCommand>): RelayCommand =>
      ({
        op: "list",
        zoneId: ZONE,
        epoch: 1,
        container: 4,
        id: `cmd_${++n}`,
        created: w.clock.now,
        ...c,
      }) as RelayCommand;
    const sealed = sealPackage(ck, ZONE, 4, "ticket", utf8("metro"));
    const put = cmd({ op: "put", name: "ticket", package: toBase64url(sealed) });
    await w.zone.relay(put, relayProof(ck, put));
    await expectCode(w.zone.relay(put, relayProof(ck, put)), "zone.relay_invalid");
    const get = cmd({ op: "get", name: "ticket" });
    const got = await w.zone.relay(get, toBase64url(relayProof(ck, get)));
    expect(fromUtf8(openPackage(ck, ZONE, 4, "ticket", got.package!))).toBe("metro");
    const list = cmd({});
    expect((await w.zone.relay(list, relayProof(ck, list))).names).toEqual(["ticket"]);

    const forged = cmd({ op: "delete", name: "ticket" });
    await expectCode(w.zone.relay(forged, relayProof(randomBytes(32), forged)), "zone.wrong_key");
    await expectCode(
      w.zone.relay({ ...get, id: "cmd_x", op: "delete" }, relayProof(ck, get)),
      "zone.wrong_key",
    );
    expect(w.zone.masterView()[4]!.attemptsLeft).toBe(1);
    const stale = cmd({ created: w.clock.now - 10 * 60_000 });
    await expectCode(w.zone.relay(stale, relayProof(ck, stale)), "zone.relay_invalid");
    const other = cmd({ container: 3 });
    await expectCode(w.zone.relay(other, relayProof(ck, other)), "zone.wrong_key");
    const del = cmd({ op: "delete", name: "ticket" });
    expect((await w.zone.relay(del, relayProof(ck, del))).deleted).toBe(true);
  });
});

describe("filling or misusing the zone", () => {
  it("a package too large, too many bytes or names: zone.full; an unpersonalised zone refuses everything", async () => {
    const w = await world();
    const a = await w.enrol(bank, "mgr_bank", [1]);
    const h = await w.zone.openContainer(1, deriveContainerKey(a.sk, 1));
    await expectCode(h.put("big", new Uint8Array(MAX_PACKAGE_BYTES + 1)), "zone.full");
    await expectCode(h.put("empty", new Uint8Array(0)), "zone.full");
    for (let i = 0; i < MAX_PACKAGES_PER_CONTAINER; i++) await h.put(`p${i}`, new Uint8Array(16));
    await expectCode(h.put("one-more", new Uint8Array(16)), "zone.full");
    await h.put("p0", new Uint8Array(32)); // replacing an existing name is fine
    expect(w.zone.masterView()[1]).toMatchObject({
      packages: MAX_PACKAGES_PER_CONTAINER,
      bytes: 16 * 63 + 32,
    });
    expect(await h.delete("p0")).toBe(true);
    expect(await h.delete("p0")).toBe(false);
    expect(await h.get("p0")).toBeUndefined();
    await expectCode(h.put("a\u0000b", new Uint8Array(1)), "tsm.invalid_name");

    const blank = await SecureZone.open(new MemoryKeystore());
    expect(blank.personalised).toBe(false);
    await expectCode(blank.openContainer(0, randomBytes(32)), "zone.not_personalised");
    await expectCode(blank.relay({} as RelayCommand, new Uint8Array(32)), "zone.not_personalised");
    const bad = { zoneId: ZONE, zmk: new Uint8Array(16), userInfo: "u", epoch: 1, trustZonePublicKeys: pins };
    await expectCode(blank.personalise(bad), "zone.invalid_bundle");
    await expectCode(
      blank.personalise({ ...bad, zmk: randomBytes(32), trustZonePublicKeys: {} }),
      "zone.invalid_bundle",
    );
  });
});

describe("refurbishing: factory reset and a new user", () => {
  it("wipes all but the HUK; old keys open nothing; the new user's keys differ", async () => {
    const w = await world();
    const huk = await w.keystore.get("zone/huk");
    const a = await w.enrol(bank, "mgr_bank", [1]);
    const oldCk = deriveContainerKey(a.sk, 1);
    await (await w.zone.openContainer(1, oldCk)).put("p", sealPackage(oldCk, ZONE, 1, "p", utf8("x")));
    const oldUk = deriveUserKey(w.zmk, "alice", 1);

    await w.zone.factoryReset();
    expect(w.zone.personalised).toBe(false);
    expect(await w.keystore.list()).toEqual(["zone/huk", "zone/state"]);
    expect(await w.keystore.get("zone/huk")).toEqual(huk);
    await expectCode(w.zone.openContainer(1, oldCk), "zone.not_personalised");
    await expectCode(
      w.zone.generateSubKey(w.token("mgr_bank", [1]), bank.publicKey),
      "zone.not_personalised",
    );
    expect(w.zone.events().some((e) => e.type === "factory_reset")).toBe(true);

    await expectCode(
      w.zone.personalise({ zoneId: ZONE, zmk: w.zmk, userInfo: "bob", epoch: 1, trustZonePublicKeys: pins }),
      "zone.invalid_bundle",
    );
    await w.zone.personalise({
      zoneId: ZONE,
      zmk: w.zmk,
      userInfo: "bob",
      epoch: 2,
      trustZonePublicKeys: pins,
    });
    const newUk = deriveUserKey(w.zmk, "bob", 2);
    expect(Buffer.from(newUk).equals(Buffer.from(oldUk))).toBe(false);
    await expectCode(w.zone.masterOpenFree(0, deriveFreeContainerKey(oldUk, 0)), "zone.wrong_key");
    await w.zone.masterOpenFree(0, deriveFreeContainerKey(newUk, 0));
    await expectCode(w.zone.openContainer(1, oldCk), "zone.wrong_key");
    expect(w.zone.masterView().every((c) => c.state === "free" && c.packages === 0)).toBe(true);
    await expectCode(
      w.zone.personalise({ zoneId: ZONE, zmk: w.zmk, userInfo: "eve", epoch: 3, trustZonePublicKeys: pins }),
      "zone.already_personalised",
    );
  });

  it("the state survives a restart (reopening the keystore)", async () => {
    const w = await world();
    const a = await w.enrol(bank, "mgr_bank", [1]);
    const ck = deriveContainerKey(a.sk, 1);
    await (await w.zone.openContainer(1, ck)).put("p", sealPackage(ck, ZONE, 1, "p", utf8("kept")));
    const again = await SecureZone.open(w.keystore, { now: () => w.clock.now });
    expect(again.zoneId).toBe(ZONE);
    const got = await (await again.openContainer(1, ck)).get("p");
    expect(fromUtf8(openPackage(ck, ZONE, 1, "p", got!))).toBe("kept");
  });
});

describe("someone scanning the handset's storage", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "handsafe-zone-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const contains = (haystack: Uint8Array, needle: Uint8Array) =>
    Buffer.from(haystack).indexOf(Buffer.from(needle)) >= 0;

  for (const [name, make] of [
    ["MemoryKeystore", async () => new MemoryKeystore()],
    [
      "FolderKeystore",
      async () => FolderKeystore.open(join(dir, "ks"), "pass", { scrypt: { N: 2 ** 14, r: 8, p: 1 } }),
    ],
  ] as const) {
    it(`${name}: no plaintext package, no sealed package, no ZMK, UK or CK in any entry`, async () => {
      const keystore: Keystore = await make();
      const w = await world(keystore);
      const a = await w.enrol(bank, "mgr_bank", [2]);
      const ck = deriveContainerKey(a.sk, 2);
      const marker = utf8("PLAINTEXT-PACKAGE-MARKER");
      const sealed = sealPackage(ck, ZONE, 2, "pkg", marker);
      await (await w.zone.openContainer(2, ck)).put("pkg", sealed);
      const uk = deriveUserKey(w.zmk, "alice", 1);
      const secrets = [
        marker,
        sealed.subarray(12, 40),
        w.zmk,
        uk,
        ck,
        utf8(toBase64url(w.zmk)),
        utf8(toBase64url(ck)),
      ];
      const names = await keystore.list();
      expect(names.length).toBeGreaterThanOrEqual(3);
      for (const entry of names) {
        const value = (await keystore.get(entry))!;
        for (const s of secrets) expect(contains(value, s), `${entry} holds a secret`).toBe(false);
      }
      if (name === "FolderKeystore")
        for (const file of await readdir(join(dir, "ks"))) {
          const bytes = await readFile(join(dir, "ks", file));
          for (const s of secrets) expect(contains(bytes, s), `${file} holds a secret`).toBe(false);
        }
    });
  }
});

describe("flooding the zone with junk to push lock events out of its log", () => {
  it("refused signals and relayed commands are counted, not logged: the lock stays in the log", async () => {
    const w = await world();
    const a = await w.enrol(bank, "mgr_bank", [2], { maxAttempts: 1 });
    await expectCode(w.zone.openContainer(2, randomBytes(32)), "zone.locked");
    const flood = MAX_SECURITY_EVENTS + 200;
    const forged = buildFreeingSignal({
      type: "reclaim",
      zak: randomBytes(32),
      zoneId: ZONE,
      epoch: 1,
      seq: 1,
      containers: [0],
    });
    const ck = deriveContainerKey(a.sk, 2);
    for (let n = 0; n < flood; n++) {
      await expectCode(
        w.zone.applySignal({ ...forged.signal, seq: n + 1 }, forged.mac),
        "zone.signal_invalid",
      );
      const junk: RelayCommand = {
        op: "list",
        zoneId: "another-zone",
        epoch: 1,
        container: 2,
        id: `junk-${n}`,
        created: w.clock.now,
      };
      await expectCode(w.zone.relay(junk, relayProof(ck, junk)), "zone.relay_invalid");
    }
    const events = w.zone.events();
    expect(events.filter((e) => e.type === "locked" && e.container === 2)).toHaveLength(1);
    expect(events.length).toBeLessThan(10);
    expect(w.zone.refusals()).toMatchObject({
      signal: { count: flood, lastAt: T0 },
      relay: { count: flood, lastReason: "command is for another zone or epoch" },
    });
    // Both survive a restart (they are in the sealed state).
    const reopened = await SecureZone.open(w.keystore, { now: () => w.clock.now });
    expect(reopened.events().some((e) => e.type === "locked" && e.container === 2)).toBe(true);
    expect(reopened.refusals().signal.count).toBe(flood);
  });

  it("wrong keys stay security events: bounded, since a container locks after its attempts", async () => {
    const w = await world();
    for (let i = 0; i < 4; i++) await expectCode(w.zone.masterOpenFree(i, randomBytes(32)), "zone.wrong_key");
    const before = w.zone.events();
    expect(before.map((e) => e.type)).toEqual([
      "personalised",
      "wrong_key",
      "wrong_key",
      "wrong_key",
      "wrong_key",
    ]);
    expect(w.zone.events(before[2]!.seq)).toHaveLength(2);
  });
});
