/**
 * The backup client alone in its own process (spawned by bench/backup.ts), so the peak RSS it reports
 * is the backup's, not the server's: opens the folder keystore, unlocks the identity module, backs up
 * (or restores) the data folder through the real HTTPS server, prints one JSON line.
 *
 *   node --import tsx bench/backup-child.ts '{"mode":"backup"|"restore", …}'
 */
import { readFileSync } from "node:fs";
import { FolderDataStores } from "../src/backup/data-stores.ts";
import { BackupClient } from "../src/backup/handset.ts";
import { FolderKeystore } from "../src/handset/folder-keystore.ts";
import { IdentityModule } from "../src/handset/identity-module.ts";
import { createNodeTransport } from "../src/handset/node-transport.ts";

export interface ChildInput {
  mode: "backup" | "restore";
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
if (input.mode === "backup") {
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
