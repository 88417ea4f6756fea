import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { utf8 } from "../core/codec/bytes.ts";
import { createKeyring, kekId, loadKeyring } from "./keyring.ts";

const kekA = new Uint8Array(32).fill(0xa1);
const kekB = new Uint8Array(32).fill(0xb2);
const aad = "activation/service-key/42";
const secret = utf8("the service key's private half");

function expectDecryptFailed(f: () => unknown) {
  expect(f).toThrow(expect.objectContaining({ code: "storage.decrypt_failed" }));
}

describe("sealAtRest / openAtRest", () => {
  it("round-trips, including empty plaintext", () => {
    const ring = createKeyring(kekA);
    expect(ring.openAtRest(ring.sealAtRest(secret, aad), aad)).toEqual(secret);
    expect(ring.openAtRest(ring.sealAtRest(new Uint8Array(0), aad), aad)).toEqual(new Uint8Array(0));
  });

  it("uses a fresh data key and nonce each time", () => {
    const ring = createKeyring(kekA);
    expect(ring.sealAtRest(secret, aad)).not.toEqual(ring.sealAtRest(secret, aad));
  });

  it("has the documented layout", () => {
    const ring = createKeyring(kekA);
    const sealed = ring.sealAtRest(secret, aad);
    expect(sealed[0]).toBe(1);
    expect(sealed[1]).toBe(8);
    expect(new TextDecoder().decode(sealed.subarray(2, 10))).toBe(kekId(kekA));
    expect(sealed.length).toBe(10 + 60 + 12 + secret.length + 16);
  });

  it("opens with plain AES-256-GCM as documented, and opens a record written that way", () => {
    const ring = createKeyring(kekA);
    const header = Buffer.concat([Buffer.of(1, 8), Buffer.from(kekId(kekA))]);
    const aadFor = (label: string) =>
      Buffer.concat([Buffer.from(label), Buffer.of(0), header, Buffer.from(aad)]);
    const open = (key: Uint8Array, sealed: Uint8Array, label: string) => {
      const d = createDecipheriv("aes-256-gcm", key, sealed.subarray(0, 12));
      d.setAAD(aadFor(label));
      d.setAuthTag(sealed.subarray(sealed.length - 16));
      return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]);
    };
    const seal = (key: Uint8Array, plaintext: Uint8Array, label: string) => {
      const nonce = randomBytes(12);
      const c = createCipheriv("aes-256-gcm", key, nonce);
      c.setAAD(aadFor(label));
      return Buffer.concat([nonce, c.update(plaintext), c.final(), c.getAuthTag()]);
    };
    const sealed = ring.sealAtRest(secret, aad);
    const dek = open(kekA, sealed.subarray(10, 70), "handsafe/v1/at-rest/dek");
    expect(new Uint8Array(open(dek, sealed.subarray(70), "handsafe/v1/at-rest/data"))).toEqual(secret);
    const ourDek = randomBytes(32);
    const written = Buffer.concat([
      header,
      seal(kekA, ourDek, "handsafe/v1/at-rest/dek"),
      seal(ourDek, secret, "handsafe/v1/at-rest/data"),
    ]);
    expect(ring.openAtRest(written, aad)).toEqual(secret);
  });

  it("kid = first 8 hex of SHA-256(label || key)", () => {
    expect(kekId(kekA)).toMatch(/^[0-9a-f]{8}$/);
    expect(kekId(kekA)).not.toBe(kekId(kekB));
  });
});

describe("an attacker who can write the database", () => {
  const ring = createKeyring(kekA);
  const sealed = ring.sealAtRest(secret, aad);
  const regions: [string, number, number][] = [
    ["version", 0, 1],
    ["kid length", 1, 2],
    ["kid", 2, 10],
    ["wrap nonce", 10, 22],
    ["wrapped data key", 22, 54],
    ["wrap tag", 54, 70],
    ["nonce", 70, 82],
    ["ciphertext", 82, sealed.length - 16],
    ["tag", sealed.length - 16, sealed.length],
  ];

  it.each(regions)("flips a bit in the %s: refused", (_name, from, to) => {
    for (let i = from; i < to; i++) {
      const bad = Uint8Array.from(sealed);
      bad[i]! ^= 0x01;
      expectDecryptFailed(() => ring.openAtRest(bad, aad));
    }
  });

  it("truncates or extends the record: refused", () => {
    for (const n of [0, 1, 2, 10, 70, 97, sealed.length - 1])
      expectDecryptFailed(() => ring.openAtRest(sealed.subarray(0, n), aad));
    expectDecryptFailed(() => ring.openAtRest(new Uint8Array([...sealed, 0]), aad));
  });

  it("moves a sealed value to another row (wrong aad): refused", () => {
    expectDecryptFailed(() => ring.openAtRest(sealed, "activation/service-key/43"));
    expectDecryptFailed(() => ring.openAtRest(sealed, ""));
  });

  it("has only another server's key: refused", () => {
    expectDecryptFailed(() => createKeyring(kekB).openAtRest(sealed, aad));
  });
});

