/**
 * The secure-backup part of `handsafe demo`: Alice's simulated handset (contacts, messages, calendar,
 * files with a few-MiB video and a photos folder, app data) backs up to the server, which cannot read
 * it; after a few changes an incremental backup uploads only what changed. The phone is lost (its
 * folder and keystore deleted); a new handset imports the card image exported before, restores the
 * latest backup and the first one, and each is checked byte for byte. Bob registers; Alice shares her
 * photos with him (new headers, no payload moves), Bob restores them; Alice revokes, and Bob's next
 * fetch is refused. `runBackupDemo` returns what happened so a test can check it against the server.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, sep } from "node:path";
import { FolderDataStores } from "../backup/data-stores.ts";
import { BackupClient, type BackupResult } from "../backup/handset.ts";
import type { Selection } from "../backup/selection.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import { FolderKeystore } from "../handset/folder-keystore.ts";
import type { ServerAddress } from "../handset/handset.ts";
import type { StreamingHttpTransport } from "../handset/http-client.ts";
import { IdentityModule, type UnlockedIdentity } from "../handset/identity-module.ts";
import { createNodeTransport } from "../handset/node-transport.ts";

export interface BackupDemoOptions {
  say?: (text: string) => void;
  /** Work in this folder and keep it (a test compares the restored folders itself); default a temporary one, removed. */
  workDir?: string;
}

export interface BackupDemoResult {
  alice: { handle: string; accountId: string };
  bob: { handle: string; accountId: string };
  first: BackupResult;
  second: BackupResult;
  /** SHA-256 (hex) of every backed-up file of the data folder, by path relative to it, at each backup. */
  expected: { first: Record<string, string>; second: Record<string, string>; photos: Record<string, string> };
  /** The folders the new handset and Bob restored into (kept only with `workDir`). */
  restoredDirs: { latest: string; first: string; bobPhotos: string };
  /** Whether each restore matched byte for byte (the demo's own check). */
  matched: { latest: boolean; first: boolean; bobPhotos: boolean };
  shareId: string;
  sharedItems: number;
  /** What Bob's fetch of the share answered after the revocation. */
  afterRevoke: string;
  /** Whether the lost phone's folder (data and keystore) was gone before the new handset started. */
  phoneGone: boolean;
}

const PIN = "4321";
const MiB = 1024 * 1024;
const SELECTION: Selection = [
  { kind: "contacts" },
  { kind: "messages" },
  { kind: "calendar" },
  { kind: "files" },
  { kind: "appdata" },
  { pattern: "files/tmp/**", exclude: true },
];
const skipped = (rel: string) => rel.split(sep).slice(0, 2).join("/") === "files/tmp";

/** SHA-256 of every file under `root` (relative path with `/` → hex), without what `skip` names. */
export function digestTree(
  root: string,
  skip: (rel: string) => boolean = () => false,
): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const full = join(dir, name);
      const rel = relative(root, full);
      if (skip(rel)) continue;
      if (statSync(full).isDirectory()) walk(full);
      else out[rel.split(sep).join("/")] = createHash("sha256").update(readFileSync(full)).digest("hex");
    }
  };
  walk(root);
  return out;
}

