import { HandsafeError } from "../../core/errors.ts";

/**
 * The one reading of HANDSAFE_DATABASE_URL, shared by config (to validate early, naming the variable)
 * and by openDatabase (to connect). Pure: no driver is imported here.
 *
 *   sqlite:<path>        a file; relative paths are relative to the working directory
 *   sqlite::memory:      an in-memory database (tests only: it dies with the process)
 *   postgres://…         PostgreSQL, any URL libpq-style clients accept
 *   postgresql://…       the same
 */
export type DatabaseTarget =
  | { dialect: "sqlite"; path: string }
  | { dialect: "postgres"; connectionString: string };

export const SQLITE_MEMORY = ":memory:";

export function parseDatabaseUrl(url: string): DatabaseTarget {
  if (url.startsWith("sqlite:")) {
    const path = url.slice("sqlite:".length);
    if (path.length === 0) throw invalidUrl(url, "sqlite: needs a path, e.g. sqlite:./data/handsafe.sqlite");
    if (path.includes("\0")) throw invalidUrl(url, "the path contains a NUL byte");
    return { dialect: "sqlite", path };
  }
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw invalidUrl(url, "not a valid URL");
    }
    if (parsed.hostname === "" && !parsed.searchParams.has("host"))
      throw invalidUrl(url, "a PostgreSQL URL needs a host");
    return { dialect: "postgres", connectionString: url };
  }
  throw invalidUrl(url, "allowed: sqlite:<path>, sqlite::memory:, postgres://… or postgresql://…");
}

/** A URL with its password replaced, for messages and logs. */
export function redactDatabaseUrl(url: string): string {
  if (!url.startsWith("postgres")) return url;
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString();
  } catch {
    return "postgres://(unparseable)";
  }
}

function invalidUrl(url: string, why: string): HandsafeError {
  return new HandsafeError("config.invalid", `database URL "${redactDatabaseUrl(url)}" is invalid: ${why}`, {
    status: 500,
  });
}
