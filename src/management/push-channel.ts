/**
 * The push channel of one server node: its hub of open streams (push-hub.ts) and, on PostgreSQL,
 * the relay to the other nodes (push-relay.ts). ManagementService asks it two things — can the
 * device be reached by push, and deliver this sealed notification — and falls back to SMS.
 */
import { randomToken } from "../core/crypto/random.ts";
import type { Platform } from "../platform/context.ts";
import { parseDatabaseUrl } from "../platform/db/url.ts";
import { type PushConnection, PushHub } from "../platform/notify/push-hub.ts";
import { notificationEvent, type PushNotification, readyEvent } from "./push-protocol.ts";
import { PostgresPushRelay } from "./push-relay.ts";

export interface PushSettings {
  /** A keep-alive comment at least this often (default 15 s: under the server's 30 s socket timeout). */
  keepAliveMs?: number;
  /** A stream is ended after this long; the handset reconnects (default 30 min). */
  maxStreamMs?: number;
  /** Open streams per device per node before the oldest is ended (default 2). */
  maxStreamsPerDevice?: number;
  /** How long a node waits for another node to confirm a forwarded notification (default 1.5 s). */
  relayAckTimeoutMs?: number;
  /** Use PostgreSQL LISTEN/NOTIFY between nodes when on PostgreSQL (default true). */
  relay?: boolean;
}

export const PUSH_DEFAULTS = {
  keepAliveMs: 15_000,
  maxStreamMs: 30 * 60_000,
  maxStreamsPerDevice: 2,
  relayAckTimeoutMs: 1_500,
} as const;

export class PushChannel {
  /** This process's name among the nodes (presence rows, relay messages). */
  readonly nodeId = `node_${randomToken(9)}`;
  readonly keepAliveMs: number;
  readonly #hub: PushHub;
  readonly #relay: PostgresPushRelay | undefined;

  constructor(
    platform: Platform,
    settings: PushSettings = {},
    onError?: (what: string, err: unknown) => void,
  ) {
    this.keepAliveMs = settings.keepAliveMs ?? PUSH_DEFAULTS.keepAliveMs;
    const target =
      settings.relay !== false && platform.database.dialect === "postgres"
        ? parseDatabaseUrl(platform.config.databaseUrl)
        : undefined;
    this.#relay =
      target?.dialect === "postgres"
        ? new PostgresPushRelay({
            connectionString: target.connectionString,
            db: platform.db,
            nodeId: this.nodeId,
            deliverLocal: (deviceId, n) => this.#hub.send(deviceId, notificationEvent(n)),
            localDevices: () => this.#hub.connectedDevices(),
            ackTimeoutMs: settings.relayAckTimeoutMs ?? PUSH_DEFAULTS.relayAckTimeoutMs,
            clock: () => platform.clock(),
            ...(onError ? { onError } : {}),
          })
        : undefined;
    this.#hub = new PushHub({
      keepAliveMs: this.keepAliveMs,
      maxStreamMs: settings.maxStreamMs ?? PUSH_DEFAULTS.maxStreamMs,
      maxStreamsPerDevice: settings.maxStreamsPerDevice ?? PUSH_DEFAULTS.maxStreamsPerDevice,
      onPresence: (deviceId, connected) => this.#relay?.presence(deviceId, connected),
    });
  }

  /** Opens a stream for an authenticated device (nothing is written yet: see ready). */
  open(deviceId: string): PushConnection {
    return this.#hub.open(deviceId);
  }

  /**
   * Writes the ready event, the stream's first block, once the other nodes can find the device
   * (its presence recorded): "ready" means reachable.
   */
  async ready(connection: PushConnection): Promise<void> {
    await this.#relay?.settled();
    connection.write(readyEvent({ deviceId: connection.deviceId, keepAliveMs: this.keepAliveMs }));
  }

  /** Can a notification reach the device by push now: a stream here, or (relay) on another node? */
  async reachable(deviceId: string): Promise<boolean> {
    if (this.#hub.isConnected(deviceId)) return true;
    return (await this.#relay?.presentElsewhere(deviceId)) ?? false;
  }

  /** Writes the notification to the device's stream here or on another node; which node did. */
  async deliver(deviceId: string, n: PushNotification): Promise<string | undefined> {
    if (this.#hub.send(deviceId, notificationEvent(n)) > 0) return this.nodeId;
    return this.#relay?.forward(deviceId, n);
  }

  /** Ends every stream of this node (before the HTTP server closes: open streams would hold it). */
  endStreams(): void {
    this.#hub.closeAll();
  }

  async close(): Promise<void> {
    this.#hub.closeAll();
    await this.#relay?.close();
  }
}
