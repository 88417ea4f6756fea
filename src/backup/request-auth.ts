/**
 * Who a backup request comes from: an RFC 9421 Ed25519 signature with keyid = account id, checked
 * with core/http-signatures under one of two profiles (docs/protocols/backup.md §5), and its nonce
 * claimed once in the platform's replay guard (scope `backup:<account id>`):
 *
 * - REQUEST_SIGNATURE: @method, @target-uri and, with a body, content-digest (the exact bytes: a
 *   JSON body is captured before parsing, an envelope is the parsed buffer itself).
 * - UPLOAD_SIGNATURE (PATCH of an upload): @method, @target-uri, upload-offset, content-length —
 *   no digest, so a 64 MiB chunk streams through unbuffered; the upload's integrity is the size and
 *   SHA-256 declared at its start, checked when it completes.
 *
 * The same shape as messaging's request-auth.ts (parse → key → verify → nonce), for accounts
 * instead of handsets. Every refusal is a 401 `signature.*` and is audited as backup.request.
 */
import type { FastifyRequest } from "fastify";
import { HandsafeError } from "../core/errors.ts";
import {
  ed25519VerificationKey,
  nonceRetentionUntil,
  type ParsedSignature,
  parseSignature,
  type SignatureProfile,
  verifySignature,
} from "../core/http-signatures/index.ts";
import type { Platform } from "../platform/context.ts";
import { createBodyCapture, signedRequestView } from "../platform/http/signed-request.ts";
import type { ReplayGuard } from "../platform/replay.ts";
import { ACCOUNT_ID } from "./protocol.ts";
import { REQUEST_SIGNATURE, UPLOAD_SIGNATURE } from "./signatures.ts";
import * as store from "./store.ts";

export { accountIdOf } from "./protocol.ts";
export { REQUEST_SIGNATURE, SIGNATURE_TAGS, UPLOAD_SIGNATURE } from "./signatures.ts";

/** Largest JSON body kept for the digest check (account and upload requests are tiny). */
export const MAX_SIGNED_JSON_BYTES = 16 * 1024;

const verified = new WeakMap<FastifyRequest, store.AccountRow>();
const capture = createBodyCapture(MAX_SIGNED_JSON_BYTES);

function sigError(code: string, message: string): HandsafeError {
  return new HandsafeError(code, message, { status: 401 });
}

type PreHandler = (request: FastifyRequest) => Promise<void>;

export interface BackupRequestAuth {
  /** A route with no body or a JSON body, signed by a registered account. */
  readonly accountRoute: { preParsing: Array<typeof capture.preParsing>; preHandler: PreHandler[] };
  /** A route whose parsed body is the exact bytes (an envelope): the digest is checked against it. */
  readonly rawBodyRoute: { preHandler: PreHandler[] };
  /** An upload PATCH: UPLOAD_SIGNATURE, the body streams unread. */
  readonly uploadRoute: { preHandler: PreHandler[] };
  /** The account a request on one of these routes came from. */
  accountOf(request: FastifyRequest): store.AccountRow;
  /** For account creation: the signature checked against the key in the body, keyid its account id. */
  readonly captureBody: typeof capture.preParsing;
  verifyWith(request: FastifyRequest, expected: { keyId: string; publicKey: Uint8Array }): Promise<void>;
}

export function createBackupRequestAuth(platform: Platform, replay: ReplayGuard): BackupRequestAuth {
  const db = platform.db as store.Db;

  async function refuse(request: FastifyRequest, error: unknown, keyId?: string): Promise<never> {
    await platform.audit({
      actor: keyId && ACCOUNT_ID.test(keyId) ? `account:${keyId}` : `ip:${request.ip}`,
      action: "backup.request",
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
    profile: SignatureProfile,
    body: Uint8Array | undefined,
    keyFor: (parsed: ParsedSignature) => Promise<Uint8Array | undefined>,
  ): Promise<ParsedSignature> {
    let parsed: ParsedSignature;
    try {
      parsed = parseSignature(profile, request.headers);
    } catch (e) {
      return refuse(request, e);
    }
    const publicKey = await keyFor(parsed);
    if (!publicKey)
      return refuse(request, sigError("signature.unknown_key", "keyid names no account"), parsed.keyId);
    try {
      verifySignature(profile, parsed, signedRequestView(request), ed25519VerificationKey(publicKey), {
        nowMs: platform.clock(),
        body,
      });
    } catch (e) {
      return refuse(request, e, parsed.keyId);
    }
    const fresh = await replay.claim(
      `backup:${parsed.keyId}`,
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
  }

  function capturedBody(request: FastifyRequest): Uint8Array | undefined {
    const body = capture.bodyOf(request);
    const declared = Number(request.headers["content-length"] ?? 0);
    if (body === undefined && (declared > 0 || request.headers["transfer-encoding"] !== undefined))
      throw new HandsafeError("internal", "a signed route with a body needs captureBody as preParsing", {
        status: 500,
      });
    return body;
  }

  const requireAccount =
    (profile: SignatureProfile, bodyOf: (request: FastifyRequest) => Uint8Array | undefined): PreHandler =>
    async (request) => {
      let account: store.AccountRow | undefined;
      await check(request, profile, bodyOf(request), async (parsed) => {
        account = ACCOUNT_ID.test(parsed.keyId) ? await store.findAccount(db, parsed.keyId) : undefined;
        return account?.signingKey;
      });
      verified.set(request, account!);
    };

  const rawBody = (request: FastifyRequest): Uint8Array | undefined =>
    request.body instanceof Uint8Array ? request.body : undefined;

  return {
    accountRoute: {
      preParsing: [capture.preParsing],
      preHandler: [requireAccount(REQUEST_SIGNATURE, capturedBody)],
    },
    rawBodyRoute: { preHandler: [requireAccount(REQUEST_SIGNATURE, rawBody)] },
    uploadRoute: { preHandler: [requireAccount(UPLOAD_SIGNATURE, () => undefined)] },
    accountOf(request) {
      const v = verified.get(request);
      if (!v)
        throw new HandsafeError("internal", "route is missing the account signature check", { status: 500 });
      return v;
    },
    captureBody: capture.preParsing,
    async verifyWith(request, expected) {
      await check(request, REQUEST_SIGNATURE, capturedBody(request), async (parsed) =>
        parsed.keyId === expected.keyId ? expected.publicKey : undefined,
      );
    },
  };
}
