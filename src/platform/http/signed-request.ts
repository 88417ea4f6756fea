/**
 * The Fastify side of RFC 9421 signed requests, shared by every capability with signed routes: the
 * exact body bytes (Content-Digest covers them, so they are kept before any parser runs) and the
 * request as a signature covers it. The checks themselves are in core/http-signatures.
 */
import { Readable } from "node:stream";
import type { FastifyReply, FastifyRequest } from "fastify";
import { HandsafeError } from "../../core/errors.ts";
import { normaliseAuthority, type SignedRequestView } from "../../core/http-signatures/index.ts";

type PreParsing = (
  request: FastifyRequest,
  reply: FastifyReply,
  payload: NodeJS.ReadableStream,
) => Promise<NodeJS.ReadableStream>;

export interface BodyCapture {
  /** preParsing: reads the body once (refusing it past `maxBytes`), keeps its bytes, replays it. */
  preParsing: PreParsing;
  /** The captured bytes, or undefined when the route did not use `preParsing`. */
  bodyOf(request: FastifyRequest): Uint8Array | undefined;
}

export function createBodyCapture(maxBytes: number): BodyCapture {
  const bodies = new WeakMap<FastifyRequest, Uint8Array>();
  return {
    async preParsing(request, _reply, payload) {
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of payload as AsyncIterable<Buffer | string>) {
        const b = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
        size += b.length;
        if (size > maxBytes)
          throw new HandsafeError("request.too_large", "signed request body too large", { status: 413 });
        chunks.push(b);
      }
      const body = Buffer.concat(chunks);
      bodies.set(request, new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
      const replay = Readable.from(body.length ? [body] : []);
      // Fastify's body limit counts what the stream says it received.
      (replay as Readable & { receivedEncodedLength?: number }).receivedEncodedLength = body.length;
      return replay;
    },
    bodyOf: (request) => bodies.get(request),
  };
}

/** The request as its signature covers it: method, scheme and host as this server was reached, path, query. */
export function signedRequestView(request: FastifyRequest): SignedRequestView {
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
