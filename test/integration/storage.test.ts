import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { sql } from "kysely";
import { afterEach, describe, expect, it } from "vitest";
import { isHandsafeError } from "../../src/core/errors.ts";
import { appendAudit, listAudit, verifyAuditChain } from "../../src/platform/audit.ts";
import { toBytes } from "../../src/platform/db/columns.ts";
import { type Database, isUniqueViolation, openDatabase } from "../../src/platform/db/database.ts";
import { migrateToLatest } from "../../src/platform/db/migrate.ts";
import { platformMigrations } from "../../src/platform/db/migrations/index.ts";
import {
  createTestDatabase,
  type DatabaseKind,
  databaseKinds,
  postgresAvailable,
} from "../helpers/databases.ts";

const pgOk = await postgresAvailable();

const moduleUrl = (path: string) => pathToFileURL(resolve(import.meta.dirname, "../..", path)).href;

/** Runs `body` in a separate Node process (another "server node") with `database` open on `url`. */
async function inChildProcess(url: string, body: string): Promise<string> {
  const script = `
    import { openDatabase } from ${JSON.stringify(moduleUrl("src/platform/db/database.ts"))};
    import { migrateToLatest } from ${JSON.stringify(moduleUrl("src/platform/db/migrate.ts"))};
    import { platformMigrations } from ${JSON.stringify(moduleUrl("src/platform/db/migrations/index.ts"))};
    import { appendAudit } from ${JSON.stringify(moduleUrl("src/platform/audit.ts"))};
    const database = await openDatabase(process.env.TEST_DB_URL);
    try { ${body} } finally { await database.close(); }`;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--import", "tsx", "--input-type=module", "-e", script],
    { env: { ...process.env, TEST_DB_URL: url }, cwd: resolve(import.meta.dirname, "../..") },
  );
  return stdout.trim();
}