function sameTree(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

/** Pseudo-random bytes quickly: a random block repeated, with its offset stamped in, so no two blocks match. */
function noise(size: number): Uint8Array {
  const block = randomBytes(64 * 1024);
  const out = new Uint8Array(size);
  for (let at = 0; at < size; at += block.length) {
    block.writeUInt32BE(at >>> 0, 0);
    out.set(block.subarray(0, Math.min(block.length, size - at)), at);
  }
  return out;
}

async function makeHandsetData(stores: FolderDataStores): Promise<void> {
  const contacts = [
    ["c-ana", { name: "Ana Pereira", tel: "+351912345678", email: "ana@example.org" }],
    ["c-bob", { name: "Bob Jones", tel: "+447911123456" }],
    ["c-chen", { name: "Chen Wei", tel: "+8613800138000", note: "met at the conference" }],
    ["c-dmitri", { name: "Dmitri Volkov", tel: "+79161234567" }],
    ["c-emma", { name: "Emma Schulz", tel: "+4915112345678", birthday: "1990-04-12" }],
  ] as const;
  for (const [id, c] of contacts) await stores.putRecord("contacts", id, c);
  const messages = [
    ["m-1", { from: "+447911123456", at: "2026-11-28T18:02:00Z", text: "See you at 7 at the station" }],
    ["m-2", { to: "+447911123456", at: "2026-11-28T18:03:10Z", text: "OK, platform 4" }],
    ["m-3", { from: "+351912345678", at: "2026-11-29T09:15:00Z", text: "Photos from Lisbon are up" }],
    ["m-4", { from: "+4915112345678", at: "2026-11-30T12:40:00Z", text: "Lunch on Friday?" }],
  ] as const;
  for (const [id, m] of messages) await stores.putRecord("messages", id, m);
  await stores.putRecord("calendar", "ev-dentist", { title: "Dentist", start: "2026-12-03T09:30:00Z" });
  await stores.putRecord("calendar", "ev-standup", { title: "Stand-up", rrule: "FREQ=WEEKLY;BYDAY=MO" });
  await stores.writeFile("files/notes.txt", new TextEncoder().encode("Groceries: milk, bread, coffee\n"));
  await stores.writeFile("files/documents/lease.pdf", noise(180 * 1024));
  await stores.writeFile("files/videos/birthday.mp4", noise(6 * MiB + 12_345));
  for (const [i, name] of ["lisbon-1.jpg", "lisbon-2.jpg", "harbour.jpg"].entries())
    await stores.writeFile(`files/photos/${name}`, noise(300 * 1024 + i * 777));
  await stores.writeFile("files/tmp/thumbnail-cache.bin", noise(512 * 1024));
  await stores.writeFile(
    "appdata/org.example.notes/settings.json",
    new TextEncoder().encode('{"theme":"dark","sync":true}\n'),
  );
  await stores.writeFile("appdata/org.example.notes/db/notes.sqlite", noise(96 * 1024));
}

interface DemoHandset {
  root: string;
  keystoreDir: string;
  stores: FolderDataStores;
  module: IdentityModule;
  identity: UnlockedIdentity;
  transport: StreamingHttpTransport;
  client: BackupClient;
}

export async function runBackupDemo(
  server: ServerAddress,
  options: BackupDemoOptions = {},
): Promise<BackupDemoResult> {
  const say = options.say ?? ((t: string) => process.stdout.write(`${t}\n`));
  const step = (n: string, text: string) => say(`\n${n}. ${text}`);
  if (!server.pin)
    throw new HandsafeError("cli.no_pin", "the backup demo pins the server: give --pin (or HANDSAFE_PIN)");
  const pin = server.pin;
  const work = options.workDir ?? mkdtempSync(join(tmpdir(), "handsafe-demo-backup-"));
  const run = randomBytes(3).toString("hex");
  const keystorePassphrase = `demo keystore ${randomBytes(6).toString("hex")}`;
  const handsets: DemoHandset[] = [];

  const handset = async (
    name: string,
    install: (ks: FolderKeystore) => Promise<{ module: IdentityModule; puk: string }>,
  ): Promise<DemoHandset & { puk: string }> => {
    const root = join(work, name, "data");
    const keystoreDir = join(work, name, "keystore");
    const keystore = await FolderKeystore.open(keystoreDir, keystorePassphrase);
    const { module, puk } = await install(keystore);
    const identity = await module.unlock(PIN);
    const transport = createNodeTransport({ pin, timeoutMs: 120_000 });
    const h = {
      root,
      keystoreDir,
      stores: new FolderDataStores(root),
      module,
      identity,
      transport,
      client: new BackupClient({ baseUrl: server.url, transport, identity }),
    };
    handsets.push(h);
    return { ...h, puk };
  };
  const close = (h: DemoHandset) => {
    h.transport.close();
    h.identity.lock();
  };

  try {
    const aliceHandle = `alice-${run}`;
    const bobHandle = `bob-${run}`;
    step(
      "B1",
      "Alice's handset holds contacts, messages, a calendar, files (a 6 MiB video, a photos folder)",
    );
    say("   and app data. Its identity module (a WIM behind a PIN and a PUK) is created and the account");
    say("   registered: the server learns a signing key and an age1… recipient, never a secret.");
    const phone = await handset("alice-phone", (ks) => IdentityModule.create(ks, { pin: PIN }));
    await makeHandsetData(phone.stores);
    await phone.client.register({ handle: aliceHandle });
    const aliceId = phone.identity.accountId;
    say(`   account ${aliceId} (${aliceHandle}), recipient ${phone.identity.recipient}`);
    say(`   the PUK is shown to Alice once (${phone.puk.replace(/[0-9]/g, "•")}); the PIN is never stored`);

    step("B2", "A full backup: each item an age file to Alice's recipient; small ones inline in the signed");
    say("   SyncML envelope, large ones uploaded as blobs (resumable). files/tmp/** is excluded.");
    const first = await phone.client.backup({ from: phone.stores, selection: SELECTION });
    const expectedFirst = digestTree(phone.root, skipped);
    say(
      `   ${first.backupId}: ${first.added} items added, ${first.uploads} blobs uploaded (${(first.bytesUploaded / MiB).toFixed(1)} MiB)`,
    );

    step("B3", "The card image is exported: the identity as an age file sealed to a passphrase Alice keeps.");
    const cardPassphrase = `card ${randomBytes(9).toString("base64url")}`;
    const card = await phone.module.exportCard(PIN, cardPassphrase, { armor: true });
    say(`   ${card.length} bytes, armored; opens with \`age -d\` and the passphrase only`);

    step("B4", "Alice edits a contact, adds a photo, deletes a message; the next backup is incremental.");
    await phone.stores.putRecord("contacts", "c-bob", { name: "Bob Jones", tel: "+447700900123" });
    await phone.stores.writeFile("files/photos/snow.jpg", noise(420 * 1024));
    await phone.stores.deleteRecord("messages", "m-2");
    const second = await phone.client.backup({ from: phone.stores, selection: SELECTION });
    const expectedSecond = digestTree(phone.root, skipped);
    say(
      `   ${second.backupId} (parent ${second.parent}): ${second.copied} items copied unchanged, ${second.added} added, ${second.replaced} replaced, ${second.deleted} deleted`,
    );
    say(
      `   uploaded: ${second.uploads} blob (${(second.bytesUploaded / 1024).toFixed(0)} KiB) — the video and the other photos were not sent again`,
    );

    step("B5", "The phone is lost: its data folder and its keystore are gone.");
    close(phone);
    handsets.splice(handsets.indexOf(phone), 1);
    rmSync(join(work, "alice-phone"), { recursive: true, force: true });
    const phoneGone = !readdirSync(work).includes("alice-phone");
    say(`   ${phoneGone ? "deleted" : "STILL THERE"}`);

    step(
      "B6",
      "A new handset imports the card image (passphrase, a new PIN and PUK) and restores the latest",
    );
    say(
      "   backup: signature, blob SHA-256, every age tag, size and HMAC checked before anything is written.",
    );
    const fresh = await handset("alice-new", (ks) =>
      IdentityModule.importCard(ks, card, cardPassphrase, { pin: PIN }),
    );
    if (fresh.identity.accountId !== aliceId)
      throw new HandsafeError("demo.mismatch", "the imported card is another account");
    const listed = await fresh.client.list();
    say(`   same account ${fresh.identity.accountId}; ${listed.length} backups listed`);
    const latestDir = join(work, "restored-latest");
    const latest = await fresh.client.restore({
      backupId: second.backupId,
      into: new FolderDataStores(latestDir),
    });
    const latestOk = sameTree(digestTree(latestDir), expectedSecond);
    say(
      `   ${latest.items.length} items restored, byte for byte ${latestOk ? "✓ identical" : "✗ DIFFERENT"}`,
    );
    const firstDir = join(work, "restored-first");
    const older = await fresh.client.restore({
      backupId: first.backupId,
      into: new FolderDataStores(firstDir),
    });
    const firstOk = sameTree(digestTree(firstDir), expectedFirst);
    say(
      `   the first backup too (a point in time: Bob's old number, message m-2): ${older.items.length} items ${firstOk ? "✓ identical" : "✗ DIFFERENT"}`,
    );
    if (!latestOk || !firstOk)
      throw new HandsafeError("demo.mismatch", "a restore is not what was backed up");

    step("B7", `Bob registers (${bobHandle}); Alice shares files/photos/** of her latest backup with him:`);
    say("   new age headers for Alice and Bob around the same file keys; no payload or blob moves.");
    const bob = await handset("bob-phone", (ks) => IdentityModule.create(ks, { pin: PIN }));
    await bob.client.register({ handle: bobHandle });
    const shared = await fresh.client.share({
      backupId: second.backupId,
      with: [bobHandle],
      items: [{ pattern: "files/photos/**" }],
    });
    say(`   share ${shared.backupId}: ${shared.items} photos with ${shared.sharedWith.join(", ")}`);
    const bobDir = join(work, "bob-phone", "data");
    const got = await bob.client.restore({ backupId: shared.backupId, owner: aliceHandle, into: bob.stores });
    const photos = Object.fromEntries(
      Object.entries(expectedSecond).filter(([p]) => p.startsWith("files/photos/")),
    );
    const photosOk = sameTree(digestTree(bobDir), photos);
    say(`   Bob restores ${got.items.length} photos: ${photosOk ? "✓ identical" : "✗ DIFFERENT"}`);
    if (!photosOk) throw new HandsafeError("demo.mismatch", "Bob's photos are not Alice's");

    step("B8", "Alice revokes Bob's access; his next fetch of the share is refused.");
    await fresh.client.revokeShare(shared.backupId, bobHandle);
    let afterRevoke = "allowed";
    try {
      await bob.client.fetchEnvelope(shared.backupId, fresh.identity.accountPublicKey);
    } catch (e) {
      if (!isHandsafeError(e)) throw e;
      afterRevoke = e.code;
    }
    say(`   Bob: ${afterRevoke}; shared with him now: ${(await bob.client.sharedWithMe()).length}`);
    if (afterRevoke === "allowed") throw new HandsafeError("demo.mismatch", "the revoked share still opens");

    return {
      alice: { handle: aliceHandle, accountId: aliceId },
      bob: { handle: bobHandle, accountId: bob.identity.accountId },
      first,
      second,
      expected: { first: expectedFirst, second: expectedSecond, photos },
      restoredDirs: { latest: latestDir, first: firstDir, bobPhotos: bobDir },
      matched: { latest: latestOk, first: firstOk, bobPhotos: photosOk },
      shareId: shared.backupId,
      sharedItems: shared.items,
      afterRevoke,
      phoneGone,
    };
  } finally {
    for (const h of handsets) close(h);
    if (options.workDir === undefined) rmSync(work, { recursive: true, force: true });
  }
}
