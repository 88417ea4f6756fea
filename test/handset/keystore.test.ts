import { chmod, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { toHex, utf8 } from "../../src/core/codec/bytes.ts";
import { isHandsafeError } from "../../src/core/errors.ts";
import { DEFAULT_SCRYPT, FolderKeystore } from "../../src/handset/folder-keystore.ts";
import { type Keystore, MemoryKeystore } from "../../src/handset/keystore.ts";

/** The minimum cost the keystore accepts, so the suite stays fast; one test uses the default. */
const FAST = { scrypt: { N: 2 ** 14, r: 8, p: 1 } };

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "handsafe-keystore-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const e = await promise.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isHandsafeError(e, code), `expected ${code}, got ${String(e)}`).toBe(true);
}

const fileOf = (name: string) => `${toHex(utf8(name))}.entry`;

function contract(label: string, make: () => Promise<Keystore>) {
  describe(`${label}: the Keystore contract`, () => {
    it("stores, lists by prefix, replaces and deletes entries", async () => {
      const ks = await make();
      expect(await ks.get("activation/svc-1/key")).toBeUndefined();
      await ks.put("activation/svc-1/key", Uint8Array.of(1, 2, 3));
      await ks.put("activation/svc-2/key", Uint8Array.of(4));
      await ks.put("management/session", new Uint8Array(0));
      expect(await ks.get("activation/svc-1/key")).toEqual(Uint8Array.of(1, 2, 3));
      expect(await ks.get("management/session")).toEqual(new Uint8Array(0));
      expect(await ks.list("activation/")).toEqual(["activation/svc-1/key", "activation/svc-2/key"]);
      expect(await ks.list()).toHaveLength(3);
      await ks.put("activation/svc-1/key", Uint8Array.of(9));
      expect(await ks.get("activation/svc-1/key")).toEqual(Uint8Array.of(9));
      await ks.delete("activation/svc-1/key");
      await ks.delete("activation/svc-1/key");
      expect(await ks.get("activation/svc-1/key")).toBeUndefined();
      expect(await ks.list("activation/")).toEqual(["activation/svc-2/key"]);
    });

    it("accepts any name a capability may choose: slashes, dots, Unicode", async () => {
      const ks = await make();
      const names = ["../../etc/passwd", ".", "a\\b:c*?", "clé/🔑", "x".repeat(120), "A", "a"];
      for (const [i, n] of names.entries()) await ks.put(n, Uint8Array.of(i));
      for (const [i, n] of names.entries()) expect(await ks.get(n)).toEqual(Uint8Array.of(i));
      expect(await ks.list()).toEqual([...names].sort());
    });

    it("refuses empty, over-long and ill-formed names", async () => {
      const ks = await make();
      await expectCode(ks.put("", Uint8Array.of(1)), "keystore.invalid_name");
      await expectCode(ks.put("x".repeat(121), Uint8Array.of(1)), "keystore.invalid_name");
      await expectCode(ks.get("\ud800"), "keystore.invalid_name");
    });

    it("hands out copies, so a caller cannot alter what is stored", async () => {
      const ks = await make();
      const v = Uint8Array.of(1, 2);
      await ks.put("k", v);
      v[0] = 7;
      const got = (await ks.get("k"))!;
      got[1] = 7;
      expect(await ks.get("k")).toEqual(Uint8Array.of(1, 2));
    });
  });
}

contract("MemoryKeystore", async () => new MemoryKeystore());
contract("FolderKeystore", () => FolderKeystore.open(join(dir, "ks"), "correct horse", FAST));

