import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import SqliteDatabase from "better-sqlite3";
import {
  type DatabaseConnection,
  type Dialect,
  type Driver,
  Kysely,
  PostgresDialect,
  type QueryResult,
  SqliteDialect,
  type TransactionSettings,
} from "kysely";
import pg from "pg";
import { HandsafeError } from "../../core/errors.ts";
import { registerDirectSqlite } from "./direct.ts";
import { startSqliteCheckpointer, WAL_SIZE_LIMIT } from "./sqlite-checkpointer.ts";
import { parseDatabaseUrl, redactDatabaseUrl, SQLITE_MEMORY } from "./url.ts";

export type DatabaseDialect = "sqlite" | "postgres";

/**
 * An open database. `DB` is the caller's Kysely table map (see docs/storage.md, "Typing tables");
 * platform code that spans capabilities (migrations) uses the default `any`.
 */
// biome-ignore lint/suspicious/noExplicitAny: Kysely's own convention for an untyped schema (migrations).
export interface Database<DB = any> {
  readonly db: Kysely<DB>;
  readonly dialect: DatabaseDialect;
  /** SQLite with the checkpoint worker: the WAL restarts it forced so far (sqlite-checkpointer.ts). */
  readonly walRestarts?: () => number;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** SQLite only: NORMAL (default) or FULL. docs/storage.md explains the choice. */
  sqliteSync?: "NORMAL" | "FULL";
  /** SQLite only: WAL checkpoints on a worker thread (default) or inside commits (sqlite-checkpointer.ts). */
  sqliteCheckpoints?: "worker" | "inline";
  /** PostgreSQL only: pool size (default 10). */
  poolSize?: number;
  /** PostgreSQL only: called when an idle pooled connection fails (the pool replaces it). */
  onPoolError?: (err: Error) => void;
}

const SQLITE_BUSY_TIMEOUT_MS = 5000;
const PG_CONNECT_TIMEOUT_MS = 5000;
const PG_INT8_OID = 20;

// biome-ignore lint/suspicious/noExplicitAny: see Database.
export async function openDatabase<DB = any>(
  url: string,
  opts: OpenDatabaseOptions = {},
): Promise<Database<DB>> {
  const target = parseDatabaseUrl(url);
  if (target.dialect === "sqlite")
    return openSqlite<DB>(target.path, opts.sqliteSync ?? "NORMAL", opts.sqliteCheckpoints ?? "worker");
  return openPostgres<DB>(target.connectionString, opts);
}

