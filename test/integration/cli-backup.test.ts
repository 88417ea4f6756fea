/**
 * Secure backup from the command line, as a handset user runs it: real processes, a real server. Alice
 * makes a handset in a folder, backs up a data folder (a progress bar on stderr), backs up again
 * incrementally, restores into a new folder byte for byte, exports her card; a new handset imports it
 * and restores; Bob registers, Alice shares photos with him and revokes; a wrong PIN is a wim code.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { handsafe } from "../helpers/cli.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

/** Runs a command that must succeed (its stderr in the failure message otherwise). */
async function ok(args: string[], env: Record<string, string>): Promise<string> {
  const r = await handsafe(args, env);
  expect(r.code, `handsafe ${args.join(" ")}\n${r.stderr}`).toBe(0);
  expect(r.stderr).not.toMatch(/^error/m);
  return r.stdout;
}

/** Every file under `root` (relative path → base64), for byte-for-byte comparison. */
function tree(root: string, skip: (rel: string) => boolean = () => false): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      const rel = relative(root, full);
      if (skip(rel)) continue;
      if (statSync(full).isDirectory()) walk(full);
      else out[rel] = readFileSync(full).toString("base64");
    }
  };
  walk(root);
  return out;
}

const json = (o: Record<string, unknown>) => `${JSON.stringify(o, null, 2)}\n`;

