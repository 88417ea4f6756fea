/**
 * Making what the SDK writes to a folder survive a power cut (Node only): a file's bytes, and a
 * folder's entries — the fsync that makes a rename or a new link in it durable (POSIX). Used by the
 * folder keystore, the update slots and the backup data stores.
 */
import { open } from "node:fs/promises";

/** fdatasync of the file at `path`. */
export async function syncFileData(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

/**
 * fsync of the folder `dir`. Not every platform can open or flush a folder (EISDIR, EPERM, EINVAL):
 * there nothing more can be done, and the rename stays atomic, so a refusal is not an error. A
 * folder that is not there is one (ENOENT).
 */
export async function syncFolder(dir: string): Promise<void> {
  const handle = await open(dir, "r").catch((e: unknown) => {
    if ((e as { code?: string }).code === "ENOENT") throw e;
    return undefined;
  });
  if (handle === undefined) return;
  try {
    await handle.sync();
  } catch {
    // refused: see above
  } finally {
    await handle.close();
  }
}
