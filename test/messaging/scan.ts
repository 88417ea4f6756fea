/**
 * "Plaintext never reaches the database, the blob store or the logs": every row of every table
 * (every column, text or bytes) and every file under the server's folders, searched for markers.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { sql } from "kysely";
import type { RunningServer } from "../../src/platform/server.ts";

async function tableNames(server: RunningServer): Promise<string[]> {
  const db = server.platform.db;
  if (server.platform.database.dialect === "sqlite") {
    const r = await sql<{ name: string }>`select name from sqlite_master where type = 'table'`.execute(db);
    return r.rows.map((x) => x.name);
  }
  const r = await sql<{ name: string }>`
    select table_name as name from information_schema.tables
    where table_schema = 'public' and table_type = 'BASE TABLE'`.execute(db);
  return r.rows.map((x) => x.name);
}

function holds(value: unknown, markers: readonly Buffer[]): boolean {
  if (typeof value === "string") return markers.some((m) => value.includes(m.toString("utf8")));
  if (value instanceof Uint8Array) {
    const b = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    return markers.some((m) => b.includes(m));
  }
  return false;
}

/** Where any marker occurs: "table.column" for rows, the path for files. Empty: nowhere. */
export async function findMarkers(
  server: RunningServer,
  markers: readonly (string | Uint8Array)[],
  folders: readonly string[],
): Promise<{
  tables: string[];
  scannedTables: number;
  scannedRows: number;
  files: string[];
  scannedFiles: number;
}> {
  // A binary marker (a key) is also looked for as base64 and base64url text, as JSON would hold it.
  const needles = markers.flatMap((m) => {
    if (typeof m === "string") return [Buffer.from(m, "utf8")];
    const raw = Buffer.from(m);
    return [
      raw,
      Buffer.from(raw.toString("base64").replace(/=+$/, "")),
      Buffer.from(raw.toString("base64url")),
    ];
  });
  const found = new Set<string>();
  let scannedRows = 0;
  const names = await tableNames(server);
  for (const name of names) {
    const rows = await sql<Record<string, unknown>>`select * from ${sql.table(name)}`.execute(
      server.platform.db,
    );
    for (const row of rows.rows) {
      scannedRows++;
      for (const [column, value] of Object.entries(row))
        if (holds(value, needles)) found.add(`${name}.${column}`);
    }
  }
  const files: string[] = [];
  let scannedFiles = 0;
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      const st = statSync(path);
      if (st.isDirectory()) walk(path);
      else if (st.isFile()) {
        scannedFiles++;
        const bytes = readFileSync(path);
        if (needles.some((m) => bytes.includes(m))) files.push(path);
      }
    }
  };
  // The blob store's folder exists once something was stored there (it is under the data folder).
  for (const f of new Set(folders)) if (existsSync(f)) walk(f);
  return { tables: [...found], scannedTables: names.length, scannedRows, files, scannedFiles };
}