describe.each(databaseKinds)("storage on %s", (kind: DatabaseKind) => {
  describe.skipIf(kind === "postgres" && !pgOk)(kind, () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      while (cleanups.length > 0) await cleanups.pop()!();
    });

    async function fresh(opts: { migrate?: boolean } = {}): Promise<{ url: string; database: Database }> {
      const target = await createTestDatabase(kind);
      cleanups.push(target.drop);
      const database = await openDatabase(target.url);
      cleanups.push(() => database.close());
      if (opts.migrate !== false) await migrateToLatest(database, platformMigrations);
      return { url: target.url, database };
    }

    async function openMore(url: string): Promise<Database> {
      const database = await openDatabase(url);
      cleanups.push(() => database.close());
      return database;
    }

    async function appendMany(handles: Database[], total: number, concurrency: number): Promise<void> {
      let next = 0;
      const worker = async (w: number) => {
        while (next < total) {
          const i = next++;
          await appendAudit(handles[w % handles.length]!, {
            actor: `worker:${w}`,
            action: "test.append",
            subject: `item:${i}`,
            outcome: i % 7 === 0 ? "deny" : "allow",
            details: { i, nested: { ok: true, list: [1, "two", null] } },
          });
        }
      };
      await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
    }

    /** The attacker's move: switch the append-only triggers off. */
    async function disableAppendOnly(database: Database): Promise<void> {
      if (kind === "sqlite") {
        await sql`drop trigger audit_log_no_update`.execute(database.db);
        await sql`drop trigger audit_log_no_delete`.execute(database.db);
      } else {
        await sql`alter table audit_log disable trigger user`.execute(database.db);
      }
    }

    describe("migrations", () => {
      it("apply once, then are a no-op the second time", async () => {
        const { database } = await fresh({ migrate: false });
        expect(await migrateToLatest(database, platformMigrations)).toEqual(["0001_platform"]);
        expect(await migrateToLatest(database, platformMigrations)).toEqual([]);
        const head = await database.db.selectFrom("audit_head").selectAll().executeTakeFirstOrThrow();
        expect(head).toMatchObject({ id: 1, seq: 0 });
      });

      it("three server processes migrating at once apply each migration exactly once", async () => {
        const { url, database } = await fresh({ migrate: false });
        const outputs = await Promise.all(
          [1, 2, 3].map(() =>
            inChildProcess(
              url,
              "console.log(JSON.stringify(await migrateToLatest(database, platformMigrations)));",
            ),
          ),
        );
        expect(outputs.flatMap((o) => JSON.parse(o) as string[])).toEqual(["0001_platform"]);
        expect(await migrateToLatest(database, platformMigrations)).toEqual([]);
      });

      it("refuses badly named migrations", async () => {
        const { database } = await fresh();
        await expect(migrateToLatest(database, { "1_bad": { up: async () => {} } })).rejects.toMatchObject({
          code: "storage.migration_invalid",
        });
      });
    });

    describe("the audit chain under concurrent appenders", () => {
      it("50 appends from 10 concurrent appenders chain without gaps", async () => {
        const { url, database } = await fresh();
        // One SQLite connection per process (see docs/storage.md); PostgreSQL: two pools, as two nodes.
        await appendMany(kind === "sqlite" ? [database] : [database, await openMore(url)], 50, 10);
        expect(await verifyAuditChain(database)).toEqual({ ok: true, count: 50 });
        const page1 = await listAudit(database, { limit: 30 });
        const page2 = await listAudit(database, { afterSeq: 30, limit: 30 });
        const all = [...page1, ...page2];
        expect(all.map((r) => r.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
        expect(new Set(all.map((r) => r.subject)).size).toBe(50);
        for (let i = 1; i < all.length; i++) expect(all[i]!.prevHash).toBe(all[i - 1]!.hash);
        expect(all[0]!.details).toEqual({
          i: expect.any(Number),
          nested: { ok: true, list: [1, "two", null] },
        });
        expect(typeof all[0]!.at).toBe("number");
      });

      it("three processes appending at once (5 appenders each) chain without gaps", async () => {
        const { url, database } = await fresh();
        const body = `await Promise.all([0, 1, 2, 3, 4].map(async (w) => {
          for (let i = 0; i < 20; i++)
            await appendAudit(database, { actor: "proc:" + process.pid, action: "test.append", outcome: "info", details: { w, i } });
        }));`;
        await Promise.all([inChildProcess(url, body), inChildProcess(url, body), inChildProcess(url, body)]);
        expect(await verifyAuditChain(database)).toEqual({ ok: true, count: 300 });
        const actors = new Set((await listAudit(database, { limit: 1000 })).map((r) => r.actor));
        expect(actors.size).toBe(3);
      });

      it("appendAudit returns the stored record", async () => {
        const { database } = await fresh();
        const rec = await appendAudit(database, { actor: "system", action: "server.start", outcome: "info" });
        expect(rec).toMatchObject({ seq: 1, subject: null, details: {}, prevHash: "0".repeat(64) });
        expect((await listAudit(database, { limit: 1 }))[0]).toEqual(rec);
      });

      it("each record's hash is SHA-256(label, 0, prevHash, 0, canonical body) as the module header documents", async () => {
        const { database } = await fresh();
        const details = { z: "é✓", a: [1, true, null], skipped: undefined };
        const first = await appendAudit(database, {
          actor: "system",
          action: "t.one",
          outcome: "info",
          details,
        });
        const second = await appendAudit(database, {
          actor: "a",
          action: "t.two",
          subject: "s",
          outcome: "deny",
        });
        for (const r of [first, second]) {
          // Written out by hand, key order included, so the chain's format cannot drift with the code.
          const body =
            `{"action":${JSON.stringify(r.action)},"actor":${JSON.stringify(r.actor)},"at":${r.at},` +
            `"details":${r.seq === 1 ? '{"a":[1,true,null],"z":"é✓"}' : "{}"},"outcome":${JSON.stringify(r.outcome)},` +
            `"seq":${r.seq},"subject":${r.subject === null ? "null" : JSON.stringify(r.subject)}}`;
          const expected = createHash("sha256")
            .update("handsafe/v1/audit")
            .update(Buffer.of(0))
            .update(r.prevHash)
            .update(Buffer.of(0))
            .update(body, "utf8")
            .digest("hex");
          expect(r.hash).toBe(expected);
        }
        expect(second.prevHash).toBe(first.hash);
        expect(first.details).toEqual({ z: "é✓", a: [1, true, null] });
        expect(await listAudit(database, { limit: 2 })).toEqual(expect.arrayContaining([first, second]));
      });

      it("refuses details that are not canonical JSON (floats)", async () => {
        const { database } = await fresh();
        await expect(
          appendAudit(database, { actor: "a", action: "b", outcome: "info", details: { x: 1.5 } }),
        ).rejects.toMatchObject({ code: "audit.invalid_entry" });
      });
    });

    describe("an attacker with SQL access rewrites history", () => {
      it("UPDATE is rejected by the trigger", async () => {
        const { database } = await fresh();
        await appendMany([database], 3, 1);
        await expect(
          database.db.updateTable("audit_log").set({ actor: "mallory" }).where("seq", "=", 2).execute(),
        ).rejects.toThrow(/append-only/);
      });

      it("DELETE is rejected by the trigger", async () => {
        const { database } = await fresh();
        await appendMany([database], 3, 1);
        await expect(database.db.deleteFrom("audit_log").where("seq", "=", 2).execute()).rejects.toThrow(
          /append-only/,
        );
        await expect(database.db.deleteFrom("audit_log").execute()).rejects.toThrow(/append-only/);
        if (kind === "postgres")
          await expect(sql`truncate audit_log`.execute(database.db)).rejects.toThrow(/append-only/);
        expect(await verifyAuditChain(database)).toEqual({ ok: true, count: 3 });
      });

      it("an edited row (trigger disabled) is found at its seq", async () => {
        const { database } = await fresh();
        await appendMany([database], 50, 10);
        await disableAppendOnly(database);
        await database.db
          .updateTable("audit_log")
          .set({ outcome: "allow", actor: "mallory" })
          .where("seq", "=", 17)
          .execute();
        expect(await verifyAuditChain(database)).toMatchObject({ ok: false, brokenAt: 17 });
      });

      it("an edited row whose hash was recomputed breaks the link to the next one", async () => {
        const { database } = await fresh();
        await appendMany([database], 10, 1);
        await disableAppendOnly(database);
        await database.db
          .updateTable("audit_log")
          .set({ hash: "f".repeat(64) })
          .where("seq", "=", 4)
          .execute();
        expect(await verifyAuditChain(database)).toMatchObject({ ok: false, brokenAt: 4 });
      });

      it("a deleted row is found", async () => {
        const { database } = await fresh();
        await appendMany([database], 50, 10);
        await disableAppendOnly(database);
        await database.db.deleteFrom("audit_log").where("seq", "=", 23).execute();
        expect(await verifyAuditChain(database)).toMatchObject({ ok: false, brokenAt: 23 });
      });

      it("a deleted tail is found", async () => {
        const { database } = await fresh();
        await appendMany([database], 10, 1);
        await disableAppendOnly(database);
        await database.db.deleteFrom("audit_log").where("seq", ">=", 9).execute();
        expect(await verifyAuditChain(database)).toMatchObject({ ok: false, brokenAt: 9 });
      });

      it("reordered rows are found", async () => {
        const { database } = await fresh();
        await appendMany([database], 10, 1);
        await disableAppendOnly(database);
        // Swap rows 5 and 6 by renumbering them.
        await database.db.updateTable("audit_log").set({ seq: 1000 }).where("seq", "=", 5).execute();
        await database.db.updateTable("audit_log").set({ seq: 5 }).where("seq", "=", 6).execute();
        await database.db.updateTable("audit_log").set({ seq: 6 }).where("seq", "=", 1000).execute();
        expect(await verifyAuditChain(database)).toMatchObject({ ok: false, brokenAt: 5 });
      });

      it("a row inserted behind appendAudit's back is found", async () => {
        const { database } = await fresh();
        await appendMany([database], 5, 1);
        const last = (await listAudit(database, { afterSeq: 4, limit: 1 }))[0]!;
        await database.db
          .insertInto("audit_log")
          .values({
            seq: 6,
            at: Date.now(),
            actor: "mallory",
            action: "test.append",
            subject: null,
            outcome: "allow",
            details: "{}",
            prev_hash: last.hash,
            hash: "0".repeat(64),
          })
          .execute();
        expect(await verifyAuditChain(database)).toMatchObject({ ok: false, brokenAt: 6 });
      });
    });

    describe("constraints", () => {
      it("isUniqueViolation recognises a duplicate key, and only that", async () => {
        const { database } = await fresh();
        const row = {
          kid: "k1",
          purpose: "signing",
          created_at: Date.now(),
          public_key: new Uint8Array([1, 2, 3]),
          sealed_private: new Uint8Array([4, 5, 6]),
        };
        await database.db.insertInto("server_keys").values(row).execute();
        const dup = await database.db
          .insertInto("server_keys")
          .values(row)
          .execute()
          .catch((e: unknown) => e);
        expect(isUniqueViolation(dup)).toBe(true);
        const notNull = await database.db
          .insertInto("server_keys")
          .values({ ...row, kid: "k2", sealed_private: null })
          .execute()
          .catch((e: unknown) => e);
        expect(notNull).toBeInstanceOf(Error);
        expect(isUniqueViolation(notNull)).toBe(false);
        expect(isUniqueViolation(new Error("x"))).toBe(false);
      });

      it("bytes and epoch-millisecond times round-trip with their JS types", async () => {
        const { database } = await fresh();
        const at = 1_790_000_000_123;
        await database.db
          .insertInto("server_keys")
          .values({
            kid: "k",
            purpose: "p",
            created_at: at,
            public_key: null,
            sealed_private: new Uint8Array([0, 255]),
          })
          .execute();
        const row = await database.db.selectFrom("server_keys").selectAll().executeTakeFirstOrThrow();
        expect(row.created_at).toBe(at);
        expect(row.public_key).toBeNull();
        const bytes = toBytes(row.sealed_private);
        expect(Buffer.isBuffer(bytes)).toBe(false);
        expect([...bytes]).toEqual([0, 255]);
      });
    });
  });
});

describe("storage.unavailable", () => {
  it("an unreachable PostgreSQL surfaces as storage.unavailable (503)", async () => {
    const err = await openDatabase("postgres://postgres@127.0.0.1:1/none").catch((e: unknown) => e);
    expect(isHandsafeError(err, "storage.unavailable")).toBe(true);
    expect((err as { status: number }).status).toBe(503);
  });

  it("an unopenable SQLite file surfaces as storage.unavailable", async () => {
    const dir = mkdtempSync(join(tmpdir(), "handsafe-test-"));
    try {
      writeFileSync(join(dir, "a-file"), "");
      const err = await openDatabase(`sqlite:${join(dir, "a-file", "nope.sqlite")}`).catch((e: unknown) => e);
      expect(isHandsafeError(err, "storage.unavailable")).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a pool whose server went away answers storage.unavailable on the next query", async () => {
    if (!pgOk) return;
    const target = await createTestDatabase("postgres");
    const database = await openDatabase(target.url);
    try {
      await target.drop(); // WITH (FORCE) terminates the pool's connections
      const err = await sql`select 1`.execute(database.db).catch((e: unknown) => e);
      expect(isHandsafeError(err, "storage.unavailable")).toBe(true);
    } finally {
      await database.close();
    }
  });
});
