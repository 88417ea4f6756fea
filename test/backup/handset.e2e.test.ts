/**
 * Secure backup end to end (docs/protocols/backup.md §2–§7): simulated handsets with folder data
 * stores back up to a real HTTPS server, restore on a new handset that imported the identity card,
 * share with a second user, and refuse every damaged backup without writing a byte.
 */
import { createHash, randomBytes } from "node:crypto";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FolderDataStores } from "../../src/backup/data-stores.ts";
import { BackupClient, planBackup } from "../../src/backup/handset.ts";
import { collectBytes } from "../../src/backup/item-crypto.ts";
import type { EnvelopeItem } from "../../src/backup/protocol.ts";
import type { Selection } from "../../src/backup/selection.ts";
import { HandsafeError, isHandsafeError } from "../../src/core/errors.ts";
import type {
  StreamingHttpTransport,
  TransportRequest,
  TransportResponse,
} from "../../src/handset/http-client.ts";
import { IdentityModule, type UnlockedIdentity } from "../../src/handset/identity-module.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { createNodeTransport } from "../../src/handset/node-transport.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

const PIN = "1234";
const MiB = 1024 * 1024;
const SELECTION: Selection = [
  { kind: "contacts" },
  { kind: "messages" },
  { kind: "calendar" },
  { kind: "files" },
  { kind: "appdata" },
  { pattern: "files/tmp/**", exclude: true },
];

type Fault = (req: TransportRequest) => "before" | "after" | undefined;
type Tamper = (req: TransportRequest, res: TransportResponse) => TransportResponse;

/** A pinned transport that logs requests and lets a test drop one or alter what the server says. */
class Instrumented implements StreamingHttpTransport {
  readonly log: Array<{ method: string; path: string }> = [];
  fault: Fault | undefined;
  tamper: Tamper | undefined;
  constructor(readonly inner: StreamingHttpTransport) {}
  get pin() {
    return this.inner.pin;
  }
  async send(req: TransportRequest): Promise<TransportResponse> {
    const path = new URL(req.url).pathname;
    this.log.push({ method: req.method, path });
    const fault = this.fault?.(req);
    const lost = () =>
      new HandsafeError("transport.unreachable", `${req.method} ${path}: injected failure`, { status: 0 });
    if (fault === "before") throw lost();
    const res = await this.inner.send(req);
    if (fault === "after") throw lost();
    return this.tamper ? this.tamper(req, res) : res;
  }
  stream(req: TransportRequest) {
    this.log.push({ method: req.method, path: new URL(req.url).pathname });
    return this.inner.stream(req);
  }
  close() {
    this.inner.close();
  }
  count(method: string, prefix: string): number {
    return this.log.filter((l) => l.method === method && l.path.startsWith(prefix)).length;
  }
}

interface Phone {
  root: string;
  stores: FolderDataStores;
  module: IdentityModule;
  identity: UnlockedIdentity;
  transport: Instrumented;
  client: BackupClient;
}

/** Every file under `root` (relative path → bytes), for byte-for-byte comparison. */
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

async function expectCode(p: Promise<unknown>, code: string): Promise<HandsafeError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  expect(isHandsafeError(caught) ? caught.code : caught).toBe(code);
  return caught as HandsafeError;
}

const pgOk = await postgresAvailable();

