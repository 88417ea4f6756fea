import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { decryptBytes, encryptBytes } from "../../src/core/age/age.ts";
import { CHUNK_SIZE } from "../../src/core/age/stream.ts";
import { generateIdentity, identityToRecipient } from "../../src/core/age/keys.ts";

/**
 * Interop with the reference `age` CLI (Debian's `age`, installed by .ci/run): it decrypts what we
 * encrypt and we decrypt what it encrypts. In CI a missing `age` is a failure, never a silent skip.
 */

function ageAvailable(): boolean {
  const found = spawnSync("age", ["--version"], { encoding: "utf8" }).status === 0;
  if (found) return true;
  if (process.env["CI"])
    throw new Error("the `age` CLI is not on PATH: CI must run the age interop tests (.ci/run installs it).");
  console.warn("SKIPPING age CLI interop tests: `age` is not on PATH (apt-get install -y age).");
  return false;
}

const SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 1024 * 1024 + 17];

describe.skipIf(!ageAvailable())("the age CLI and we read each other's files", () => {
  const dir = mkdtempSync(join(tmpdir(), "handsafe-age-"));
  const identity = generateIdentity();
  const recipient = identityToRecipient(identity);
  const keyFile = join(dir, "key.txt");
  writeFileSync(keyFile, `# handsafe test key\n# public key: ${recipient}\n${identity}\n`, { mode: 0o600 });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("age-keygen -y gives the same recipient for our identity", () => {
    expect(execFileSync("age-keygen", ["-y", keyFile], { encoding: "utf8" }).trim()).toBe(recipient);
  });

  for (const size of SIZES) {
    it(`age -d opens our file of ${size} bytes`, async () => {
      const plaintext = new Uint8Array(randomBytes(size));
      const file = join(dir, `ours-${size}.age`);
      writeFileSync(file, await encryptBytes([recipient], plaintext));
      const out = execFileSync("age", ["-d", "-i", keyFile, file], { maxBuffer: 64 << 20 });
      expect(Buffer.compare(out, plaintext)).toBe(0);
    });

    it(`we open age -r's file of ${size} bytes`, async () => {
      const plaintext = randomBytes(size);
      const file = join(dir, `theirs-${size}.age`);
      execFileSync("age", ["-r", recipient, "-o", file], { input: plaintext });
      const opened = await decryptBytes([identity], new Uint8Array(readFileSync(file)));
      expect(Buffer.compare(opened, plaintext)).toBe(0);
    });
  }

  it("age -d refuses our file when one payload byte is flipped", async () => {
    const sealed = await encryptBytes([recipient], new Uint8Array(100));
    sealed[sealed.length - 1]! ^= 1;
    const file = join(dir, "tampered.age");
    writeFileSync(file, sealed);
    expect(spawnSync("age", ["-d", "-i", keyFile, file]).status).not.toBe(0);
  });
});
