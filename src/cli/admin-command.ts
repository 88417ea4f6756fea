/** What every `handsafe admin …` command shares: the server and token options, the client, output. */
import type { Command } from "commander";
import type { HttpClient } from "../handset/http-client.ts";
import { adminClient, resolveAdminToken, resolveServer, type ServerOptions } from "./connect.ts";

export type AdminOptions = ServerOptions & { token?: string };

/** --url, --pin, --token and --data-dir, with their environment and local-server defaults. */
export function withServer(cmd: Command): Command {
  return cmd
    .option("--url <url>", "server URL (default: HANDSAFE_URL or the local server's data/server.json)")
    .option("--pin <pin>", "server SPKI SHA-256 pin (default: HANDSAFE_PIN or the local server's)")
    .option("--token <token>", "admin token (default: HANDSAFE_ADMIN_TOKEN or <data dir>/admin.token)")
    .option("--data-dir <dir>", "the local server's data folder (default: HANDSAFE_DATA_DIR or ./data)");
}

/** Runs `fn` with an admin client for the options' server, closed afterwards. */
export async function withAdmin<T>(options: AdminOptions, fn: (c: HttpClient) => Promise<T>): Promise<T> {
  const client = adminClient(resolveServer(options), resolveAdminToken(options));
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** A result on stdout as indented JSON. */
export function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** The `admin` command, created by whichever module registers first. */
export function adminCommand(program: Command): Command {
  return (
    program.commands.find((c) => c.name() === "admin") ??
    program.command("admin").description("administer a handsafe server")
  );
}
