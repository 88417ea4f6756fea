/** Prometheus metrics: one registry per server instance, so tests can start many servers. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

export interface Metrics {
  registry: Registry;
  httpRequests: Counter<"method" | "route" | "status">;
  httpDuration: Histogram<"method" | "route">;
  /** Security decisions by action and outcome (mirrors the audit log, cheap to graph). */
  securityEvents: Counter<"action" | "outcome">;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "handsafe_" });
  return {
    registry,
    httpRequests: new Counter({
      name: "handsafe_http_requests_total",
      help: "HTTP requests answered, by method, route pattern and status",
      labelNames: ["method", "route", "status"],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: "handsafe_http_request_duration_seconds",
      help: "HTTP request duration in seconds, by method and route pattern",
      labelNames: ["method", "route"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    securityEvents: new Counter({
      name: "handsafe_security_events_total",
      help: "Audited security decisions, by action and outcome",
      labelNames: ["action", "outcome"],
      registers: [registry],
    }),
  };
}

/**
 * A gauge read when /metrics is scraped, from counts that another part keeps (the SQLite checkpoint
 * worker, a group commit): nothing is updated on their hot paths. `read` gives one source's value
 * for its labels; sources with the same name and labels in one registry (two services on one
 * platform, as tests run them) are added together.
 */
export function collectedGauge(
  registry: Registry,
  name: string,
  help: string,
  labels: Record<string, string>,
  read: () => number,
): void {
  const byName = collected.get(registry) ?? new Map<string, Source[]>();
  collected.set(registry, byName);
  let sources = byName.get(name);
  if (sources === undefined) {
    const all: Source[] = [];
    sources = all;
    byName.set(name, all);
    new Gauge({
      name,
      help,
      labelNames: Object.keys(labels),
      registers: [registry],
      collect() {
        this.reset();
        for (const s of all) this.inc(s.labels, s.read());
      },
    });
  }
  sources.push({ labels, read });
}

interface Source {
  labels: Record<string, string>;
  read: () => number;
}

/** Per registry, per gauge name: the sources read at each scrape (collectedGauge). */
const collected = new WeakMap<Registry, Map<string, Source[]>>();

/**
 * A group commit's counts (db/group-commit.ts) as gauges labelled by `group`: units per batch is how
 * many callers shared each commit, and retries how often a unit's failure made its batch run again.
 */
export function groupCommitMetrics(
  registry: Registry,
  group: string,
  commit: { stats(): { units: number; batches: number; retries: number } },
): void {
  const labels = { group };
  collectedGauge(
    registry,
    "handsafe_group_commit_units",
    "Write units committed through a group commit since start",
    labels,
    () => commit.stats().units,
  );
  collectedGauge(
    registry,
    "handsafe_group_commit_batches",
    "Batches (database transactions) a group commit ran since start",
    labels,
    () => commit.stats().batches,
  );
  collectedGauge(
    registry,
    "handsafe_group_commit_retries",
    "Batches run again with a savepoint per unit, because a unit threw",
    labels,
    () => commit.stats().retries,
  );
}
