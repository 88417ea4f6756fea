import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import SqliteDatabase from "better-sqlite3";
import { sql } from "kysely";
import { afterAll, describe, expect, it } from "vitest";
import { until } from "../../../test/helpers/wait.ts";
import { openDatabase } from "./database.ts";
import { RESTART_FRAMES, startSqliteCheckpointer, WAL_SIZE_LIMIT } from "./sqlite-checkpointer.ts";

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
    // The serving connection is the one that cuts a grown WAL file back when the WAL restarts.
    const limit = (await sql`pragma journal_size_limit`.execute(db)).rows[0] as object;
    expect(Number(Object.values(limit)[0])).toBe(WAL_SIZE_LIMIT);
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

  it("keeps the WAL bounded under commits that never pause: past RESTART_FRAMES it forces a restart", async () => {
    const file = join(dir, "busy.sqlite");
    const raw = new SqliteDatabase(file, { timeout: 5000 });
    raw.pragma("journal_mode = WAL");
    raw.pragma("synchronous = NORMAL");
    raw.exec("create table t (id integer primary key, v blob)");
    const checkpointer = startSqliteCheckpointer(file, (n) => raw.pragma(`wal_autocheckpoint = ${n}`));
    await until(() => Number(raw.pragma("wal_autocheckpoint", { simple: true })) === 0, 5000);
    const insert = raw.prepare("insert into t (v) values (randomblob(65536))");
    const pageSize = Number(raw.pragma("page_size", { simple: true }));
    const walBytes = () => statSync(`${file}-wal`).size;
    // 160 MiB through the WAL, one 64 KiB row per commit and the next commit a timer tick later (as
    // a busy server's commits come between its other work): a passive checkpoint alone never finds
    // the WAL fully copied when a commit starts, so without the forced restart the WAL file grows
    // to hold all of it (checked: 160 MiB and more).
    let largest = 0;
    for (let i = 0; i < 2560; i++) {
      insert.run();
      largest = Math.max(largest, walBytes());
      await new Promise((r) => setTimeout(r, 0));
    }
    expect(checkpointer.restarts()).toBeGreaterThan(0);
    // Bounded: the restart threshold, plus what the commits add until the next checks catch up.
    expect(largest).toBeLessThan(RESTART_FRAMES * pageSize + 48 * 1024 * 1024);
    expect(Number(raw.prepare("select count(*) as n from t").get()!["n" as never])).toBe(2560);
    await checkpointer.close();
    raw.close();
  }, 60_000);

  it("never turns autocheckpoint off when its worker cannot open the database, and closes quietly", async () => {
    const set: number[] = [];
    const checkpointer = startSqliteCheckpointer(join(dir, "missing.sqlite"), (n) => set.push(n));
    await new Promise((r) => setTimeout(r, 300));
    await checkpointer.close();
    expect(set).toEqual([]);
  });
});
