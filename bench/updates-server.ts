/**
 * Update benchmarks, server side, on one real server (SQLite, outbox SMS gateway):
 *
 * - Downloads: 50 handsets fetch an 8 MiB package at once, each with one RFC 9421-signed request
 *   (one use of its dynamic key) over its own pinned, kept-alive TLS connection (createNodeTransport),
 *   verifying as the bytes arrive (downloadTarget). Ceiling: the same 50 clients, transports and
 *   verification fetching the same blob, read through the same filesystem blob store, from a bare
 *   node:https server holding the server's own certificate. What the ceiling leaves out is what the
 *   real route adds: Fastify, the signature check (HMAC, nonce insert, key-use count), the model
 *   check and the audit records. The blob store read alone is printed for information.
 * - Notification fan-out: a campaign start that enrols and notifies 500 devices (for each a
 *   dynamic key, a sealed SMS into the outbox, audit) — and, for information, issueDynamicKey
 *   called directly for the same devices. Ceiling: for each device the notification's cryptography
 *   (open the static key, seal the SMS, seal the dynamic key at rest) plus as many committed
 *   single-row inserts through the same Kysely database as the path commits: issueDynamicKey
 *   commits 5 times (counter, key, text, sent mark, audit), the campaign adds the device's state
 *   change. The real path also reads and runs several statements per commit, so this bounds it.
 */
import { readFileSync, writeFileSync } from "node:fs";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { type Kysely, sql } from "kysely";
import { uploadPackage } from "../src/cli/updates.ts";
import { randomBytes } from "../src/core/crypto/random.ts";
import { MemoryKeystore } from "../src/handset/keystore.ts";
import { createNodeTransport } from "../src/handset/node-transport.ts";
import { fromKeyFile } from "../src/management/device-wrapper.ts";
import { ManagementClient } from "../src/management/handset.ts";
import {
  type DeviceKeyFile,
  DynamicKey,
  newKeyId,
  sealDynamicKeyNotification,
} from "../src/management/protocol.ts";
import { createFilesystemBlobStore } from "../src/platform/blobs/filesystem.ts";
import { listTexts, type SmsTables } from "../src/platform/notify/sms/store.ts";
import type { RunningServer } from "../src/platform/server.ts";
import { downloadTarget, type PartialStore } from "../src/updates/download.ts";
import type { UpdatePackage } from "../src/updates/packages.ts";
import { TufClient, type TufTargetInfo } from "../src/updates/tuf/index.ts";
import { startBenchServer } from "./server.ts";
import { bestOfRounds, mbPerSecond, timedAsync } from "./timing.ts";
import type { BenchResult } from "./types.ts";

const MiB = 1024 * 1024;
const HANDSETS = 50;
const PACKAGE_BYTES = 8 * MiB;
const DOWNLOAD_ROUNDS = 3;
const FANOUT_DEVICES = 500;
const CONTENT_PATH = "/v1/updates/content/";
const ACTOR = "admin:bench";

/** A handset's partial store that only counts: the bench measures transfer, not flash writes. */
class CountingPartialStore implements PartialStore {
  #id: string | undefined;
  #size = 0;
  async id(): Promise<string | undefined> {
    return this.#id;
  }
  async start(id: string): Promise<void> {
    this.#id = id;
    this.#size = 0;
  }
  async append(chunk: Uint8Array): Promise<void> {
    this.#size += chunk.length;
  }
  async size(): Promise<number> {
    return this.#size;
  }
  async *read(): AsyncIterable<Uint8Array> {}
  async clear(): Promise<void> {
    this.#id = undefined;
    this.#size = 0;
  }
}

/** Valid German mobile numbers, one per device. */
const msisdnOf = (i: number) => `+49151${String(10_000_000 + i)}`;

