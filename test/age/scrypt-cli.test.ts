import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { decryptBytes, encryptBytes } from "../../src/core/age/age.ts";
import { armor, dearmor } from "../../src/core/age/armor.ts";
import { generateIdentity, identityToRecipient } from "../../src/core/age/keys.ts";
import { ScryptIdentity, ScryptRecipient } from "../../src/core/age/scrypt-recipient.ts";
import { CHUNK_SIZE } from "../../src/core/age/stream.ts";
import { isHandsafeError } from "../../src/core/errors.ts";

/**
 * Interop of the scrypt (passphrase) recipient with the reference `age` CLI (Debian's `age`, installed
 * by .ci/run). `age` reads a passphrase only from the terminal, never from stdin or the environment,
 * so it runs under util-linux `script`, which gives it a pseudo-terminal fed from our stdin. In CI a
 * missing `age` or `script` is a failure, never a silent skip.
 */

function toolsAvailable(): boolean {
  const found =
    spawnSync("age", ["--version"], { encoding: "utf8" }).status === 0 &&
    spawnSync("script", ["--version"], { encoding: "utf8" }).status === 0;
  if (found) return true;
  if (process.env["CI"])
    throw new Error("`age` or `script` is not on PATH: CI must run the age scrypt interop tests.");
  console.warn(
    "SKIPPING age scrypt interop tests: `age` or `script` is not on PATH (apt-get install -y age).",
  );
  return false;
}

/** Single-quoted for `sh -c` (our temp paths have no quotes, but say so rather than assume). */
function shellQuote(arg: string): string {
  return `'${arg.replaceAll("'", "'\\''")}'`;
}

/**
 * Runs `age args…` on a pseudo-terminal and types each of `lines` followed by Enter. The typed text is
 * buffered by the terminal until age reads it, so it may be written up front. Returns age's exit code.
 */
function ageOnTerminal(args: readonly string[], lines: readonly string[]): number {
  const command = ["age", ...args].map(shellQuote).join(" ");
  const run = spawnSync("script", ["-qec", command, "/dev/null"], {
    input: lines.map((l) => `${l}\n`).join(""),
    timeout: 60_000,
  });
  if (run.error) throw run.error;
  return run.status ?? -1;
}

/** age opens `-o` lazily, on its first write: an empty plaintext leaves no file at all. */
function output(path: string): Buffer {
  return existsSync(path) ? readFileSync(path) : Buffer.alloc(0);
}

