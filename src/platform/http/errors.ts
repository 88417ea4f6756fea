/**
 * The one place where anything thrown inside a route becomes the wire error
 * `{"error":{"code","message"}}`. Stack traces and causes stay in the log, never in a response.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { HandsafeError } from "../../core/errors.ts";

/** Fastify's own error codes mapped to ours, so clients meet one vocabulary. */
const FASTIFY_CODES: Record<string, { code: string; status: number; message?: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { code: "request.too_large", status: 413, message: "request body too large" },
  FST_ERR_CTP_INVALID_JSON_BODY: { code: "request.malformed_json", status: 400 },
  FST_ERR_CTP_EMPTY_JSON_BODY: { code: "request.malformed_json", status: 400, message: "empty JSON body" },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { code: "request.unsupported_media_type", status: 415 },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { code: "request.invalid_length", status: 400 },
  FST_ERR_VALIDATION: { code: "request.invalid", status: 400 },
};

export function toHandsafeError(error: unknown): HandsafeError {
  if (error instanceof HandsafeError) return error;
  const fe = error as FastifyError & { validation?: unknown };
  if (fe && typeof fe === "object") {
    if (fe.validation) return new HandsafeError("request.invalid", fe.message, { status: 400 });
    const mapped = fe.code ? FASTIFY_CODES[fe.code] : undefined;
    if (mapped)
      return new HandsafeError(mapped.code, mapped.message ?? fe.message, { status: mapped.status });
    if (fe instanceof SyntaxError) return new HandsafeError("request.malformed_json", "malformed JSON body");
    if (fe.statusCode === 429) return new HandsafeError("request.rate_limited", fe.message, { status: 429 });
    if (typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500)
      return new HandsafeError("request.invalid", fe.message, { status: fe.statusCode });
  }
  return new HandsafeError("internal", "internal error", { status: 500, cause: error });
}

export function errorHandler(error: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const he = toHandsafeError(error);
  if (he.status >= 500) request.log.error({ err: error }, "request failed");
  else request.log.info({ code: he.code, status: he.status }, he.message);
  void reply.status(he.status).type("application/json").send(JSON.stringify(he.toJSON()));
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): void {
  const he = new HandsafeError("route.not_found", `no route ${request.method} ${request.url.split("?")[0]}`, {
    status: 404,
  });
  void reply.status(404).type("application/json").send(JSON.stringify(he.toJSON()));
}
