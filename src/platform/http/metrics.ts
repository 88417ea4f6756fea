/** Prometheus metrics: one registry per server instance, so tests can start many servers. */
import { Counter, collectDefaultMetrics, Histogram, Registry } from "prom-client";

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