describe("FolderKeystore: at rest", () => {
  it("persists across opens and records its KDF parameters", async () => {
    const path = join(dir, "ks");
    const ks = await FolderKeystore.open(path, "pass", FAST);
    await ks.put("activation/svc/key", utf8("secret"));
    const again = await FolderKeystore.open(path, "pass");
    expect(await again.get("activation/svc/key")).toEqual(utf8("secret"));
    const header = JSON.parse(await readFile(join(path, "keystore.json"), "utf8"));
    expect(header).toMatchObject({
      format: "handsafe-keystore",
      version: 1,
      kdf: { name: "scrypt", N: 2 ** 14 },
    });
    expect(header.kdf.salt).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });

  it("uses N=2^15, r=8, p=1 by default", async () => {
    await FolderKeystore.open(join(dir, "ks"), "pass");
    const header = JSON.parse(await readFile(join(dir, "ks", "keystore.json"), "utf8"));
    expect(header.kdf).toMatchObject({ N: 2 ** 15, r: 8, p: 1 });
    expect(DEFAULT_SCRYPT).toEqual({ N: 2 ** 15, r: 8, p: 1 });
  });

  it("leaks neither the value nor the name in plain text; files are 0600, no temp files left", async () => {
    const path = join(dir, "ks");
    const ks = await FolderKeystore.open(path, "pass", FAST);
    await ks.put("wim/identity", utf8("TOP-SECRET-VALUE"));
    const files = (await readdir(path)).sort();
    expect(files).toEqual([fileOf("wim/identity"), "keystore.json"].sort());
    const raw = await readFile(join(path, fileOf("wim/identity")));
    expect(raw.toString("latin1")).not.toContain("TOP-SECRET-VALUE");
    expect(raw.length).toBe(1 + 12 + 16 + 16);
    for (const f of files) expect((await stat(join(path, f))).mode & 0o777).toBe(0o600);
    expect(JSON.stringify(ks)).not.toMatch(/key"|[A-Za-z0-9_-]{43}/);
  });

  it("encrypts each write under a fresh nonce", async () => {
    const ks = await FolderKeystore.open(join(dir, "ks"), "pass", FAST);
    await ks.put("k", utf8("same"));
    const a = await readFile(join(dir, "ks", fileOf("k")));
    await ks.put("k", utf8("same"));
    const b = await readFile(join(dir, "ks", fileOf("k")));
    expect(a.equals(b)).toBe(false);
  });

  it("ignores stray files when listing", async () => {
    const ks = await FolderKeystore.open(join(dir, "ks"), "pass", FAST);
    await ks.put("k", utf8("v"));
    await writeFile(join(dir, "ks", ".abc.tmp"), "x");
    await writeFile(join(dir, "ks", "ZZ.entry"), "x");
    await writeFile(join(dir, "ks", "6B.entry"), "x"); // uppercase hex is not canonical
    expect(await ks.list()).toEqual(["k"]);
  });
});

describe("FolderKeystore: someone guessing the passphrase", () => {
  it("gets keystore.wrong_passphrase", async () => {
    const path = join(dir, "ks");
    await (await FolderKeystore.open(path, "right", FAST)).put("k", utf8("v"));
    await expectCode(FolderKeystore.open(path, "wrong"), "keystore.wrong_passphrase");
    await expectCode(FolderKeystore.open(path, ""), "keystore.invalid_passphrase");
  });

  it("treats the passphrase in NFC, so both spellings of é open it", async () => {
    const path = join(dir, "ks");
    await FolderKeystore.open(path, "caf\u00e9", FAST);
    await FolderKeystore.open(path, "cafe\u0301");
  });
});

describe("FolderKeystore: someone tampering with the files", () => {
  it("flipping a bit of an entry → keystore.corrupt", async () => {
    const path = join(dir, "ks");
    const ks = await FolderKeystore.open(path, "pass", FAST);
    await ks.put("k", utf8("value"));
    const file = join(path, fileOf("k"));
    const raw = await readFile(file);
    for (const at of [0, 5, raw.length - 1, 14]) {
      const bad = Buffer.from(raw);
      bad[at]! ^= 1;
      await writeFile(file, bad);
      await expectCode(ks.get("k"), "keystore.corrupt");
    }
    await writeFile(file, raw.subarray(0, 20));
    await expectCode(ks.get("k"), "keystore.corrupt");
  });

  it("swapping two entries' files → keystore.corrupt", async () => {
    const path = join(dir, "ks");
    const ks = await FolderKeystore.open(path, "pass", FAST);
    await ks.put("activation/a/key", utf8("key of a"));
    await ks.put("activation/b/key", utf8("key of b"));
    const a = join(path, fileOf("activation/a/key"));
    const b = join(path, fileOf("activation/b/key"));
    await rename(a, join(path, "tmp"));
    await rename(b, a);
    await rename(join(path, "tmp"), b);
    await expectCode(ks.get("activation/a/key"), "keystore.corrupt");
    await expectCode(ks.get("activation/b/key"), "keystore.corrupt");
  });

  it("copying an entry from another keystore with the same passphrase → keystore.corrupt", async () => {
    const one = await FolderKeystore.open(join(dir, "one"), "pass", FAST);
    const two = await FolderKeystore.open(join(dir, "two"), "pass", FAST);
    await one.put("k", utf8("one"));
    await two.put("k", utf8("two"));
    await writeFile(join(dir, "two", fileOf("k")), await readFile(join(dir, "one", fileOf("k"))));
    await expectCode(two.get("k"), "keystore.corrupt");
  });

  it("a mangled keystore.json → keystore.corrupt; a planted huge scrypt cost is refused", async () => {
    const path = join(dir, "ks");
    await FolderKeystore.open(path, "pass", FAST);
    const headerFile = join(path, "keystore.json");
    const header = JSON.parse(await readFile(headerFile, "utf8"));
    await writeFile(headerFile, "{not json");
    await expectCode(FolderKeystore.open(path, "pass"), "keystore.corrupt");
    await writeFile(headerFile, JSON.stringify({ ...header, kdf: { ...header.kdf, N: 2 ** 30 } }));
    await expectCode(FolderKeystore.open(path, "pass"), "keystore.corrupt");
    await writeFile(headerFile, JSON.stringify({ ...header, kdf: { ...header.kdf, N: 3 * 2 ** 14 } }));
    await expectCode(FolderKeystore.open(path, "pass"), "keystore.corrupt");
    await writeFile(headerFile, JSON.stringify({ ...header, keyCheck: "AAAA" }));
    await expectCode(FolderKeystore.open(path, "pass"), "keystore.wrong_passphrase");
  });
});

describe("FolderKeystore: opening the wrong folder", () => {
  it("a keystore of another version → keystore.unsupported_version", async () => {
    const path = join(dir, "ks");
    await FolderKeystore.open(path, "pass", FAST);
    const headerFile = join(path, "keystore.json");
    const header = JSON.parse(await readFile(headerFile, "utf8"));
    await writeFile(headerFile, JSON.stringify({ ...header, version: 2 }));
    await expectCode(FolderKeystore.open(path, "pass"), "keystore.unsupported_version");
  });

  it("a non-empty folder that is not a keystore, or a file → keystore.not_a_keystore", async () => {
    await writeFile(join(dir, "notes.txt"), "hello");
    await expectCode(FolderKeystore.open(dir, "pass"), "keystore.not_a_keystore");
    await expectCode(FolderKeystore.open(join(dir, "notes.txt"), "pass"), "keystore.not_a_keystore");
    await writeFile(join(dir, "keystore.json"), JSON.stringify({ format: "something-else" }));
    await expectCode(FolderKeystore.open(dir, "pass"), "keystore.not_a_keystore");
    expect(await readFile(join(dir, "notes.txt"), "utf8")).toBe("hello");
  });

  it("an existing empty folder becomes a keystore", async () => {
    const ks = await FolderKeystore.open(dir, "pass", FAST);
    await ks.put("k", utf8("v"));
    expect(await (await FolderKeystore.open(dir, "pass")).get("k")).toEqual(utf8("v"));
  });

  it("a failed write leaves the old value in place", async () => {
    const path = join(dir, "ks");
    const ks = await FolderKeystore.open(path, "pass", FAST);
    await ks.put("k", utf8("old"));
    await chmod(path, 0o500);
    try {
      if (process.getuid?.() === 0) return; // root ignores the folder's mode
      await expect(ks.put("k", utf8("new"))).rejects.toThrow();
    } finally {
      await chmod(path, 0o700);
    }
    expect(await ks.get("k")).toEqual(utf8("old"));
    expect((await readdir(path)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });
});
