/**
 * The webhook dispatcher (docs/protocols/webhooks.md): on every node, a poll that claims due rows of
 * the outbox by compare-and-set, POSTs each one signed, and records the outcome — delivered on 2xx,
 * otherwise tried again after the next wait, failed after the last try. Metrics and audit here.
 */
import type { Kysely } from "kysely";
import { Counter } from "prom-client";
import { utf8 } from "../../core/codec/bytes.ts";
import { randomToken } from "../../core/crypto/random.ts";
import { HandsafeError } from "../../core/errors.ts";
import type { Platform } from "../context.ts";
import {
  checkWebhookUrl,
  postWebhook,
  WEBHOOK_MAX_RESPONSE_BYTES,
  WEBHOOK_TIMEOUT_MS,
} from "./webhook-post.ts";
import { signWebhookRequest } from "./webhook-signature.ts";
import * as store from "./webhook-store.ts";
import { webhookSecretAad } from "./webhook-store.ts";

/** The waits between tries: 8 tries in all, the last about 16 minutes after the first. */
export const WEBHOOK_RETRY_DELAYS_MS: readonly number[] = Object.freeze([
  1_000, 3_000, 10_000, 30_000, 90_000, 240_000, 600_000,
]);
export const WEBHOOK_LEASE_MS = 60_000;

type Db = Kysely<store.WebhookTables>;

export type WebhookEvent =
  | { type: "delivered"; id: string; kind: string; attempts: number; status: number }
  | {
      type: "retry";
      id: string;
      kind: string;
      attempts: number;
      status: number | null;
      error: string;
      at: number;
    }
  | { type: "failed"; id: string; kind: string; attempts: number; status: number | null; error: string }
  | { type: "error"; error: unknown };

export interface WebhookDispatcherOptions {
  /** How often this node looks for due rows. */
  pollIntervalMs?: number;
  /** Rows claimed per look (sent concurrently). */
  batchSize?: number;
  timeoutMs?: number;
  maxResponseBytes?: number;
  /** The waits between tries; tries = length + 1. */
  retryDelaysMs?: readonly number[];
  /** Up to this fraction is added at random to each wait, so retries of many rows spread out. */
  jitter?: number;
  leaseMs?: number;
  /** Extra trusted certificates (PEM) for the receivers: tests with a self-signed receiver. */
  ca?: string | readonly string[];
  /** Progress and trouble, for the log. */
  onEvent?: (event: WebhookEvent) => void;
}

type DispatcherPlatform = Pick<Platform, "db" | "keyring" | "clock" | "audit" | "metrics">;

function deliveriesCounter(platform: DispatcherPlatform): Counter<"kind" | "outcome"> {
  const name = "handsafe_webhook_attempts_total";
  const existing = platform.metrics.registry.getSingleMetric(name);
  if (existing) return existing as Counter<"kind" | "outcome">;
  return new Counter({
    name,
    help: "Webhook tries, by kind and outcome (delivered, retry, failed)",
    labelNames: ["kind", "outcome"],
    registers: [platform.metrics.registry],
  });
}

function reasonOf(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  return (code ? `${code}: ${message}` : message).slice(0, 200);
}

/**
 * Delivers the outbox from this node: `start()` polls every `pollIntervalMs` on an unref'd timer,
 * `runOnce()` makes one pass (tests drive it with their own clock), `stop()` ends the timer,
 * aborts the calls in flight and gives their rows back untried.
 */
export class WebhookDispatcher {
  private readonly db: Db;
  private readonly options: Required<Omit<WebhookDispatcherOptions, "ca" | "onEvent">> &
    Pick<WebhookDispatcherOptions, "ca" | "onEvent">;
  private readonly attemptsTotal: Counter<"kind" | "outcome">;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;
  private readonly abort = new AbortController();
  private stopped = false;

  constructor(
    private readonly platform: DispatcherPlatform,
    options: WebhookDispatcherOptions = {},
  ) {
    this.db = platform.db as Db;
    this.options = {
      pollIntervalMs: options.pollIntervalMs ?? 1000,
      batchSize: options.batchSize ?? 16,
      timeoutMs: options.timeoutMs ?? WEBHOOK_TIMEOUT_MS,
      maxResponseBytes: options.maxResponseBytes ?? WEBHOOK_MAX_RESPONSE_BYTES,
      retryDelaysMs: options.retryDelaysMs ?? WEBHOOK_RETRY_DELAYS_MS,
      jitter: options.jitter ?? 0.1,
      leaseMs: options.leaseMs ?? WEBHOOK_LEASE_MS,
      ...(options.ca !== undefined ? { ca: options.ca } : {}),
      ...(options.onEvent ? { onEvent: options.onEvent } : {}),
    };
    if (this.options.leaseMs < this.options.timeoutMs * 2)
      throw new HandsafeError("config.invalid", "the webhook lease must be at least twice the timeout", {
        status: 500,
      });
    this.attemptsTotal = deliveriesCounter(platform);
  }

  /** Tries in all, the first included. */
  get maxAttempts(): number {
    return this.options.retryDelaysMs.length + 1;
  }

