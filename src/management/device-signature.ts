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
import { Readable } from "node:stream";
import type { FastifyReply, FastifyRequest } from "fastify";
import { HandsafeError } from "../core/errors.ts";
import { normaliseAuthority, parseRequestSignature, type SignedRequestView } from "./protocol.ts";
import type { ManagementService, VerifiedDevice } from "./server.ts";

const rawBodies = new WeakMap<FastifyRequest, Uint8Array>();
const verified = new WeakMap<FastifyRequest, VerifiedDevice>();

/** Largest signed body kept for the digest check. */
export const MAX_SIGNED_BODY_BYTES = 1024 * 1024;

/** preParsing: reads the body once, keeps its bytes, hands Fastify an identical stream. */
export async function captureSignedBody(
  request: FastifyRequest,
  _reply: FastifyReply,
  payload: NodeJS.ReadableStream,
): Promise<NodeJS.ReadableStream> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of payload as AsyncIterable<Buffer | string>) {
    const b = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    size += b.length;
    if (size > MAX_SIGNED_BODY_BYTES)
      throw new HandsafeError("request.too_large", "signed request body too large", { status: 413 });
    chunks.push(b);
  }
  const body = Buffer.concat(chunks);
  rawBodies.set(request, new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
  const replay = Readable.from(body.length ? [body] : []);
  (replay as Readable & { receivedEncodedLength?: number }).receivedEncodedLength = body.length;
  return replay;
}

/** The request as the signature covers it. */
export function signedViewOf(request: FastifyRequest): SignedRequestView {
  const url = request.raw.url ?? request.url;
  const q = url.indexOf("?");
  const headers: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(request.headers))
    headers[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : v;
  const scheme = request.protocol;
  return {
    method: request.method,
    scheme,
    authority: normaliseAuthority(request.host, scheme),
    path: q < 0 ? url : url.slice(0, q),
    query: q < 0 ? "" : url.slice(q + 1),
    headers,
  };
}

/** preHandler: refuses with signature.* / management.dynamic_key_* (401) unless the request is signed. */
export function requireDeviceSignature(
  service: ManagementService,
): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  return async (request) => {
    const body = rawBodies.get(request);
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