function openSqlite<DB>(
  path: string,
  sync: "NORMAL" | "FULL",
  checkpoints: "worker" | "inline",
): Database<DB> {
  let raw: SqliteDatabase.Database;
  try {
    if (path !== SQLITE_MEMORY) mkdirSync(dirname(resolve(path)), { recursive: true });
    raw = new SqliteDatabase(path, { timeout: SQLITE_BUSY_TIMEOUT_MS });
    // WAL: readers never block the writer. synchronous=NORMAL in WAL mode keeps the database
    // consistent after a power cut but may lose the last commits; FULL fsyncs every commit.
    raw.pragma("journal_mode = WAL");
    raw.pragma(`synchronous = ${sync === "FULL" ? "FULL" : "NORMAL"}`);
    raw.pragma("foreign_keys = ON");
    raw.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
    // Savepoints (a group commit's units, when their batch is retried: group-commit.ts) keep the pages they change
    // in a sub-journal, which SQLite spills to a temporary file past 64 KiB: in memory, an accepted
    // message's inserts cost about half as much. Temporary tables and sorts stay in memory too.
    raw.pragma("temp_store = MEMORY");
    // A WAL file that grew (a burst before a checkpoint caught up) is cut back when it restarts.
    raw.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT}`);
  } catch (e) {
    throw unavailable(`cannot open SQLite database at ${path}`, e);
  }
  const statements = withStatementCache(raw);
  const hold = { count: 0 };
  const db = new Kysely<DB>({
    dialect: guardDialect(new SqliteDialect({ database: statements }), hold),
  });
  registerDirectSqlite(db as Kysely<unknown>, {
    prepare: (text) => statements.prepare(text),
    held: () => hold.count,
    mapError: (e) => (isUnavailableError(e) ? unavailable(QUERY_FAILED, e) : e),
  });
  // WAL checkpoints on a worker thread, not inside this connection's commits (sqlite-checkpointer.ts).
  const checkpointer =
    path === SQLITE_MEMORY || checkpoints === "inline"
      ? undefined
      : startSqliteCheckpointer(resolve(path), (pages) => raw.pragma(`wal_autocheckpoint = ${pages}`));
  return {
    db,
    dialect: "sqlite",
    ...(checkpointer ? { walRestarts: () => checkpointer.restarts() } : {}),
    close: async () => {
      await checkpointer?.close();
      await db.destroy();
    },
  };
}

/**
 * Kysely prepares every query anew; on SQLite that is most of a short query's cost (a profile of
 * an activation showed ~20% of its CPU in prepare). Our queries are a few dozen fixed texts, so
 * their prepared statements are kept (least recently used out past `size`). better-sqlite3
 * statements are re-prepared by SQLite itself when the schema changes.
 */
function withStatementCache(raw: SqliteDatabase.Database, size = 512) {
  const cache = new Map<string, SqliteDatabase.Statement>();
  return {
    close: () => raw.close(),
    prepare(sql: string): SqliteDatabase.Statement {
      let statement = cache.get(sql);
      if (statement) {
        cache.delete(sql);
      } else {
        statement = raw.prepare(sql);
        if (cache.size >= size) cache.delete(cache.keys().next().value as string);
      }
      cache.set(sql, statement);
      return statement;
    },
  };
}

async function openPostgres<DB>(connectionString: string, opts: OpenDatabaseOptions): Promise<Database<DB>> {
  const pool = new pg.Pool({
    connectionString,
    max: opts.poolSize ?? 10,
    connectionTimeoutMillis: PG_CONNECT_TIMEOUT_MS,
    types: { getTypeParser: pgTypeParser } as pg.CustomTypesConfig,
  });
  // Without a listener an idle connection's error would crash the process; the pool drops that
  // connection itself and the next query reconnects (or fails as storage.unavailable).
  pool.on("error", (err) => opts.onPoolError?.(err));
  try {
    const client = await pool.connect();
    client.release();
  } catch (e) {
    await pool.end().catch(() => {});
    throw unavailable(`cannot connect to PostgreSQL at ${redactDatabaseUrl(connectionString)}`, e);
  }
  const db = new Kysely<DB>({ dialect: guardDialect(new PostgresDialect({ pool })) });
  return {
    db,
    dialect: "postgres",
    close: () => db.destroy(),
  };
}

/**
 * int8 (bigint, COUNT(*)) as a JS number: we store epoch milliseconds and sequence numbers, far
 * below 2^53. A value past that is refused rather than silently rounded. bytea stays a Buffer.
 */
function pgTypeParser(oid: number, format?: "text" | "binary"): (value: string) => unknown {
  if (oid === PG_INT8_OID && format !== "binary") return parseInt8;
  return pg.types.getTypeParser(oid, format ?? "text") as (value: string) => unknown;
}

function parseInt8(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new RangeError(`int8 value ${text} is outside the safe integer range`);
  return n;
}

function unavailable(message: string, cause: unknown): HandsafeError {
  return new HandsafeError("storage.unavailable", message, { status: 503, cause });
}

/**
 * True when `err` means the database cannot be reached or cannot work right now (as opposed to a
 * query the database refused): connection refused or lost, server shutting down, disk I/O, busy.
 */
export function isUnavailableError(err: unknown): boolean {
  const code = errorCode(err);
  if (code === undefined) return false;
  // Node socket errors (pg)
  if (/^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EPIPE|EAI_AGAIN)$/.test(code)) return true;
  // PostgreSQL SQLSTATE class 08 (connection exception), 53 (insufficient resources),
  // 57P01..57P03 (admin shutdown, crash shutdown, cannot connect now), 58 (system error), and the
  // connect-time refusals 28000/28P01 (authentication) and 3D000 (the database does not exist).
  if (/^(08...|53...|57P0[123]|58...|28000|28P01|3D000)$/.test(code)) return true;
  // better-sqlite3 extended result codes
  return /^SQLITE_(BUSY|LOCKED|IOERR|CANTOPEN|FULL|NOMEM|PROTOCOL)/.test(code);
}

/** A unique or primary-key violation, on either engine (looks through `cause`). */
export function isUniqueViolation(err: unknown): boolean {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const code = errorCode(e);
    if (code === "23505" || code === "SQLITE_CONSTRAINT_UNIQUE" || code === "SQLITE_CONSTRAINT_PRIMARYKEY")
      return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

function errorCode(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" ? code : undefined;
}

function guard<T>(message: string, work: () => Promise<T>): Promise<T> {
  return work().catch((e: unknown) => {
    if (isUnavailableError(e)) throw unavailable(message, e);
    throw e;
  });
}

/**
 * Wraps a Kysely dialect so that errors meaning "the database is not there" surface as
 * HandsafeError("storage.unavailable", 503) at every call site, while query errors (constraint
 * violations, triggers) pass through unchanged for isUniqueViolation and friends.
 */
function guardDialect(inner: Dialect, hold?: { count: number }): Dialect {
  return {
    createAdapter: () => inner.createAdapter(),
    createQueryCompiler: () => inner.createQueryCompiler(),
    createIntrospector: (db) => inner.createIntrospector(db),
    createDriver: () => new GuardedDriver(inner.createDriver(), hold),
  };
}

/** The message of a query that failed because storage is unavailable. */
const QUERY_FAILED = "database query failed: storage unavailable";

class GuardedDriver implements Driver {
  readonly #inner: Driver;
  /** SQLite: connections acquired and not yet released, for direct.ts (0 or 1: one connection). */
  readonly #hold: { count: number } | undefined;

  constructor(inner: Driver, hold?: { count: number }) {
    this.#inner = inner;
    this.#hold = hold;
  }

  init(): Promise<void> {
    return guard("database initialisation failed", () => this.#inner.init());
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    const conn = await guard("no database connection available", () => this.#inner.acquireConnection());
    if (this.#hold) this.#hold.count++;
    return new GuardedConnection(conn);
  }

  beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    return guard("cannot begin a transaction", () =>
      this.#inner.beginTransaction(unwrap(connection), settings),
    );
  }

  commitTransaction(connection: DatabaseConnection): Promise<void> {
    return guard("cannot commit", () => this.#inner.commitTransaction(unwrap(connection)));
  }

  rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    return guard("cannot roll back", () => this.#inner.rollbackTransaction(unwrap(connection)));
  }

  releaseConnection(connection: DatabaseConnection): Promise<void> {
    if (this.#hold) this.#hold.count--;
    return this.#inner.releaseConnection(unwrap(connection));
  }

  destroy(): Promise<void> {
    return this.#inner.destroy();
  }

  // Savepoints: forwarded only when the engine's driver has them (Kysely checks for presence).
  get savepoint(): Driver["savepoint"] {
    const f = this.#inner.savepoint?.bind(this.#inner);
    return f && ((c, name, compile) => f(unwrap(c), name, compile));
  }

  get rollbackToSavepoint(): Driver["rollbackToSavepoint"] {
    const f = this.#inner.rollbackToSavepoint?.bind(this.#inner);
    return f && ((c, name, compile) => f(unwrap(c), name, compile));
  }

  get releaseSavepoint(): Driver["releaseSavepoint"] {
    const f = this.#inner.releaseSavepoint?.bind(this.#inner);
    return f && ((c, name, compile) => f(unwrap(c), name, compile));
  }
}

class GuardedConnection implements DatabaseConnection {
  readonly inner: DatabaseConnection;

  constructor(inner: DatabaseConnection) {
    this.inner = inner;
  }

  executeQuery<R>(compiledQuery: Parameters<DatabaseConnection["executeQuery"]>[0]): Promise<QueryResult<R>> {
    return guard(QUERY_FAILED, () => this.inner.executeQuery<R>(compiledQuery));
  }

  streamQuery<R>(
    compiledQuery: Parameters<DatabaseConnection["streamQuery"]>[0],
    chunkSize?: number,
  ): AsyncIterableIterator<QueryResult<R>> {
    return this.inner.streamQuery<R>(compiledQuery, chunkSize);
  }
}

function unwrap(connection: DatabaseConnection): DatabaseConnection {
  return connection instanceof GuardedConnection ? connection.inner : connection;
}
