import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";

/**
 * Every integration test runs on both engines:
 *
 *   const pgOk = await postgresAvailable();
 *   describe.each(databaseKinds)("… on %s", (kind) => {
 *     describe.skipIf(kind === "postgres" && !pgOk)("…", () => { … createTestDatabase(kind) … });
 *   });
 *
 * PostgreSQL comes from HANDSAFE_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres);
 * each test database is a fresh `handsafe_test_<random>` dropped afterwards. When PostgreSQL is not
 * reachable the tests FAIL — in CI always; elsewhere unless HANDSAFE_TEST_SKIP_POSTGRES=1, which
 * makes postgresAvailable() answer false so the PostgreSQL half is skipped (and says so).
 */

export const databaseKinds = ["sqlite", "postgres"] as const;
export type DatabaseKind = (typeof databaseKinds)[number];

export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

const adminUrl = process.env["HANDSAFE_TEST_POSTGRES_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres";

let availability: Promise<boolean> | undefined;

/** True when PostgreSQL answers; false only when skipping is allowed; throws otherwise. */
export function postgresAvailable(): Promise<boolean> {
  availability ??= probe();
  return availability;
}

async function probe(): Promise<boolean> {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query("select 1");
    return true;
  } catch (e) {
    const why = `PostgreSQL is not reachable at ${redact(adminUrl)} (${e instanceof Error ? e.message : String(e)})`;
    if (process.env["CI"])
      throw new Error(
        `${why}. CI must run the PostgreSQL integration tests: start PostgreSQL (.ci/run does).`,
      );
    if (process.env["HANDSAFE_TEST_SKIP_POSTGRES"] === "1") {
      console.warn(`SKIPPING PostgreSQL tests: ${why} and HANDSAFE_TEST_SKIP_POSTGRES=1.`);
      return false;
    }
    throw new Error(
      `${why}. Start it (pg_ctlcluster 15 main start), point HANDSAFE_TEST_POSTGRES_URL at one, ` +
        "or set HANDSAFE_TEST_SKIP_POSTGRES=1 to skip those tests on this machine.",
    );
  } finally {
    await client.end().catch(() => {});
  }
}

export async function createTestDatabase(kind: DatabaseKind): Promise<TestDatabase> {
  if (kind === "sqlite") {
    const dir = mkdtempSync(join(tmpdir(), "handsafe-test-"));
    return {
      url: `sqlite:${join(dir, "handsafe.sqlite")}`,
      drop: async () => rmSync(dir, { recursive: true, force: true }),
    };
  }
  if (!(await postgresAvailable())) throw new Error("PostgreSQL tests are skipped on this machine");
  const name = `handsafe_test_${randomBytes(6).toString("hex")}`;
  await withAdmin((c) => c.query(`create database ${name}`));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: () => withAdmin((c) => c.query(`drop database if exists ${name} with (force)`)).then(() => {}),
  };
}

async function withAdmin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparseable URL)";
  }
}
