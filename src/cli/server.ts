/** `handsafe server`: start, print where it is and how to trust it, stop cleanly on a signal. */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadConfig } from "../platform/config.ts";
import { ADMIN_TOKEN_FILE, startServer } from "../platform/server.ts";

export async function runServer(): Promise<void> {
  const config = loadConfig();
  const server = await startServer({ config });
  const db = config.databaseDialect === "sqlite" ? config.databaseUrl : "PostgreSQL";
  const lines = [
    "",
    `handsafe ${"0.1.0"} is running`,
    `  URL          ${server.url}`,
    `  certificate  ${server.fingerprint}   (handsets pin this key)`,
    `  database     ${db}`,
    `  data         ${config.dataDir}`,
    `  admin token  ${join(config.dataDir, ADMIN_TOKEN_FILE)}${server.adminToken ? "  (created now)" : ""}`,
    `  console      ${server.url}/console   virtual handset ${server.url}/handset${existsSync(join(config.consoleDir, "console.html")) ? "" : "   (not built: npm run build:console)"}`,
    `  API docs     ${server.url}/docs   metrics ${server.url}/metrics`,
    "",
    "Try it: in another terminal run `npx handsafe demo --url " + server.url + "`",
    "",
  ];
  process.stdout.write(lines.join("\n"));
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`\n${signal}: stopping…\n`);
    await server.close();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}