describe.each(databaseKinds)("secure backup end to end on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("a handset backs up, restores and shares", () => {
    let srv: TestServer;
    let blobDir: string;
    const dirs: string[] = [];
    const phones: Phone[] = [];
    const tmp = () => {
      const d = mkdtempSync(join(tmpdir(), "handsafe-bk-"));
      dirs.push(d);
      return d;
    };

    function clientFor(identity: UnlockedIdentity, transport: Instrumented, uploadChunkBytes?: number) {
      return new BackupClient({
        baseUrl: srv.server.url,
        transport,
        identity,
        ...(uploadChunkBytes ? { uploadChunkBytes } : {}),
      });
    }

    async function phone(module?: IdentityModule): Promise<Phone> {
      const root = join(tmp(), "data");
      const m =
        module ?? (await IdentityModule.create(new MemoryKeystore(), { pin: PIN, scryptLogN: 10 })).module;
      const identity = await m.unlock(PIN);
      const transport = new Instrumented(createNodeTransport({ pin: srv.server.pin }));
      const p = {
        root,
        stores: new FolderDataStores(root),
        module: m,
        identity,
        transport,
        client: clientFor(identity, transport),
      };
      phones.push(p);
      return p;
    }

    let alice: Phone;
    let restored: Phone;
    let bob: Phone;
    let first: string;
    let second: string;
    let snapshot1: Record<string, string>;
    const notTmp = (rel: string) => rel.startsWith("files/tmp");

    beforeAll(async () => {
      blobDir = tmp();
      srv = await startTestServer(kind, { HANDSAFE_BLOB_DIR: blobDir });
      alice = await phone();
      const s = alice.stores;
      await s.putRecord("contacts", "alice", { name: "Alice", tel: "+41790000001" });
      await s.putRecord("contacts", "bob", { name: "Bob", tel: "+41790000002" });
      await s.putRecord("messages", "m1", { from: "bob", text: "hi" });
      await s.putRecord("messages", "m2", { from: "alice", text: "hello 👋" });
      await s.putRecord("calendar", "e1", { title: "dentist", at: "2026-12-03T09:00:00Z" });
      await s.writeFile("files/notes.txt", new TextEncoder().encode("buy milk\n"));
      await s.writeFile("files/photos/a.jpg", new Uint8Array(randomBytes(100_000)));
      await s.writeFile("files/photos/2026/b.jpg", new Uint8Array(randomBytes(5_000)));
      await s.writeFile("files/video/big.bin", new Uint8Array(randomBytes(3 * MiB + 12_345)));
      await s.writeFile("files/empty.txt", new Uint8Array());
      await s.writeFile("files/tmp/cache.bin", new Uint8Array(randomBytes(1_000)));
      await s.writeFile("appdata/chat/db.sqlite", new Uint8Array(randomBytes(70_000)));
      await s.writeFile("appdata/maps/tiles/1/2.png", new Uint8Array(randomBytes(300)));
    });

    afterAll(async () => {
      for (const p of phones) p.transport.close();
      await srv?.close();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    });

    it("registers the owner with a handle (again with the same keys: fine)", async () => {
      expect((await alice.client.register({ handle: "alice" })).accountId).toBe(alice.identity.accountId);
      await alice.client.register({ handle: "alice" });
      const entry = await alice.client.lookup("alice");
      expect(entry.recipient).toBe(alice.identity.recipient);
    });

    it("backs up the selection in full, large items through resumable uploads", async () => {
      const progress: string[] = [];
      const result = await alice.client.backup({
        from: alice.stores,
        selection: SELECTION,
        onProgress: (p) => progress.push(p.phase),
      });
      first = result.backupId;
      expect(result).toMatchObject({ added: 12, replaced: 0, copied: 0, deleted: 0, uploads: 3 });
      expect(alice.transport.count("POST", "/v1/backup/uploads")).toBe(3 + 3); // 3 starts + 3 completes
      expect(progress).toContain("upload");
      expect((await alice.client.list()).map((b) => b.id)).toEqual([first]);
      snapshot1 = tree(alice.root, notTmp);
      const copy = join(tmp(), "snapshot1");
      cpSync(alice.root, copy, { recursive: true });
    });

    it("backs up incrementally: unchanged items are copied, only changed ones uploaded", async () => {
      const s = alice.stores;
      await s.putRecord("contacts", "bob", { name: "Bob", tel: "+41790000099" });
      await s.deleteRecord("messages", "m2");
      await s.writeFile("files/notes.txt", new TextEncoder().encode("buy milk\nand bread\n"));
      await s.writeFile("files/photos/c.jpg", new Uint8Array(randomBytes(2_000)));
      await s.writeFile("files/photos/d.jpg", new Uint8Array(randomBytes(200_000)));
      const uploadsBefore = alice.transport.count("POST", "/v1/backup/uploads");
      const patchesBefore = alice.transport.count("PATCH", "/v1/backup/uploads");
      const result = await alice.client.backup({ from: alice.stores, selection: SELECTION });
      second = result.backupId;
      expect(result).toMatchObject({
        parent: first,
        added: 2,
        replaced: 2,
        copied: 9,
        deleted: 1,
        uploads: 1,
      });
      // One new blob (d.jpg): begin + complete, one PATCH; big.bin and a.jpg were not sent again.
      expect(alice.transport.count("POST", "/v1/backup/uploads") - uploadsBefore).toBe(2);
      expect(alice.transport.count("PATCH", "/v1/backup/uploads") - patchesBefore).toBe(1);
      expect(result.bytesUploaded).toBeLessThan(300_000);
      const listed = await alice.client.list();
      expect(listed.map((b) => b.id).sort()).toEqual([first, second].sort());
      expect(listed.find((b) => b.id === second)?.parent).toBe(first);
    });

    it("restores both points in time, byte for byte, on a new handset that imported the card", async () => {
      const card = await alice.module.exportCard(PIN, "correct horse battery staple", { logN: 10 });
      const { module } = await IdentityModule.importCard(
        new MemoryKeystore(),
        card,
        "correct horse battery staple",
        {
          pin: "9876",
          scryptLogN: 10,
        },
      );
      const identity = await module.unlock("9876");
      expect(identity.accountId).toBe(alice.identity.accountId);
      const root = join(tmp(), "data");
      const transport = new Instrumented(createNodeTransport({ pin: srv.server.pin }));
      restored = {
        root,
        stores: new FolderDataStores(root),
        module,
        identity,
        transport,
        client: clientFor(identity, transport),
      };
      phones.push(restored);

      const r1 = await restored.client.restore({ backupId: first, into: restored.stores });
      expect(r1.items).toHaveLength(12);
      expect(tree(root)).toEqual(snapshot1);
      await restored.client.restore({ backupId: second, into: restored.stores });
      expect(tree(root)).toEqual(tree(alice.root, notTmp));
      expect(tree(root)["files/tmp/cache.bin"]).toBeUndefined();
    });

    it("restores chosen items only, leaving the rest of the stores as they are", async () => {
      const root = join(tmp(), "data");
      const stores = new FolderDataStores(root);
      await stores.writeFile("files/keep.txt", new TextEncoder().encode("mine"));
      await restored.client.restore({
        backupId: second,
        into: stores,
        items: [{ pattern: "files/photos/*" }],
      });
      const t = tree(root);
      expect(Object.keys(t).sort()).toEqual([
        "files/keep.txt",
        "files/photos/a.jpg",
        "files/photos/c.jpg",
        "files/photos/d.jpg",
      ]);
      expect(t["files/photos/d.jpg"]).toBe(tree(alice.root)["files/photos/d.jpg"]);
    });

    describe("sharing a folder with a second user (§7)", () => {
      let share: string;
      beforeAll(async () => {
        bob = await phone();
        await bob.client.register({ handle: "bob" });
      });

      it("shares files/photos/** with bob, who opens it; the payload is not uploaded again", async () => {
        const patches = alice.transport.count("PATCH", "/v1/backup/uploads");
        const result = await alice.client.share({
          backupId: second,
          with: ["bob"],
          items: [{ pattern: "files/photos/**" }],
        });
        share = result.backupId;
        expect(result.items).toBe(4);
        expect(result.sharedWith).toEqual([bob.identity.accountId]);
        expect(alice.transport.count("PATCH", "/v1/backup/uploads")).toBe(patches);

        const shared = await bob.client.sharedWithMe();
        expect(shared.map((s) => [s.id, s.owner])).toEqual([[share, alice.identity.accountId]]);
        await expectCode(bob.client.restore({ backupId: share, into: bob.stores }), "backup.owner_required");
        await bob.stores.writeFile("files/bobs-own.txt", new TextEncoder().encode("bob's"));
        await bob.client.restore({ backupId: share, owner: "alice", into: bob.stores });
        const photos = (rel: string) =>
          !rel.startsWith("files") || (rel !== "files" && !rel.startsWith("files/photos"));
        // A share adds to bob's stores, it never wipes what is his.
        expect(tree(bob.root, (rel) => rel === "files/bobs-own.txt")).toEqual(tree(alice.root, photos));
        expect(tree(bob.root)["files/bobs-own.txt"]).toBeDefined();
      });

      it("bob cannot read alice's own backup", async () => {
        await expectCode(
          bob.client.restore({ backupId: second, owner: "alice", into: bob.stores }),
          "backup.not_found",
        );
      });

      it("revoking drops bob from the share", async () => {
        await alice.client.revokeShare(share, "bob");
        expect(await bob.client.sharedWithMe()).toEqual([]);
        const root = join(tmp(), "data");
        await expectCode(
          bob.client.restore({ backupId: share, owner: "alice", into: new FolderDataStores(root) }),
          "backup.not_found",
        );
      });
    });

    describe("sharing with a user who has no handle (§5 directory by account id)", () => {
      it("shares with an account id; the share restores knowing only the owner's account id", async () => {
        const dave = await phone();
        await dave.client.register();
        const entry = await alice.client.lookupAccount(dave.identity.accountId);
        expect(entry).toMatchObject({ handle: null, accountId: dave.identity.accountId });
        const result = await alice.client.share({
          backupId: second,
          with: [dave.identity.accountId],
          items: [{ item: "files/photos/a.jpg" }],
        });
        expect(result).toMatchObject({ sharedWith: [dave.identity.accountId], items: 1 });
        // Without an owner the handset does not take the server's word for whose key to check.
        await expectCode(
          dave.client.restore({ backupId: result.backupId, into: dave.stores }),
          "backup.owner_required",
        );
        const restored = await dave.client.restore({
          backupId: result.backupId,
          owner: alice.identity.accountId,
          into: dave.stores,
        });
        expect(restored.items.map((i) => i.path)).toEqual(["files/photos/a.jpg"]);
        expect(restored.owner).toBe(alice.identity.accountId);
        await alice.client.revokeShare(result.backupId, dave.identity.accountId);
      });

      it("an unknown account id is backup.not_found; a malformed one is refused before any request", async () => {
        const unknown = `acct_${"A".repeat(22)}`;
        await expectCode(alice.client.lookupAccount(unknown), "backup.not_found");
        await expectCode(alice.client.share({ backupId: second, with: [unknown] }), "backup.not_found");
        await expectCode(alice.client.lookupAccount("acct_short"), "backup.invalid_options");
      });

      it("a directory that answers with another user's keys for an id is caught", async () => {
        const carolish = await phone();
        await carolish.client.register();
        const target = carolish.identity.accountId;
        alice.transport.tamper = (req, res) => {
          if (!req.url.includes(`/v1/backup/directory?account=${target}`)) return res;
          const body = JSON.parse(new TextDecoder().decode(res.body)) as Record<string, unknown>;
          // bob's real keys (a self-consistent record), under the id asked for.
          body["signingKey"] = Buffer.from(bob.identity.accountPublicKey).toString("base64url");
          body["accountId"] = bob.identity.accountId;
          return { ...res, body: new TextEncoder().encode(JSON.stringify(body)) };
        };
        try {
          await expectCode(alice.client.lookupAccount(target), "backup.directory_invalid");
        } finally {
          alice.transport.tamper = undefined;
        }
      });
    });

    describe("an attacker with write access to the storage", () => {
      let target: FolderDataStores;
      let targetRoot: string;
      let bigItem: EnvelopeItem;
      let smallBlob: EnvelopeItem;
      let original: Uint8Array;
      const keyOf = (item: EnvelopeItem) => {
        if (!("blob" in item.payload)) throw new Error("not a blob item");
        return `backup/blobs/${item.payload.blob.uri.split("/").pop()}`;
      };

      let reader: BackupClient;

      beforeAll(async () => {
        // The default transport timeout: a damaged blob must fail at once, not by waiting the socket out.
        const transport = new Instrumented(createNodeTransport({ pin: srv.server.pin }));
        phones.push({ ...restored, transport });
        reader = clientFor(restored.identity, transport);
        targetRoot = join(tmp(), "data");
        target = new FolderDataStores(targetRoot);
        await target.writeFile("files/sentinel.txt", new TextEncoder().encode("untouched"));
        const { envelope } = await restored.client.fetchEnvelope(second);
        const blobs = envelope.items.filter((i) => "blob" in i.payload).sort((a, b) => b.size - a.size);
        bigItem = blobs[0]!;
        smallBlob = blobs[blobs.length - 1]!;
        original = await collectBytes(srv.server.backup.blobs.get(keyOf(bigItem)));
      });

      /** Restores `second` with the big blob's stored bytes replaced by `write`: one damaged item. */
      async function damagedRestore(write: () => Promise<void>, code: string) {
        const before = tree(targetRoot);
        await write();
        try {
          const started = performance.now();
          const e = await expectCode(
            reader.restore({ backupId: second, into: target }),
            "backup.restore_damaged",
          );
          // Fails at once: never by waiting out a body shorter than its Content-Length.
          expect(performance.now() - started).toBeLessThan(5_000);
          const items = e.details?.["items"] as Array<{ id: string; path?: string; code: string }>;
          expect(items).toHaveLength(1);
          expect(items[0]).toMatchObject({ id: bigItem.id, path: "files/video/big.bin" });
          expect(items[0]!.code).toBe(code);
          expect(tree(targetRoot)).toEqual(before);
          expect(readdirSync(join(targetRoot, "..")).filter((n) => n !== "data")).toEqual([]);
        } finally {
          await srv.server.backup.blobs.put(keyOf(bigItem), original);
        }
      }
      const storeBytes = (bytes: Uint8Array) => () =>
        srv.server.backup.blobs.put(keyOf(bigItem), bytes).then(() => {});
      /**
       * The blob file written by hand in the filesystem store's format ("HSBLOB01", size, SHA-256,
       * bytes) with a header that claims the original size and hash: the server's check passes, so
       * only the client's checks stand between these bytes and the user.
       */
      const forgeFile =
        (bytes: Uint8Array, claimedSize = original.length) =>
        async () => {
          const header = Buffer.alloc(48);
          header.write("HSBLOB01", 0, "ascii");
          header.writeBigUInt64BE(BigInt(claimedSize), 8);
          createHash("sha256").update(original).digest().copy(header, 16);
          writeFileSync(join(blobDir, keyOf(bigItem)), Buffer.concat([header, bytes]));
        };

      it("flips one bit of a blob: the server sees its hash is not the row's — blob_damaged", async () => {
        const flipped = original.slice();
        flipped[2 * 65_536 + 100]! ^= 0x04;
        await damagedRestore(storeBytes(flipped), "backup.blob_damaged");
      });

      it("flips one bit under a forged header: the age tag catches it — payload_auth", async () => {
        const flipped = original.slice();
        flipped[2 * 65_536 + 100]! ^= 0x04;
        await damagedRestore(forgeFile(flipped), "age.payload_auth");
      });

      it("swaps in another blob: restore_damaged, nothing written", async () => {
        const other = await collectBytes(srv.server.backup.blobs.get(keyOf(smallBlob)));
        await damagedRestore(storeBytes(other), "backup.blob_damaged");
      });

      it("truncates a blob at a chunk boundary: blob_damaged at once, nothing written", async () => {
        await damagedRestore(
          storeBytes(original.subarray(0, 16 + 20 * (65_536 + 16))),
          "backup.blob_damaged",
        );
      });

      it("cuts the blob file on disk under its header: blob_damaged at once, nothing written", async () => {
        await damagedRestore(forgeFile(original.subarray(0, 16 + 20 * (65_536 + 16))), "backup.blob_damaged");
      });

      it("deletes a blob: the restore fails, nothing written", async () => {
        const before = tree(targetRoot);
        await srv.server.backup.blobs.delete(keyOf(bigItem));
        try {
          let caught: unknown;
          await reader.restore({ backupId: second, into: target }).catch((e) => (caught = e));
          expect(isHandsafeError(caught)).toBe(true);
          expect(tree(targetRoot)).toEqual(before);
        } finally {
          await srv.server.backup.blobs.put(keyOf(bigItem), original);
        }
      });

      it("tampers with the envelope: signature_invalid, nothing written", async () => {
        const before = tree(targetRoot);
        restored.transport.tamper = (req, res) => {
          if (req.method !== "GET" || !req.url.endsWith(`/v1/backup/backups/${second}`)) return res;
          const body = res.body.slice();
          const at = Buffer.from(body).indexOf("<Size>");
          body[at + 6]! ^= 0x01;
          return { ...res, body };
        };
        try {
          await expectCode(
            restored.client.restore({ backupId: second, into: target }),
            "backup.signature_invalid",
          );
        } finally {
          restored.transport.tamper = undefined;
        }
        expect(tree(targetRoot)).toEqual(before);
      });

      it("serves another (validly signed) envelope for the one asked: signature_invalid", async () => {
        let captured: TransportResponse | undefined;
        restored.transport.tamper = (req, res) => {
          if (req.method !== "GET") return res;
          if (req.url.endsWith(`/v1/backup/backups/${first}`)) captured = res;
          if (req.url.endsWith(`/v1/backup/backups/${second}`) && captured) return captured;
          return res;
        };
        try {
          await restored.client.fetchEnvelope(first);
          expect(captured).toBeDefined();
          await expectCode(
            restored.client.restore({ backupId: second, into: target }),
            "backup.signature_invalid",
          );
        } finally {
          restored.transport.tamper = undefined;
        }
      });

      it("after all that, the intact backup still restores", async () => {
        await restored.client.restore({ backupId: second, into: target });
        expect(tree(targetRoot)).toEqual(tree(alice.root, notTmp));
      });
    });

    it("an identity that is not a recipient: backup.not_a_recipient, nothing written", async () => {
      const carol = await phone();
      await carol.client.register({ handle: "carol" });
      // A share naming carol whose headers are still the owner's alone.
      const { envelope } = await alice.client.fetchEnvelope(second);
      const forged = {
        ...envelope,
        backupId: `bk_${randomBytes(16).toString("base64url")}`,
        kind: "share" as const,
        parent: second,
        sharedWith: [carol.identity.accountId],
        items: envelope.items.map((i) => ({ ...i, command: "Copy" as const })),
        deleted: [],
      };
      forged.target = `/v1/backup/backups/${forged.backupId}`;
      await alice.client.publish(forged);
      await carol.stores.writeFile("files/mine.txt", new TextEncoder().encode("carol's"));
      const before = tree(carol.root);
      await expectCode(
        carol.client.restore({ backupId: forged.backupId, owner: "alice", into: carol.stores }),
        "backup.not_a_recipient",
      );
      expect(tree(carol.root)).toEqual(before);
    });

    describe("an interrupted upload", () => {
      it("resumes from the server's offset after a lost PATCH, and the backup restores", async () => {
        await alice.stores.writeFile("files/video/big2.bin", new Uint8Array(randomBytes(3 * MiB + 1)));
        const transport = new Instrumented(createNodeTransport({ pin: srv.server.pin }));
        phones.push({ ...alice, transport });
        const client = clientFor(alice.identity, transport, MiB);
        let patches = 0;
        transport.fault = (req) => {
          if (req.method !== "PATCH") return undefined;
          patches++;
          if (patches === 2) return "before"; // never reached the server
          if (patches === 4) return "after"; // stored, but the answer was lost
          return undefined;
        };
        const result = await client.backup({ from: alice.stores, selection: SELECTION });
        expect(result.uploads).toBe(1);
        expect(transport.count("HEAD", "/v1/backup/uploads")).toBe(2);
        // 4 chunks of 1 MiB; one resent (the lost one), none resent after the lost answer.
        expect(transport.count("PATCH", "/v1/backup/uploads")).toBe(5);
        const root = join(tmp(), "data");
        await restored.client.restore({ backupId: result.backupId, into: new FolderDataStores(root) });
        expect(tree(root)).toEqual(tree(alice.root, notTmp));
      });

      it("a new large item is read once, while it is sealed and sent; one changed since the listing still goes up", async () => {
        await alice.stores.writeFile("files/video/once.bin", new Uint8Array(randomBytes(2 * MiB + 5)));
        await alice.stores.writeFile("files/video/grew.bin", new Uint8Array(randomBytes(MiB + 3)));
        const opens = new Map<string, number>();
        // The listing counts each item's reads, and reports grew.bin a byte shorter than it now is.
        const counted = new Proxy(alice.stores, {
          get(target, prop) {
            if (prop === "list")
              return async () =>
                (await target.list()).map((i) => ({
                  ...i,
                  size: i.path === "files/video/grew.bin" ? i.size - 1 : i.size,
                  path: i.path,
                  open: () => {
                    opens.set(i.path, (opens.get(i.path) ?? 0) + 1);
                    return i.open();
                  },
                }));
            const v = Reflect.get(target, prop, target);
            return typeof v === "function" ? v.bind(target) : v;
          },
        });
        const result = await alice.client.backup({ from: counted, selection: SELECTION });
        expect(opens.get("files/video/once.bin")).toBe(1);
        // The upload declared the listed size: refused by the SDK, re-measured, uploaded again.
        expect(opens.get("files/video/grew.bin")).toBe(3);
        const root = join(tmp(), "data");
        await restored.client.restore({ backupId: result.backupId, into: new FolderDataStores(root) });
        expect(tree(root)).toEqual(tree(alice.root, notTmp));
      });

      it("a backup whose upload keeps failing is never listed", async () => {
        await alice.stores.writeFile("files/video/big3.bin", new Uint8Array(randomBytes(2 * MiB)));
        const listed = (await alice.client.list()).map((b) => b.id).sort();
        const transport = new Instrumented(createNodeTransport({ pin: srv.server.pin }));
        phones.push({ ...alice, transport });
        const client = new BackupClient({
          baseUrl: srv.server.url,
          transport,
          identity: alice.identity,
          uploadChunkBytes: MiB,
          uploadAttempts: 3,
        });
        let patches = 0;
        transport.fault = (req) => (req.method === "PATCH" && ++patches >= 2 ? "before" : undefined);
        await expectCode(
          client.backup({ from: alice.stores, selection: SELECTION }),
          "transport.unreachable",
        );
        expect(transport.count("PUT", "/v1/backup/backups")).toBe(0);
        expect((await alice.client.list()).map((b) => b.id).sort()).toEqual(listed);
      });
    });
  });
});

