/**
 * Resumable, verified downloads against a real local HTTP server that speaks Range — and that
 * drops the connection, ignores Range, lies in Content-Range, or serves tampered, short or long files.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { toBase64url } from "../../src/core/codec/base64url.ts";
import { concatBytes, toHex, utf8 } from "../../src/core/codec/bytes.ts";
import { sha256 } from "../../src/core/crypto/hash.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { embedded } from "../../src/management/device-wrapper.ts";
import { ManagementClient } from "../../src/management/handset.ts";
import { dynamicKeyEntry } from "../../src/management/sms-processor.ts";
import {
  type DownloadOptions,
  downloadTarget,
  MemoryPartialStore,
  type PartialStore,
  type RangeFetch,
} from "../../src/updates/download.ts";
import { createNodeTransport } from "../../src/handset/node-transport.ts";
import { FolderPartialStore } from "../../src/updates/slots-folder.ts";

const FILE = randomBytes(300_000);
const TARGET = { length: FILE.length, hashes: { sha256: toHex(sha256(FILE)) } };
const ID = `packages/${TARGET.hashes.sha256}.pkg_x.hspkg`;

/** How the server misbehaves for the next requests. */
interface Behaviour {
  body: Uint8Array;
  /** Drop the connection after this many body bytes, on the first request only. */
  dropAfter?: number;
  /** Answer 200 with the whole body whatever the Range. */
  ignoreRange?: boolean;
  /** Answer 206 with this Content-Range instead of the true one. */
  contentRange?: string;
}

let behaviour: Behaviour = { body: FILE };
const seen: Array<string | undefined> = [];
const seenHeaders: Array<Record<string, unknown>> = [];
let server: Server;
let base: string;
const transport = createNodeTransport({ timeoutMs: 5000 });

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push(req.headers.range);
    seenHeaders.push({ ...req.headers });
    const { body } = behaviour;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    let start = 0;
    if (m && !behaviour.ignoreRange) {
      start = Number(m[1]);
      if (start >= body.length) {
        res.writeHead(416, { "content-range": `bytes */${body.length}` });
        res.end();
        return;
      }
      res.writeHead(206, {
        "content-length": String(body.length - start),
        "content-range": behaviour.contentRange ?? `bytes ${start}-${body.length - 1}/${body.length}`,
      });
    } else {
      res.writeHead(200, { "content-length": String(body.length) });
    }
    const rest = body.subarray(start);
    const drop = behaviour.dropAfter;
    if (drop !== undefined && drop < rest.length) {
      behaviour = { ...behaviour, dropAfter: undefined };
      res.write(rest.subarray(0, drop), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(rest);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  transport.close();
  await new Promise((r) => server.close(r));
});

const dirs: string[] = [];
afterEach(() => {
  seen.length = 0;
  seenHeaders.length = 0;
  behaviour = { body: FILE };
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const fetchFile: RangeFetch = (headers) =>
  transport.stream({ method: "GET", url: `${base}/content/${ID}`, headers });

async function stored(partial: PartialStore): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of partial.read()) parts.push(c);
  return concatBytes(...parts);
}

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return "accepted";
}

function options(partial: PartialStore, extra: Partial<DownloadOptions> = {}): DownloadOptions {
  return { fetch: fetchFile, target: TARGET, id: ID, partial, retryDelayMs: 1, ...extra };
}

const stores: Array<{ name: string; make(): PartialStore }> = [
  { name: "memory", make: () => new MemoryPartialStore() },
  {
    name: "folder",
    make: () => {
      const dir = mkdtempSync(join(tmpdir(), "handsafe-partial-"));
      dirs.push(dir);
      return new FolderPartialStore(dir);
    },
  },
];