describe.skipIf(!toolsAvailable())("the age CLI and we read each other's passphrase files", () => {
  const dir = mkdtempSync(join(tmpdir(), "handsafe-age-scrypt-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const passphrase = "correct horse battery staple";

  for (const size of [0, 1, CHUNK_SIZE + 1]) {
    it(`age -d opens our passphrase file of ${size} bytes`, async () => {
      const plaintext = new Uint8Array(randomBytes(size));
      const file = join(dir, `ours-${size}.age`);
      const out = join(dir, `ours-${size}.txt`);
      writeFileSync(file, await encryptBytes([new ScryptRecipient(passphrase, 12)], plaintext));
      expect(ageOnTerminal(["-d", "-o", out, file], [passphrase])).toBe(0);
      expect(Buffer.compare(output(out), plaintext)).toBe(0);
    });
  }

  it("we open age -p's file (its default work factor, 2^18)", async () => {
    const plaintext = randomBytes(1000);
    const input = join(dir, "theirs.txt");
    const file = join(dir, "theirs.age");
    writeFileSync(input, plaintext);
    expect(ageOnTerminal(["-p", "-o", file, input], [passphrase, passphrase])).toBe(0);
    const sealed = new Uint8Array(readFileSync(file));
    expect(new TextDecoder().decode(sealed.subarray(0, 60))).toMatch(
      /^age-encryption\.org\/v1\n-> scrypt \S{22} 18\n/,
    );
    const opened = await decryptBytes([new ScryptIdentity(passphrase)], sealed);
    expect(Buffer.compare(opened, plaintext)).toBe(0);
  }, 30_000);

  it("armored both ways, with a non-ASCII passphrase", async () => {
    const unicode = "pässwörd ☃";
    const plaintext = randomBytes(300);
    const ours = join(dir, "ours-armored.age");
    const oursOut = join(dir, "ours-armored.txt");
    writeFileSync(
      ours,
      armor(await encryptBytes([new ScryptRecipient(unicode, 10)], new Uint8Array(plaintext))),
    );
    expect(ageOnTerminal(["-d", "-o", oursOut, ours], [unicode])).toBe(0);
    expect(Buffer.compare(readFileSync(oursOut), plaintext)).toBe(0);

    const input = join(dir, "theirs-armored.txt");
    const theirs = join(dir, "theirs-armored.age");
    writeFileSync(input, plaintext);
    expect(ageOnTerminal(["-p", "-a", "-o", theirs, input], [unicode, unicode])).toBe(0);
    const opened = await decryptBytes([new ScryptIdentity(unicode)], dearmor(readFileSync(theirs)));
    expect(Buffer.compare(opened, plaintext)).toBe(0);
  }, 30_000);

  it("age -d refuses our file under a wrong passphrase", async () => {
    const file = join(dir, "wrong.age");
    const out = join(dir, "wrong.txt");
    writeFileSync(file, await encryptBytes([new ScryptRecipient(passphrase, 10)], new Uint8Array(10)));
    expect(ageOnTerminal(["-d", "-o", out, file], ["not the passphrase"])).not.toBe(0);
  });
});

describe("the scrypt recipient on its own (no CLI)", () => {
  const codeOf = async (p: Promise<unknown>) => {
    try {
      await p;
      return undefined;
    } catch (e) {
      return isHandsafeError(e) ? e.code : e;
    }
  };

  it("round-trips, and a wrong passphrase is age.no_match", async () => {
    const sealed = await encryptBytes([new ScryptRecipient("p1", 10)], new Uint8Array([1, 2, 3]));
    expect([...(await decryptBytes([new ScryptIdentity("p1")], sealed))]).toEqual([1, 2, 3]);
    expect(await codeOf(decryptBytes([new ScryptIdentity("p2")], sealed))).toBe("age.no_match");
  });

  it("refuses to write a passphrase file that also has another recipient", async () => {
    const other = identityToRecipient(generateIdentity());
    expect(await codeOf(encryptBytes([new ScryptRecipient("p", 10), other], new Uint8Array(1)))).toBe(
      "age.scrypt_not_alone",
    );
    expect(
      await codeOf(
        encryptBytes([new ScryptRecipient("p", 10), new ScryptRecipient("q", 10)], new Uint8Array(1)),
      ),
    ).toBe("age.scrypt_not_alone");
  });

  it("an identity refuses a work factor above its limit before doing the work", async () => {
    const sealed = await encryptBytes([new ScryptRecipient("p", 12)], new Uint8Array(1));
    expect(await codeOf(decryptBytes([new ScryptIdentity("p", 11)], sealed))).toBe(
      "age.scrypt_work_factor_too_high",
    );
    expect(await codeOf(decryptBytes([new ScryptIdentity("p", 12)], sealed))).toBeUndefined();
  });

  it("refuses an empty passphrase and work factors out of range; never serialises the passphrase", () => {
    expect(() => new ScryptRecipient("")).toThrow(expect.objectContaining({ code: "age.key_invalid" }));
    expect(() => new ScryptRecipient("p", 0)).toThrow(expect.objectContaining({ code: "age.key_invalid" }));
    expect(() => new ScryptRecipient("p", 23)).toThrow(expect.objectContaining({ code: "age.key_invalid" }));
    expect(() => new ScryptIdentity("p", 1.5)).toThrow(expect.objectContaining({ code: "age.key_invalid" }));
    expect(JSON.stringify([new ScryptRecipient("hunter2"), new ScryptIdentity("hunter2")])).not.toContain(
      "hunter2",
    );
  });
});
