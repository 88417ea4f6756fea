import { CompiledQuery, type Kysely, type Transaction } from "kysely";
import { deferAuditsIn } from "../audit.ts";
import type { Database } from "./database.ts";
import { executeCompiled } from "./direct.ts";

/**
 * Group commit: many callers' small write transactions share one database transaction, and so one
 * commit. Each caller's promise settles only after that commit, so an answer given on it is as
 * durable as one given after a transaction of its own; a unit that throws is rolled back alone and
 * its caller gets the error, while the others commit.
 *
 * How a unit is rolled back alone: the batch first runs its units one after the other with no
 * savepoints. Should one throw, that transaction is rolled back whole and the batch runs again,
 * each unit in a savepoint of its own, so that only the units that throw again fail (a unit alone
 * in its batch is answered with its error at once). A savepoint
 * copies every page its unit first touches into SQLite's sub-journal: about 70 µs of an accepted
 * message's 390 (in process, 8 at once), paid now only by a batch in which a unit failed.
 *
 * Why: on SQLite every commit writes each page it touched to the write-ahead log, whole. A message
 * accepted touches a dozen pages (its row and indexes, the audit head and record, the outbox text),
 * most of them the same pages the next message touches; committed together they are written once.
 * Nothing waits to fill a batch: a unit that arrives while no batch runs starts one on the next
 * turn of the event loop, with whatever else arrived by then; units that arrive while one runs
 * form the next (so batches grow only under load, and an idle server answers as fast as before).
 *
 * The audit records the units leave in the batch's transaction (Platform.audit with `within`) are
 * appended together after the last unit, in one head move and one insert (audit.ts deferAudit); a
 * unit rolled back drops its own. They still commit, or not, with the decisions they record.
 *
 * SQLite only: it has one writer anyway, so grouping costs no concurrency. On PostgreSQL each unit
 * runs in a transaction of its own, in parallel on the pool (there, grouping units that lock rows
 * in different orders could deadlock one batch against another).
 */
export interface GroupCommit<DB> {
  /**
   * Runs `unit` in the next batch's transaction and answers after that commit. A unit must not
   * wait on anything but the database (it holds its batch), must not lean on deferred constraints
   * (one failing at the commit fails the whole batch), and may run twice: when a unit of its batch
   * throws, the batch is rolled back and run again with savepoints, so it must do nothing that the
   * rollback does not undo.
   */
  run<T>(unit: (trx: Kysely<DB>) => Promise<T>): Promise<T>;
  /** Units and batches run so far, and the batches run again with savepoints (a unit threw). */
  stats(): { units: number; batches: number; retries: number };
}

interface Pending<DB> {
  unit: (trx: Kysely<DB>) => Promise<unknown>;
  resolve(value: unknown): void;
  reject(reason: unknown): void;
}

/** A unit threw in a batch run without savepoints: the batch is run again with them. */
class UnitFailed extends Error {
  constructor(readonly unitError: unknown) {
    super("a unit of the batch threw");
  }
}

const SAVEPOINT = CompiledQuery.raw("savepoint group_unit", []);
const RELEASE = CompiledQuery.raw("release savepoint group_unit", []);
const ROLLBACK = CompiledQuery.raw("rollback to savepoint group_unit", []);

/** Units per batch at most: bounds the latency a unit can add to the others of its batch. */
const MAX_BATCH = 64;

export function groupCommit<DB>(database: Database<DB>, maxBatch = MAX_BATCH): GroupCommit<DB> {
  const db = database.db;
  let units = 0;
  let batches = 0;
  let retries = 0;
  const stats = () => ({ units, batches, retries });
  if (database.dialect !== "sqlite")
    return {
      run: (unit) => {
        units++;
        batches++;
        return db.transaction().execute((trx) => unit(trx));
      },
      stats,
    };

  const queue: Pending<DB>[] = [];
  let running = false;

  type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

  /**
   * One transaction for the batch. Without savepoints, the first unit that throws ends the attempt
   * (`UnitFailed`: the transaction rolls back whole); with them, each unit is rolled back alone.
   */
  const attempt = async (batch: Pending<DB>[], savepoints: boolean): Promise<Outcome[]> => {
    const outcomes: Outcome[] = [];
    await db.transaction().execute(async (trx: Transaction<DB>) => {
      const audits = deferAuditsIn(database, trx as unknown as Kysely<unknown>);
      for (const p of batch) {
        if (!savepoints) {
          try {
            outcomes.push({ ok: true, value: await p.unit(trx) });
          } catch (error) {
            throw new UnitFailed(error);
          }
          continue;
        }
        const mark = audits.mark();
        await executeCompiled(trx, SAVEPOINT);
        try {
          const value = await p.unit(trx);
          await executeCompiled(trx, RELEASE);
          outcomes.push({ ok: true, value });
        } catch (error) {
          await executeCompiled(trx, ROLLBACK);
          await executeCompiled(trx, RELEASE);
          audits.dropFrom(mark);
          outcomes.push({ ok: false, error });
        }
      }
      await audits.flush();
    });
    return outcomes;
  };

  const runBatch = async (batch: Pending<DB>[]): Promise<void> => {
    batches++;
    units += batch.length;
    let outcomes: Outcome[];
    try {
      try {
        outcomes = await attempt(batch, false);
      } catch (error) {
        if (!(error instanceof UnitFailed)) throw error;
        // Alone in its batch, the unit that threw has its answer: nothing to run again.
        if (batch.length === 1) outcomes = [{ ok: false, error: error.unitError }];
        else {
          // Rolled back whole: again, each unit in a savepoint, so that only the failing ones fail.
          retries++;
          outcomes = await attempt(batch, true);
        }
      }
    } catch (error) {
      // The commit (or a savepoint statement) failed: nothing of the batch is stored.
      for (const p of batch) p.reject(error);
      return;
    }
    batch.forEach((p, i) => {
      const o = outcomes[i]!;
      if (o.ok) p.resolve(o.value);
      else p.reject(o.error);
    });
  };

  const drain = async (): Promise<void> => {
    try {
      while (queue.length > 0) await runBatch(queue.splice(0, maxBatch));
    } finally {
      running = false;
    }
  };

  return {
    run<T>(unit: (trx: Kysely<DB>) => Promise<T>): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        queue.push({ unit, resolve: resolve as (v: unknown) => void, reject });
        // The first unit of a batch waits one turn of the event loop: better-sqlite3 runs a
        // transaction without yielding, so requests that arrived meanwhile join it only so.
        if (!running) {
          running = true;
          setImmediate(() =>
            // runBatch settles every unit it took; should drain itself fail, none is left waiting.
            drain().catch((error: unknown) => {
              for (const p of queue.splice(0)) p.reject(error);
            }),
          );
        }
      });
    },
    stats,
  };
}
