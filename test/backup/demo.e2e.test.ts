/**
 * The backup demo on a real server, on both databases, checked against the server's records and the
 * restored folders themselves: the demo's own words (and its own "✓") are not the proof.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseEnvelope } from "../../src/backup/envelope.ts";
import type { BackupTables } from "../../src/backup/store.ts";
import { type BackupDemoResult, digestTree, runBackupDemo } from "../../src/cli/demo-backup.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

const pgOk = await postgresAvailable();

describe.each(databaseKinds)("the backup demo on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let t: TestServer;
    let db: Kysely<BackupTables>;
    let work: string;
    let result: BackupDemoResult;
    const lines: string[] = [];

    beforeAll(async () => {
      t = await startTestServer(kind);
      db = t.server.platform.db as unknown as Kysely<BackupTables>;
      work = mkdtempSync(join(tmpdir(), "handsafe-demo-backup-test-"));
      result = await runBackupDemo(
        { url: t.server.url, pin: t.server.pin },
        { say: (line) => lines.push(line), workDir: work },
      );
    }, 120_000);
    afterAll(async () => {
      await t?.close();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    const envelopes = () =>
      db
        .selectFrom("backup_envelopes")
        .select(["id", "account_id", "kind", "parent", "items", "xml"])
        .orderBy("created_at")
        .execute();

    it("the server lists two backups of Alice, the second built on the first, and one share", async () => {
      const rows = await envelopes();
      const alice = rows.filter((r) => r.account_id === result.alice.accountId);
      expect(
        alice.map((r) => [r.id, r.kind, r.parent]),
        lines.join("\n"),
      ).toEqual([
        [result.first.backupId, "backup", null],
        [result.second.backupId, "backup", result.first.backupId],
        [result.shareId, "share", result.second.backupId],
      ]);
      // Every envelope lists its whole snapshot: one item per file the data folder had then.
      expect(alice[0]!.items).toBe(Object.keys(result.expected.first).length + 8);
      const accounts = await db.selectFrom("backup_accounts").select(["id", "handle"]).execute();
      expect(accounts).toEqual(
        expect.arrayContaining([
          { id: result.alice.accountId, handle: result.alice.handle },
          { id: result.bob.accountId, handle: result.bob.handle },
        ]),
      );
    });

    it("the incremental backup uploaded only the new photo; the rest was copied", async () => {
      const rows = await envelopes();
      const second = parseEnvelope(rows.find((r) => r.id === result.second.backupId)!.xml);
      const count = (c: string) => second.items.filter((i) => i.command === c).length;
      expect([count("Add"), count("Replace"), count("Copy")]).toEqual([
        result.second.added,
        result.second.replaced,
        result.second.copied,
      ]);
      expect(result.second).toMatchObject({ added: 1, replaced: 1, deleted: 1, uploads: 1 });
      // Blobs: the first backup's (video, lease, 3 photos, notes db) plus the new photo, no more.
      const uploads = await db
        .selectFrom("backup_uploads")
        .select(["state"])
        .where("account_id", "=", result.alice.accountId)
        .execute();
      expect(uploads.length).toBe(result.first.uploads + result.second.uploads);
      expect(result.first.uploads).toBe(6);
      const first = parseEnvelope(rows.find((r) => r.id === result.first.backupId)!.xml);
      const blobs = (e: typeof first) =>
        e.items.flatMap((i) => ("blob" in i.payload ? [i.payload.blob.uri] : []));
      const newBlobs = blobs(second).filter((u) => !blobs(first).includes(u));
      expect(newBlobs.length).toBe(1);
    });

    it("the new handset restored both backups byte for byte (checked here, from the folders)", () => {
      expect(result.phoneGone).toBe(true);
      expect(digestTree(result.restoredDirs.latest)).toEqual(result.expected.second);
      expect(digestTree(result.restoredDirs.first)).toEqual(result.expected.first);
      expect(result.expected.first).not.toEqual(result.expected.second);
      expect(Object.keys(result.expected.second).some((p) => p.startsWith("files/tmp/"))).toBe(false);
      expect(Object.keys(result.expected.second)).toEqual(
        expect.arrayContaining(["files/videos/birthday.mp4", "files/photos/snow.jpg", "contacts.json"]),
      );
    });

    it("Bob got the photos only; after the revocation the server refuses him", async () => {
      expect(digestTree(result.restoredDirs.bobPhotos)).toEqual(result.expected.photos);
      expect(Object.keys(result.expected.photos)).toHaveLength(4);
      expect(result.sharedItems).toBe(4);
      const shares = await db
        .selectFrom("backup_shares")
        .select(["envelope_id", "account_id", "revoked_at"])
        .execute();
      const bobs = shares.filter((s) => s.envelope_id === result.shareId);
      expect(bobs).toHaveLength(1);
      expect(bobs[0]!.account_id).toBe(result.bob.accountId);
      expect(bobs[0]!.revoked_at).not.toBeNull();
      expect(result.afterRevoke).toBe("backup.not_found");
      const { body: audit } = await t.admin.get<{ ok: boolean }>("/v1/admin/audit/verify");
      expect(audit.ok).toBe(true);
    });
  });
});
