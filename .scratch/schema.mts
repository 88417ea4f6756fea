import { startBenchServer } from "../bench/server.ts";
import Sqlite from "better-sqlite3";
const { server, close, dataDir } = await startBenchServer("svc");
await close().catch(()=>{});
