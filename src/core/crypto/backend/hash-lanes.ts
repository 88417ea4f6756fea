import { createHash, type Hash } from "node:crypto";
import { availableParallelism } from "node:os";
import { MessageChannel, type MessagePort, Worker } from "node:worker_threads";
import { HandsafeError } from "../../errors.ts";
import { inlineStreamHash, type StreamHash } from "./types.ts";

/**
 * Incremental SHA-256 / SHA-512 computed on a worker thread, so that hashing a large stream overlaps
 * the work the calling thread does with the same bytes (sealing them, writing them, sending them)
 * instead of adding to it. The hash itself is still OpenSSL's, run by node:crypto in the worker.
 *
 * A *lane* is one stream's ring buffer in shared memory:
 *
 *   Int32 ctl[4]: WRITTEN, READ (byte counts modulo 2^32), STATE (0 open, FINISH, RELEASED), WANT_SPACE
 *   then LANE_RING_BYTES of data.
 *
 * The calling thread copies each update into the ring and advances WRITTEN; the worker hashes what
 * lies between READ and WRITTEN and advances READ. A full ring makes update() return a promise that
 * the worker's "space" message settles (it is asked for with WANT_SPACE), so the caller awaits
 * instead of blocking its event loop. digest() sets STATE to finish; the worker answers with the
 * digest once it has hashed everything written before that. One worker serves many lanes: it hashes
 * whatever any lane holds and sleeps on a shared doorbell (Atomics.wait) when none holds anything.
 *
 * A stream shorter than INLINE_BYTES never reaches a lane: its bytes are kept and hashed on the
 * calling thread at digest(), where a round trip to the worker would cost more than it saves. When
 * no lane can be had (MAX_LANES in use, or the worker failed), the stream is hashed inline, so a
 * hash is never refused, only not offloaded.
 */

/**
 * A lane's ring. 2 MiB holds a whole 1 MiB update (a read stream's piece) with room to spare, so the
 * caller rarely waits for the worker: sealing 1 GiB into the blob store with the worker on took
 * 1.98 s against 2.30 s with 512 KiB rings (bench/backup-child.ts seal-store, 5 interleaved runs, medians).
 */
export const LANE_RING_BYTES = 2 * 1024 * 1024;
const INLINE_BYTES = 128 * 1024;
const MAX_LANES = 16;
const IDLE_RINGS = 4;
const CTL_BYTES = 16;

const WRITTEN = 0;
const READ = 1;
const STATE = 2;
const WANT_SPACE = 3;
const FINISH = 1;
const RELEASED = 2;

/** The worker: plain JavaScript, started with `eval`, so it runs the same under tsx and in a bundle. */
const WORKER_SOURCE = `
"use strict";
const { workerData, receiveMessageOnPort } = require("node:worker_threads");
const { createHash } = require("node:crypto");
const { port, doorbell } = workerData;
const bell = new Int32Array(doorbell);
const lanes = new Map();
for (;;) {
  const rung = Atomics.load(bell, 0);
  for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
    const { id, algorithm, ring } = m.message;
    try {
      lanes.set(id, { id, hash: createHash(algorithm), ctl: new Int32Array(ring, 0, 4), data: new Uint8Array(ring, ${CTL_BYTES}), read: 0 });
    } catch (e) {
      port.postMessage({ id, error: String(e && e.message || e) });
    }
  }
  let worked = false;
  for (const lane of lanes.values()) {
    const state = Atomics.load(lane.ctl, ${STATE});
    if (state === ${RELEASED}) { lanes.delete(lane.id); continue; }
    const written = Atomics.load(lane.ctl, ${WRITTEN}) >>> 0;
    try {
      if (written !== lane.read) {
        const size = lane.data.length;
        const at = lane.read % size;
        const n = Math.min((written - lane.read) >>> 0, size - at);
        lane.hash.update(lane.data.subarray(at, at + n));
        lane.read = (lane.read + n) >>> 0;
        Atomics.store(lane.ctl, ${READ}, lane.read | 0);
        if (Atomics.exchange(lane.ctl, ${WANT_SPACE}, 0) === 1) port.postMessage({ id: lane.id, space: true });
        worked = true;
      } else if (state === ${FINISH}) {
        port.postMessage({ id: lane.id, digest: lane.hash.digest() });
        lanes.delete(lane.id);
        worked = true;
      }
    } catch (e) {
      port.postMessage({ id: lane.id, error: String(e && e.message || e) });
      lanes.delete(lane.id);
    }
  }
  if (!worked) Atomics.wait(bell, 0, rung);
}
`;

