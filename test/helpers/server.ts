/** A real handsafe server on a random port, on the database kind asked for, for integration tests. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Handset } from "../../src/handset/handset.ts";
import { type HttpClient, withHeaders } from "../../src/handset/http-client.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { createNodeHttpClient } from "../../src/handset/node-transport.ts";
import { loadConfig } from "../../src/platform/config.ts";
import { type RunningServer, startServer } from "../../src/platform/server.ts";
import { createTestDatabase, type DatabaseKind } from "./databases.ts";

/** A clock a test moves by hand; the server reads it (StartOptions.clock). */
export interface Clock {
  ms: number;
  advance(ms: number): void;
}

export function movableClock(start = Date.now()): Clock {
  return {
    ms: start,
    advance(ms) {
      this.ms += ms;
    },
  };
}

export interface TestServer {
  server: RunningServer;
  /** The server's data folder (removed by close()). */
  dataDir: string;
  /** A fresh pinned client, closed by close(). */
  client(): HttpClient;
  /** An HTTPS client with the admin token, pinned to the server's key. */
  admin: HttpClient;
  /** A fresh simulated handset (memory keystore) pinned to this server. */
  newHandset(): Promise<Handset>;
  /** An unauthenticated pinned client. */
  anonymous(): HttpClient;
  close(): Promise<void>;
}

export async function startTestServer(
  kind: DatabaseKind,
  env: Record<string, string> = {},
  options: {
    clock?: () => number;
    /** Webhook receivers' self-signed CA; the dispatcher then polls fast (tests). */
    webhookCa?: string;
  } = {},
): Promise<TestServer> {
  const database = await createTestDatabase(kind);
  const dataDir = mkdtempSync(join(tmpdir(), "handsafe-srv-"));
  const config = loadConfig({
    HANDSAFE_DATA_DIR: dataDir,
    HANDSAFE_PORT: "0",
    HANDSAFE_DATABASE_URL: database.url,
    HANDSAFE_LOG_LEVEL: "silent",
    HANDSAFE_RATE_LIMIT: "0",
    ...env,
  });
  const server = await startServer({
    config,
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.webhookCa ? { webhooks: { ca: options.webhookCa, pollIntervalMs: 50, jitter: 0 } } : {}),
  });
  const clients: Array<{ close(): void }> = [];
  const connect = (baseUrl: string, pin: string) => {
    const c = createNodeHttpClient({ baseUrl, pin });
    clients.push(c);
    return c;
  };
  const admin = withHeaders(connect(server.url, server.pin), {
    authorization: `Bearer ${server.adminToken}`,
  });
  return {
    server,
    dataDir,
    client: () => connect(server.url, server.pin),
    admin,
    anonymous: () => connect(server.url, server.pin),
    newHandset: async () => {
      const h = await Handset.open(new MemoryKeystore(), (a) => connect(a.url, a.pin!), {
        url: server.url,
        pin: server.pin,
      });
      clients.push(h);
      return h;
    },
    async close() {
      for (const c of clients) c.close();
      await server.close();
      await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
