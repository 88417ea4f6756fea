import type { CompiledQuery, DialectAdapter, Kysely, QueryResult } from "kysely";

/**
 * SQLite statements run straight on the connection when that is what Kysely would do anyway.
 *
 * better-sqlite3 is synchronous: Kysely's SQLite driver runs each query at once, but only after a
 * connection mutex, a connection provider and a handful of promise hops per query. On this
 * project's hot paths (an accepted message runs about eight statements) that machinery cost more
 * than the statements themselves: an audit record in a group commit (savepoint, head move, insert,
 * release) took about 120 µs through Kysely against about 50 µs on better-sqlite3 alone.
 *
 * A statement may skip it when no other code can be using the connection at that moment:
 * - inside a transaction of this database (`db.isTransaction`): the transaction holds the one
 *   connection until it ends, and its own queries run one after the other anyway;
 * - outside any transaction, while nothing holds the connection (`held === 0`): no transaction
 *   is open, so the statement commits on its own, exactly as Kysely would have run it.
 * Otherwise (a transaction of someone else is open and this caller is not in it) the statement
 * takes Kysely's path and waits for the connection, as before.
 *
 * The answer is the one Kysely's SQLite driver gives ({rows}, or affected rows and insert id), and
 * a failure is mapped as GuardedConnection maps it (`mapError`).
 */
export interface DirectSqlite {
  /** The cached prepared statement for `sql` (the same cache Kysely's path uses). */
  prepare(sql: string): {
    reader: boolean;
    all(params: readonly unknown[]): unknown[];
    run(params: readonly unknown[]): { changes: number; lastInsertRowid: number | bigint };
  };
  /** Connections Kysely has acquired and not yet released (0 or 1 on SQLite). */
  held(): number;
  mapError(error: unknown): unknown;
}

const directs = new WeakMap<DialectAdapter, DirectSqlite>();

/** Called once per SQLite Kysely instance (database.ts). Transactions share the adapter. */
export function registerDirectSqlite(db: Kysely<unknown>, direct: DirectSqlite): void {
  directs.set(db.getExecutor().adapter, direct);
}

/**
 * Runs `sql` now when the rules above allow; `undefined` when the caller must take Kysely's path
 * (PostgreSQL, or another caller's transaction holds the SQLite connection).
 */
export function runDirect<R>(
  // biome-ignore lint/suspicious/noExplicitAny: any database's Kysely.
  db: Kysely<any>,
  sql: string,
  parameters: readonly unknown[],
): Promise<QueryResult<R>> | undefined {
  const direct = directs.get(db.getExecutor().adapter);
  if (direct === undefined || (!db.isTransaction && direct.held() !== 0)) return undefined;
  try {
    const statement = direct.prepare(sql);
    if (statement.reader) return Promise.resolve({ rows: statement.all(parameters) as R[] });
    const { changes, lastInsertRowid } = statement.run(parameters);
    return Promise.resolve({
      numAffectedRows: BigInt(changes),
      insertId: BigInt(lastInsertRowid),
      rows: [],
    });
  } catch (error) {
    return Promise.reject(direct.mapError(error));
  }
}

/** A compiled query, run directly when runDirect may, else through Kysely. */
// biome-ignore lint/suspicious/noExplicitAny: any database's Kysely.
export function executeCompiled<R>(db: Kysely<any>, query: CompiledQuery<R>): Promise<QueryResult<R>> {
  return runDirect<R>(db, query.sql, query.parameters) ?? db.executeQuery(query);
}
