/**
 * Cross-node push over PostgreSQL LISTEN/NOTIFY (docs/protocols/management.md §Several nodes).
 * Nodes are stateless; a handset's push stream lives on whichever node its connection reached. So:
 *
 * - presence: a node that holds a device's stream writes (device, node) into
 *   management_push_presence, and deletes it when the device's last stream on it closes;
 * - forward: a node that must notify a device it does not hold, and finds another node present,
 *   sends `pg_notify('handsafe_management_push', {k:"push", r, d, n, i, from})`; every node LISTENs;
 *   the one holding the device writes the event and answers `{k:"ack", r, node}`;
 * - no ack within ackTimeoutMs: the presence rows are stale (a node died without cleaning up) —
 *   they are deleted and the caller falls back to SMS. A late ack only means the handset gets the
 *   same notification twice, which its counter check refuses.
 *
 * The text is already sealed for the device (KEK from its static key), so it may pass through the
 * database like the sealed keys do. One dedicated connection per node, opened on first need and
 * reopened with back-off when it drops. (This is platform plumbing living in management/ until a
 * second capability needs cross-node wake-ups; then it moves to platform/notify/.)
 */
import { type Kysely, sql } from "kysely";
import pg from "pg";
import { isHandsafeError } from "../core/errors.ts";
import { DEVICE_ID } from "./protocol.ts";
import type { PushNotification } from "./push-protocol.ts";
import * as store from "./store.ts";

export const PUSH_NOTIFY_CHANNEL = "handsafe_management_push";
/** pg_notify payloads must stay under 8000 bytes; ours are ~300. */
const MAX_PAYLOAD = 4000;
const MIN_RETRY_MS = 500;
const MAX_RETRY_MS = 30_000;

type RelayMessage =
  | { k: "push"; r: string; d: string; n: string; i: number; from: string }
  | { k: "ack"; r: string; node: string };

export interface PushRelayOptions {
  connectionString: string;
  db: Kysely<store.ManagementTables>;
  nodeId: string;
  /** Writes a notification to this node's streams of a device; how many took it. */
  deliverLocal(deviceId: string, notification: PushNotification): number;
  /** Devices with a stream on this node, announced again after the listener reconnects. */
  localDevices(): string[];
  ackTimeoutMs: number;
  clock: () => number;
  onError?: (what: string, err: unknown) => void;
}

export class PostgresPushRelay {
  #client: pg.Client | undefined;
  #listening: Promise<boolean> | undefined;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #retryMs = MIN_RETRY_MS;
  #closed = false;
  readonly #acks = new Map<string, (node: string | undefined) => void>();
  /** Presence writes, in order: a quick connect–disconnect must not leave a row behind. */
  #presence: Promise<void> = Promise.resolve();
  #sequence = 0;
  /** Whether this node ever wrote a presence row (else close() has nothing to withdraw). */
  #announced = false;

  constructor(private readonly o: PushRelayOptions) {}

  /** The device's first stream on this node opened (true) or its last closed (false). */
  presence(deviceId: string, connected: boolean): void {
    this.#enqueue(async () => {
      if (!connected) return store.deletePushPresence(this.o.db, deviceId, [this.o.nodeId]);
      // Listen before announcing: a node told to forward here must find someone listening.
      if (!(await this.#listen())) return;
      this.#announced = true;
      await store.insertPushPresence(this.o.db, deviceId, this.o.nodeId, this.o.clock());
    });
  }

  /** Resolves when every presence write asked for so far is done (or failed and was reported). */
  settled(): Promise<void> {
    return this.#presence;
  }

  /** Is another node holding a stream of this device (by its presence rows)? */
  async presentElsewhere(deviceId: string): Promise<boolean> {
    return (await store.pushPresenceElsewhere(this.o.db, deviceId, this.o.nodeId)).length > 0;
  }

