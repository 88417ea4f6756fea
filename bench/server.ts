/**
 * The server a benchmark runs against: a fresh temporary data folder, HTTPS on a free port,
 * silent, no per-address rate limit, `env` on top. `close()` stops it and removes the folder.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../src/platform/config.ts";
import { type RunningServer, type StartOptions, startServer } from "../src/platform/server.ts";

export interface BenchServer {
  server: RunningServer;
  /** The server's data folder (the bench may keep its own files there too). */
  dataDir: string;
  close(): Promise<void>;
}

export async function startBenchServer(
  name: string,
  env: Record<string, string> = {},
  extend?: StartOptions["extend"],
): Promise<BenchServer> {
  const dataDir = mkdtempSync(join(tmpdir(), `handsafe-bench-${name}-`));
  try {
    const server = await startServer({
      config: loadConfig({
        HANDSAFE_DATA_DIR: dataDir,
        HANDSAFE_PORT: "0",
        HANDSAFE_LOG_LEVEL: "silent",
        HANDSAFE_RATE_LIMIT: "0",
        ...env,
      }),
      ...(extend ? { extend } : {}),
    });
    return {
      server,
      dataDir,
      async close() {
        await server.close();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
}
