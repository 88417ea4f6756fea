/**
 * The backup server (docs/protocols/backup.md §5) over real HTTPS, on both databases: accounts and
 * the directory, resumable uploads (an interrupted PATCH resumed from HEAD), blobs with Range,
 * envelopes listed all-or-nothing, shared blob references across backups, shares and their
 * revocation — and the attacks: bad proofs and signatures, replays, another account's things,
 * hostile XML, quota. Each refusal asserts its stable code.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeEnvelope, encodeEnvelopeParts, envelopeSigningInput } from "../../src/backup/envelope.ts";
import { verifyEnvelopeSignature } from "../../src/backup/signatures.ts";
import { agePayloadSize, type BackupEnvelope, backupUri, newBackupId } from "../../src/backup/protocol.ts";
import { UPLOAD_TTL_MS } from "../../src/backup/server.ts";
import { fromBase64url, toBase64url } from "../../src/core/codec/base64url.ts";
import { utf8 } from "../../src/core/codec/bytes.ts";
import { sign } from "../../src/core/crypto/ed25519.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import {
  type BackupHarness,
  blobPayload,
  envelopeOf,
  fakeItem,
  sha256Hex,
  startBackupServer,
  type TestAccount,
} from "./harness.ts";

const pgOk = await postgresAvailable();
/** Plaintext of a blob item: just over the inline limit, so a blob of ~64 KiB. */
const SMALL_BLOB_PLAINTEXT = 64 * 1024 + 1;
const QUOTA = 8 * 1024 * 1024;