describe("the incremental plan (planBackup, pure)", () => {
  const item = (path: string, size: number) =>
    ({ path, kind: "files", size, modifiedAt: "", open: async function* () {} }) as const;
  const hash = (b: number) => new Uint8Array(32).fill(b);
  const parentItem = (id: string, h: number, size: number) =>
    ({
      command: "Add",
      id,
      kind: "files",
      size,
      hash: hash(h),
      name: new Uint8Array(),
      header: new Uint8Array(),
      payload: { inline: new Uint8Array() },
    }) as EnvelopeItem;

  it("copies same (id, hash), replaces another hash, adds new ids, deletes gone ones", () => {
    const parent = {
      items: [parentItem("it_a", 1, 5), parentItem("it_b", 2, 5), parentItem("it_gone", 3, 5)],
    };
    const { steps, deleted } = planBackup(
      [
        { item: item("files/a", 5), id: "it_a", hash: hash(1) },
        { item: item("files/b", 5), id: "it_b", hash: hash(9) },
        { item: item("files/c", 5), id: "it_c", hash: hash(4) },
      ],
      parent as never,
    );
    expect(steps.map((s) => [s.planned.id, s.command])).toEqual([
      ["it_a", "Copy"],
      ["it_b", "Replace"],
      ["it_c", "Add"],
    ]);
    expect(deleted).toEqual(["it_gone"]);
  });

  it("without a parent everything is added", () => {
    const { steps, deleted } = planBackup(
      [{ item: item("files/a", 1), id: "it_a", hash: hash(1) }],
      undefined,
    );
    expect(steps.map((s) => s.command)).toEqual(["Add"]);
    expect(deleted).toEqual([]);
  });
});

