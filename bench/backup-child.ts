/**
 * The backup client alone in its own process (spawned by bench/backup.ts), so the peak RSS it reports
 * is the backup's, not the server's: opens the folder keystore, unlocks the identity module, backs up
 * (or restores) the data folder through the real HTTPS server, prints one JSON line.
 *
 *   node --import tsx bench/backup-child.ts '{"mode":"backup"|"restore", …}'
 */
import { createReadStream, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { FolderDataStores } from "../src/backup/data-stores.ts";
import { BackupClient } from "../src/backup/handset.ts";
import { sealItem } from "../src/backup/item-crypto.ts";
import { createFilesystemBlobStore } from "../src/platform/blobs/filesystem.ts";
import { FolderKeystore } from "../src/handset/folder-keystore.ts";
import { IdentityModule } from "../src/handset/identity-module.ts";
import { createNodeTransport } from "../src/handset/node-transport.ts";

export interface ChildInput {
  /**
   * backup / restore: through the HTTPS server. seal-store: the same SDK sealing of the one file
   * (age, 64 KiB STREAM chunks, the HMAC content hash) streamed into a filesystem blob store in
   * `storeDir` — the work `age -r -o` does: read, encrypt, write durably.
   */
  mode: "backup" | "restore" | "seal-store";
  storeDir?: string;
  url: string;
  pin: string;
  keystoreDir: string;
  keystorePassphrase: string;
  wimPin: string;
  /** backup: the data folder; restore: the folder to restore into. */
  data: string;
  backupId?: string;
  /** BackupClient's PATCH size (default: the client's own, 8 MiB). */
  uploadChunkBytes?: number;
}

export interface ChildOutput {
  ms: number;
  /** This process's peak RSS in bytes: VmHWM of /proc/self/status, else process.resourceUsage().maxRSS. */
  maxRssBytes: number;
  /** process.resourceUsage().maxRSS as reported (on Linux it starts from the parent's peak: see peakRss). */
  resourceUsageMaxRssBytes: number;
  /** The same just before the backup or restore began (imports, keystore scrypt, unlock). */
  maxRssBeforeBytes: number;
  backupId: string;
  bytes: number;
}

/**
 * The peak RSS of this process alone. Linux carries the parent's high-water mark into a child's
 * getrusage() maxrss across fork + exec (exec_mmap keeps the old mm's peak in signal->maxrss), so a
 * child of a 175 MiB bench runner reports at least 175 MiB there; VmHWM is the new address space's own.
 */
function peakRss(): number {
  try {
    const m = /^VmHWM:\s+([0-9]+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS * 1024;
}

const input = JSON.parse(process.argv[2]!) as ChildInput;
const keystore = await FolderKeystore.open(input.keystoreDir, input.keystorePassphrase);
const identity = await (await IdentityModule.open(keystore)).unlock(input.wimPin);
const transport = createNodeTransport({ pin: input.pin, timeoutMs: 600_000 });
const client = new BackupClient({
  baseUrl: input.url,
  transport,
  identity,
  ...(input.uploadChunkBytes ? { uploadChunkBytes: input.uploadChunkBytes } : {}),
});
const stores = new FolderDataStores(input.data);
let out: Omit<ChildOutput, "maxRssBytes" | "maxRssBeforeBytes" | "resourceUsageMaxRssBytes">;
const maxRssBeforeBytes = peakRss();
const start = performance.now();
if (input.mode === "seal-store") {
  const file = join(input.data, "files", "big.bin");
  const sealed = sealItem({
    itemId: identity.itemId("files/big.bin"),
    metadata: { path: "files/big.bin", modifiedAt: statSync(file).mtime.toISOString() },
    recipients: [identity.recipient],
    plaintext: () => createReadStream(file, { highWaterMark: 1024 * 1024 }),
    hasher: () => identity.contentHasher(),
  });
  const info = await createFilesystemBlobStore(input.storeDir!).put("backup/blobs/bench", sealed.payload());
  out = { ms: performance.now() - start, backupId: "", bytes: info.size };
} else if (input.mode === "backup") {
  const r = await client.backup({ from: stores, selection: [{ kind: "files" }], parent: null });
  out = { ms: performance.now() - start, backupId: r.backupId, bytes: r.bytesUploaded };
} else {
  const r = await client.restore({ backupId: input.backupId!, into: stores });
  const bytes = r.items.reduce((n, i) => n + i.size, 0);
  out = { ms: performance.now() - start, backupId: r.backupId, bytes };
}
transport.close();
identity.lock();
const result: ChildOutput = {
  ...out,
  maxRssBytes: peakRss(),
  maxRssBeforeBytes,
  resourceUsageMaxRssBytes: process.resourceUsage().maxRSS * 1024,
};
process.stdout.write(`${JSON.stringify(result)}\n`);
