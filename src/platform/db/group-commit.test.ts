import { type Kysely, sql } from "kysely";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createTestDatabase, databaseKinds, postgresAvailable } from "../../../test/helpers/databases.ts";
import { listAudit, verifyAuditChain } from "../audit.ts";
import { createPlatform } from "../compose.ts";
import { loadConfig } from "../config.ts";
import type { Platform } from "../context.ts";
import { type Database, isUniqueViolation, openDatabase } from "./database.ts";
import { groupCommit } from "./group-commit.ts";
import { migrateToLatest } from "./migrate.ts";
import { platformMigrations } from "./migrations/index.ts";

interface Tables {
  notes: { id: string; text: string };
}

const pgOk = await postgresAvailable();

const ids = async (db: Kysely<Tables>) =>
  (await db.selectFrom("notes").select("id").orderBy("id").execute()).map((r) => r.id);

describe.each(databaseKinds)("group commit on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let target: Awaited<ReturnType<typeof createTestDatabase>>;
    let database: Database<Tables>;
    beforeAll(async () => {
      target = await createTestDatabase(kind);
      database = await openDatabase<Tables>(target.url);
      await sql`create table notes (id text primary key, text text not null)`.execute(database.db);
    });
    afterAll(async () => {
      await database?.close();
      await target?.drop();
    });
    beforeEach(async () => {
      await database.db.deleteFrom("notes").execute();
    });

    it("commits every unit of a burst and gives each caller its own answer", async () => {
      const group = groupCommit(database);
      const answers = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          group.run(async (trx) => {
            await trx
              .insertInto("notes")
              .values({ id: `n${String(i).padStart(2, "0")}`, text: "x" })
              .execute();
            return i * 10;
          }),
        ),
      );
      expect(answers).toEqual(Array.from({ length: 40 }, (_, i) => i * 10));
      expect(await ids(database.db)).toHaveLength(40);
      const { units, batches } = group.stats();
      expect(units).toBe(40);
      // SQLite groups a burst into a few commits; PostgreSQL commits each unit on its own.
      if (kind === "sqlite") expect(batches).toBeLessThan(10);
      else expect(batches).toBe(40);
    });

    it("rolls back a unit that throws, alone: the others of its batch commit", async () => {
      const group = groupCommit(database);
      const results = await Promise.allSettled(
        ["a", "b", "c", "d"].map((id) =>
          group.run(async (trx) => {
            await trx.insertInto("notes").values({ id, text: "kept?" }).execute();
            if (id === "b") throw new Error("unit b refuses");
            return id;
          }),
        ),
      );
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled", "fulfilled"]);
      expect((results[1] as PromiseRejectedResult).reason.message).toBe("unit b refuses");
      expect(await ids(database.db)).toEqual(["a", "c", "d"]);
    });

    it("runs a batch without savepoints, and again with them only when a unit throws", async () => {
      const runs = new Map<string, number>();
      const unit = (id: string, fails: boolean) => async (trx: Kysely<Tables>) => {
        runs.set(id, (runs.get(id) ?? 0) + 1);
        await trx.insertInto("notes").values({ id, text: "t" }).execute();
        if (fails) throw new Error(`${id} refuses`);
      };
      const group = groupCommit(database);
      await Promise.all(["p", "q", "r"].map((id) => group.run(unit(id, false))));
      expect([...runs.values()]).toEqual([1, 1, 1]);
      expect(group.stats().retries).toBe(0);

      runs.clear();
      const results = await Promise.allSettled(["s", "t", "u"].map((id) => group.run(unit(id, id === "t"))));
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
      expect(await ids(database.db)).toEqual(["p", "q", "r", "s", "u"]);
      if (kind === "sqlite") {
        // s ran, t threw: rolled back whole, then s, t, u each in a savepoint.
        expect(Object.fromEntries(runs)).toEqual({ s: 2, t: 2, u: 1 });
        expect(group.stats()).toMatchObject({ batches: 2, retries: 1 });
      } else expect(Object.fromEntries(runs)).toEqual({ s: 1, t: 1, u: 1 });

      // Alone in its batch, a unit that throws is answered with its own error, run once.
      runs.clear();
      await expect(group.run(unit("v", true))).rejects.toThrow("v refuses");
      expect(Object.fromEntries(runs)).toEqual({ v: 1 });
      expect(await ids(database.db)).not.toContain("v");
      if (kind === "sqlite") expect(group.stats().retries).toBe(1);
    });

    it("survives a statement the database refuses inside a unit (PostgreSQL aborts to the savepoint only)", async () => {
      const group = groupCommit(database);
      await database.db.insertInto("notes").values({ id: "taken", text: "first" }).execute();
      const results = await Promise.allSettled(
        ["x", "taken", "y"].map((id) =>
          group.run((trx) => trx.insertInto("notes").values({ id, text: "second" }).execute()),
        ),
      );
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
      expect(isUniqueViolation((results[1] as PromiseRejectedResult).reason)).toBe(true);
      expect(await ids(database.db)).toEqual(["taken", "x", "y"]);
      const first = await database.db
        .selectFrom("notes")
        .select("text")
        .where("id", "=", "taken")
        .executeTakeFirst();
      expect(first?.text).toBe("first");
    });

    it("a batch whose commit fails answers each of its callers with that failure and stores none of it", async () => {
      await sql`create table if not exists note_links (id text primary key, note_id text not null references notes (id) deferrable initially deferred)`.execute(
        database.db,
      );
      const group = groupCommit(database);
      const results = await Promise.allSettled(
        ["ok1", "orphan", "ok2"].map((id) =>
          group.run(async (trx) => {
            if (id !== "orphan") await trx.insertInto("notes").values({ id, text: "t" }).execute();
            // A deferred reference is checked at the commit, not at the statement.
            await sql`insert into note_links (id, note_id) values (${id}, ${id === "orphan" ? "missing" : id})`.execute(
              trx,
            );
          }),
        ),
      );
      if (kind === "sqlite") {
        // One transaction for the three: the orphan's broken reference fails the commit for all.
        expect(results.map((r) => r.status)).toEqual(["rejected", "rejected", "rejected"]);
        expect(await ids(database.db)).toEqual([]);
      } else {
        expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
        expect(await ids(database.db)).toEqual(["ok1", "ok2"]);
      }
      await sql`drop table note_links`.execute(database.db);
    });
  });
});

