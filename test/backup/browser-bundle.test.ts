/**
 * The backup SDK in a browser bundle: BackupClient, item-crypto, the envelope and the identity
 * module with no node:* module in their import graph (the folder data store is Node's and stays
 * out), the noble crypto backend chosen — and that bundle creates a WIM, backs up to our real
 * server (over a transport handed in from outside, as a page would hand in fetch) and restores.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "vite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DataStores, StagingWriter, StoredItem } from "../../src/backup/data-store-types.ts";
import { createNodeTransport } from "../../src/handset/node-transport.ts";
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
  const out = mkdtempSync(join(tmpdir(), "handsafe-backup-sdk-"));
  let srv: TestServer;
  let sdk: Bundle;
  beforeAll(async () => {
    await build({
      configFile: false,
      logLevel: "silent",
      root: join(import.meta.dirname, "../.."),
      resolve: { conditions: ["browser", "module", "import", "default"] },
      build: {
        outDir: out,
        emptyOutDir: true,
        minify: false,
        lib: {
          entry: join(import.meta.dirname, "browser-entry.ts"),
          formats: ["es"],
          fileName: "backup-sdk",
        },
        rollupOptions: { external: [] },
      },
    });
    sdk = (await import(join(out, "backup-sdk.js"))) as Bundle;
    srv = await startTestServer("sqlite");
  }, 120_000);
  afterAll(async () => {
    await srv?.close();
    rmSync(out, { recursive: true, force: true });
  });

  it("has no node:* import, no Node data store, and runs on the web backend", () => {
    const code = readFileSync(join(out, "backup-sdk.js"), "utf8");
    expect(code).not.toMatch(/from\s+["']node:/);
    expect(code).not.toMatch(/require\(["']node:/);
    expect(code).not.toMatch(/import\(["']node:/);
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
