import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "kysely";
import { afterAll, describe, expect, it } from "vitest";
import { until } from "../../../test/helpers/wait.ts";
import { openDatabase } from "./database.ts";
import { startSqliteCheckpointer } from "./sqlite-checkpointer.ts";

const dir = mkdtempSync(join(tmpdir(), "handsafe-checkpointer-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("WAL checkpoints on a worker thread", () => {
  it("turns the serving connection's autocheckpoint off and copies the WAL into the file itself", async () => {
    const file = join(dir, "a.sqlite");
    const database = await openDatabase(`sqlite:${file}`);
    const { db } = database;
    const autocheckpoint = async () =>
      Number(Object.values((await sql`pragma wal_autocheckpoint`.execute(db)).rows[0] as object)[0]);
    await until(async () => (await autocheckpoint()) === 0, 5000);
    await sql`create table t (id integer primary key, v blob)`.execute(db);
    const before = statSync(file).size;
    // About 8 MiB through the WAL, in commits of 64 KiB: past the 1,000 pages SQLite would checkpoint at.
    for (let i = 0; i < 128; i++) await sql`insert into t (v) values (randomblob(65536))`.execute(db);
    // Nothing but the worker checkpoints now, so the file grows only by its hand.
    await until(() => statSync(file).size > before + 4 * 1024 * 1024, 5000);
    const count = await sql`select count(*) as n from t`.execute(db);
    expect(Number((count.rows[0] as { n: number }).n)).toBe(128);
    await database.close();
    // The last connection to close checkpoints what is left: everything is in the file.
    expect(statSync(file).size).toBeGreaterThan(8 * 1024 * 1024);
  });

  it("never turns autocheckpoint off when its worker cannot open the database, and closes quietly", async () => {
    const set: number[] = [];
    const checkpointer = startSqliteCheckpointer(join(dir, "missing.sqlite"), (n) => set.push(n));
    await new Promise((r) => setTimeout(r, 300));
    await checkpointer.close();
    expect(set).toEqual([]);
  });
});