describe.each(databaseKinds)("group commit with audit records on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let target: Awaited<ReturnType<typeof createTestDatabase>>;
    let database: Database<Tables>;
    let platform: Platform;
    beforeAll(async () => {
      target = await createTestDatabase(kind);
      database = await openDatabase<Tables>(target.url);
      await migrateToLatest(database, platformMigrations);
      await sql`create table notes (id text primary key, text text not null)`.execute(database.db);
      platform = createPlatform({
        config: loadConfig({
          HANDSAFE_DATA_DIR: "/tmp/handsafe-group-commit-unused",
          HANDSAFE_MASTER_KEY: "A".repeat(43),
        }),
        database,
      });
    });
    afterAll(async () => {
      await database?.close();
      await target?.drop();
    });

    const unit = (id: string, fail: "no" | "after-audit" | "bad-entry") => (trx: Kysely<Tables>) =>
      (async () => {
        await trx.insertInto("notes").values({ id, text: "t" }).execute();
        await platform.audit(
          {
            actor: "test",
            action: "test.noted",
            subject: `note:${id}`,
            outcome: "allow",
            // A float is not canonical JSON: the entry is refused when recorded, not at the commit.
            details: fail === "bad-entry" ? { x: 1.5 } : { id },
          },
          trx,
        );
        if (fail === "after-audit") throw new Error("changed its mind");
        // SQLite batches: the record waits for the end of the batch, so the unit cannot see it yet.
        const seen = await sql<{
          n: number;
        }>`select count(*) as n from audit_log where subject = ${`note:${id}`}`.execute(trx);
        if (kind === "sqlite") expect(Number(seen.rows[0]!.n)).toBe(0);
        return id;
      })();

    it("keeps each committed unit's record, in unit order, and none of a unit rolled back", async () => {
      const group = groupCommit(database);
      const plan = [
        ["a1", "no"],
        ["a2", "after-audit"],
        ["a3", "no"],
        ["a4", "bad-entry"],
        ["a5", "no"],
      ] as const;
      const results = await Promise.allSettled(plan.map(([id, fail]) => group.run(unit(id, fail))));
      expect(results.map((r) => r.status)).toEqual([
        "fulfilled",
        "rejected",
        "fulfilled",
        "rejected",
        "fulfilled",
      ]);
      expect((results[3] as PromiseRejectedResult).reason).toMatchObject({ code: "audit.invalid_entry" });
      // An append outside the group lands after the batch's records, on the same chain.
      await platform.audit({ actor: "test", action: "test.after", outcome: "info" });
      const records = await listAudit(database, { limit: 100 });
      const ours = records.filter((r) => r.action.startsWith("test."));
      const order = ours.map((r) => r.subject ?? r.action);
      // SQLite: one batch, its records in unit order. PostgreSQL: each unit commits on its own, in parallel.
      if (kind === "postgres") order.splice(0, 3, ...order.slice(0, 3).sort());
      expect(order).toEqual(["note:a1", "note:a3", "note:a5", "test.after"]);
      expect(await verifyAuditChain(database)).toEqual({ ok: true, count: records.length });
      if (kind === "sqlite") expect(group.stats().batches).toBe(1);
    });
  });
});
