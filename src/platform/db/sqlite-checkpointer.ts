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
 * Should the worker stop (it cannot start, its connection fails), the connection's own
 * autocheckpoint is switched back on, so the WAL never grows without bound.
 */

const INTERVAL_MS = 100;
/** SQLite's default, restored as the fallback. */
const AUTOCHECKPOINT_PAGES = 1000;

const WORKER_SOURCE = `
"use strict";
const { workerData, parentPort } = require("node:worker_threads");
const Database = require(workerData.module);
const stop = new Int32Array(workerData.stop);
const db = new Database(workerData.path, { fileMustExist: true, timeout: 0 });
parentPort.postMessage("ready");
try {
  while (Atomics.wait(stop, 0, 0, ${INTERVAL_MS}) === "timed-out") {
    try {
      db.pragma("wal_checkpoint(PASSIVE)");
    } catch (e) {
      // SQLITE_BUSY: another checkpoint (another server node on the same file) holds the lock.
      if (!e || e.code !== "SQLITE_BUSY") throw e;
    }
  }
} finally {
  db.close();
}
`;

export interface SqliteCheckpointer {
  /** Stops the worker (after the checkpoint it may be running) and closes its connection. */
  close(): Promise<void>;
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
    return { close: async () => {} };
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
  worker.once("message", () => {
    if (stopping) return;
    running = true;
    setAutocheckpoint(0);
  });
  return {
    async close() {
      stopping = true;
      worker.ref(); // the process waits for the worker's connection to close

      Atomics.store(stop, 0, 1);
      Atomics.notify(stop, 0);
      await exited;
    },
  };
}
