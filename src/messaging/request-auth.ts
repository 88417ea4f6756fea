/**
 * Who a handset request comes from: the RFC 9421 signature of protocol.ts's REQUEST_SIGNATURE
 * profile, checked with core/http-signatures, and its nonce claimed once in the platform's replay
 * guard (every node sees every nonce). Fastify hooks for messaging's handset routes:
 *
 *   app.get("/v1/messaging/inbox", { ...auth.handsetRoute }, async (request) => {
 *     const handset = auth.handsetOf(request);
 *   });
 *
 * Every refusal is a 401 `signature.*` (unknown key: `signature.unknown_key`; a nonce seen before:
 * `signature.replayed`) and is audited as messaging.handset_request.
 */
import type { FastifyRequest } from "fastify";
import { HandsafeError } from "../core/errors.ts";
import {
  ed25519VerificationKey,
  nonceRetentionUntil,
  type ParsedSignature,
  parseSignature,
  verifySignature,
} from "../core/http-signatures/index.ts";
import type { Platform } from "../platform/context.ts";
import { createBodyCapture, signedRequestView } from "../platform/http/signed-request.ts";
import type { ReplayGuard } from "../platform/replay.ts";
import { HANDSET_ID, REQUEST_SIGNATURE } from "./protocol.ts";
import type { MessagingHandset } from "./inbox.ts";
import * as store from "./store.ts";

/** Largest signed body kept for the digest check (a reply with a 64 KiB attachment fits). */
export const MAX_SIGNED_BODY_BYTES = 128 * 1024;

const verified = new WeakMap<FastifyRequest, MessagingHandset>();

function sigError(code: string, message: string): HandsafeError {
  return new HandsafeError(code, message, { status: 401 });
}

const capture = createBodyCapture(MAX_SIGNED_BODY_BYTES);

/** preParsing: reads the body once, keeps its exact bytes (Content-Digest covers them), replays it. */
export const captureBody = capture.preParsing;

/** The request as its signature covers it (scheme and host as this server was reached). */
export const viewOf = signedRequestView;

export interface HandsetRequestAuth {
  /** Route options of a route only an active registered handset may call. */
  readonly handsetRoute: {
    preParsing: Array<typeof captureBody>;
    preHandler: Array<(request: FastifyRequest) => Promise<void>>;
  };
  /** The handset a request on a handsetRoute came from. */
  handsetOf(request: FastifyRequest): MessagingHandset;
  /**
   * For a route whose key is not (yet) a handset's: the signature checked against `publicKey`, which
   * must be the key named by `keyId` (e.g. a registration's auth key and handset id).
   */
  verifyWith(request: FastifyRequest, expected: { keyId: string; publicKey: Uint8Array }): Promise<void>;
}

export function createHandsetRequestAuth(platform: Platform, replay: ReplayGuard): HandsetRequestAuth {
  const db = platform.db as store.Db;

  async function refuse(request: FastifyRequest, error: unknown, keyId?: string): Promise<never> {
    await platform.audit({
      actor: keyId && HANDSET_ID.test(keyId) ? `handset:${keyId}` : `ip:${request.ip}`,
      action: "messaging.handset_request",
      outcome: "deny",
      details: {
        code: error instanceof HandsafeError ? error.code : "internal",
        route: `${request.method} ${request.routeOptions.url ?? "?"}`,
      },
    });
    throw error;
  }

  /** Parse → key → verify → nonce, in that order: nothing is claimed before the signature holds. */
  async function check(
    request: FastifyRequest,
    keyFor: (parsed: ParsedSignature) => Promise<Uint8Array | undefined>,
  ): Promise<ParsedSignature> {
    const body = capture.bodyOf(request);
    const declared = Number(request.headers["content-length"] ?? 0);
    if (body === undefined && (declared > 0 || request.headers["transfer-encoding"] !== undefined))
      throw new HandsafeError("internal", "a signed route with a body needs captureBody as preParsing", {
        status: 500,
      });
    let parsed: ParsedSignature;
    try {
      parsed = parseSignature(REQUEST_SIGNATURE, request.headers);
    } catch (e) {
      return refuse(request, e);
    }
    const publicKey = await keyFor(parsed);
    if (!publicKey)
      return refuse(
        request,
        sigError("signature.unknown_key", "keyid names no registered handset"),
        parsed.keyId,
      );
    try {
      verifySignature(REQUEST_SIGNATURE, parsed, viewOf(request), ed25519VerificationKey(publicKey), {
        nowMs: platform.clock(),
        body,
      });
    } catch (e) {
      return refuse(request, e, parsed.keyId);
    }
    const fresh = await replay.claim(
      `messaging:${parsed.keyId}`,
      parsed.nonce,
      nonceRetentionUntil(REQUEST_SIGNATURE, parsed.created),
    );
    if (!fresh)
      return refuse(
        request,
        sigError("signature.replayed", "this signature's nonce was already used"),
        parsed.keyId,
      );
    return parsed;
  }

  const requireHandset = async (request: FastifyRequest): Promise<void> => {
    let handset: store.HandsetRow | undefined;
    await check(request, async (parsed) => {
      handset = HANDSET_ID.test(parsed.keyId) ? await store.findHandset(db, parsed.keyId) : undefined;
      return handset?.state === "active" ? handset.authKey : undefined;
    });
    verified.set(request, { id: handset!.id, phoneNumber: handset!.phoneNumber });
  };

  return {
    handsetRoute: { preParsing: [captureBody], preHandler: [requireHandset] },
    handsetOf(request) {
      const v = verified.get(request);
      if (!v)
        throw new HandsafeError("internal", "route is missing the handset signature check", { status: 500 });
      return v;
    },
    async verifyWith(request, expected) {
      await check(request, async (parsed) =>
        parsed.keyId === expected.keyId ? expected.publicKey : undefined,
      );
    },
  };
}
