import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

/**
 * Runs a SQLite database's WAL checkpoints on a worker thread instead of inside commits.
 *
 * By default the connection that commits past `wal_autocheckpoint` pages (1,000) copies the WAL back
 * into the database file and fsyncs it, synchronously, in that commit: on the server's one connection
 * that is the event loop, and it came to 10–20 µs a commit on average (about 40 µs of an accepted
 * message). Here the server's connection has autocheckpoint off, and a worker with a connection of
 * its own runs `PRAGMA wal_checkpoint(PASSIVE)` every INTERVAL_MS: a passive checkpoint never waits
 * for or blocks a reader or the writer, it copies what it can; the WAL then restarts from its start
 * at the next commit once all of it was copied. Durability is unchanged (with synchronous=NORMAL the
 * WAL is fsynced at checkpoints, wherever they run).
 *
 * Under a steady stream of commits a passive checkpoint never catches up: by the time it has copied
 * the frames it saw, the next commits appended more, so no writer ever finds the WAL fully copied
 * and it never restarts. Measured: accepted messages at 8 concurrent grew the WAL by about 120 MB a
 * second without end (1.8 GB after 15 s), and each page lookup searches every 4,096 frames' index
 * table, newest first — the cost of a message rose from about 110 to 200 µs within those 15 s. So
 * once a passive checkpoint leaves the WAL at RESTART_FRAMES or more, the worker runs
 * `wal_checkpoint(RESTART)`: it waits (up to RESTART_WAIT_MS) for the transaction in progress, copies
 * the few frames the passive pass left, and holds new writers only until then (they wait in their
 * busy timeout), so the next commit writes the WAL from its start again (Litestream forces the same
 * restart at 10,000 pages). `journal_size_limit` on the serving connection then cuts a WAL file that
 * grew past WAL_SIZE_LIMIT back to it at the first commit after a restart (the writer that restarts
 * the WAL truncates it; the same pragma on this worker's connection does nothing — checked).
 *
 * Should the worker stop (it cannot start, its connection fails), the connection's own
 * autocheckpoint is switched back on, so the WAL never grows without bound.
 */

const INTERVAL_MS = 100;
/** WAL frames (pages) from which the worker forces a restart: 4,096 frames, 16 MiB of 4 KiB pages. */
export const RESTART_FRAMES = 4096;
/** How long the forcing checkpoint waits for a writer's transaction in progress before trying later. */
const RESTART_WAIT_MS = 200;
/** The serving connection's journal_size_limit: a WAL file is cut back to this when it restarts. */
export const WAL_SIZE_LIMIT = 64 * 1024 * 1024;
/** SQLite's default, restored as the fallback. */
const AUTOCHECKPOINT_PAGES = 1000;

const WORKER_SOURCE = `
"use strict";
const { workerData, parentPort } = require("node:worker_threads");
const Database = require(workerData.module);
const stop = new Int32Array(workerData.stop);
// The busy timeout is for the forced restart only: a passive checkpoint never waits on it.
const db = new Database(workerData.path, { fileMustExist: true, timeout: ${RESTART_WAIT_MS} });
parentPort.postMessage("ready");
const checkpoint = (mode) => {
  try {
    // One row: busy (1 when it could not finish), log (frames in the WAL), checkpointed.
    return db.pragma("wal_checkpoint(" + mode + ")")[0];
  } catch (e) {
    // SQLITE_BUSY: another checkpoint (another server node on the same file) holds the lock.
    if (!e || e.code !== "SQLITE_BUSY") throw e;
    return undefined;
  }
};
try {
  while (Atomics.wait(stop, 0, 0, ${INTERVAL_MS}) === "timed-out") {
    const passive = checkpoint("PASSIVE");
    if (passive && passive.log >= ${RESTART_FRAMES}) {
      const restart = checkpoint("RESTART");
      if (restart && restart.busy === 0) parentPort.postMessage("restarted");
    }
  }
} finally {
  db.close();
}
`;

export interface SqliteCheckpointer {
  /** Stops the worker (after the checkpoint it may be running) and closes its connection. */
  close(): Promise<void>;
  /** The restarts the worker forced so far (RESTART_FRAMES). */
  restarts(): number;
}

/**
 * Starts checkpointing `path` off the calling thread; `setAutocheckpoint(pages)` is the serving
 * connection's `PRAGMA wal_autocheckpoint`, set to 0 once the worker is up and back if it fails.
 */
export function startSqliteCheckpointer(
  path: string,
  setAutocheckpoint: (pages: number) => void,
): SqliteCheckpointer {
  const stop = new Int32Array(new SharedArrayBuffer(4));
  let worker: Worker;
  try {
    worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        path,
        stop: stop.buffer,
        module: createRequire(import.meta.url).resolve("better-sqlite3"),
      },
      resourceLimits: { maxOldGenerationSizeMb: 8, maxYoungGenerationSizeMb: 2 },
    });
  } catch {
    return { close: async () => {}, restarts: () => 0 };
  }
  worker.unref();
  let running = false;
  let stopping = false;
  const exited = new Promise<void>((resolve) => {
    worker.once("exit", () => {
      if (running && !stopping) setAutocheckpoint(AUTOCHECKPOINT_PAGES);
      running = false;
      resolve();
    });
  });
  worker.on("error", () => {
    // The exit that follows restores the connection's own checkpoints.
  });
  let restarts = 0;
  worker.on("message", (message: unknown) => {
    if (message === "restarted") {
      restarts++;
      return;
    }
    if (stopping || running) return;
    running = true;
    setAutocheckpoint(0);
  });
  return {
    restarts: () => restarts,
    async close() {
      stopping = true;
      worker.ref(); // the process waits for the worker's connection to close

      Atomics.store(stop, 0, 1);
      Atomics.notify(stop, 0);
      await exited;
    },
  };
}