/** What a stream awaits from the worker: room in its ring, or its digest. */
interface Waiter {
  kind: "space" | "digest";
  resolve(digest?: Uint8Array): void;
  reject(e: unknown): void;
}

/** The worker and the lanes it serves. */
class LaneHost {
  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #bell = new Int32Array(new SharedArrayBuffer(4));
  readonly #waiters = new Map<number, Waiter>();
  /** Lanes the worker gave up on (its hash threw) before anybody awaited them. */
  readonly #laneFailures = new Map<number, HandsafeError>();
  readonly #idleRings: SharedArrayBuffer[] = [];
  #nextId = 1;
  #lanes = 0;
  #failure: Error | undefined;

  constructor() {
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    this.#worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { port: port2, doorbell: this.#bell.buffer },
      transferList: [port2],
      // The worker holds a hash state and a ring: a few MiB of V8 heap are plenty.
      resourceLimits: { maxOldGenerationSizeMb: 8, maxYoungGenerationSizeMb: 2 },
    });
    this.#worker.unref();
    this.#worker.on("error", (e) => this.#fail(e));
    this.#worker.on("exit", (code) => this.#fail(new Error(`the hash worker exited (code ${code})`)));
    this.#port.on("message", (m: { id: number; space?: true; digest?: Uint8Array; error?: string }) =>
      this.#answer(m),
    );
    this.#port.unref();
  }

  get usable(): boolean {
    return this.#failure === undefined && this.#lanes < MAX_LANES;
  }

  /** A new lane for `algorithm`: its id and its shared ring. */
  open(algorithm: "sha256" | "sha512"): { id: number; ring: SharedArrayBuffer } {
    const ring = this.#idleRings.pop() ?? new SharedArrayBuffer(CTL_BYTES + LANE_RING_BYTES);
    new Int32Array(ring, 0, 4).fill(0);
    const id = this.#nextId++;
    this.#lanes++;
    this.#port.postMessage({ id, algorithm, ring });
    this.ring();
    return { id, ring };
  }

  /** Wakes the worker: a lane has more bytes, wants its digest, or was released. */
  ring(): void {
    Atomics.add(this.#bell, 0, 1);
    Atomics.notify(this.#bell, 0);
  }

  /** The lane is done with: its ring may serve another stream once the worker dropped it. */
  close(id: number, ring: SharedArrayBuffer, reusable: boolean): void {
    this.#waiters.delete(id);
    this.#laneFailures.delete(id);
    this.#refresh();
    this.#lanes--;
    if (reusable && this.#idleRings.length < IDLE_RINGS) this.#idleRings.push(ring);
  }

  /** Forgets what `id` waits for (it found room after all). */
  cancelWait(id: number): void {
    this.#waiters.delete(id);
    this.#refresh();
  }

  async waitSpace(id: number): Promise<void> {
    await this.#wait(id, "space");
  }

  async waitDigest(id: number): Promise<Uint8Array> {
    return (await this.#wait(id, "digest"))!;
  }

  #wait(id: number, kind: Waiter["kind"]): Promise<Uint8Array | undefined> {
    const failed = this.#failure ?? this.#laneFailures.get(id);
    if (failed !== undefined) return Promise.reject(failed);
    return new Promise((resolve, reject) => {
      this.#waiters.set(id, { kind, resolve, reject });
      this.#refresh();
    });
  }

  #answer(m: { id: number; space?: true; digest?: Uint8Array; error?: string }): void {
    const waiter = this.#waiters.get(m.id);
    if (m.error !== undefined) {
      const e = new HandsafeError("internal", `hash worker: ${m.error}`, { status: 500 });
      // The worker dropped the lane: whoever waits on it now, or later, is told.
      if (waiter === undefined) this.#laneFailures.set(m.id, e);
      else this.#settle(m.id, () => waiter.reject(e));
    } else if (m.space && waiter?.kind === "space") {
      this.#settle(m.id, () => waiter.resolve());
    } else if (m.digest && waiter?.kind === "digest") {
      const digest = new Uint8Array(m.digest);
      this.#settle(m.id, () => waiter.resolve(digest));
    }
    // Otherwise a "space" nobody waits for any more.
  }

  #settle(id: number, settle: () => void): void {
    this.#waiters.delete(id);
    this.#refresh();
    settle();
  }

  /** The port keeps the process alive only while somebody awaits the worker. */
  #refresh(): void {
    if (this.#waiters.size > 0) this.#port.ref();
    else this.#port.unref();
  }

  #fail(e: unknown): void {
    if (this.#failure !== undefined) return;
    this.#failure = e instanceof Error ? e : new Error(String(e));
    const failure = new HandsafeError("internal", "the hash worker failed", {
      status: 500,
      cause: this.#failure,
    });
    for (const waiter of this.#waiters.values()) waiter.reject(failure);
    this.#waiters.clear();
    this.#port.close();
  }

  get failure(): Error | undefined {
    return this.#failure;
  }
}

let host: LaneHost | undefined;
let disabled = false;
const stats = { laned: 0, inline: 0 };

/** How many streams went to a lane and how many were hashed inline (tests, diagnostics). */
export function hashLaneStats(): { laned: number; inline: number } {
  return { ...stats };
}

/**
 * Whether streams go to a worker: HANDSAFE_HASH_WORKER=on or off decides; unset, only with three
 * or more cores. On two, the worker competes with the main thread and the thread pool's writes for
 * the second core: the 1 GiB backup bench on a 2-vCPU machine showed no steady gain (177–198 against
 * 151–210 MB/s sealed and stored, interleaved) for 10 MiB more peak RSS (the worker's isolate).
 */
export function hashWorkerWanted(setting: string | undefined, cores: number): boolean {
  if (setting === "on") return true;
  if (setting === "off") return false;
  return cores >= 3;
}

/** Whether streams may go to a worker at all (decided once per process). */
function lanesEnabled(): boolean {
  if (disabled) return false;
  if (host === undefined && !hashWorkerWanted(process.env["HANDSAFE_HASH_WORKER"], availableParallelism()))
    disabled = true;
  return !disabled;
}

/** The worker, started on first use; none when not wanted, or once a worker could not start. */
function laneHost(): LaneHost | undefined {
  if (!lanesEnabled()) return undefined;
  if (host === undefined) {
    try {
      host = new LaneHost();
    } catch {
      disabled = true;
      return undefined;
    }
  }
  return host.usable ? host : undefined;
}

/** Releases a lane whose hash object was dropped without digest() or release(). */
const dropped = new FinalizationRegistry<{
  host: LaneHost;
  id: number;
  ctl: Int32Array;
  ring: SharedArrayBuffer;
}>((lane) => {
  Atomics.store(lane.ctl, STATE, RELEASED);
  lane.host.ring();
  lane.host.close(lane.id, lane.ring, false);
});

interface Lane {
  host: LaneHost;
  id: number;
  ring: SharedArrayBuffer;
  ctl: Int32Array;
  data: Uint8Array;
  written: number;
}

function hashFailed(e: unknown): HandsafeError {
  return new HandsafeError("internal", "the hash stream failed", { status: 500, cause: e });
}

class LaneHash implements StreamHash {
  readonly #algorithm: "sha256" | "sha512";
  /** Bytes kept before the stream is long enough for a lane. */
  #prefix: Uint8Array | undefined;
  #prefixLength = 0;
  #lane: Lane | undefined;
  #inline: Hash | undefined;
  #busy = false;
  #done = false;

  constructor(algorithm: "sha256" | "sha512") {
    this.#algorithm = algorithm;
  }

  update(data: Uint8Array): Promise<void> | undefined {
    if (this.#done)
      throw new HandsafeError("internal", "update() after digest() or release()", { status: 500 });
    if (this.#busy)
      throw new HandsafeError("internal", "update() before the previous update's promise settled", {
        status: 500,
      });
    if (this.#inline !== undefined) {
      this.#inline.update(data);
      return undefined;
    }
    if (this.#lane === undefined) {
      const needed = this.#prefixLength + data.length;
      if (needed <= INLINE_BYTES) {
        if (this.#prefix === undefined || this.#prefix.length < needed) {
          // Grown as needed (a 100-byte blob keeps 100 bytes), up to INLINE_BYTES.
          const grown = new Uint8Array(
            Math.min(INLINE_BYTES, Math.max(needed, 2 * (this.#prefix?.length ?? 0))),
          );
          if (this.#prefix !== undefined) grown.set(this.#prefix.subarray(0, this.#prefixLength));
          this.#prefix = grown;
        }
        this.#prefix.set(data, this.#prefixLength);
        this.#prefixLength += data.length;
        return undefined;
      }
      this.#startLane();
      if (this.#inline !== undefined) {
        (this.#inline as Hash).update(data);
        return undefined;
      }
    }
    return this.#write(data);
  }

  async digest(): Promise<Uint8Array> {
    if (this.#done) throw new HandsafeError("internal", "digest() called twice", { status: 500 });
    if (this.#busy)
      throw new HandsafeError("internal", "digest() before the last update's promise settled", {
        status: 500,
      });
    this.#done = true;
    if (this.#lane === undefined) {
      const hash = this.#inline ?? createHash(this.#algorithm).update(this.#takePrefix());
      const d = hash.digest();
      return new Uint8Array(d); // a copy: never a view of node's buffer pool
    }
    const lane = this.#lane;
    this.#lane = undefined;
    dropped.unregister(this);
    const answer = lane.host.waitDigest(lane.id);
    Atomics.store(lane.ctl, STATE, FINISH);
    lane.host.ring();
    try {
      return await answer;
    } catch (e) {
      throw hashFailed(e);
    } finally {
      lane.host.close(lane.id, lane.ring, lane.host.failure === undefined);
    }
  }

  release(): void {
    if (this.#done) return;
    this.#done = true;
    this.#prefix = undefined;
    const lane = this.#lane;
    if (lane === undefined) return;
    this.#lane = undefined;
    dropped.unregister(this);
    Atomics.store(lane.ctl, STATE, RELEASED);
    lane.host.ring();
    // The worker may still read this ring until it sees RELEASED: never hand it to another stream.
    lane.host.close(lane.id, lane.ring, false);
  }

  #takePrefix(): Uint8Array {
    const bytes = this.#prefix?.subarray(0, this.#prefixLength) ?? new Uint8Array(0);
    this.#prefix = undefined;
    return bytes;
  }

  /** Moves the stream to a lane (or inline, when there is none), carrying the bytes kept so far. */
  #startLane(): void {
    const h = laneHost();
    const prefix = this.#takePrefix();
    if (h === undefined) {
      stats.inline++;
      this.#inline = createHash(this.#algorithm).update(prefix);
      return;
    }
    stats.laned++;
    const { id, ring } = h.open(this.#algorithm);
    const lane: Lane = {
      host: h,
      id,
      ring,
      ctl: new Int32Array(ring, 0, 4),
      data: new Uint8Array(ring, CTL_BYTES),
      written: 0,
    };
    this.#lane = lane;
    dropped.register(this, { host: h, id, ctl: lane.ctl, ring }, this);
    // The prefix (≤ INLINE_BYTES) fits an empty ring.
    this.#copyIn(prefix, 0);
  }

  /** Copies as much of `data` from `at` as the ring has room for; returns the new `at`. */
  #copyIn(data: Uint8Array, at: number): number {
    const lane = this.#lane!;
    const size = lane.data.length;
    while (at < data.length) {
      const read = Atomics.load(lane.ctl, READ) >>> 0;
      const free = size - ((lane.written - read) >>> 0);
      if (free === 0) break;
      const pos = lane.written % size;
      const n = Math.min(free, data.length - at, size - pos);
      lane.data.set(data.subarray(at, at + n), pos);
      at += n;
      lane.written = (lane.written + n) >>> 0;
      Atomics.store(lane.ctl, WRITTEN, lane.written | 0);
    }
    lane.host.ring();
    return at;
  }

  #write(data: Uint8Array): Promise<void> | undefined {
    const at = this.#copyIn(data, 0);
    if (at === data.length) return undefined;
    this.#busy = true;
    return this.#writeRest(data, at).finally(() => {
      this.#busy = false;
    });
  }

  async #writeRest(data: Uint8Array, from: number): Promise<void> {
    let at = from;
    while (at < data.length) {
      const lane = this.#lane;
      if (lane === undefined) throw new HandsafeError("internal", "the hash was released", { status: 500 });
      if (lane.host.failure !== undefined) throw hashFailed(lane.host.failure);
      const space = lane.host.waitSpace(lane.id);
      space.catch(() => {}); // observed below when waited on; dropped when room was found after all
      Atomics.store(lane.ctl, WANT_SPACE, 1);
      // The worker may have made room before it saw WANT_SPACE: look again before waiting.
      const before = at;
      at = this.#copyIn(data, at);
      if (at !== before) {
        lane.host.cancelWait(lane.id);
        continue;
      }
      try {
        await space;
      } catch (e) {
        throw hashFailed(e);
      }
    }
  }
}

/** An incremental hash whose work runs on a worker thread once the stream is long enough. */
export function createLaneHash(algorithm: "sha256" | "sha512"): StreamHash {
  if (lanesEnabled()) return new LaneHash(algorithm);
  const h = createHash(algorithm);
  // A copy of each digest: never a view of node's buffer pool.
  return inlineStreamHash({ update: (d) => void h.update(d), digest: () => new Uint8Array(h.digest()) });
}
