/**
 * This node's push streams: which device holds which open event stream (GET /v1/management/push,
 * GET /v1/messaging/inbox/events: a "device" is whatever a capability keys its streams by),
 * keep-alive comments so that idle proxies and NATs keep the connection open, a lifetime after
 * which the stream is ended (the handset reconnects and authenticates afresh), and a cap on streams
 * per device (a reconnecting handset replaces its half-dead stream). Process memory only: other
 * nodes are reached through push-relay.ts.
 */
import { PassThrough } from "node:stream";
import { formatComment } from "../../core/codec/sse.ts";

export interface PushHubOptions {
  /** A comment is written to every stream this often. */
  keepAliveMs: number;
  /** A stream older than this is ended at the next keep-alive tick. */
  maxStreamMs: number;
  /** Beyond this many streams of one device the oldest is ended. */
  maxStreamsPerDevice: number;
  /** Real time (Date.now by default): lifetimes and keep-alives are about sockets, not protocol. */
  clock?: () => number;
  /** The first stream of a device opened (true) or its last one closed (false). */
  onPresence?: (deviceId: string, connected: boolean) => void;
}

/** Bytes a stream may have queued unread before it counts as dead (a push event is ~250). */
const MAX_QUEUED_BYTES = 64 * 1024;

export interface PushConnection {
  readonly deviceId: string;
  /** The response body: hand it to reply.send(). */
  readonly stream: PassThrough;
  /** Writes one framed SSE block; false when the stream is gone. */
  write(chunk: string): boolean;
}

interface Entry extends PushConnection {
  readonly openedAt: number;
}

export class PushHub {
  readonly #byDevice = new Map<string, Entry[]>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  readonly #clock: () => number;

  constructor(private readonly options: PushHubOptions) {
    this.#clock = options.clock ?? Date.now;
  }

  /** A new stream for a device (its first chunk should follow at once: headers go with it). */
  open(deviceId: string): PushConnection {
    const stream = new PassThrough();
    const entry: Entry = {
      deviceId,
      stream,
      openedAt: this.#clock(),
      write: (chunk) => {
        if (stream.destroyed || stream.writableEnded) return false;
        if (stream.writableLength > MAX_QUEUED_BYTES) {
          stream.destroy();
          return false;
        }
        stream.write(chunk);
        return true;
      },
    };
    if (this.#closed) {
      stream.end();
      return entry;
    }
    const list = this.#byDevice.get(deviceId) ?? [];
    list.push(entry);
    this.#byDevice.set(deviceId, list);
    // Fastify destroys the body stream when the client goes away; either way the entry leaves.
    stream.once("close", () => this.#remove(entry));
    if (list.length === 1) this.options.onPresence?.(deviceId, true);
    while (list.length > this.options.maxStreamsPerDevice) list.shift()!.stream.end();
    this.#startTimer();
    return entry;
  }

  isConnected(deviceId: string): boolean {
    return (this.#byDevice.get(deviceId)?.length ?? 0) > 0;
  }

  connectedDevices(): string[] {
    return [...this.#byDevice.keys()];
  }

  /** Writes the chunk to every open stream of the device; how many took it. */
  send(deviceId: string, chunk: string): number {
    let written = 0;
    for (const entry of [...(this.#byDevice.get(deviceId) ?? [])]) if (entry.write(chunk)) written++;
    return written;
  }

  /** Ends every stream (server shutdown): handsets reconnect, to another node if there is one. */
  closeAll(): void {
    this.#closed = true;
    this.#stopTimer();
    for (const list of [...this.#byDevice.values()]) for (const entry of [...list]) entry.stream.end();
  }

  #remove(entry: Entry): void {
    const list = this.#byDevice.get(entry.deviceId);
    if (!list) return;
    const at = list.indexOf(entry);
    if (at < 0) return;
    list.splice(at, 1);
    if (list.length === 0) {
      this.#byDevice.delete(entry.deviceId);
      this.options.onPresence?.(entry.deviceId, false);
    }
    if (this.#byDevice.size === 0) this.#stopTimer();
  }

  #tick(): void {
    const now = this.#clock();
    const ping = formatComment("keep-alive");
    for (const list of [...this.#byDevice.values()])
      for (const entry of [...list]) {
        if (now - entry.openedAt >= this.options.maxStreamMs) entry.stream.end();
        else entry.write(ping);
      }
  }

  #startTimer(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => this.#tick(), this.options.keepAliveMs);
    this.#timer.unref();
  }

  #stopTimer(): void {
    if (this.#timer === undefined) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