describe("the folder data stores' atomic restore", () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  const fresh = async () => {
    const d = mkdtempSync(join(tmpdir(), "handsafe-ds-"));
    dirs.push(d);
    const stores = new FolderDataStores(join(d, "data"));
    await stores.putRecord("contacts", "a", { n: 1 });
    await stores.writeFile("files/x.txt", new TextEncoder().encode("old"));
    return { d, root: join(d, "data"), stores };
  };
  async function* bytes(text: string) {
    yield new TextEncoder().encode(text);
  }

  it("abort leaves the stores as they were and no staging folder behind", async () => {
    const { d, root, stores } = await fresh();
    const before = tree(root);
    const staging = await stores.stage({ replace: ["files", "contacts"] });
    await staging.write("files/y.txt", bytes("new"));
    await staging.abort();
    expect(tree(root)).toEqual(before);
    expect(readdirSync(d)).toEqual(["data"]);
  });

  it("commit replaces the named stores and keeps the others", async () => {
    const { d, root, stores } = await fresh();
    await stores.putRecord("calendar", "e", { t: 1 });
    const staging = await stores.stage({ replace: ["files", "contacts"] });
    await staging.write("files/y.txt", bytes("new"));
    await staging.write("contacts/b", bytes('{"n":2}'));
    await staging.commit();
    expect(Object.keys(tree(root)).sort()).toEqual(["calendar.json", "contacts.json", "files/y.txt"]);
    expect(await stores.getRecord("contacts", "b")).toEqual({ n: 2 });
    expect(await stores.getRecord("contacts", "a")).toBeUndefined();
    expect(readdirSync(d)).toEqual(["data"]);
  });

  it("a crash between the two renames of a commit is undone on the next use", async () => {
    const { d, root, stores } = await fresh();
    const before = tree(root);
    const { renameSync, mkdirSync } = await import("node:fs");
    renameSync(root, `${root}.old-abc`);
    mkdirSync(`${root}.staging-abc`);
    expect((await stores.list()).map((i) => i.path)).toEqual(["contacts/a", "files/x.txt"]);
    expect(tree(root)).toEqual(before);
    // The dead restore's staging folder goes with the next restore.
    await (await stores.stage()).abort();
    expect(readdirSync(d)).toEqual(["data"]);
  });

  it("stages by hard links: a file the restore keeps is the same file after the commit, not a copy", async () => {
    const { root, stores } = await fresh();
    const kept = statSync(join(root, "files", "x.txt"));
    const staging = await stores.stage();
    await staging.write("files/y.txt", bytes("new"));
    await staging.commit();
    const after = statSync(join(root, "files", "x.txt"));
    expect(after.ino).toBe(kept.ino);
    expect(after.mtimeMs).toBe(kept.mtimeMs);
    expect(readFileSync(join(root, "files", "y.txt"), "utf8")).toBe("new");
  });

  it("what staging overwrites is never written in place: the originals keep their bytes through abort and commit", async () => {
    const { d, root, stores } = await fresh();
    // Second names for the originals' inodes: an in-place write through staging's links would show here.
    const { linkSync } = await import("node:fs");
    linkSync(join(root, "files", "x.txt"), join(d, "x.keep"));
    linkSync(join(root, "contacts.json"), join(d, "contacts.keep"));
    const originals = {
      x: readFileSync(join(d, "x.keep"), "utf8"),
      c: readFileSync(join(d, "contacts.keep"), "utf8"),
    };
    for (const end of ["abort", "commit"] as const) {
      const staging = await stores.stage();
      await staging.write("files/x.txt", bytes(`overwritten before ${end}`));
      await staging.write("contacts/a", bytes('{"n":9}'));
      await staging[end]();
      expect(readFileSync(join(d, "x.keep"), "utf8")).toBe(originals.x);
      expect(readFileSync(join(d, "contacts.keep"), "utf8")).toBe(originals.c);
    }
    expect(readFileSync(join(root, "files", "x.txt"), "utf8")).toBe("overwritten before commit");
    expect(await stores.getRecord("contacts", "a")).toEqual({ n: 9 });
  });

  it("a write cut short leaves the old file whole and no partial file behind", async () => {
    const { root, stores } = await fresh();
    async function* failing() {
      yield new TextEncoder().encode("half of it");
      throw new Error("source gone");
    }
    await expect(stores.writeFile("files/x.txt", failing())).rejects.toThrow("source gone");
    expect(readFileSync(join(root, "files", "x.txt"), "utf8")).toBe("old");
    expect(readdirSync(join(root, "files"))).toEqual(["x.txt"]);
    expect((await stores.list()).map((i) => i.path)).toEqual(["contacts/a", "files/x.txt"]);
  });

  it("refuses item paths that would leave the store", async () => {
    const { stores } = await fresh();
    const staging = await stores.stage();
    for (const path of [
      "files/../../etc/passwd",
      "files/a/../../b",
      "contacts/../x",
      "etc/passwd",
      "files/",
      "appdata/app",
    ])
      await expectCode(staging.write(path, bytes("x")), "backup.item_path_invalid");
    await staging.abort();
  });
});
