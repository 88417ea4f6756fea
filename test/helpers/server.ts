/** A real handsafe server on a random port, on the database kind asked for, for integration tests. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Handset } from "../../src/handset/handset.ts";
import type { HttpClient } from "../../src/handset/http-client.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { createNodeHttpClient } from "../../src/handset/node-transport.ts";
import { loadConfig } from "../../src/platform/config.ts";
import { type RunningServer, startServer } from "../../src/platform/server.ts";
import { createTestDatabase, type DatabaseKind } from "./databases.ts";

export interface TestServer {
  server: RunningServer;
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
  options: { clock?: () => number } = {},
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
  const server = await startServer({ config, ...(options.clock ? { clock: options.clock } : {}) });
  const clients: Array<{ close(): void }> = [];
  const connect = (baseUrl: string, pin: string) => {
    const c = createNodeHttpClient({ baseUrl, pin });
    clients.push(c);
    return c;
  };
  const admin = createNodeHttpClient({ baseUrl: server.url, pin: server.pin });
  const adminClient: HttpClient = {
    ...admin,
    request: (method, path, opts = {}) =>
      admin.request(method, path, {
        ...opts,
        headers: { authorization: `Bearer ${server.adminToken}`, ...opts.headers },
      }),
    get: (path, opts = {}) => adminClient.request("GET", path, opts),
    post: (path, json, opts = {}) => adminClient.request("POST", path, { ...opts, json }),
    delete: (path, opts = {}) => adminClient.request("DELETE", path, opts),
  };
  return {
    server,
    admin: adminClient,
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
      admin.close();
      await server.close();
      await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