describe("rotation", () => {
  it("a new current KEK still opens records sealed under the previous one, and rewraps them", () => {
    const old = createKeyring(kekA);
    const sealed = old.sealAtRest(secret, aad);
    const ring = createKeyring(kekB, [kekA]);
    expect(ring.currentKid).toBe(kekId(kekB));
    expect(ring.kids).toEqual([kekId(kekB), kekId(kekA)]);
    expect(ring.openAtRest(sealed, aad)).toEqual(secret);
    expect(ring.needsRewrap(sealed)).toBe(true);
    const rewrapped = ring.rewrap(sealed, aad);
    expect(ring.needsRewrap(rewrapped)).toBe(false);
    expect(createKeyring(kekB).openAtRest(rewrapped, aad)).toEqual(secret);
    expectDecryptFailed(() => old.openAtRest(rewrapped, aad));
  });

  it("rewrap refuses a wrong aad", () => {
    const ring = createKeyring(kekB, [kekA]);
    expectDecryptFailed(() => ring.rewrap(createKeyring(kekA).sealAtRest(secret, aad), "other"));
  });
});

describe("loadKeyring from the data folder", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const tempDir = () => {
    const d = mkdtempSync(join(tmpdir(), "handsafe-keyring-"));
    dirs.push(d);
    return d;
  };

  it("creates master.key with mode 0600 on first start and reuses it", () => {
    const dir = join(tempDir(), "data");
    const first = loadKeyring({ dataDir: dir });
    const path = join(dir, "master.key");
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readFileSync(path).length).toBe(32);
    const sealed = first.sealAtRest(secret, aad);
    const second = loadKeyring({ dataDir: dir });
    expect(second.currentKid).toBe(first.currentKid);
    expect(second.openAtRest(sealed, aad)).toEqual(secret);
  });

  it("rotation by file: master.key renamed to master.key.<kid>, a new one is created", () => {
    const dir = tempDir();
    const first = loadKeyring({ dataDir: dir });
    const sealed = first.sealAtRest(secret, aad);
    renameSync(join(dir, "master.key"), join(dir, `master.key.${first.currentKid}`));
    const ring = loadKeyring({ dataDir: dir });
    expect(ring.currentKid).not.toBe(first.currentKid);
    expect(ring.kids).toContain(first.currentKid);
    expect(ring.openAtRest(ring.rewrap(sealed, aad), aad)).toEqual(secret);
  });

  it("HANDSAFE_MASTER_KEY wins; an existing master.key and HANDSAFE_MASTER_KEY_PREVIOUS still open", () => {
    const dir = tempDir();
    const fileRing = loadKeyring({ dataDir: dir });
    const fromFile = fileRing.sealAtRest(secret, aad);
    const fromPrevious = createKeyring(kekA).sealAtRest(secret, aad);
    const ring = loadKeyring({ dataDir: dir, masterKey: kekB, previousKeys: [kekA] });
    expect(ring.currentKid).toBe(kekId(kekB));
    expect(ring.openAtRest(fromFile, aad)).toEqual(secret);
    expect(ring.openAtRest(fromPrevious, aad)).toEqual(secret);
  });

  it("refuses a key file others can read, a short one, and a mislabelled previous one", () => {
    const dir = tempDir();
    loadKeyring({ dataDir: dir });
    chmodSync(join(dir, "master.key"), 0o644);
    expect(() => loadKeyring({ dataDir: dir })).toThrow(
      expect.objectContaining({ code: "keyring.insecure_key_file" }),
    );
    const dir2 = tempDir();
    writeFileSync(join(dir2, "master.key"), new Uint8Array(31), { mode: 0o600 });
    expect(() => loadKeyring({ dataDir: dir2 })).toThrow(
      expect.objectContaining({ code: "keyring.invalid_key_file" }),
    );
    const dir3 = tempDir();
    writeFileSync(join(dir3, "master.key.00000000"), kekA, { mode: 0o600 });
    expect(() => loadKeyring({ dataDir: dir3 })).toThrow(
      expect.objectContaining({ code: "keyring.invalid_key_file" }),
    );
  });
});