function batchCsv(model: string, from: number, count: number): string {
  const rows = ["model,hardware_id,firmware_version,msisdn"];
  // ESN hardware ids: 8 hex digits, no check digit to compute.
  for (let i = from; i < from + count; i++)
    rows.push(`${model},${(0x10000000 + i).toString(16)},1.0.0,${msisdnOf(i)}`);
  return rows.join("\n");
}

/** Runs `work` for every item at once; the wall time in milliseconds. */
function allAtOnce<T>(items: T[], work: (item: T) => Promise<void>): Promise<number> {
  return timedAsync(() => Promise.all(items.map(work)));
}

interface Fleet {
  /** Key files of the downloading handsets (model HS-DL). */
  downloaders: DeviceKeyFile[];
  /** Key files of the devices the fan-out notifies (model HS-FAN). */
  notified: DeviceKeyFile[];
  /** The package both fleets' models may install. */
  pkg: UpdatePackage;
}

/** Both fleets registered, then one 8 MiB package for their models uploaded by the CLI's uploader. */
async function provisionFleet(server: RunningServer, dataDir: string): Promise<Fleet> {
  const { service } = server.management;
  const downloaders = (await service.importBatch(batchCsv("HS-DL", 0, HANDSETS), "csv", ACTOR)).keyFiles;
  const notified = (await service.importBatch(batchCsv("HS-FAN", HANDSETS, FANOUT_DEVICES), "csv", ACTOR))
    .keyFiles;
  if (downloaders.length !== HANDSETS || notified.length !== FANOUT_DEVICES)
    throw new Error(`provisioned ${downloaders.length} + ${notified.length} devices`);
  const image = join(dataDir, "bench-image.bin");
  writeFileSync(image, randomBytes(PACKAGE_BYTES));
  const pkg = await uploadPackage({ url: server.url, pin: server.pin }, server.adminToken!, image, {
    version: "2.0.0",
    models: ["HS-DL", "HS-FAN"],
  });
  return { downloaders, notified, pkg };
}

interface DownloadSetup {
  clients: ManagementClient[];
  /** The clients' transports, to close at the end. */
  transports: Array<{ close(): void }>;
  info: TufTargetInfo;
  blobKey: string;
}

/** Handsets with a dynamic key in their keystore (from the outbox SMS) and the package's TUF target. */
async function prepareDownloaders(server: RunningServer, fleet: Fleet): Promise<DownloadSetup> {
  const { service } = server.management;
  const { pkg } = fleet;
  // The handsets' view of the package: the signed TUF target, as the updater gets it.
  const tufFile = async (name: string) => {
    const res = await server.app.inject({ method: "GET", url: `/v1/updates/tuf/${name}` });
    return res.statusCode === 404 ? null : new Uint8Array(res.rawPayload);
  };
  const tuf = TufClient.fromTrustedRoot((await tufFile("1.root.json"))!);
  await tuf.refresh(tufFile);
  const info = tuf.getTargetInfo(pkg.tufPath);

  const db = server.platform.db as Kysely<SmsTables>;
  const clients: ManagementClient[] = [];
  const transports: Array<{ close(): void }> = [];
  for (const [i, file] of fleet.downloaders.entries()) {
    // Enough uses for every round; each download is one signed request.
    await service.issueDynamicKey(file.deviceId, { maxUses: 100, ttlSeconds: 3600 }, ACTOR);
    const to = msisdnOf(i);
    const transport = createNodeTransport({ pin: server.pin });
    transports.push(transport);
    const client = new ManagementClient({
      baseUrl: server.url,
      transport,
      device: fromKeyFile(file),
      keystore: new MemoryKeystore(),
      nextSms: async () => {
        const texts = await listTexts(db, { to, limit: 10 });
        const last = texts.at(-1);
        if (!last) throw new Error(`no SMS to ${to}`);
        return { from: last.from, text: last.text };
      },
    });
    await client.awaitDynamicKey();
    clients.push(client);
  }
  // docs/protocols/updates.md §Packages: the ciphertext's blob key.
  return { clients, transports, info, blobKey: `updates/packages/${pkg.id}.hspkg` };
}

