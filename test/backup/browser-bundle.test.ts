import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DataStores, StagingWriter, StoredItem } from "../../src/backup/data-store-types.ts";
import { createNodeTransport } from "../../src/handset/node-transport.ts";
import { type BrowserBundle, buildBrowserBundle, hasNodeImports } from "../helpers/browser-bundle.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

type Bundle = typeof import("./browser-entry.ts");

/** Data stores in memory, as a browser page would keep them (IndexedDB, say). */
class MemoryStores implements DataStores {
  items = new Map<string, { bytes: Uint8Array; modifiedAt: string }>();
  async list(): Promise<StoredItem[]> {
    return [...this.items.entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([path, { bytes, modifiedAt }]) => ({
        path,
        kind: "files" as const,
        size: bytes.length,
        modifiedAt,
        async *open() {
          yield bytes;
        },
      }));
  }
  async stage(): Promise<StagingWriter> {
    const staged = new Map(this.items);
    return {
      write: async (path, data, meta) => {
        const parts: Uint8Array[] = [];
        for await (const chunk of data) parts.push(chunk.slice());
        staged.set(path, {
          bytes: new Uint8Array(Buffer.concat(parts)),
          modifiedAt: meta?.modifiedAt ?? new Date(0).toISOString(),
        });
      },
      commit: async () => {
        this.items = staged;
      },
      abort: async () => {},
    };
  }
}

describe("the backup SDK in a browser bundle", () => {
  let bundle: BrowserBundle<Bundle> | undefined;
  let srv: TestServer;
  let sdk: Bundle;
  beforeAll(async () => {
    bundle = await buildBrowserBundle<Bundle>(join(import.meta.dirname, "browser-entry.ts"), "backup-sdk");
    sdk = bundle.module;
    srv = await startTestServer("sqlite");
  }, 120_000);
  afterAll(async () => {
    await srv?.close();
    bundle?.remove();
  });

  it("has no node:* import, no Node data store, and runs on the web backend", () => {
    const code = bundle!.code;
    expect(hasNodeImports(code)).toBe(false);
    expect(code).not.toContain("FolderDataStores");
    expect(code).not.toContain("createBackupRequestAuth");
    expect(sdk.cryptoBackend.name).toBe("web");
  });

  it("creates an identity module, backs up to the server and restores byte for byte", async () => {
    const transport = createNodeTransport({ pin: srv.server.pin });
    try {
      const { module } = await sdk.IdentityModule.create(new sdk.MemoryKeystore(), {
        pin: "1234",
        scryptLogN: 10,
      });
      const identity = await module.unlock("1234");
      const client = new sdk.BackupClient({ baseUrl: srv.server.url, transport, identity });
      await client.register();
      const from = new MemoryStores();
      const small = new TextEncoder().encode("from the bundle");
      // Over 64 KiB: a blob through a resumable upload, not inline.
      const large = new Uint8Array(200_000).map((_, i) => (i * 7) & 0xff);
      const modifiedAt = "2026-12-01T16:00:00.000Z";
      from.items.set("files/note.txt", { bytes: small, modifiedAt });
      from.items.set("files/big.bin", { bytes: large, modifiedAt });
      const result = await client.backup({ from, selection: [{ kind: "files" }] });
      expect(result).toMatchObject({ added: 2, uploads: 1 });

      const into = new MemoryStores();
      await client.restore({ backupId: result.backupId, into });
      expect(Buffer.from(into.items.get("files/note.txt")!.bytes)).toEqual(Buffer.from(small));
      expect(Buffer.from(into.items.get("files/big.bin")!.bytes)).toEqual(Buffer.from(large));
      identity.lock();
    } finally {
      transport.close();
    }
  });
});
