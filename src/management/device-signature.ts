/**
 * Fastify hooks that admit a request only when it carries a valid management signature (RFC 9421,
 * docs/protocols/management.md §Signature profile). Other capabilities (updates) put them on their
 * own handset routes:
 *
 *   app.post("/v1/updates/…", { ...signedRoute, schema }, async (request) => {
 *     const { deviceId } = verifiedDevice(request);
 *   });
 *
 * `captureSignedBody` (preParsing) keeps the exact body bytes, which Content-Digest covers;
 * `requireDeviceSignature(service)` (preHandler) checks signature, nonce and dynamic-key use.
 */
import type { FastifyReply, FastifyRequest } from "fastify";
import { HandsafeError } from "../core/errors.ts";
import { createBodyCapture, signedRequestView } from "../platform/http/signed-request.ts";
import { parseRequestSignature } from "./protocol.ts";
import type { ManagementService, VerifiedDevice } from "./server.ts";

const verified = new WeakMap<FastifyRequest, VerifiedDevice>();

/** Largest signed body kept for the digest check. */
export const MAX_SIGNED_BODY_BYTES = 1024 * 1024;

const capture = createBodyCapture(MAX_SIGNED_BODY_BYTES);

/** preParsing: reads the body once, keeps its bytes, hands Fastify an identical stream. */
export const captureSignedBody = capture.preParsing;

/** The request as the signature covers it. */
export const signedViewOf = signedRequestView;

/** preHandler: refuses with signature.* / management.dynamic_key_* (401) unless the request is signed. */
export function requireDeviceSignature(
  service: ManagementService,
): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  return async (request) => {
    const body = capture.bodyOf(request);
    const declared = Number(request.headers["content-length"] ?? 0);
    if (body === undefined && (declared > 0 || request.headers["transfer-encoding"] !== undefined))
      throw new HandsafeError(
        "internal",
        "a signed route with a body must also use captureSignedBody as its preParsing hook",
        { status: 500 },
      );
    const parsed = parseRequestSignature(request.headers);
    verified.set(request, await service.verifySignedRequest(parsed, signedViewOf(request), body));
  };
}

/** Route options for a signed handset route: spread into the route's options. */
export function signedRouteHooks(service: ManagementService) {
  return { preParsing: [captureSignedBody], preHandler: [requireDeviceSignature(service)] };
}

/** The device a signed request came from; only after requireDeviceSignature ran. */
export function verifiedDevice(request: FastifyRequest): VerifiedDevice {
  const v = verified.get(request);
  if (!v) throw new HandsafeError("internal", "route is missing requireDeviceSignature", { status: 500 });
  return v;
}