  start(): this {
    if (this.timer || this.stopped) return this;
    this.timer = setInterval(() => {
      if (this.running) return;
      this.runOnce().catch((error: unknown) => this.options.onEvent?.({ type: "error", error }));
    }, this.options.pollIntervalMs);
    this.timer.unref();
    return this;
  }

  /** One pass: claims the rows due now and makes one try of each; resolves with how many were tried. */
  runOnce(): Promise<number> {
    if (this.stopped) return Promise.resolve(0);
    // One pass at a time on this node: a call while one runs starts right after it.
    const pass = (this.running ?? Promise.resolve(0)).catch(() => 0).then(() => this.pass());
    const tracked = pass.finally(() => {
      if (this.running === tracked) this.running = undefined;
    });
    this.running = tracked;
    return tracked;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.abort.abort();
    await this.running?.catch(() => 0);
  }

  private async pass(): Promise<number> {
    const now = this.platform.clock();
    const due = await store.dueWebhooks(this.db, now, this.options.batchSize);
    const tries: Array<Promise<void>> = [];
    for (const candidate of due) {
      if (this.stopped) break;
      const token = randomToken(12);
      const row = await store.claimWebhook(
        this.db,
        candidate.id,
        candidate.attempts,
        token,
        now,
        now + this.options.leaseMs,
      );
      if (row) tries.push(this.attempt(row, token));
    }
    await Promise.all(tries);
    return tries.length;
  }

  private async attempt(row: store.WebhookRow, token: string): Promise<void> {
    if (row.attempts > this.maxAttempts) {
      // The last try's node died mid-call and its lease lapsed: that was the last try.
      await this.finish(row, token, null, "the last try's node stopped during the call");
      return;
    }
    let status: number | null = null;
    let error: string | null = null;
    let secret: Uint8Array = new Uint8Array(0);
    try {
      secret = this.platform.keyring.openAtRest(row.sealedSecret, webhookSecretAad(row.id));
      const url = checkWebhookUrl(row.url);
      const body = utf8(row.body);
      const headers = signWebhookRequest({
        url: row.url,
        body,
        secret,
        keyId: row.keyId,
        tag: row.tag,
        created: Math.floor(this.platform.clock() / 1000),
      });
      secret.fill(0);
      const answer = await postWebhook(
        url,
        { ...headers, "content-type": "application/json", "user-agent": "handsafe-webhooks/1" },
        body,
        {
          timeoutMs: this.options.timeoutMs,
          maxResponseBytes: this.options.maxResponseBytes,
          signal: this.abort.signal,
          ...(this.options.ca !== undefined ? { ca: this.options.ca } : {}),
        },
      );
      status = answer.status;
      if (status < 200 || status > 299) error = `HTTP ${status}`;
    } catch (e) {
      if (this.abort.signal.aborted) {
        await store.releaseWebhook(this.db, row.id, token, this.platform.clock());
        return;
      }
      error = reasonOf(e);
    } finally {
      secret.fill(0);
    }
    await this.finish(row, token, status, error);
  }

  private async finish(row: store.WebhookRow, token: string, status: number | null, error: string | null) {
    const now = this.platform.clock();
    const base = { id: row.id, kind: row.kind, attempts: row.attempts };
    const host = new URL(row.url).host;
    if (error === null && status !== null) {
      if (
        !(await store.finishWebhookTry(
          this.db,
          row.id,
          token,
          { state: "delivered", status, error: null },
          now,
        ))
      )
        return;
      this.attemptsTotal.inc({ kind: row.kind, outcome: "delivered" });
      this.options.onEvent?.({ type: "delivered", ...base, status });
      await this.platform.audit({
        actor: "system",
        action: "webhook.delivered",
        subject: `webhook:${row.id}`,
        outcome: "info",
        details: { kind: row.kind, host, attempts: row.attempts, status },
      });
      return;
    }
    const reason = error ?? "no answer";
    if (row.attempts >= this.maxAttempts) {
      if (
        !(await store.finishWebhookTry(
          this.db,
          row.id,
          token,
          { state: "failed", status, error: reason },
          now,
        ))
      )
        return;
      this.attemptsTotal.inc({ kind: row.kind, outcome: "failed" });
      this.options.onEvent?.({ type: "failed", ...base, status, error: reason });
      await this.platform.audit({
        actor: "system",
        action: "webhook.failed",
        subject: `webhook:${row.id}`,
        outcome: "error",
        details: { kind: row.kind, host, attempts: row.attempts, status, reason },
      });
      return;
    }
    const wait = this.options.retryDelaysMs[row.attempts - 1]!;
    const at = now + Math.round(wait * (1 + Math.random() * this.options.jitter));
    if (
      !(await store.finishWebhookTry(
        this.db,
        row.id,
        token,
        { state: "pending", status, error: reason, nextAttemptAt: at },
        now,
      ))
    )
      return;
    this.attemptsTotal.inc({ kind: row.kind, outcome: "retry" });
    this.options.onEvent?.({ type: "retry", ...base, status, error: reason, at });
  }
}

/** A dispatcher polling on this node (server.ts starts one; `stop()` it before closing the database). */
export function startWebhookDispatcher(
  platform: DispatcherPlatform,
  options: WebhookDispatcherOptions = {},
): WebhookDispatcher {
  return new WebhookDispatcher(platform, options).start();
}
