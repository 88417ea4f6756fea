import { mkdtempSync } from "node:fs"; import { join } from "node:path"; import { tmpdir } from "node:os";
import { loadConfig } from "../src/platform/config.ts"; import { startServer } from "../src/platform/server.ts";
import Sqlite from "better-sqlite3";
const dir = mkdtempSync(join(tmpdir(), "hs-schema-"));
const s = await startServer({ config: loadConfig({ HANDSAFE_DATA_DIR: dir, HANDSAFE_PORT: "0", HANDSAFE_LOG_LEVEL: "silent" }) });
await s.close();
const { readdirSync } = await import("node:fs"); console.log(readdirSync(dir));
const db = new Sqlite(join(dir, readdirSync(dir).find(f => f.endsWith(".db") || f.endsWith(".sqlite"))!));
for (const r of db.prepare("select sql from sqlite_master where tbl_name in ('audit_log','audit_head','messaging_messages','sms_messages','messaging_numbers')").all() as any[]) console.log(r.sql);
