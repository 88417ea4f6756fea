/**
 * The Fastify HTTPS application: everything every capability shares — errors, limits, logs,
 * metrics, health, OpenAPI. Capabilities add their routes as plugins afterwards.
 */
import rateLimit from "@fastify/rate-limit";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import { HandsafeError } from "../../core/errors.ts";
import { errorHandler, notFoundHandler } from "./errors.ts";
import type { Metrics } from "./metrics.ts";

export type App = FastifyInstance<
  import("node:http").Server | import("node:https").Server,
  import("node:http").IncomingMessage,
  import("node:http").ServerResponse,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

export interface HttpAppOptions {
  tls?: { cert: string; key: string };
  logLevel: string;
  bodyLimit: number;
  rateLimitPerMinute: number;
  metrics: Metrics;
  /** Resolves when the server can serve (database reachable); throws otherwise. */
  readiness: () => Promise<void>;
  version: string;
  publicUrl: string;
}

/**
 * Routes (method + path, without query) that answer `Expect: 100-continue` themselves, once the
 * request passed their checks (see `continueWhenRead`). Every other route sends it at once.
 */
const deferredContinue = new WeakMap<object, Set<string>>();

export function deferContinue(app: App, method: string, path: string): void {
  const routes = deferredContinue.get(app.server) ?? new Set<string>();
  routes.add(`${method.toUpperCase()} ${path}`);
  deferredContinue.set(app.server, routes);
}

/**
 * RFC 9110 §10.1.1: a client that sent `Expect: 100-continue` holds the body back until it hears
 * 100. Wrapping a streamed body with this sends the 100 when the route first reads the body — after
 * its checks, so a refused upload is refused before a byte of it travels.
 */
export function continueWhenRead(
  request: { headers: Record<string, unknown>; raw: { headers: Record<string, unknown> } },
  reply: { raw: { writeContinue(): void } },
  body: AsyncIterable<Uint8Array>,
): AsyncIterable<Uint8Array> {
  const expects = String(request.headers["expect"] ?? "").toLowerCase() === "100-continue";
  if (!expects) return body;
  return {
    async *[Symbol.asyncIterator]() {
      reply.raw.writeContinue();
      yield* body;
    },
  };
}

export async function createHttpApp(options: HttpAppOptions): Promise<App> {
  const app = Fastify({
    ...(options.tls ? { https: { cert: options.tls.cert, key: options.tls.key } } : {}),
    logger: {
      level: options.logLevel,
      redact: ["req.headers.authorization", "req.headers.cookie"],
    },
    bodyLimit: options.bodyLimit,
    // Typed errors, never a hang: slow or stuck clients are cut off.
    connectionTimeout: 30_000,
    requestTimeout: 30_000,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
    return503OnClosing: true,
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as App;

  app.server.on("checkContinue", (req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (!deferredContinue.get(app.server)?.has(`${req.method} ${path}`)) res.writeContinue();
    app.server.emit("request", req, res);
  });

  app.setErrorHandler(errorHandler);
  // HTML forms (the browser sign-in page) post urlencoded bodies; the same schemas check them.
  app.addContentTypeParser(
    "application/x-www-form-urlencoded",
    { parseAs: "string" },
    (_request, body, done) => done(null, Object.fromEntries(new URLSearchParams(body as string))),
  );
  app.setNotFoundHandler(notFoundHandler);

  const { metrics } = options;
  app.addHook("onResponse", async (request, reply) => {
    const route = request.routeOptions.url ?? "unmatched";
    metrics.httpRequests.inc({ method: request.method, route, status: String(reply.statusCode) });
    metrics.httpDuration.observe({ method: request.method, route }, reply.elapsedTime / 1000);
  });

  // HANDSAFE_RATE_LIMIT=0 turns the global limit off; per-route limits (logins) still apply.
  await app.register(rateLimit, {
    global: options.rateLimitPerMinute > 0,
    max: options.rateLimitPerMinute || 1,
    timeWindow: 60_000,
    errorResponseBuilder: (_request, context) =>
      new HandsafeError("request.rate_limited", `too many requests, retry in ${context.after}`, {
        status: 429,
      }),
  });

  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "handsafe",
        version: options.version,
        description:
          "Secures what passes between mobile handsets and the servers that manage them. " +
          'Errors are `{"error":{"code","message"}}` with a stable code.',
      },
      servers: [{ url: options.publicUrl }],
      components: {
        securitySchemes: {
          bearer: { type: "http", scheme: "bearer", description: "admin token or handset session token" },
        },
      },
    },
  });
  await app.register(swaggerUi, { routePrefix: "/docs" });

  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());

  app.get("/healthz", { schema: { hide: true }, config: { rateLimit: false } }, async () => ({
    status: "ok",
  }));

  app.get("/readyz", { schema: { hide: true }, config: { rateLimit: false } }, async (_request, reply) => {
    try {
      await options.readiness();
      return { status: "ready" };
    } catch {
      return reply
        .status(503)
        .send(new HandsafeError("server.not_ready", "storage is not reachable", { status: 503 }).toJSON());
    }
  });

  app.get("/metrics", { schema: { hide: true }, config: { rateLimit: false } }, async (_request, reply) => {
    reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  return app;
}
