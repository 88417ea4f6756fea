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
 * The check itself is platform/http/signed-request.ts createEd25519RequestCheck (as for messaging
 * handsets). Every refusal is a 401 `signature.*` and is audited as backup.request.
 */
import type { FastifyRequest } from "fastify";
import { HandsafeError } from "../core/errors.ts";
import type { SignatureProfile } from "../core/http-signatures/index.ts";
import type { Platform } from "../platform/context.ts";
import { createBodyCapture, createEd25519RequestCheck } from "../platform/http/signed-request.ts";
import type { ReplayGuard } from "../platform/replay.ts";
import { ACCOUNT_ID } from "./protocol.ts";
import { REQUEST_SIGNATURE, UPLOAD_SIGNATURE } from "./signatures.ts";
import * as store from "./store.ts";

/** Largest JSON body kept for the digest check (account and upload requests are tiny). */
export const MAX_SIGNED_JSON_BYTES = 16 * 1024;

const verified = new WeakMap<FastifyRequest, store.AccountRow>();
const capture = createBodyCapture(MAX_SIGNED_JSON_BYTES);

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

  const check = createEd25519RequestCheck(platform, replay, {
    scope: "backup",
    action: "backup.request",
    actorOf: (keyId) => (ACCOUNT_ID.test(keyId) ? `account:${keyId}` : undefined),
    unknownKeyMessage: "keyid names no account",
  });
  const capturedBody = capture.signedBodyOf;

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
