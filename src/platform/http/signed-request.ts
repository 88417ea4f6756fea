/**
 * The Fastify side of RFC 9421 signed requests, shared by every capability with signed routes: the
 * exact body bytes (Content-Digest covers them, so they are kept before any parser runs) and the
 * request as a signature covers it. The checks themselves are in core/http-signatures.
 */
import { Readable } from "node:stream";
import type { FastifyReply, FastifyRequest } from "fastify";
import { HandsafeError } from "../../core/errors.ts";
import {
  ed25519VerificationKey,
  nonceRetentionUntil,
  normaliseAuthority,
  type ParsedSignature,
  parseSignature,
  type SignatureProfile,
  type SignedRequestView,
  verifySignature,
} from "../../core/http-signatures/index.ts";
import type { Platform } from "../context.ts";
import type { ReplayGuard } from "../replay.ts";

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
  /**
   * The captured bytes for a signature check: undefined for a request without a body, and an
   * internal error when the request has one but the route forgot `preParsing` (the digest would
   * otherwise go unchecked).
   */
  signedBodyOf(request: FastifyRequest): Uint8Array | undefined;
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
    signedBodyOf(request) {
      const body = bodies.get(request);
      const declared = Number(request.headers["content-length"] ?? 0);
      if (body === undefined && (declared > 0 || request.headers["transfer-encoding"] !== undefined))
        throw new HandsafeError(
          "internal",
          "a signed route with a body needs the body capture as preParsing",
          {
            status: 500,
          },
        );
      return body;
    },
  };
}

export interface Ed25519RequestCheckOptions {
  /** Nonces are claimed once under `${scope}:${keyId}` in the platform's replay guard. */
  scope: string;
  /** The audit action of every refusal. */
  action: string;
  /** The audit actor for a keyid of the right shape (else the caller's address is named). */
  actorOf(keyId: string): string | undefined;
  /** What `signature.unknown_key` says when `keyFor` finds no key. */
  unknownKeyMessage: string;
}

/** Checks one request's signature with the key `keyFor` finds for its keyid; resolves to the parse. */
export type Ed25519RequestCheck = (
  request: FastifyRequest,
  profile: SignatureProfile,
  body: Uint8Array | undefined,
  keyFor: (parsed: ParsedSignature) => Promise<Uint8Array | undefined>,
) => Promise<ParsedSignature>;

/**
 * RFC 9421 with Ed25519 keys, the way every capability with its own key holders checks them
 * (messaging handsets, backup accounts): parse → key → verify → nonce, in that order, so nothing is
 * claimed before the signature holds. Every refusal is a 401 `signature.*`, audited.
 */
export function createEd25519RequestCheck(
  platform: Platform,
  replay: ReplayGuard,
  options: Ed25519RequestCheckOptions,
): Ed25519RequestCheck {
  async function refuse(request: FastifyRequest, error: unknown, keyId?: string): Promise<never> {
    await platform.audit({
      actor: (keyId === undefined ? undefined : options.actorOf(keyId)) ?? `ip:${request.ip}`,
      action: options.action,
      outcome: "deny",
      details: {
        code: error instanceof HandsafeError ? error.code : "internal",
        route: `${request.method} ${request.routeOptions.url ?? "?"}`,
      },
    });
    throw error;
  }
  const sigError = (code: string, message: string) => new HandsafeError(code, message, { status: 401 });

  return async (request, profile, body, keyFor) => {
    let parsed: ParsedSignature;
    try {
      parsed = parseSignature(profile, request.headers);
    } catch (e) {
      return refuse(request, e);
    }
    const publicKey = await keyFor(parsed);
    if (!publicKey)
      return refuse(request, sigError("signature.unknown_key", options.unknownKeyMessage), parsed.keyId);
    try {
      verifySignature(profile, parsed, signedRequestView(request), ed25519VerificationKey(publicKey), {
        nowMs: platform.clock(),
        body,
      });
    } catch (e) {
      return refuse(request, e, parsed.keyId);
    }
    const fresh = await replay.claim(
      `${options.scope}:${parsed.keyId}`,
      parsed.nonce,
      nonceRetentionUntil(profile, parsed.created),
    );
    if (!fresh)
      return refuse(
        request,
        sigError("signature.replayed", "this signature's nonce was already used"),
        parsed.keyId,
      );
    return parsed;
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
