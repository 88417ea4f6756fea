/**
 * "The server and its storage hold no plaintext and no private key" (issue 5): after a handset backs
 * up data full of markers and shares part of it, every column of every table and every file the
 * server keeps is searched for the markers, the item paths, the identity and every key derived from
 * it. And a payload whose chunks were put in another order is refused, item by item.
 */
import { hkdfSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FolderDataStores } from "../../src/backup/data-stores.ts";
import { BackupClient } from "../../src/backup/handset.ts";
import { collectBytes, openItem } from "../../src/backup/item-crypto.ts";
import type { EnvelopeItem } from "../../src/backup/protocol.ts";
import { decryptBytes } from "../../src/core/age/age.ts";
import { parseIdentity } from "../../src/core/age/keys.ts";
import { ScryptIdentity } from "../../src/core/age/scrypt-recipient.ts";
import { fromUtf8 } from "../../src/core/codec/bytes.ts";
import { isHandsafeError } from "../../src/core/errors.ts";
import { IdentityModule, type UnlockedIdentity } from "../../src/handset/identity-module.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { createNodeTransport } from "../../src/handset/node-transport.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";
import { findMarkers } from "../messaging/scan.ts";

const PIN = "2468";
const PASSPHRASE = "correct horse battery staple";
const CONTACT_MARKER = "Dr-Okafor-oncology-7731";
const FILE_MARKER = "MORTGAGE-ARREARS-LETTER-5502";
const SECRET_PATH = "files/medical/biopsy-result-MARKER-PATH.pdf";
const CHUNK = 64 * 1024;
const SEALED_CHUNK = CHUNK + 16;

const pgOk = await postgresAvailable();

/** The 32-byte key HKDF-SHA256 derives from the identity for `label` (docs/protocols/backup.md §1). */
const derived = (secret: Uint8Array, label: string) =>
  new Uint8Array(hkdfSync("sha256", secret, new Uint8Array(), label, 32));

