/**
 * A backup item is a standard age v1 file (docs/protocols/backup.md §3): the reference `age` CLI
 * opens what we sealed (header || payload) with the identity file from the module's card image, and
 * a file `age -r <recipient>` wrote opens as an item with the module. In CI a missing `age` is a
 * failure, never a silent skip.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { collectBytes, openItem, sealItem, sealName, unwrapItemKey } from "../../src/backup/item-crypto.ts";
import { decryptBytes } from "../../src/core/age/age.ts";
import { readHeaderBytes } from "../../src/core/age/format.ts";
import { ByteReader } from "../../src/core/age/reader.ts";
import { ScryptIdentity } from "../../src/core/age/scrypt-recipient.ts";
import { CHUNK_SIZE } from "../../src/core/age/stream.ts";
import { concatBytes, fromUtf8 } from "../../src/core/codec/bytes.ts";
import { IdentityModule, type UnlockedIdentity } from "../../src/handset/identity-module.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";

function ageAvailable(): boolean {
  if (spawnSync("age", ["--version"], { encoding: "utf8" }).status === 0) return true;
  if (process.env["CI"])
    throw new Error("the `age` CLI is not on PATH: CI must run the age interop tests (.ci/run installs it).");
  console.warn("SKIPPING backup age interop tests: `age` is not on PATH (apt-get install -y age).");
  return false;
}

async function* pieces(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += 50_000) yield bytes.subarray(at, at + 50_000);
}

const SIZES = [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 7];
const PASSPHRASE = "interop passphrase";

describe.skipIf(!ageAvailable())("backup items and the age CLI read each other's files", () => {
  const dir = mkdtempSync(join(tmpdir(), "handsafe-bk-age-"));
  const keyFile = join(dir, "identity.txt");
  let identity: UnlockedIdentity;

  beforeAll(async () => {
    const { module } = await IdentityModule.create(new MemoryKeystore(), { pin: "1234", scryptLogN: 10 });
    identity = await module.unlock("1234");
    // The user's explicit act: open the card image with its passphrase to get the identity file.
    const card = await module.exportCard("1234", PASSPHRASE, { logN: 10 });
    const text = fromUtf8(await decryptBytes([new ScryptIdentity(PASSPHRASE)], card));
    writeFileSync(keyFile, text, { mode: 0o600 });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("the card's identity file is the module's recipient (age-keygen -y)", () => {
    expect(execFileSync("age-keygen", ["-y", keyFile], { encoding: "utf8" }).trim()).toBe(identity.recipient);
  });

  for (const size of SIZES) {
    it(`age -d opens our sealed item of ${size} bytes`, async () => {
      const plaintext = new Uint8Array(randomBytes(size));
      const item = sealItem({
        itemId: identity.itemId("files/x.bin"),
        metadata: { path: "files/x.bin", modifiedAt: new Date(0).toISOString() },
        recipients: [identity.recipient],
        plaintext: () => pieces(plaintext),
        hasher: () => identity.contentHasher(),
      });
      const file = join(dir, `ours-${size}.age`);
      writeFileSync(file, concatBytes(item.header, await collectBytes(item.payload())));
      const out = execFileSync("age", ["-d", "-i", keyFile, file], { maxBuffer: 64 << 20 });
      expect(Buffer.compare(out, plaintext)).toBe(0);
    });

    it(`a file age -r wrote of ${size} bytes restores as an item`, async () => {
      const plaintext = new Uint8Array(randomBytes(size));
      const file = join(dir, `theirs-${size}.age`);
      execFileSync("age", ["-r", identity.recipient, "-o", file], { input: plaintext });
      const bytes = new Uint8Array(readFileSync(file));
      // Split as the envelope keeps it: the header apart, the payload (nonce + chunks) in a blob.
      const reader = new ByteReader(bytes);
      const header = await readHeaderBytes(reader);
      const payload = bytes.subarray(header.length);
      const itemId = identity.itemId("files/from-age.bin");
      const { fileKey } = unwrapItemKey(header, identity);
      const name = sealName(fileKey, itemId, {
        path: "files/from-age.bin",
        modifiedAt: new Date(0).toISOString(),
      });
      const hasher = identity.contentHasher();
      await hasher.update(plaintext);
      const opened = openItem({
        itemId,
        header,
        name,
        payload: pieces(payload),
        unlocked: identity,
        expected: { size, hash: await hasher.digest(), hasher: identity.contentHasher() },
      });
      expect(opened.metadata.path).toBe("files/from-age.bin");
      expect(Buffer.compare(await collectBytes(opened.plaintext), plaintext)).toBe(0);
    });
  }
});
