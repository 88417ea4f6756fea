import { type Kysely, sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, databaseKinds, postgresAvailable } from "../../../test/helpers/databases.ts";
import { prepareQuery } from "./compiled.ts";
import { type Database, isUniqueViolation, openDatabase } from "./database.ts";

interface Tables {
  things: { id: string; owner: string; size: number; kind: string };
}

const pgOk = await postgresAvailable();

const insertThing = prepareQuery(3, (db: Kysely<Tables>, id: string, owner: string, size: number) =>
  db.insertInto("things").values({ id, owner, size, kind: "fixed" }),
);
const thingsOf = prepareQuery(2, (db: Kysely<Tables>, owner: string, minSize: number) =>
  db
    .selectFrom("things")
    .select(["id", "size", "kind"])
    .where("owner", "=", owner)
    .where("size", ">=", minSize)
    .orderBy("id"),
);

describe.each(databaseKinds)("prepared queries on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let target: Awaited<ReturnType<typeof createTestDatabase>>;
    let database: Database<Tables>;
    beforeAll(async () => {
      target = await createTestDatabase(kind);
      database = await openDatabase<Tables>(target.url);
      await sql`create table things (id text primary key, owner text not null, size integer not null, kind text not null)`.execute(
        database.db,
      );
    });
    afterAll(async () => {
      await database?.close();
      await target?.drop();
    });

    it("runs with each call's arguments, keeping the constants build wrote", async () => {
      await insertThing.execute(database.db, "a", "ann", 1);
      await insertThing.execute(database.db, "b", "ann", 5);
      await insertThing.execute(database.db, "c", "bob", 9);
      const ann = (await thingsOf.execute(database.db, "ann", 2)).rows;
      expect(ann).toEqual([{ id: "b", size: 5, kind: "fixed" }]);
      const dynamic = await database.db
        .selectFrom("things")
        .select(["id", "size", "kind"])
        .where("owner", "=", "bob")
        .where("size", ">=", 0)
        .orderBy("id")
        .execute();
      expect((await thingsOf.execute(database.db, "bob", 0)).rows).toEqual(dynamic);
    });

    it("works inside a transaction, which rolls back with it", async () => {
      await database.db
        .transaction()
        .execute(async (trx) => {
          await insertThing.execute(trx, "d", "dee", 3);
          expect((await thingsOf.execute(trx, "dee", 0)).rows).toHaveLength(1);
          throw new Error("roll back");
        })
        .catch(() => undefined);
      expect((await thingsOf.execute(database.db, "dee", 0)).rows).toEqual([]);
    });

    it("answers as Kysely does: rows, affected rows, insert id; a unique violation passes through", async () => {
      const viaKysely = await database.db
        .updateTable("things")
        .set({ kind: "fixed" })
        .where("owner", "=", "ann")
        .executeTakeFirst();
      const touch = prepareQuery(1, (db: Kysely<Tables>, owner: string) =>
        db.updateTable("things").set({ kind: "fixed" }).where("owner", "=", owner),
      );
      const result = await touch.execute(database.db, "ann");
      expect(result.numAffectedRows).toBe(viaKysely.numUpdatedRows);
      expect(result.rows).toEqual([]);
      const error = await insertThing.execute(database.db, "a", "ann", 1).catch((e: unknown) => e);
      expect(isUniqueViolation(error)).toBe(true);
    });

    it("outside a transaction waits for another caller's open transaction and stays out of it", async () => {
      let release!: () => void;
      const held = new Promise<void>((r) => {
        release = r;
      });
      let entered!: () => void;
      const inside = new Promise<void>((r) => {
        entered = r;
      });
      const open = database.db
        .transaction()
        .execute(async (trx) => {
          await insertThing.execute(trx, "t1", "tx", 1);
          entered();
          await held;
          throw new Error("roll back");
        })
        .catch(() => undefined);
      await inside;
      let done = false;
      const outside = insertThing.execute(database.db, "o1", "tx", 2).then(() => {
        done = true;
      });
      await new Promise((r) => setTimeout(r, 30));
      // SQLite: one connection, held by the transaction; PostgreSQL: another connection of the pool.
      if (kind === "sqlite") expect(done).toBe(false);
      release();
      await Promise.all([open, outside]);
      expect((await thingsOf.execute(database.db, "tx", 0)).rows.map((r) => r.id)).toEqual(["o1"]);
    });

    it("refuses a build that does not use every argument", async () => {
      const careless = prepareQuery(2, (db: Kysely<Tables>, owner: string, _unused: number) =>
        db.selectFrom("things").select("id").where("owner", "=", owner),
      );
      await expect(async () => careless.execute(database.db, "ann", 1)).rejects.toThrow(/does not use each/);
    });
  });
});