describe.each(databaseKinds)("backup server on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let t: BackupHarness;
    let alice: TestAccount;
    let bob: TestAccount;
    let eve: TestAccount;

    beforeAll(async () => {
      t = await startBackupServer(kind, { HANDSAFE_BACKUP_QUOTA_BYTES: String(QUOTA) });
      alice = await t.account({ handle: `alice-${kind}` });
      bob = await t.account({ handle: `bob-${kind}` });
      eve = await t.account();
    }, 60_000);
    afterAll(async () => t?.close());

    async function denials(action: string, code?: string): Promise<number> {
      const rows = await t.db
        .selectFrom("audit_log" as never)
        .select(["details" as never])
        .where("action" as never, "=", action as never)
        .where("outcome" as never, "=", "deny" as never)
        .execute();
      return rows.filter(
        (r) => code === undefined || (r as { details: string }).details.includes(`"${code}"`),
      ).length;
    }

    /** A blob item backed by a freshly uploaded blob of `owner`. */
    async function blobItem(owner: TestAccount, command: "Add" | "Replace" | "Copy" = "Add") {
      const bytes = blobPayload(SMALL_BLOB_PLAINTEXT);
      const blob = await owner.uploadBlob(bytes);
      return { item: fakeItem(command, { blob, plaintext: SMALL_BLOB_PLAINTEXT }), blob, bytes };
    }

    async function usedBytes(account: TestAccount): Promise<number> {
      const r = await t.db
        .selectFrom("backup_accounts")
        .select("bytes_used")
        .where("id", "=", account.id)
        .executeTakeFirstOrThrow();
      return Number(r.bytes_used);
    }

    describe("accounts and the directory", () => {
      it("creates an account once; the same keys again answer 200; the directory finds it", async () => {
        const again = await alice.send("POST", "/v1/backup/accounts", {
          json: { signingKey: toBase64url(alice.signingKey), recipient: alice.recipient },
        });
        expect(again.status).toBe(200);
        expect(again.json()).toMatchObject({ accountId: alice.id, handle: `alice-${kind}` });

        const found = await bob.send("GET", `/v1/backup/directory/alice-${kind}`);
        expect(found.status).toBe(200);
        expect(found.json()).toEqual({
          handle: `alice-${kind}`,
          accountId: alice.id,
          recipient: alice.recipient,
          signingKey: toBase64url(alice.signingKey),
        });
        const missing = await bob.send("GET", "/v1/backup/directory/nobody-here");
        expect([missing.status, missing.code]).toEqual([404, "backup.not_found"]);
      });

      it("the operator's listing: each account's storage, backups and last backup; admins only", async () => {
        const carol = await t.account();
        const { item } = await blobItem(carol);
        expect((await carol.putEnvelope(envelopeOf(carol, [item]))).status).toBe(201);
        const admin = { authorization: `Bearer ${t.server.adminToken}` };
        const all = await t.raw("GET", "/v1/admin/backup/accounts?limit=1000", { headers: admin });
        expect(all.status).toBe(200);
        const { quotaBytes, accounts } = all.json<{
          quotaBytes: number;
          accounts: Array<{
            id: string;
            handle: string | null;
            bytesUsed: number;
            backups: number;
            lastBackupAt: number | null;
          }>;
        }>();
        expect(quotaBytes).toBe(QUOTA);
        expect(accounts.map((a) => a.id)).toEqual([...accounts.map((a) => a.id)].sort());
        const row = (id: string) => accounts.find((a) => a.id === id)!;
        expect(row(carol.id)).toMatchObject({ backups: 1, bytesUsed: await usedBytes(carol) });
        expect(row(carol.id).lastBackupAt).not.toBeNull();
        expect(row(eve.id)).toMatchObject({ handle: null, backups: 0, lastBackupAt: null });
        // Paged by account id.
        const first = accounts[0]!.id;
        const next = await t.raw("GET", `/v1/admin/backup/accounts?after=${first}&limit=1`, {
          headers: admin,
        });
        expect(next.json<{ accounts: Array<{ id: string }> }>().accounts.map((a) => a.id)).toEqual([
          accounts[1]!.id,
        ]);
        // Not for an account's own signature, nor without a token.
        expect((await alice.send("GET", "/v1/admin/backup/accounts")).status).toBe(401);
        expect((await t.raw("GET", "/v1/admin/backup/accounts")).status).toBe(401);
      });

      it("the directory by account id: the same record; unknown 404; malformed 400", async () => {
        const byId = await bob.send("GET", `/v1/backup/directory?account=${alice.id}`);
        expect(byId.status).toBe(200);
        expect(byId.json()).toEqual({
          handle: `alice-${kind}`,
          accountId: alice.id,
          recipient: alice.recipient,
          signingKey: toBase64url(alice.signingKey),
        });
        const unknown = await bob.send("GET", `/v1/backup/directory?account=acct_${"A".repeat(22)}`);
        expect([unknown.status, unknown.code]).toEqual([404, "backup.not_found"]);
        const malformed = await bob.send("GET", "/v1/backup/directory?account=alice");
        expect([malformed.status, malformed.code]).toEqual([400, "request.invalid"]);
      });

      it("a handle already taken: backup.handle_taken", async () => {
        const mallory = await t.account({ register: false });
        const res = await mallory.send("POST", "/v1/backup/accounts", {
          json: {
            signingKey: toBase64url(mallory.signingKey),
            recipient: mallory.recipient,
            handle: `alice-${kind}`,
          },
        });
        expect([res.status, res.code]).toEqual([409, "backup.handle_taken"]);
      });

      it("a proof by another key, or a keyid that is not the key's account: signature.*", async () => {
        const mallory = await t.account({ register: false });
        const json = { signingKey: toBase64url(alice.signingKey), recipient: mallory.recipient };
        // Mallory signs a creation for Alice's key with her own key.
        const body = utf8(JSON.stringify(json));
        const headers = {
          "content-type": "application/json",
          ...mallory.sign("POST", "/v1/backup/accounts", { body, keyId: alice.id }),
        };
        const forged = await t.raw("POST", "/v1/backup/accounts", { body, headers });
        expect([forged.status, forged.code]).toEqual([401, "signature.invalid"]);
        // Her own key, but a keyid that is not its account id.
        const own = { signingKey: toBase64url(mallory.signingKey), recipient: mallory.recipient };
        const ownBody = utf8(JSON.stringify(own));
        const wrongKeyId = await t.raw("POST", "/v1/backup/accounts", {
          body: ownBody,
          headers: {
            "content-type": "application/json",
            ...mallory.sign("POST", "/v1/backup/accounts", { body: ownBody, keyId: bob.id }),
          },
        });
        expect([wrongKeyId.status, wrongKeyId.code]).toEqual([401, "signature.unknown_key"]);
        const unsigned = await t.raw("POST", "/v1/backup/accounts", { json });
        expect([unsigned.status, unsigned.code]).toEqual([401, "signature.missing"]);
        expect(await denials("backup.request", "signature.invalid")).toBeGreaterThanOrEqual(1);
      });

      it("an unregistered key signing any call: signature.unknown_key", async () => {
        const stranger = await t.account({ register: false });
        const res = await stranger.send("GET", "/v1/backup/backups");
        expect([res.status, res.code]).toEqual([401, "signature.unknown_key"]);
      });
    });

    describe("a replayed signed request", () => {
      it("the same signature twice: signature.replayed", async () => {
        const headers = alice.sign("GET", "/v1/backup/backups");
        const first = await t.raw("GET", "/v1/backup/backups", { headers });
        expect(first.status).toBe(200);
        const second = await t.raw("GET", "/v1/backup/backups", { headers });
        expect([second.status, second.code]).toEqual([401, "signature.replayed"]);
      });
    });

    describe("resumable uploads", () => {
      it("an interrupted PATCH: HEAD shows what was stored, the rest completes the blob", async () => {
        const bytes = blobPayload(1024 * 1024);
        const begun = await alice.send("POST", "/v1/backup/uploads", {
          json: { size: bytes.length, sha256: sha256Hex(bytes) },
        });
        expect(begun.status).toBe(201);
        const { uri, uploadId } = begun.json<{ uri: string; uploadId: string }>();
        expect(uri).toBe(`/v1/backup/uploads/${uploadId}`);

        const cut = await alice.patch(uri, 0, bytes, { cutAfter: 300 * 1024 });
        expect(cut.code).toBe("cut");
        // The server notices the reset a moment later.
        let offset = 0;
        for (let i = 0; i < 50; i++) {
          await new Promise((r) => setTimeout(r, 50));
          const head = await alice.send("HEAD", uri);
          expect(head.status).toBe(200);
          offset = Number(head.headers["upload-offset"]);
          expect(Number(head.headers["upload-length"])).toBe(bytes.length);
          const second = await alice.send("HEAD", uri);
          if (Number(second.headers["upload-offset"]) === offset) break;
        }
        // What the blob store kept safely stays (it may keep less than was sent, never more).
        expect(offset).toBeGreaterThan(0);
        expect(offset).toBeLessThanOrEqual(300 * 1024);

        const wrong = await alice.patch(uri, offset + 1, bytes.subarray(offset + 1));
        expect([wrong.status, wrong.code]).toEqual([409, "backup.offset_mismatch"]);
        expect(Number(wrong.headers["upload-offset"])).toBe(offset);
        expect(wrong.json<{ error: { details: { offset: number } } }>().error.details.offset).toBe(offset);

        const rest = await alice.patch(uri, offset, bytes.subarray(offset));
        expect(rest.status).toBe(204);
        expect(Number(rest.headers["upload-offset"])).toBe(bytes.length);
        const done = await alice.send("POST", `${uri}/complete`);
        expect(done.status).toBe(200);
        const blob = done.json<{ uri: string; size: number; sha256: string }>();
        expect(blob).toMatchObject({ size: bytes.length, sha256: sha256Hex(bytes) });
        // Completing twice answers the same blob.
        expect((await alice.send("POST", `${uri}/complete`)).json()).toEqual(blob);

        const whole = await alice.send("GET", blob.uri);
        expect(whole.status).toBe(200);
        expect(sha256Hex(whole.body)).toBe(sha256Hex(bytes));
        const part = await alice.send("GET", blob.uri, { headers: { range: "bytes=1000-1999" } });
        expect(part.status).toBe(206);
        expect(part.headers["content-range"]).toBe(`bytes 1000-1999/${bytes.length}`);
        expect(Buffer.compare(part.body, Buffer.from(bytes.subarray(1000, 2000)))).toBe(0);
        const tail = await alice.send("GET", blob.uri, { headers: { range: "bytes=-10" } });
        expect(Buffer.compare(tail.body, Buffer.from(bytes.subarray(bytes.length - 10)))).toBe(0);
        const past = await alice.send("GET", blob.uri, { headers: { range: `bytes=${bytes.length}-` } });
        expect(past.status).toBe(416);
      });

      it("bytes that are not the declared ones: backup.upload_mismatch, and the upload is spent", async () => {
        const bytes = blobPayload(SMALL_BLOB_PLAINTEXT);
        const begun = await alice.send("POST", "/v1/backup/uploads", {
          json: { size: bytes.length, sha256: sha256Hex(blobPayload(SMALL_BLOB_PLAINTEXT)) },
        });
        const { uri } = begun.json<{ uri: string }>();
        const short = await alice.send("POST", `${uri}/complete`);
        expect([short.status, short.code]).toEqual([422, "backup.upload_mismatch"]);
        expect((await alice.patch(uri, 0, bytes)).status).toBe(204);
        const before = await usedBytes(alice);
        const done = await alice.send("POST", `${uri}/complete`);
        expect([done.status, done.code]).toEqual([422, "backup.upload_mismatch"]);
        expect(await usedBytes(alice)).toBe(before);
        const again = await alice.send("HEAD", uri);
        expect(again.status).toBe(404);
        expect(await denials("backup.upload_completed", "backup.upload_mismatch")).toBeGreaterThanOrEqual(2);
      });

      it("the SHA-256 declared at completion: checked against the appended bytes", async () => {
        const bytes = blobPayload(SMALL_BLOB_PLAINTEXT);
        const begin = async () => {
          const begun = await alice.send("POST", "/v1/backup/uploads", { json: { size: bytes.length } });
          expect(begun.status).toBe(201);
          const { uri } = begun.json<{ uri: string }>();
          expect((await alice.patch(uri, 0, bytes)).status).toBe(204);
          return uri;
        };
        // Declared nowhere: refused, and the upload is still open.
        const uri = await begin();
        const none = await alice.send("POST", `${uri}/complete`);
        expect([none.status, none.code]).toEqual([400, "request.invalid"]);
        const malformed = await alice.send("POST", `${uri}/complete`, { json: { sha256: "AB" } });
        expect([malformed.status, malformed.code]).toEqual([400, "request.invalid"]);
        const done = await alice.send("POST", `${uri}/complete`, { json: { sha256: sha256Hex(bytes) } });
        expect(done.status).toBe(200);
        const blob = done.json<{ uri: string; size: number; sha256: string }>();
        expect(blob).toMatchObject({ size: bytes.length, sha256: sha256Hex(bytes) });
        // Completing twice answers the same blob, with or without the hash; another hash is refused.
        expect((await alice.send("POST", `${uri}/complete`)).json()).toEqual(blob);
        expect(
          (await alice.send("POST", `${uri}/complete`, { json: { sha256: sha256Hex(bytes) } })).json(),
        ).toEqual(blob);
        const other = await alice.send("POST", `${uri}/complete`, {
          json: { sha256: sha256Hex(new Uint8Array(1)) },
        });
        expect([other.status, other.code]).toEqual([422, "backup.upload_mismatch"]);
        expect(sha256Hex((await alice.send("GET", blob.uri)).body)).toBe(sha256Hex(bytes));

        // Another hash than the bytes have: backup.upload_mismatch, and the upload is spent.
        const wrong = await begin();
        const before = await usedBytes(alice);
        const refused = await alice.send("POST", `${wrong}/complete`, {
          json: { sha256: sha256Hex(new Uint8Array(1)) },
        });
        expect([refused.status, refused.code]).toEqual([422, "backup.upload_mismatch"]);
        expect(await usedBytes(alice)).toBe(before);
        expect((await alice.send("HEAD", wrong)).status).toBe(404);
      });

      it("a chunk past the declared size: backup.upload_mismatch", async () => {
        const begun = await alice.send("POST", "/v1/backup/uploads", {
          json: { size: 10, sha256: sha256Hex(new Uint8Array(10)) },
        });
        const { uri } = begun.json<{ uri: string }>();
        const res = await alice.patch(uri, 0, new Uint8Array(11));
        expect([res.status, res.code]).toEqual([422, "backup.upload_mismatch"]);
      });

      it("more than the quota: backup.quota_exceeded at the start and at completion", async () => {
        const big = await alice.send("POST", "/v1/backup/uploads", {
          json: { size: QUOTA + 1, sha256: sha256Hex(new Uint8Array(1)) },
        });
        expect([big.status, big.code]).toEqual([413, "backup.quota_exceeded"]);

        // Two uploads that each fit when begun, together too much when completed.
        const carol = await t.account();
        const size = Math.floor(QUOTA * 0.6);
        const one = new Uint8Array(randomBytes(size));
        const first = await carol.send("POST", "/v1/backup/uploads", {
          json: { size, sha256: sha256Hex(one) },
        });
        expect(first.status).toBe(201);
        const second = await carol.send("POST", "/v1/backup/uploads", {
          json: { size, sha256: sha256Hex(one) },
        });
        expect([second.status, second.code]).toEqual([413, "backup.quota_exceeded"]);
        const uri = first.json<{ uri: string }>().uri;
        expect((await carol.patch(uri, 0, one)).status).toBe(204);
        expect((await carol.send("POST", `${uri}/complete`)).status).toBe(200);
        expect(await usedBytes(carol)).toBe(size);
        const third = await carol.send("POST", "/v1/backup/uploads", {
          json: { size, sha256: sha256Hex(one) },
        });
        expect([third.status, third.code]).toEqual([413, "backup.quota_exceeded"]);
      });

      it("uploads left unfinished for 7 days are swept", async () => {
        const begun = await bob.send("POST", "/v1/backup/uploads", {
          json: { size: 100, sha256: sha256Hex(new Uint8Array(100)) },
        });
        const { uri } = begun.json<{ uri: string }>();
        expect((await bob.patch(uri, 0, new Uint8Array(40))).status).toBe(204);
        expect(await t.server.backup.sweepStaleUploads()).toBe(0);
        t.clock.advance(UPLOAD_TTL_MS + 1000);
        try {
          expect(await t.server.backup.sweepStaleUploads()).toBeGreaterThanOrEqual(1);
          const head = await bob.send("HEAD", uri);
          expect(head.status).toBe(404);
          const patch = await bob.patch(uri, 40, new Uint8Array(60));
          expect([patch.status, patch.code]).toEqual([404, "backup.not_found"]);
          expect(await t.server.backup.blobs.uploads.length(uri.split("/").pop()!)).toBeUndefined();
        } finally {
          t.clock.advance(-(UPLOAD_TTL_MS + 1000));
        }
      });
      it("a blob uploaded but never listed is dropped after 7 days, its bytes given back; a listed one stays", async () => {
        const before = await usedBytes(bob);
        const orphan = await bob.uploadBlob(blobPayload(SMALL_BLOB_PLAINTEXT));
        const { item, blob: kept } = await blobItem(bob);
        const listed = await bob.putEnvelope(envelopeOf(bob, [item]));
        expect(listed.status).toBe(201);
        const orphanKey = `backup/blobs/${orphan.uri.split("/").pop()}`;
        const keptKey = `backup/blobs/${kept.uri.split("/").pop()}`;
        expect(await usedBytes(bob)).toBeGreaterThan(before + orphan.size);
        const withOrphan = await usedBytes(bob);
        t.clock.advance(UPLOAD_TTL_MS + 1000);
        try {
          expect(await t.server.backup.sweepStaleUploads()).toBeGreaterThanOrEqual(1);
          expect(await t.server.backup.blobs.stat(orphanKey)).toBeUndefined();
          expect(await t.server.backup.blobs.stat(keptKey)).toBeDefined();
          expect(await usedBytes(bob)).toBe(withOrphan - orphan.size);
          const gone = await bob.send("GET", orphan.uri);
          expect([gone.status, gone.code]).toEqual([404, "backup.not_found"]);
          expect((await bob.send("GET", kept.uri)).status).toBe(200);
        } finally {
          t.clock.advance(-(UPLOAD_TTL_MS + 1000));
        }
      });
    });

    describe("envelopes", () => {
      it("lists, lists again (backup.exists), reads back with its signature", async () => {
        const { item } = await blobItem(alice);
        const env = envelopeOf(alice, [item, fakeItem("Add", { inline: 100 })]);
        const put = await alice.putEnvelope(env);
        expect(put.status).toBe(201);
        expect(put.json()).toMatchObject({ id: env.backupId, kind: "backup", items: 2, parent: null });
        const dup = await alice.putEnvelope(env);
        expect([dup.status, dup.code]).toEqual([409, "backup.exists"]);

        const list = await alice.send("GET", "/v1/backup/backups");
        expect(list.json<{ backups: Array<{ id: string }> }>().backups.map((b) => b.id)).toContain(
          env.backupId,
        );
        const got = await alice.send("GET", backupUri(env.backupId));
        expect(got.status).toBe(200);
        expect(got.headers["content-type"]).toContain("application/vnd.syncml+xml");
        const signature = Buffer.from(String(got.headers["envelope-signature"]), "base64url");
        expect(Buffer.compare(signature, Buffer.from(sign(alice.seed, envelopeSigningInput(got.body))))).toBe(
          0,
        );
      });

      it("a signature that does not verify, or the envelope of another account: backup.signature_invalid", async () => {
        const env = envelopeOf(alice, [fakeItem("Add", { inline: 10 })]);
        const bad = await alice.putEnvelope(env, { signature: toBase64url(new Uint8Array(64)) });
        expect([bad.status, bad.code]).toEqual([400, "backup.signature_invalid"]);
        // Alice signs and puts an envelope whose Source names Bob.
        const forged = envelopeOf(bob, [fakeItem("Add", { inline: 10 })]);
        const res = await alice.putEnvelope(forged);
        expect([res.status, res.code]).toEqual([400, "backup.signature_invalid"]);
        expect((await alice.send("GET", backupUri(env.backupId))).status).toBe(404);
        expect(await denials("backup.backup_listed", "backup.signature_invalid")).toBeGreaterThanOrEqual(2);
      });

      it("a blob of another account, or none at all: backup.blob_missing, nothing listed", async () => {
        const { blob } = await blobItem(bob);
        const theirs = envelopeOf(alice, [fakeItem("Add", { blob, plaintext: SMALL_BLOB_PLAINTEXT })]);
        const res = await alice.putEnvelope(theirs);
        expect([res.status, res.code]).toEqual([422, "backup.blob_missing"]);
        const copied = envelopeOf(alice, [fakeItem("Copy", { blob, plaintext: SMALL_BLOB_PLAINTEXT })]);
        expect((await alice.putEnvelope(copied)).code).toBe("backup.blob_missing");
        const none = envelopeOf(alice, [
          fakeItem("Add", {
            blob: { ...blob, uri: `/v1/backup/blobs/bl_${toBase64url(randomBytes(16))}` },
            plaintext: SMALL_BLOB_PLAINTEXT,
          }),
        ]);
        expect((await alice.putEnvelope(none)).code).toBe("backup.blob_missing");
        // Nothing referenced Bob's blob: its count is still zero.
        const refs = await t.db
          .selectFrom("backup_blobs")
          .select("refs")
          .where("id", "=", blob.uri.split("/").pop()!)
          .executeTakeFirstOrThrow();
        expect(Number(refs.refs)).toBe(0);
        expect((await alice.send("GET", backupUri(theirs.backupId))).status).toBe(404);
        expect(await denials("backup.blob_foreign")).toBeGreaterThanOrEqual(1);
      });

      it("malformed XML, a DOCTYPE bomb, an id that is not the path's: refused with their codes", async () => {
        const id = newBackupId();
        const bomb = utf8(
          '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>' +
            "<SyncML>&lol2;</SyncML>",
        );
        const env = envelopeOf(alice, [], { backupId: id });
        const dtd = await alice.putEnvelope(env, { xml: bomb });
        expect([dtd.status, dtd.code]).toEqual([400, "xml.dtd_forbidden"]);
        const broken = await alice.putEnvelope(env, { xml: utf8("<SyncML><SyncHdr></SyncML>") });
        expect([broken.status, broken.code]).toEqual([400, "xml.malformed"]);
        // Signed by Alice, but listed under another id than its SessionID.
        const other = envelopeOf(alice, [fakeItem("Add", { inline: 1 })]);
        const moved = await alice.putEnvelope(env, { xml: encodeEnvelope(other) });
        expect([moved.status, moved.code]).toEqual([400, "backup.envelope_invalid"]);
        expect((await alice.send("GET", backupUri(other.backupId))).status).toBe(404);
        const json = await alice.send("PUT", backupUri(id), { json: { not: "xml" } });
        expect([json.status, json.code]).toEqual([415, "request.unsupported_media_type"]);
      });

      it("deleting an older backup keeps the blobs a newer one copied; the last one takes them", async () => {
        const shared = await blobItem(alice);
        const only = await blobItem(alice);
        const older = envelopeOf(alice, [shared.item, only.item]);
        expect((await alice.putEnvelope(older)).status).toBe(201);
        const copy = { ...shared.item, command: "Copy" as const };
        const newer = envelopeOf(alice, [copy], { parent: older.backupId });
        expect((await alice.putEnvelope(newer)).status).toBe(201);

        const before = await usedBytes(alice);
        const del = await alice.send("DELETE", backupUri(older.backupId));
        expect(del.status).toBe(204);
        expect((await alice.send("GET", backupUri(older.backupId))).status).toBe(404);
        // The blob only the older one named is gone; the copied one still reads.
        expect((await alice.send("GET", only.blob.uri)).status).toBe(404);
        const still = await alice.send("GET", shared.blob.uri);
        expect(still.status).toBe(200);
        expect(sha256Hex(still.body)).toBe(shared.blob.sha256);
        // Its XML and the blob that went are given back; the copied blob still counts.
        expect(await usedBytes(alice)).toBe(before - encodeEnvelope(older).length - only.blob.size);

        expect((await alice.send("DELETE", backupUri(newer.backupId))).status).toBe(204);
        expect((await alice.send("GET", shared.blob.uri)).status).toBe(404);
        expect((await alice.send("DELETE", backupUri(newer.backupId))).code).toBe("backup.not_found");
      });
    });

    describe("shares", () => {
      it("a shared account reads the envelope and its blobs until revoked; no one else ever", async () => {
        const { item, blob } = await blobItem(alice);
        const env = envelopeOf(alice, [{ ...item, command: "Copy" }], {
          kind: "share",
          sharedWith: [bob.id],
        });
        // Copy of a blob no earlier backup of Alice references yet, but her own: accepted.
        const put = await alice.putEnvelope(env);
        expect(put.status).toBe(201);

        const shared = await bob.send("GET", "/v1/backup/shared");
        expect(shared.json<{ shared: Array<{ id: string; owner: string }> }>().shared).toEqual(
          expect.arrayContaining([expect.objectContaining({ id: env.backupId, owner: alice.id })]),
        );
        expect((await bob.send("GET", backupUri(env.backupId))).status).toBe(200);
        expect((await bob.send("GET", blob.uri)).status).toBe(200);
        // Bob cannot delete or revoke Alice's share.
        expect((await bob.send("DELETE", backupUri(env.backupId))).code).toBe("backup.not_found");
        expect((await bob.send("DELETE", `/v1/backup/shares/${env.backupId}/${bob.id}`)).code).toBe(
          "backup.not_found",
        );
        // Eve is named nowhere.
        expect((await eve.send("GET", backupUri(env.backupId))).code).toBe("backup.not_found");
        expect((await eve.send("GET", blob.uri)).code).toBe("backup.not_found");
        expect((await eve.send("GET", "/v1/backup/shared")).json()).toEqual({ shared: [] });

        const revoked = await alice.send("DELETE", `/v1/backup/shares/${env.backupId}/${bob.id}`);
        expect(revoked.status).toBe(204);
        expect((await bob.send("GET", backupUri(env.backupId))).code).toBe("backup.not_found");
        expect((await bob.send("GET", blob.uri)).code).toBe("backup.not_found");
        expect(
          (await bob.send("GET", "/v1/backup/shared"))
            .json<{ shared: Array<{ id: string }> }>()
            .shared.map((s) => s.id),
        ).not.toContain(env.backupId);
        expect((await alice.send("DELETE", `/v1/backup/shares/${env.backupId}/${bob.id}`)).code).toBe(
          "backup.not_found",
        );
      });

      it("SharedWith naming no account: refused, nothing listed", async () => {
        const env = envelopeOf(alice, [fakeItem("Add", { inline: 5 })], {
          kind: "share",
          sharedWith: [`acct_${toBase64url(randomBytes(16))}`],
        });
        const res = await alice.putEnvelope(env);
        expect([res.status, res.code]).toEqual([404, "backup.not_found"]);
        expect((await alice.send("GET", backupUri(env.backupId))).status).toBe(404);
      });
    });

    describe("another account's everything", () => {
      it("answers exactly as a missing one, and is audited", async () => {
        const { blob } = await blobItem(alice);
        const env = envelopeOf(alice, [fakeItem("Add", { blob, plaintext: SMALL_BLOB_PLAINTEXT })]);
        expect((await alice.putEnvelope(env)).status).toBe(201);
        const begun = await alice.send("POST", "/v1/backup/uploads", {
          json: { size: 4, sha256: sha256Hex(new Uint8Array(4)) },
        });
        const upload = begun.json<{ uri: string }>().uri;
        const denied = await denials("backup.backup_read");

        const missingBackup = await eve.send("GET", backupUri(newBackupId()));
        const theirs = await eve.send("GET", backupUri(env.backupId));
        expect([theirs.status, theirs.code]).toEqual([404, "backup.not_found"]);
        expect(theirs.body.toString()).toBe(missingBackup.body.toString());
        expect(await denials("backup.backup_read")).toBe(denied + 2);

        for (const [method, path] of [
          ["GET", blob.uri],
          ["DELETE", backupUri(env.backupId)],
          ["HEAD", upload],
          ["POST", `${upload}/complete`],
        ] as const) {
          const res = await eve.send(method, path);
          expect(res.status, `${method} ${path}`).toBe(404);
          if (method !== "HEAD") expect(res.code).toBe("backup.not_found");
        }
        const patch = await eve.patch(upload, 0, new Uint8Array(4));
        expect([patch.status, patch.code]).toEqual([404, "backup.not_found"]);
        const list = await eve.send("GET", "/v1/backup/backups");
        expect(list.json()).toEqual({ backups: [] });
        // Alice's things are untouched.
        expect((await alice.send("GET", backupUri(env.backupId))).status).toBe(200);
        expect((await alice.send("HEAD", upload)).headers["upload-offset"]).toBe("0");
      });
    });

    describe("an envelope in parts (§4 Parts)", () => {
      const LIMITS = { maxBytes: 12 * 1024, maxElements: 2000 };
      async function partedEnvelope(owner: TestAccount, more: Partial<BackupEnvelope> = {}) {
        const { item } = await blobItem(owner);
        const items = [item, ...Array.from({ length: 40 }, () => fakeItem("Add", { inline: 300 }))];
        const env = envelopeOf(owner, items, more);
        return { env, parts: encodeEnvelopeParts(env, LIMITS) };
      }
      const put = (owner: TestAccount, env: BackupEnvelope, xml: Uint8Array) =>
        owner.putEnvelope(env, { xml });
      /** [status, code, details.part, details.path] of a refused part. */
      const refusal = (res: Awaited<ReturnType<typeof put>>) => {
        const details = res.json<{ error: { details?: { part?: number; path?: string } } }>().error.details;
        return [res.status, res.code, details?.part, details?.path];
      };
      const stagedRows = async (backupId: string) =>
        t.db.selectFrom("backup_envelope_parts").select("part").where("backup_id", "=", backupId).execute();

      it("parts before the last wait (202) unlisted; the last lists it all (201); GET ?part=n serves each, signed", async () => {
        const before = await usedBytes(alice);
        const { env, parts } = await partedEnvelope(alice);
        expect(parts.length).toBeGreaterThanOrEqual(3);
        const first = await put(alice, env, parts[0]!);
        expect([first.status, first.json()]).toEqual([202, { id: env.backupId, part: 1, staged: true }]);
        // The same part again (a lost answer retried): the same answer; nothing listed yet.
        expect((await put(alice, env, parts[0]!)).status).toBe(202);
        expect((await alice.send("GET", backupUri(env.backupId))).status).toBe(404);
        const listedIds = (await alice.send("GET", "/v1/backup/backups")).json<{
          backups: Array<{ id: string }>;
        }>();
        expect(listedIds.backups.map((b) => b.id)).not.toContain(env.backupId);
        // Out of order: part 3 before part 2.
        expect(refusal(await put(alice, env, parts[2]!))).toEqual([
          400,
          "backup.envelope_invalid",
          3,
          "SyncML/SyncHdr/MsgID",
        ]);
        for (let i = 1; i < parts.length - 1; i++)
          expect((await put(alice, env, parts[i]!)).status).toBe(202);
        const last = await put(alice, env, parts.at(-1)!);
        expect(last.status).toBe(201);
        const xmlBytes = parts.reduce((n, p) => n + p.length, 0);
        expect(last.json()).toMatchObject({
          id: env.backupId,
          items: 41,
          bytes: xmlBytes + agePayloadSize(SMALL_BLOB_PLAINTEXT),
        });
        expect(await usedBytes(alice)).toBe(before + xmlBytes + agePayloadSize(SMALL_BLOB_PLAINTEXT));
        // After listing, a part again is a backup that exists.
        expect((await put(alice, env, parts[1]!)).status).toBe(409);

        for (let i = 0; i < parts.length; i++) {
          const got = await alice.send("GET", backupUri(env.backupId) + (i === 0 ? "" : `?part=${i + 1}`));
          expect(got.status, got.body.toString()).toBe(200);
          expect(new Uint8Array(got.body)).toEqual(parts[i]);
          const signature = fromBase64url(String(got.headers["envelope-signature"]));
          expect(verifyEnvelopeSignature(parts[i]!, signature, alice.signingKey)).toBe(true);
        }
        expect((await alice.send("GET", `${backupUri(env.backupId)}?part=${parts.length + 1}`)).status).toBe(
          404,
        );
        expect((await alice.send("GET", `${backupUri(env.backupId)}?part=0`)).status).toBe(400);
        const theirs = await eve.send("GET", `${backupUri(env.backupId)}?part=2`);
        expect([theirs.status, theirs.code]).toEqual([404, "backup.not_found"]);

        expect((await alice.send("DELETE", backupUri(env.backupId))).status).toBe(204);
        expect((await alice.send("GET", `${backupUri(env.backupId)}?part=2`)).status).toBe(404);
        expect(await stagedRows(env.backupId)).toEqual([]);
        expect(await usedBytes(alice)).toBe(before);
      });

      it("a part with another header, another part under a staged one, a forged part: refused, nothing listed", async () => {
        const { env, parts } = await partedEnvelope(bob);
        expect((await put(bob, env, parts[0]!)).status).toBe(202);
        // Part 2 of the same id but another Created: another header.
        const other = encodeEnvelopeParts({ ...env, createdAt: env.createdAt + 1 }, LIMITS);
        expect(refusal(await put(bob, env, other[1]!))).toEqual([
          400,
          "backup.envelope_invalid",
          2,
          "SyncML/SyncHdr",
        ]);
        // Another part 1 under a staged one: a conflict.
        expect((await put(bob, env, other[0]!)).status).toBe(409);
        // A part signed by someone else's key under this id.
        const forged = await bob.putEnvelope(env, {
          xml: parts[1]!,
          signature: toBase64url(new Uint8Array(64)),
        });
        expect(forged.code).toBe("backup.signature_invalid");
        const list = (await bob.send("GET", "/v1/backup/backups")).json<{ backups: Array<{ id: string }> }>();
        expect(list.backups.map((b) => b.id)).not.toContain(env.backupId);
      });

      it("a last part the staged ones cannot join (an item listed in two parts): refused, nothing listed, nothing taken", async () => {
        const { env } = await partedEnvelope(bob);
        // Each part is valid alone; joined, the first item is listed twice.
        const twice = { ...env, items: [...env.items, env.items[0]!] };
        const parts = encodeEnvelopeParts(twice, LIMITS);
        for (const xml of parts.slice(0, -1)) expect((await put(bob, twice, xml)).status).toBe(202);
        const used = await usedBytes(bob);
        const res = await put(bob, twice, parts.at(-1)!);
        expect(refusal(res).slice(0, 3)).toEqual([400, "backup.envelope_invalid", parts.length]);
        expect((await bob.send("GET", backupUri(env.backupId))).status).toBe(404);
        expect(await usedBytes(bob)).toBe(used);
        // The staged parts stay staged (for the sweep); none was listed.
        expect((await stagedRows(env.backupId)).length).toBe(parts.length - 1);
      });

      it("a session never finished is swept after 7 days, its XML given back to the quota", async () => {
        const before = await usedBytes(bob);
        const { env, parts } = await partedEnvelope(bob);
        expect((await put(bob, env, parts[0]!)).status).toBe(202);
        expect((await put(bob, env, parts[1]!)).status).toBe(202);
        const blob = agePayloadSize(SMALL_BLOB_PLAINTEXT);
        expect(await usedBytes(bob)).toBe(before + blob + parts[0]!.length + parts[1]!.length);
        // What the sweep will give back besides: every staged part and unlisted blob of bob's so far.
        const stagedXml = await t.db
          .selectFrom("backup_envelope_parts")
          .select("xml")
          .where("account_id", "=", bob.id)
          .where("listed", "=", 0)
          .execute();
        const unlisted = await t.db
          .selectFrom("backup_blobs")
          .select("size")
          .where("account_id", "=", bob.id)
          .where("refs", "=", 0)
          .execute();
        const freed =
          stagedXml.reduce((n, r) => n + new Uint8Array(r.xml).length, 0) +
          unlisted.reduce((n, r) => n + Number(r.size), 0);
        const staged = await usedBytes(bob);
        t.clock.advance(UPLOAD_TTL_MS + 1000);
        try {
          // The count is the whole server's (other accounts' leftovers too); bob's effect is exact below.
          expect(await t.server.backup.sweepStaleUploads()).toBeGreaterThanOrEqual(
            stagedXml.length + unlisted.length,
          );
        } finally {
          t.clock.advance(-(UPLOAD_TTL_MS + 1000));
        }
        expect(await usedBytes(bob)).toBe(staged - freed);
        expect(await stagedRows(env.backupId)).toEqual([]);
        const late = await put(bob, env, parts[2]!);
        expect([late.status, late.code]).toEqual([400, "backup.envelope_invalid"]);
      });
    });
  });
});