describe.each(databaseKinds)("what the backup storage holds, on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let t: TestServer;
    let dataDir: string;
    let alice: { identity: UnlockedIdentity; client: BackupClient; close(): void };
    let secret: Uint8Array;
    let identityText: string;
    let backupId: string;
    const dirs: string[] = [];

    beforeAll(async () => {
      t = await startTestServer(kind);
      dataDir = mkdtempSync(join(tmpdir(), "handsafe-bk-scan-"));
      dirs.push(dataDir);
      const { module } = await IdentityModule.create(new MemoryKeystore(), { pin: PIN, scryptLogN: 10 });
      const identity = await module.unlock(PIN);
      const transport = createNodeTransport({ pin: t.server.pin });
      // Small parts, so that the envelope goes in parts (§4 Parts) and backup_envelope_parts is scanned too.
      const client = new BackupClient({
        baseUrl: t.server.url,
        transport,
        identity,
        envelopePartLimits: { maxBytes: 4096, maxElements: 2000 },
      });
      alice = { identity, client, close: () => transport.close() };
      // The identity itself, as only a test may see it: out of the card the module exports.
      const card = await module.exportCard(PIN, PASSPHRASE, { logN: 10 });
      identityText = fromUtf8(await decryptBytes([new ScryptIdentity(PASSPHRASE)], card));
      const line = identityText.split("\n").find((l) => l.startsWith("AGE-SECRET-KEY-1"))!;
      secret = parseIdentity(line);

      const stores = new FolderDataStores(join(dataDir, "data"));
      await stores.putRecord("contacts", "c1", { name: CONTACT_MARKER, tel: "+41790000009" });
      await stores.putRecord("messages", "m1", { text: `see ${CONTACT_MARKER} on Monday` });
      const big = new Uint8Array(3 * CHUNK + 999);
      const marker = new TextEncoder().encode(FILE_MARKER);
      for (let o = 0; o + marker.length <= big.length; o += 4096) big.set(marker, o);
      await stores.writeFile(SECRET_PATH, big);
      await stores.writeFile("files/photos/cat.jpg", new TextEncoder().encode(`${FILE_MARKER} small`));
      await client.register({ handle: "alice-scan" });
      backupId = (
        await client.backup({
          from: stores,
          selection: [{ kind: "contacts" }, { kind: "messages" }, { kind: "files" }],
        })
      ).backupId;
    }, 60_000);

    afterAll(async () => {
      alice?.close();
      await t?.close();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    });

    it("no plaintext, no item path, no identity and no derived key in any table or file", async () => {
      const config = t.server.platform.config;
      const folders = [config.dataDir, config.blobDir];
      if (kind === "sqlite") folders.push(dirname(config.databaseUrl.slice("sqlite:".length)));
      // A control: the scan does find what is there — the handle in its row, the public recipient.
      const control = await findMarkers(t.server, ["alice-scan", alice.identity.recipient], folders);
      expect(control.tables).toEqual(
        expect.arrayContaining(["backup_accounts.handle", "backup_accounts.recipient"]),
      );
      const keys = [
        secret,
        derived(secret, "handsafe/v1/backup/account-key"),
        derived(secret, "handsafe/v1/backup/content-hash"),
        derived(secret, "handsafe/v1/backup/item-id"),
      ];
      const found = await findMarkers(
        t.server,
        [CONTACT_MARKER, FILE_MARKER, SECRET_PATH, "biopsy", identityText.trim(), ...keys],
        folders,
      );
      expect(found.scannedRows).toBeGreaterThan(10);
      const parts = await sql<{ n: number }>`select count(*) as n from backup_envelope_parts`.execute(
        t.server.platform.db,
      );
      expect(Number(parts.rows[0]!.n)).toBeGreaterThanOrEqual(1);
      expect(found.scannedFiles).toBeGreaterThan(1);
      expect(found.tables).toEqual([]);
      expect(found.files).toEqual([]);
    });

    it("a payload whose chunks were reordered restores nothing and names the item", async () => {
      const { envelope } = await alice.client.fetchEnvelope(backupId);
      const item = envelope.items.find(
        (i): i is EnvelopeItem & { payload: { blob: unknown } } => "blob" in i.payload,
      )!;
      expect(item).toBeDefined();
      const key = `backup/blobs/${(item.payload as { blob: { uri: string } }).blob.uri.split("/").pop()}`;
      const original = await collectBytes(t.server.backup.blobs.get(key));
      // nonce(16) ‖ chunk0 ‖ chunk1 ‖ … : swap the first two full chunks.
      const reordered = original.slice();
      reordered.set(original.subarray(16 + SEALED_CHUNK, 16 + 2 * SEALED_CHUNK), 16);
      reordered.set(original.subarray(16, 16 + SEALED_CHUNK), 16 + SEALED_CHUNK);
      await t.server.backup.blobs.put(key, reordered);
      const target = new FolderDataStores(join(dataDir, "restored"));
      await target.writeFile("files/sentinel.txt", new TextEncoder().encode("untouched"));
      let caught: unknown;
      try {
        await alice.client.restore({ backupId, into: target });
      } catch (e) {
        caught = e;
      } finally {
        await t.server.backup.blobs.put(key, original);
      }
      expect(isHandsafeError(caught) && caught.code).toBe("backup.restore_damaged");
      const items = (caught as { details: { items: Array<{ id: string }> } }).details.items;
      expect(items.map((i) => i.id)).toEqual([item.id]);
      expect((await target.list()).map((i) => i.path)).toEqual(["files/sentinel.txt"]);
      // The original restores whole.
      await alice.client.restore({ backupId, into: target });
      expect((await target.list()).map((i) => i.path)).toContain(SECRET_PATH);
    });

    it("the reorder is caught by the STREAM nonces themselves, not only by the blob hash", async () => {
      const { envelope } = await alice.client.fetchEnvelope(backupId);
      const item = envelope.items.find((i) => "blob" in i.payload)!;
      const key = `backup/blobs/${(item.payload as { blob: { uri: string } }).blob.uri.split("/").pop()}`;
      const original = await collectBytes(t.server.backup.blobs.get(key));
      const reordered = original.slice();
      reordered.set(original.subarray(16 + SEALED_CHUNK, 16 + 2 * SEALED_CHUNK), 16);
      reordered.set(original.subarray(16, 16 + SEALED_CHUNK), 16 + SEALED_CHUNK);
      const opened = openItem({
        itemId: item.id,
        header: item.header,
        name: item.name,
        payload: (async function* () {
          yield reordered;
        })(),
        unlocked: alice.identity,
      });
      let caught: unknown;
      try {
        for await (const _ of opened.plaintext) {
          // drain
        }
      } catch (e) {
        caught = e;
      }
      expect(isHandsafeError(caught) && caught.code).toBe("age.payload_auth");
    });
  });
});