describe.each(stores)("download into a $name partial store", ({ make }) => {
  it("downloads and verifies in one request, reporting progress to 100%", async () => {
    const partial = make();
    const percents: number[] = [];
    const result = await downloadTarget(options(partial, { onProgress: (p) => percents.push(p.percent) }));
    expect(result).toEqual({ attempts: 1, resumedFrom: 0 });
    expect(seen).toEqual([undefined]);
    expect(same(await stored(partial), FILE)).toBe(true);
    expect(percents.at(-1)).toBe(100);
    expect(percents).toEqual([...percents].sort((x, y) => x - y));
  });

  describe("a connection dropped midway", () => {
    it("resumes with Range from the stored size, the verifier keeping its state", async () => {
      behaviour = { body: FILE, dropAfter: 120_000 };
      const partial = make();
      const result = await downloadTarget(options(partial));
      expect(result.attempts).toBe(2);
      expect(seen[0]).toBeUndefined();
      const resumedAt = Number(/^bytes=(\d+)-$/.exec(seen[1] ?? "")?.[1]);
      expect(resumedAt).toBeGreaterThan(0);
      expect(resumedAt).toBeLessThanOrEqual(120_000);
      expect(same(await stored(partial), FILE)).toBe(true);
    });

    it("resumes in a later run by re-feeding the stored bytes to a fresh verifier", async () => {
      behaviour = { body: FILE, dropAfter: 100_000 };
      const partial = make();
      expect(await codeOf(downloadTarget(options(partial, { maxAttempts: 1 })))).toMatch(/^transport\./);
      const kept = await partial.size();
      expect(kept).toBeGreaterThan(0);
      const result = await downloadTarget(options(partial));
      expect(result).toEqual({ attempts: 1, resumedFrom: kept });
      expect(seen.at(-1)).toBe(`bytes=${kept}-`);
      expect(same(await stored(partial), FILE)).toBe(true);
    });

    it("gives up after maxAttempts with the bytes kept for next time", async () => {
      behaviour = { body: FILE, dropAfter: 50_000 };
      const partial = make();
      const code = await codeOf(downloadTarget(options(partial, { maxAttempts: 1 })));
      expect(code).toMatch(/^transport\./);
      expect(await partial.size()).toBeGreaterThan(0);
    });
  });

  it("a server that ignores Range (200 on resume): starts over from byte 0, cleanly", async () => {
    behaviour = { body: FILE, dropAfter: 150_000, ignoreRange: true };
    const partial = make();
    const result = await downloadTarget(options(partial));
    expect(result.attempts).toBe(2);
    expect(seen[1]).toMatch(/^bytes=\d+-$/);
    expect(await partial.size()).toBe(FILE.length);
    expect(same(await stored(partial), FILE)).toBe(true);
  });

  it("a wrong Content-Range is refused and nothing is kept", async () => {
    behaviour = { body: FILE, dropAfter: 100_000, contentRange: `bytes 0-${FILE.length - 1}/${FILE.length}` };
    const partial = make();
    expect(await codeOf(downloadTarget(options(partial)))).toBe("updates.download_bad_range");
    expect(await partial.size()).toBe(0);
  });

  it("a Content-Range naming another total is refused", async () => {
    behaviour = { body: FILE, dropAfter: 100_000, contentRange: "bytes 100000-399999/400000" };
    const partial = make();
    const code = await codeOf(downloadTarget(options(partial)));
    expect(code).toBe("updates.download_bad_range");
  });

  describe("an attacker's file", () => {
    it("tampered (one byte changed): tuf.hash_mismatch, and nothing is kept", async () => {
      const tampered = FILE.slice();
      tampered[200_000]! ^= 1;
      behaviour = { body: tampered };
      const partial = make();
      expect(await codeOf(downloadTarget(options(partial)))).toBe("tuf.hash_mismatch");
      expect(await partial.size()).toBe(0);
    });

    it("tampered after a resume (the second half changed): tuf.hash_mismatch", async () => {
      const tampered = FILE.slice();
      tampered[250_000]! ^= 1;
      behaviour = { body: tampered, dropAfter: 100_000 };
      const partial = make();
      expect(await codeOf(downloadTarget(options(partial)))).toBe("tuf.hash_mismatch");
    });

    it("truncated (the server's whole file is short): tuf.length_mismatch", async () => {
      behaviour = { body: FILE.subarray(0, 200_000) };
      const partial = make();
      expect(await codeOf(downloadTarget(options(partial)))).toBe("tuf.length_mismatch");
      expect(await partial.size()).toBe(0);
    });

    it("endless data (longer than the signed length): tuf.length_mismatch before it is stored", async () => {
      behaviour = { body: concatBytes(FILE, randomBytes(100_000)) };
      const partial = make();
      expect(await codeOf(downloadTarget(options(partial)))).toBe("tuf.length_mismatch");
      expect(await partial.size()).toBe(0);
    });

    it("stored bytes for another target are not resumed from", async () => {
      const partial = make();
      await partial.start("packages/other.hspkg");
      await partial.append(randomBytes(1000));
      const result = await downloadTarget(options(partial));
      expect(result.resumedFrom).toBe(0);
      expect(same(await stored(partial), FILE)).toBe(true);
    });

    it("stored bytes that are not the target's: refused at the end, then a clean download works", async () => {
      const partial = make();
      await partial.start(ID);
      await partial.append(randomBytes(1000));
      expect(await codeOf(downloadTarget(options(partial)))).toBe("tuf.hash_mismatch");
      await downloadTarget(options(partial));
      expect(same(await stored(partial), FILE)).toBe(true);
    });
  });
});

describe("over the management client (signed, streamed)", () => {
  it("signs each ranged request, resumes after a drop, and requestRaw can go unsigned", async () => {
    const deviceId = `dev_${toBase64url(randomBytes(12))}`;
    const keystore = new MemoryKeystore();
    await keystore.put(
      dynamicKeyEntry(deviceId),
      utf8(
        JSON.stringify({
          keyId: `dk_${toBase64url(randomBytes(12))}`,
          key: toBase64url(randomBytes(32)),
          expiresAt: Date.now() + 60_000,
          maxUses: 20,
          counter: 1,
          receivedAt: Date.now(),
        }),
      ),
    );
    const client = new ManagementClient({
      baseUrl: base,
      transport,
      device: embedded({
        deviceId,
        hardwareId: "IMEI:490154203237518",
        model: "m",
        staticKey: randomBytes(32),
      }),
      keystore,
      nextSms: () => Promise.reject(new Error("no SMS expected")),
    });
    behaviour = { body: FILE, dropAfter: 70_000 };
    const partial = new MemoryPartialStore();
    await downloadTarget({
      fetch: (headers) => client.requestStream("GET", `/v1/updates/content/${ID}`, { headers }),
      target: TARGET,
      id: ID,
      partial,
      retryDelayMs: 1,
    });
    expect(same(await stored(partial), FILE)).toBe(true);
    expect(seenHeaders).toHaveLength(2);
    for (const h of seenHeaders) expect(h["signature"]).toMatch(/^hs=:/);
    expect(seenHeaders[1]?.["range"]).toMatch(/^bytes=\d+-$/);

    const raw = await client.requestRaw("GET", "/anything", { signed: false });
    expect(raw.status).toBe(200);
    expect(raw.body.length).toBe(FILE.length);
    expect(seenHeaders[2]?.["signature"]).toBeUndefined();
  });
});
