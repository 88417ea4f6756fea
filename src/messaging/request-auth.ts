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
import type { ParsedSignature } from "../core/http-signatures/index.ts";
import type { Platform } from "../platform/context.ts";
import {
  createBodyCapture,
  createEd25519RequestCheck,
  signedRequestView,
} from "../platform/http/signed-request.ts";
import type { ReplayGuard } from "../platform/replay.ts";
import type { MessagingHandset } from "./inbox.ts";
import { HANDSET_ID, REQUEST_SIGNATURE } from "./protocol.ts";
import * as store from "./store.ts";

/** Largest signed body kept for the digest check (a reply with a 64 KiB attachment fits). */
export const MAX_SIGNED_BODY_BYTES = 128 * 1024;

const verified = new WeakMap<FastifyRequest, MessagingHandset>();

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

  const signatureCheck = createEd25519RequestCheck(platform, replay, {
    scope: "messaging",
    action: "messaging.handset_request",
    actorOf: (keyId) => (HANDSET_ID.test(keyId) ? `handset:${keyId}` : undefined),
    unknownKeyMessage: "keyid names no registered handset",
  });
  const check = (
    request: FastifyRequest,
    keyFor: (parsed: ParsedSignature) => Promise<Uint8Array | undefined>,
  ): Promise<ParsedSignature> =>
    signatureCheck(request, REQUEST_SIGNATURE, capture.signedBodyOf(request), keyFor);

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
