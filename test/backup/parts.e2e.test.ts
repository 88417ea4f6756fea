/**
 * An envelope too large for one message, end to end (docs/protocols/backup.md §4 Parts): the SDK
 * splits it over several signed PUTs, the server lists the backup with the last one, and restore,
 * an incremental backup on top and a share all read every part. Small part limits (an SDK option)
 * stand in for the 16 MiB of a handset with tens of thousands of records.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FolderDataStores } from "../../src/backup/data-stores.ts";
import { BackupClient } from "../../src/backup/handset.ts";
import type { EnvelopePartLimits } from "../../src/backup/envelope.ts";
import { isHandsafeError } from "../../src/core/errors.ts";
import type {
  StreamingHttpTransport,
  TransportRequest,
  TransportResponse,
} from "../../src/handset/http-client.ts";
import { IdentityModule, type UnlockedIdentity } from "../../src/handset/identity-module.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { createNodeTransport } from "../../src/handset/node-transport.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

const PIN = "1234";
const LIMITS: EnvelopePartLimits = { maxBytes: 24 * 1024, maxElements: 2000 };
const RECORDS = 120;

/** Counts the envelope PUTs and GETs a client makes. */
class Counting implements StreamingHttpTransport {
  puts = 0;
  gets = 0;
  constructor(readonly inner: StreamingHttpTransport) {}
  get pin() {
    return this.inner.pin;
  }
  async send(req: TransportRequest): Promise<TransportResponse> {
    const path = new URL(req.url).pathname;
    if (path.startsWith("/v1/backup/backups/") && req.method === "PUT") this.puts++;
    if (path.startsWith("/v1/backup/backups/") && req.method === "GET") this.gets++;
    return this.inner.send(req);
  }
  stream(req: TransportRequest) {
    return this.inner.stream(req);
  }
  close() {
    this.inner.close();
  }
}

function tree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      if (statSync(full).isDirectory()) walk(full);
      else out[relative(root, full)] = readFileSync(full).toString("base64");
    }
  };
  walk(root);
  return out;
}

const pgOk = await postgresAvailable();

describe.each(databaseKinds)("an envelope in parts, end to end on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let srv: TestServer;
    const dirs: string[] = [];
    const transports: Counting[] = [];
    const tmp = () => {
      const d = mkdtempSync(join(tmpdir(), "handsafe-parts-"));
      dirs.push(d);
      return d;
    };
    const clientFor = (identity: UnlockedIdentity, limits?: EnvelopePartLimits) => {
      const transport = new Counting(createNodeTransport({ pin: srv.server.pin }));
      transports.push(transport);
      const client = new BackupClient({
        baseUrl: srv.server.url,
        transport,
        identity,
        ...(limits ? { envelopePartLimits: limits } : {}),
      });
      return { client, transport };
    };

    let identity: UnlockedIdentity;
    let alice: ReturnType<typeof clientFor>;
    let stores: FolderDataStores;
    let root: string;
    let first: string;

    beforeAll(async () => {
      srv = await startTestServer(kind, { HANDSAFE_BLOB_DIR: tmp() });
      const { module } = await IdentityModule.create(new MemoryKeystore(), { pin: PIN, scryptLogN: 10 });
      identity = await module.unlock(PIN);
      alice = clientFor(identity, LIMITS);
      await alice.client.register({ handle: `alice-parts-${kind}` });
      root = join(tmp(), "data");
      stores = new FolderDataStores(root);
      for (let i = 0; i < RECORDS; i++)
        await stores.putRecord("messages", `m${i}`, {
          from: "+41790000001",
          text: `message ${i} `.repeat(8),
        });
      await stores.writeFile("files/video.bin", new Uint8Array(randomBytes(200_000)));
    });

    afterAll(async () => {
      for (const t of transports) t.close();
      await srv?.close();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    });

    it("backs up over several PUTs, listed once as one backup with every item", async () => {
      const result = await alice.client.backup({
        from: stores,
        selection: [{ kind: "messages" }, { kind: "files" }],
      });
      first = result.backupId;
      expect(result.added).toBe(RECORDS + 1);
      expect(alice.transport.puts).toBeGreaterThanOrEqual(4);
      const listed = await alice.client.list();
      expect(listed.map((b) => [b.id, b.items])).toEqual([[first, RECORDS + 1]]);
    });

    it("restores every item of every part on another handset with the same identity", async () => {
      // The default limits on this one: reading parts does not depend on how they were cut.
      const other = clientFor(identity);
      const into = join(tmp(), "data");
      const r = await other.client.restore({ backupId: first, into: new FolderDataStores(into) });
      expect(r.items).toHaveLength(RECORDS + 1);
      expect(tree(into)).toEqual(tree(root));
      expect(other.transport.gets).toBe(alice.transport.puts);
    });

    it("an incremental backup on top copies the unchanged items of every part", async () => {
      await stores.putRecord("messages", "m7", { from: "+41790000001", text: "changed" });
      await stores.deleteRecord("messages", "m8");
      const result = await alice.client.backup({
        from: stores,
        selection: [{ kind: "messages" }, { kind: "files" }],
      });
      expect(result).toMatchObject({
        parent: first,
        added: 0,
        replaced: 1,
        copied: RECORDS - 1,
        deleted: 1,
        uploads: 0,
      });
      const into = join(tmp(), "data");
      await clientFor(identity).client.restore({
        backupId: result.backupId,
        into: new FolderDataStores(into),
      });
      expect(tree(into)).toEqual(tree(root));
    });

    it("shares it in parts with a second user, who opens every part", async () => {
      const { module } = await IdentityModule.create(new MemoryKeystore(), { pin: PIN, scryptLogN: 10 });
      const bobId = await module.unlock(PIN);
      const bob = clientFor(bobId);
      await bob.client.register({ handle: `bob-parts-${kind}` });
      const shared = await alice.client.share({ backupId: first, with: [`bob-parts-${kind}`] });
      expect(shared.items).toBe(RECORDS + 1);
      const into = join(tmp(), "data");
      const r = await bob.client.restore({
        backupId: shared.backupId,
        owner: `alice-parts-${kind}`,
        into: new FolderDataStores(into),
      });
      expect(r.items).toHaveLength(RECORDS + 1);
      expect(bob.transport.gets).toBeGreaterThanOrEqual(4);
    });

    it("a part the server serves for another (a swapped part) is refused: backup.signature_invalid", async () => {
      // Part 2 of the first backup served as part 3: signed, but not the part asked for.
      const original = alice.transport.inner;
      let part2: TransportResponse | undefined;
      const swapping: StreamingHttpTransport = {
        pin: original.pin,
        async send(req) {
          if (req.url.endsWith("?part=3") && part2) return part2;
          const res = await original.send(req);
          if (req.url.endsWith("?part=2")) part2 = res;
          return res;
        },
        stream: (req) => original.stream(req),
        close: () => original.close(),
      };
      const client = new BackupClient({ baseUrl: srv.server.url, transport: swapping, identity });
      let code: string | undefined;
      try {
        await client.restore({ backupId: first, into: new FolderDataStores(join(tmp(), "data")) });
      } catch (e) {
        code = isHandsafeError(e) ? e.code : String(e);
      }
      expect(code).toBe("backup.signature_invalid");
    });
  });
});