describe("handsafe backup … against a running server", () => {
  let t: TestServer;
  let work: string;
  let env: Record<string, string>;
  const run = randomBytes(3).toString("hex");
  const [aliceHandle, bobHandle] = [`alice-${run}`, `bob-${run}`];

  beforeAll(async () => {
    t = await startTestServer("sqlite");
    work = mkdtempSync(join(tmpdir(), "handsafe-cli-backup-"));
    env = {
      HANDSAFE_URL: t.server.url,
      HANDSAFE_PIN: t.server.pin,
      HANDSAFE_HANDSET_PASSPHRASE: "a long handset passphrase",
      HANDSAFE_WIM_PIN: "2468",
      HANDSAFE_CARD_PASSPHRASE: "",
    };
    const data = join(work, "data");
    mkdirSync(join(data, "files", "photos"), { recursive: true });
    mkdirSync(join(data, "files", "tmp"), { recursive: true });
    writeFileSync(
      join(data, "contacts.json"),
      json({ c1: { name: "Bob Jones", tel: "+447911123456" }, c2: { name: "Carol" } }),
    );
    writeFileSync(join(data, "messages.json"), json({ m1: { from: "Bob", text: "see you at 6" } }));
    writeFileSync(join(data, "files", "notes.txt"), "buy milk\n");
    writeFileSync(join(data, "files", "big.bin"), randomBytes(3 * 1024 * 1024 + 17));
    writeFileSync(join(data, "files", "photos", "beach.jpg"), randomBytes(200_000));
    writeFileSync(join(data, "files", "tmp", "cache.bin"), randomBytes(1000));
  });
  afterAll(async () => {
    await t?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("init, run (full then incremental), list, restore, export and import the card, share and revoke", async () => {
    const [alice, bob, carol] = [join(work, "alice"), join(work, "bob"), join(work, "carol")];
    const data = join(work, "data");
    const bobEnv = { ...env, HANDSAFE_WIM_PIN: "8642" };
    const [init] = await Promise.all([
      handsafe(["backup", "init", "--dir", alice, "--handle", aliceHandle], env),
      ok(["backup", "init", "--dir", bob, "--handle", bobHandle], bobEnv),
      ok(["backup", "init", "--dir", carol], { ...env, HANDSAFE_WIM_PIN: "1111" }),
    ]);
    expect(init.code, init.stderr).toBe(0);
    const accountId = /account (acct_[\w-]{22}) \(alice-/.exec(init.stdout)?.[1];
    expect(accountId).toBeDefined();
    expect(init.stdout).toMatch(/^PUK: [0-9]{8}$/m);
    expect(init.stderr).toMatch(/^warning: the PUK is shown this once/m);
    // The PIN is never echoed.
    expect(init.stdout + init.stderr).not.toContain("2468");
    expect(JSON.parse(readFileSync(join(alice, "backup.json"), "utf8"))).toMatchObject({
      accountId,
      handle: aliceHandle,
    });

    const select = ["--select", "kind:contacts", "--select", "messages", "--select", "files/**"];
    // Carol's handset meanwhile: a wrong PIN is wim.pin_invalid with the tries left and exit 1; the right
    // one still works (and gives the try back).
    const carolLane = (async () => {
      const wrong = await handsafe(["backup", "list", "--dir", carol, "--pin", "9999"], env);
      const right = await handsafe(["backup", "list", "--dir", carol, "--pin", "1111"], env);
      return { wrong, right };
    })();
    const first = await handsafe(
      ["backup", "run", "--dir", alice, "--data", data, ...select, "--exclude", "files/tmp/**"],
      env,
    );
    expect(first.code, first.stderr).toBe(0);
    const firstId = /^backup (bk_[\w-]+) \(full\)$/m.exec(first.stdout)?.[1];
    expect(firstId).toBeDefined();
    expect(first.stdout).toMatch(/added 6, replaced 0, copied 0, deleted 0/);
    expect(first.stdout).toMatch(/uploaded 2 blobs, [0-9]+ bytes/);
    // Progress on stderr: the whole pass and the large item's upload, up to 100%.
    expect(first.stderr).toMatch(/^backup \[#+\] 100\.0%/m);
    expect(first.stderr).toMatch(/^upload files\/big\.bin \[#+\] 100\.0%/m);

    writeFileSync(join(data, "files", "notes.txt"), "buy milk and eggs\n");
    const second = await ok(
      [
        "backup",
        "run",
        "--dir",
        alice,
        "--data",
        data,
        ...select,
        "--exclude",
        "files/tmp/**",
        "--no-progress",
      ],
      env,
    );
    const latest = /^backup (bk_[\w-]+) \(incremental, parent (bk_[\w-]+)\)$/m.exec(second);
    expect(latest?.[2]).toBe(firstId);
    const secondId = latest![1]!;
    expect(second).toMatch(/added 0, replaced 1, copied 5, deleted 0/);
    expect(second).toMatch(/uploaded 0 blobs, 0 bytes/);

    const { wrong, right } = await carolLane;
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^error \[wim\.pin_invalid\]: wrong PIN, 2 tries left$/m);
    expect(wrong.stdout + wrong.stderr).not.toContain("9999");
    expect(right.code, right.stderr).toBe(0);
    expect(right.stdout).toMatch(/^no backups$/m);

    // From here, lanes per handset folder run side by side (one command at a time per folder: the lock).
    const restored = join(work, "restored");
    const card = join(work, "card.age");
    const cardEnv = { ...env, HANDSAFE_CARD_PASSPHRASE: "correct horse battery staple" };
    const aliceLane = async () => {
      const list = await ok(["backup", "list", "--dir", alice, "--json"], env);
      // The latest into a new folder: byte for byte what was selected.
      const r = await handsafe(
        ["backup", "restore", "--dir", alice, "--id", secondId, "--into", restored],
        env,
      );
      await ok(["backup", "identity-export", "--dir", alice, "--out", card, "--armor"], cardEnv);
      const share = await ok(
        [
          "backup",
          "share",
          "--dir",
          alice,
          "--id",
          secondId,
          "--with",
          bobHandle,
          "--select",
          "files/photos/**",
        ],
        env,
      );
      return { list, r, share };
    };
    const { list, r, share } = await aliceLane();
    const backups = JSON.parse(list) as Array<{
      id: string;
      kind: string;
      parent: string | null;
      items: number;
    }>;
    expect(backups.map((b) => [b.id, b.kind, b.parent, b.items])).toEqual([
      [firstId, "backup", null, 6],
      [secondId, "backup", firstId, 6],
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^restored 6 items \([0-9]+ bytes\)/m);
    expect(r.stderr).toMatch(/^restore \[#+\] 100\.0%/m);
    expect(tree(restored)).toEqual(tree(data, (rel) => rel.startsWith(join("files", "tmp"))));
    expect(readFileSync(card, "utf8")).toMatch(/^-----BEGIN AGE ENCRYPTED FILE-----/);
    const shareId = /^share (bk_[\w-]+) of bk_[\w-]+ with acct_[\w-]+ \(1 items\)$/m.exec(share)?.[1];
    expect(shareId).toBeDefined();

    const phone2 = join(work, "alice-new");
    const bobData = join(work, "bob-data");
    const restored2 = join(work, "restored2");
    const newPin = { ...cardEnv, HANDSAFE_WIM_PIN: "135790" };
    const [, badPassphrase, imported, [shared, noOwner]] = await Promise.all([
      // One item of the first backup, merged over what is there.
      ok(
        [
          "backup",
          "restore",
          "--dir",
          alice,
          "--id",
          firstId!,
          "--into",
          restored,
          "--item",
          "files/notes.txt",
        ],
        env,
      ),
      handsafe(
        ["backup", "identity-import", "--dir", join(work, "nope"), "--card", card, "--passphrase", "wrong"],
        env,
      ),
      (async () => {
        // The card image, to a new handset with a new PIN; it restores the first backup.
        const imported = await handsafe(
          ["backup", "identity-import", "--dir", phone2, "--card", card],
          newPin,
        );
        await ok(
          ["backup", "restore", "--dir", phone2, "--id", firstId!, "--into", restored2, "--no-progress"],
          newPin,
        );
        return imported;
      })(),
      (async () => {
        const shared = await ok(["backup", "shared", "--dir", bob, "--json"], bobEnv);
        await ok(
          ["backup", "restore", "--dir", bob, "--id", shareId!, "--owner", aliceHandle, "--into", bobData],
          bobEnv,
        );
        // Without the owner's handle the signature cannot be checked: refused, with a code.
        const noOwner = await handsafe(
          ["backup", "restore", "--dir", bob, "--id", shareId!, "--into", join(work, "x")],
          bobEnv,
        );
        return [shared, noOwner] as const;
      })(),
    ]);
    expect(readFileSync(join(restored, "files", "notes.txt"), "utf8")).toBe("buy milk\n");
    expect(badPassphrase.code).toBe(1);
    expect(badPassphrase.stderr).toMatch(/^error \[wim\.passphrase_invalid\]/m);
    expect(imported.code, imported.stderr).toBe(0);
    expect(imported.stdout).toContain(accountId);
    expect(imported.stdout).toMatch(/^PUK: [0-9]{8}$/m);
    expect(readFileSync(join(restored2, "files", "notes.txt"), "utf8")).toBe("buy milk\n");
    expect(readFileSync(join(restored2, "files", "big.bin"))).toEqual(
      readFileSync(join(data, "files", "big.bin")),
    );
    expect(JSON.parse(shared)).toEqual([expect.objectContaining({ id: shareId, owner: accountId })]);
    expect(tree(bobData)).toEqual({
      [join("files", "photos", "beach.jpg")]: readFileSync(
        join(data, "files", "photos", "beach.jpg"),
      ).toString("base64"),
    });
    expect(noOwner.stderr).toMatch(/^error \[backup\.owner_required\]/m);

    await ok(["backup", "revoke", "--dir", alice, "--id", shareId!, "--with", bobHandle], env);
    const gone = await handsafe(
      ["backup", "restore", "--dir", bob, "--id", shareId!, "--owner", aliceHandle, "--into", bobData],
      bobEnv,
    );
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/^error \[backup\.not_found\]/m);
    // About 25 commands, each its own process: 71 s alone on a 2-core machine, 86 s beside another fork.
  }, 240_000);
});