/** A bare node:https server with the handsafe server's certificate, serving one blob to anyone. */
async function startBareServer(
  server: RunningServer,
  dataDir: string,
  blobKey: string,
): Promise<{ url: string; close(): Promise<void> }> {
  const blobs = createFilesystemBlobStore(server.platform.config.blobDir);
  const size = (await blobs.stat(blobKey))!.size;
  const bare = https.createServer(
    {
      cert: readFileSync(join(dataDir, "tls", "cert.pem")),
      key: readFileSync(join(dataDir, "tls", "key.pem")),
    },
    (_req, res) => {
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(size) });
      pipeline(Readable.from(blobs.get(blobKey)), res).catch(() => res.destroy());
    },
  );
  await new Promise<void>((resolve) => bare.listen(0, server.platform.config.host, resolve));
  const port = (bare.address() as AddressInfo).port;
  return {
    url: `https://localhost:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        bare.closeAllConnections();
        bare.close(() => resolve());
      }),
  };
}

async function benchDownloads(server: RunningServer, dataDir: string, fleet: Fleet): Promise<BenchResult[]> {
  const { clients, transports, info, blobKey } = await prepareDownloaders(server, fleet);
  const bare = await startBareServer(server, dataDir, blobKey);
  // One transport (one pinned keep-alive agent) per simulated handset, as for the signed clients.
  const bareTransports = Array.from({ length: HANDSETS }, () => createNodeTransport({ pin: server.pin }));
  try {
    const signed = (client: ManagementClient) =>
      downloadTarget({
        target: info,
        id: info.fileName,
        partial: new CountingPartialStore(),
        maxAttempts: 1,
        fetch: (headers) => client.requestStream("GET", CONTENT_PATH + info.fileName, { headers }),
      }).then(() => undefined);
    const unsigned = (transport: (typeof bareTransports)[number]) =>
      downloadTarget({
        target: info,
        id: info.fileName,
        partial: new CountingPartialStore(),
        maxAttempts: 1,
        fetch: (headers) => transport.stream({ method: "GET", url: bare.url + CONTENT_PATH, headers }),
      }).then(() => undefined);
    const blobs = createFilesystemBlobStore(server.platform.config.blobDir);
    const readBlob = async () => {
      let n = 0;
      for await (const chunk of blobs.get(blobKey)) n += chunk.length;
      if (n !== info.length) throw new Error(`blob is ${n} bytes`);
    };
    const handsets = Array.from({ length: HANDSETS }, (_, i) => i);
    // Warm-up (TLS connections kept alive by each agent, JIT, page cache), then rounds.
    await allAtOnce(bareTransports, unsigned);
    await allAtOnce(clients, signed);
    const best = await bestOfRounds(DOWNLOAD_ROUNDS, {
      server: () => allAtOnce(clients, signed),
      bare: () => allAtOnce(bareTransports, unsigned),
      blobs: () => allAtOnce(handsets, readBlob),
    });
    const bytes = HANDSETS * info.length;
    const value = mbPerSecond(bytes, best.server);
    const ceiling = mbPerSecond(bytes, best.bare);
    const mib = (info.length / MiB).toFixed(0);
    return [
      {
        name: `downloads: ${HANDSETS} handsets × ${mib} MiB package, signed, verified`,
        value,
        unit: "MB/s",
        ceiling: { name: "same clients and bytes, bare node:https", value: ceiling },
        ratio: value / ceiling,
      },
      {
        name: `blob store reads alone, ${HANDSETS} at once, for information`,
        value: mbPerSecond(bytes, best.blobs),
        unit: "MB/s",
      },
    ];
  } finally {
    for (const t of [...bareTransports, ...transports]) t.close();
    await bare.close();
  }
}

/**
 * The ceiling of a notification: its cryptography plus `commits` committed single-row inserts
 * through the same database, for each of `devices`.
 */
async function bareNotifications(server: RunningServer, devices: number, commits: number): Promise<number> {
  // biome-ignore lint/suspicious/noExplicitAny: a scratch table outside the typed schema.
  const db = server.platform.db as Kysely<any>;
  const { keyring } = server.platform;
  await sql`create table bench_fanout (id text primary key, device_id text not null, body text not null, at integer not null)`.execute(
    db,
  );
  try {
    const sealedStatic = keyring.sealAtRest(randomBytes(32), "bench/static-key");
    const start = performance.now();
    for (let d = 0; d < devices; d++) {
      const deviceId = `dev_bench${d}`;
      const keyId = newKeyId();
      const dynamicKey = DynamicKey.generate();
      const staticKey = keyring.openAtRest(sealedStatic, "bench/static-key");
      const text = sealDynamicKeyNotification(staticKey, {
        deviceId,
        keyId,
        dynamicKey,
        expiresAt: Date.now() + 86_400_000,
        maxUses: 20,
        counter: d + 1,
      });
      staticKey.fill(0);
      keyring.sealAtRest(dynamicKey.reveal(), `bench/dynamic-key/${keyId}`);
      dynamicKey.wipe();
      for (let c = 0; c < commits; c++)
        await db
          .insertInto("bench_fanout")
          .values({ id: `${keyId}.${c}`, device_id: deviceId, body: text, at: Date.now() })
          .execute();
    }
    return devices / ((performance.now() - start) / 1000);
  } finally {
    await sql`drop table bench_fanout`.execute(db);
  }
}

async function benchFanout(server: RunningServer, fleet: Fleet): Promise<BenchResult[]> {
  const { service } = server.management;
  const { pkg } = fleet;
  const campaign = await server.campaigns.create(
    {
      name: "bench fan-out",
      packageId: pkg.id,
      target: { models: ["HS-FAN"] },
      stages: [100],
      errorThreshold: 0.5,
    },
    ACTOR,
  );
  let start = performance.now();
  const started = await server.campaigns.start(campaign.id, ACTOR);
  const campaignMs = performance.now() - start;
  const notified = started.progress.byState.notified;
  if (notified !== FANOUT_DEVICES) throw new Error(`the campaign notified ${notified} devices`);

  start = performance.now();
  for (const f of fleet.notified)
    await service.issueDynamicKey(f.deviceId, { profile: "update", maxUses: 20, ttlSeconds: 86_400 }, ACTOR);
  const directMs = performance.now() - start;

  const campaignRate = notified / (campaignMs / 1000);
  const campaignCeiling = await bareNotifications(server, FANOUT_DEVICES, 6);
  const directRate = FANOUT_DEVICES / (directMs / 1000);
  const directCeiling = await bareNotifications(server, FANOUT_DEVICES, 5);
  return [
    {
      name: `fan-out: campaign start notifies ${FANOUT_DEVICES} devices (key + SMS)`,
      value: campaignRate,
      unit: "devices/s",
      ceiling: { name: "seal + 6 bare Kysely inserts per device", value: campaignCeiling },
      ratio: campaignRate / campaignCeiling,
    },
    {
      name: `fan-out: issueDynamicKey × ${FANOUT_DEVICES}, for information`,
      value: directRate,
      unit: "devices/s",
      ceiling: { name: "seal + 5 bare Kysely inserts per device", value: directCeiling },
      ratio: directRate / directCeiling,
    },
  ];
}

export async function benchUpdateServer(): Promise<BenchResult[]> {
  const { server, dataDir, close } = await startBenchServer("updates");
  try {
    const fleet = await provisionFleet(server, dataDir);
    const downloads = await benchDownloads(server, dataDir, fleet);
    const fanout = await benchFanout(server, fleet);
    return [...downloads, ...fanout];
  } finally {
    await close();
  }
}