  /** Asks the node holding the device to write the notification; the node that did, if any. */
  async forward(deviceId: string, notification: PushNotification): Promise<string | undefined> {
    if (this.#closed) return undefined;
    const nodes = await store.pushPresenceElsewhere(this.o.db, deviceId, this.o.nodeId);
    if (nodes.length === 0 || !(await this.#listen())) return undefined;
    const r = `${this.o.nodeId}.${++this.#sequence}`;
    const acked = new Promise<string | undefined>((resolve) => {
      const timer = setTimeout(() => finish(undefined), this.o.ackTimeoutMs);
      const finish = (node: string | undefined) => {
        clearTimeout(timer);
        this.#acks.delete(r);
        resolve(node);
      };
      this.#acks.set(r, finish);
    });
    try {
      await this.#notify({
        k: "push",
        r,
        d: deviceId,
        n: notification.text,
        i: notification.counter,
        from: this.o.nodeId,
      });
    } catch (e) {
      this.#acks.get(r)?.(undefined);
      throw e;
    }
    const node = await acked;
    if (node === undefined) await store.deletePushPresence(this.o.db, deviceId, nodes);
    return node;
  }

  /** Stops listening and withdraws this node's presence rows (the database must still be open). */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    for (const finish of [...this.#acks.values()]) finish(undefined);
    await this.#presence;
    const client = this.#client;
    this.#client = undefined;
    if (this.#announced)
      try {
        await store.deleteNodePushPresence(this.o.db, this.o.nodeId);
      } catch (e) {
        this.o.onError?.("presence cleanup", e);
      }
    await client?.end().catch(() => {});
  }

  #enqueue(work: () => Promise<void>): void {
    this.#presence = this.#presence.then(work).catch((e: unknown) => this.o.onError?.("presence", e));
  }

  async #notify(m: RelayMessage): Promise<void> {
    const payload = JSON.stringify(m);
    if (payload.length > MAX_PAYLOAD) throw new Error("push relay payload too large");
    await sql`select pg_notify(${PUSH_NOTIFY_CHANNEL}, ${payload})`.execute(this.o.db);
  }

  /** Resolves true once this node LISTENs (connecting the first time it is needed). */
  #listen(): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    this.#listening ??= this.#connect();
    return this.#listening;
  }

  async #connect(): Promise<boolean> {
    const client = new pg.Client({
      connectionString: this.o.connectionString,
      application_name: `handsafe push ${this.o.nodeId}`,
      connectionTimeoutMillis: 5000,
    });
    let lost = false;
    const onLost = (err?: unknown) => {
      if (lost) return;
      lost = true;
      this.#lost(client, err);
    };
    client.on("notification", (m) => this.#onMessage(m.payload));
    client.on("error", onLost);
    client.on("end", () => onLost());
    try {
      await client.connect();
      await client.query(`LISTEN ${PUSH_NOTIFY_CHANNEL}`);
    } catch (e) {
      onLost(e);
      await client.end().catch(() => {});
      return false;
    }
    if (this.#closed) {
      await client.end().catch(() => {});
      return false;
    }
    this.#client = client;
    this.#retryMs = MIN_RETRY_MS;
    return true;
  }

  #lost(client: pg.Client, err: unknown): void {
    if (this.#client !== undefined && this.#client !== client) return;
    this.#client = undefined;
    this.#listening = undefined;
    if (this.#closed) return;
    if (err !== undefined) this.o.onError?.("listener", err);
    // Only a node that holds streams needs to listen; the others connect again when they forward.
    if (this.o.localDevices().length === 0 || this.#retryTimer !== undefined) return;
    const delay = this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, MAX_RETRY_MS);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      // Announce again what this node holds: a forwarder may have deleted the rows meanwhile.
      for (const deviceId of this.o.localDevices()) this.presence(deviceId, true);
    }, delay);
    this.#retryTimer.unref();
  }

  #onMessage(payload: string | undefined): void {
    let m: RelayMessage;
    try {
      m = JSON.parse(payload ?? "") as RelayMessage;
    } catch {
      return;
    }
    if (typeof m !== "object" || m === null || typeof m.r !== "string") return;
    if (m.k === "ack") {
      if (typeof m.node === "string") this.#acks.get(m.r)?.(m.node);
      return;
    }
    if (m.k !== "push" || m.from === this.o.nodeId) return;
    if (typeof m.d !== "string" || !DEVICE_ID.test(m.d) || typeof m.n !== "string") return;
    if (!Number.isSafeInteger(m.i) || m.i < 1) return;
    let written: number;
    try {
      written = this.o.deliverLocal(m.d, { text: m.n, counter: m.i });
    } catch (e) {
      if (!isHandsafeError(e)) this.o.onError?.("deliver", e);
      return;
    }
    if (written > 0)
      this.#notify({ k: "ack", r: m.r, node: this.o.nodeId }).catch((e: unknown) =>
        this.o.onError?.("ack", e),
      );
  }
}
