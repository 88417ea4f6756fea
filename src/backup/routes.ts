/**
 * Secure backup's HTTP surface (docs/protocols/backup.md §5). Every call is signed by an account
 * (request-auth.ts); account creation is signed by the key it registers. Routes parse, authorise
 * and call the service (server.ts). They live in one encapsulated plugin so the two bodies that are
 * not JSON get their own parsers: an envelope is read whole as bytes (≤ 16 MiB, its digest is
 * checked against them), an upload chunk is handed over as the request stream (≤ 64 MiB, never
 * buffered). The upload and blob routes are in upload-routes.ts.
 */
import type { FastifyInstance } from "fastify";
import type { Kysely } from "kysely";
import { Type } from "typebox";
import { parseRecipient } from "../core/age/keys.ts";
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { HandsafeError } from "../core/errors.ts";
import type { BlobStore } from "../platform/blobs/types.ts";
import type { Platform } from "../platform/context.ts";
import type { App } from "../platform/http/app.ts";
import { createDatabaseReplayGuard, type ReplayTables } from "../platform/replay.ts";
import { ACCOUNT_ID, accountIdOf, MAX_ENVELOPE_BYTES } from "./protocol.ts";
import { createBackupRequestAuth } from "./request-auth.ts";
import { BackupService } from "./server.ts";
import { mediaType, registerUploadRoutes, UPLOAD_CONTENT_TYPE } from "./upload-routes.ts";

export { UPLOAD_CONTENT_TYPE } from "./upload-routes.ts";

const ErrorBody = Type.Object({
  error: Type.Object({ code: Type.String(), message: Type.String(), details: Type.Optional(Type.Unknown()) }),
});
const Id = Type.String({ maxLength: 100 });
const Handle = Type.String({ pattern: "^[a-z0-9][a-z0-9._-]{1,62}$" });
const Account = Type.Object({
  accountId: Type.String(),
  signingKey: Type.String(),
  recipient: Type.String(),
  handle: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.Integer(),
});
const Summary = {
  id: Type.String(),
  kind: Type.String(),
  createdAt: Type.Integer(),
  parent: Type.Union([Type.String(), Type.Null()]),
  items: Type.Integer(),
  bytes: Type.Integer(),
};
const ENVELOPE_TYPES = ["application/vnd.syncml+xml", "application/xml"];

export interface BackupRouteDeps {
  blobs: BlobStore;
  quotaBytes: number;
}

export function registerBackupRoutes(app: App, platform: Platform, deps: BackupRouteDeps): BackupService {
  const service = new BackupService(platform, deps);
  const auth = createBackupRequestAuth(
    platform,
    createDatabaseReplayGuard(platform.db as Kysely<ReplayTables>, platform.clock),
  );

  void app.register(async (plugin: FastifyInstance) => {
    const scope = plugin as unknown as App;
    // The envelope's exact bytes: the signature's content-digest and Envelope-Signature cover them.
    scope.addContentTypeParser(
      ENVELOPE_TYPES,
      { parseAs: "buffer", bodyLimit: MAX_ENVELOPE_BYTES },
      (_request, body, done) => done(null, body),
    );
    // An upload chunk is the request stream itself: the route streams it into the blob store.
    scope.addContentTypeParser(UPLOAD_CONTENT_TYPE, (_request, payload, done) => done(null, payload));

    // --- the operator -------------------------------------------------------------------------------

    scope.get(
      "/v1/admin/backup/accounts",
      {
        schema: {
          tags: ["backup"],
          summary: "Backup accounts with their storage use against the quota and their backups (no content)",
          security: [{ bearer: [] }],
          querystring: Type.Object(
            {
              after: Type.Optional(Type.String({ pattern: ACCOUNT_ID.source })),
              limit: Type.Optional(Type.String({ pattern: "^[0-9]{1,4}$" })),
            },
            { additionalProperties: false },
          ),
          response: {
            200: Type.Object({
              quotaBytes: Type.Integer(),
              accounts: Type.Array(
                Type.Object({
                  id: Type.String(),
                  handle: Type.Union([Type.String(), Type.Null()]),
                  createdAt: Type.Integer(),
                  bytesUsed: Type.Integer(),
                  backups: Type.Integer(),
                  lastBackupAt: Type.Union([Type.Integer(), Type.Null()]),
                }),
              ),
            }),
            401: ErrorBody,
            403: ErrorBody,
          },
        },
      },
      async (request) => {
        await platform.guards.admin(request);
        const limit = Math.min(1000, Math.max(1, Number(request.query.limit ?? 100)));
        return service.accountUsage({
          limit,
          ...(request.query.after ? { after: request.query.after } : {}),
        });
      },
    );

    // --- accounts and the directory -----------------------------------------------------------------

    scope.post(
      "/v1/backup/accounts",
      {
        preParsing: [auth.captureBody],
        schema: {
          tags: ["backup"],
          summary:
            "Create a backup account (signed by signingKey, keyid its account id); the same keys again: 200",
          body: Type.Object(
            {
              signingKey: Type.String({ pattern: "^[A-Za-z0-9_-]{43}$" }),
              recipient: Type.String({ pattern: "^age1[0-9a-z]{58}$" }),
              handle: Type.Optional(Handle),
            },
            { additionalProperties: false },
          ),
          response: { 200: Account, 201: Account, 400: ErrorBody, 401: ErrorBody, 409: ErrorBody },
        },
      },
      async (request, reply) => {
        const signingKey = fromBase64url(request.body.signingKey, "signingKey");
        const id = accountIdOf(signingKey);
        // Possession first: nothing about the body is answered to someone who does not hold the key.
        await auth.verifyWith(request, { keyId: id, publicKey: signingKey });
        try {
          parseRecipient(request.body.recipient);
        } catch {
          throw new HandsafeError("request.invalid", "recipient is not an age X25519 recipient", {
            status: 400,
          });
        }
        const { created, account } = await service.createAccount({
          id,
          signingKey,
          recipient: request.body.recipient,
          handle: request.body.handle ?? null,
        });
        return reply.status(created ? 201 : 200).send(account);
      },
    );

    scope.get(
      "/v1/backup/directory/:handle",
      {
        ...auth.accountRoute,
        schema: {
          tags: ["backup"],
          summary: "A user's public keys by handle",
          params: Type.Object({ handle: Type.String({ maxLength: 100 }) }),
          response: {
            200: Type.Object({
              handle: Type.String(),
              accountId: Type.String(),
              recipient: Type.String(),
              signingKey: Type.String(),
            }),
            401: ErrorBody,
            404: ErrorBody,
          },
        },
      },
      async (request) => {
        const a = await service.directory(request.params.handle, auth.accountOf(request));
        return { handle: a.handle, accountId: a.accountId, recipient: a.recipient, signingKey: a.signingKey };
      },
    );

    scope.get(
      "/v1/backup/directory",
      {
        ...auth.accountRoute,
        schema: {
          tags: ["backup"],
          summary: "A user's public keys by account id (?account=acct_…), for users without a handle",
          querystring: Type.Object(
            { account: Type.String({ pattern: ACCOUNT_ID.source }) },
            { additionalProperties: false },
          ),
          response: {
            200: Type.Object({
              handle: Type.Union([Type.String(), Type.Null()]),
              accountId: Type.String(),
              recipient: Type.String(),
              signingKey: Type.String(),
            }),
            400: ErrorBody,
            401: ErrorBody,
            404: ErrorBody,
          },
        },
      },
      async (request) => {
        const a = await service.directoryByAccount(request.query.account, auth.accountOf(request));
        return { handle: a.handle, accountId: a.accountId, recipient: a.recipient, signingKey: a.signingKey };
      },
    );

    registerUploadRoutes(scope, service, auth);

    // --- backups ------------------------------------------------------------------------------------

    scope.put(
      "/v1/backup/backups/:id",
      {
        ...auth.rawBodyRoute,
        bodyLimit: MAX_ENVELOPE_BYTES,
        onRequest: async (request) => {
          if (!ENVELOPE_TYPES.includes(mediaType(request)))
            throw new HandsafeError(
              "request.unsupported_media_type",
              "an envelope is application/vnd.syncml+xml",
              { status: 415 },
            );
        },
        schema: {
          tags: ["backup"],
          summary:
            "List a backup: the SyncML envelope, signed (Envelope-Signature) — all or nothing; an envelope in parts (MsgID 1..n): each part but the last waits (202), the last lists it (201)",
          params: Type.Object({ id: Id }),
          response: {
            201: Type.Object(Summary),
            202: Type.Object({ id: Type.String(), part: Type.Integer(), staged: Type.Boolean() }),
            400: ErrorBody,
            401: ErrorBody,
            404: ErrorBody,
            409: ErrorBody,
            413: ErrorBody,
            415: ErrorBody,
            422: ErrorBody,
          },
        },
      },
      async (request, reply) => {
        const xml = request.body instanceof Uint8Array ? request.body : new Uint8Array(0);
        const signature = request.headers["envelope-signature"];
        const answer = await service.putEnvelope(
          auth.accountOf(request),
          request.params.id,
          new Uint8Array(xml.buffer, xml.byteOffset, xml.byteLength),
          typeof signature === "string" ? signature : undefined,
        );
        return "staged" in answer ? reply.status(202).send(answer) : reply.status(201).send(answer);
      },
    );

    scope.get(
      "/v1/backup/backups",
      {
        ...auth.accountRoute,
        schema: {
          tags: ["backup"],
          summary: "This account's backups",
          response: { 200: Type.Object({ backups: Type.Array(Type.Object(Summary)) }), 401: ErrorBody },
        },
      },
      async (request) => ({ backups: await service.listBackups(auth.accountOf(request)) }),
    );

    scope.get(
      "/v1/backup/backups/:id",
      {
        ...auth.accountRoute,
        schema: {
          tags: ["backup"],
          summary:
            "A backup's envelope (XML) and its Envelope-Signature, to the owner or a share's account; ?part=n for part n of an envelope in parts",
          params: Type.Object({ id: Id }),
          // 1..99 as canonical decimal; past MAX_ENVELOPE_PARTS there is no such part (404).
          querystring: Type.Object(
            { part: Type.Optional(Type.String({ pattern: "^[1-9][0-9]?$" })) },
            { additionalProperties: false },
          ),
        },
      },
      async (request, reply) => {
        const e = await service.getBackup(
          auth.accountOf(request),
          request.params.id,
          Number(request.query.part ?? "1"),
        );
        reply.header("content-type", "application/vnd.syncml+xml");
        reply.header("envelope-signature", toBase64url(e.signature));
        reply.header("backup-owner", e.owner);
        reply.header("cache-control", "private, no-store");
        return reply.status(200).send(Buffer.from(e.xml.buffer, e.xml.byteOffset, e.xml.byteLength));
      },
    );

    scope.delete(
      "/v1/backup/backups/:id",
      {
        ...auth.accountRoute,
        schema: {
          tags: ["backup"],
          summary: "Unlist a backup; blobs no envelope references any more are deleted",
          params: Type.Object({ id: Id }),
          response: { 204: Type.Null(), 401: ErrorBody, 404: ErrorBody },
        },
      },
      async (request, reply) => {
        await service.deleteBackup(auth.accountOf(request), request.params.id);
        return reply.status(204).send(null);
      },
    );

    // --- shares -------------------------------------------------------------------------------------

    scope.get(
      "/v1/backup/shared",
      {
        ...auth.accountRoute,
        schema: {
          tags: ["backup"],
          summary: "Envelopes other accounts shared with this one",
          response: {
            200: Type.Object({
              shared: Type.Array(
                Type.Object({
                  ...Summary,
                  backupId: Type.String(),
                  owner: Type.String(),
                  sharedAt: Type.Integer(),
                }),
              ),
            }),
            401: ErrorBody,
          },
        },
      },
      async (request) => ({
        shared: (await service.listShared(auth.accountOf(request))).map((s) => ({ ...s, backupId: s.id })),
      }),
    );

    scope.delete(
      "/v1/backup/shares/:backupId/:accountId",
      {
        ...auth.accountRoute,
        schema: {
          tags: ["backup"],
          summary: "The owner revokes one account's access to a share",
          params: Type.Object({ backupId: Id, accountId: Id }),
          response: { 204: Type.Null(), 401: ErrorBody, 404: ErrorBody },
        },
      },
      async (request, reply) => {
        await service.revokeShare(auth.accountOf(request), request.params.backupId, request.params.accountId);
        return reply.status(204).send(null);
      },
    );
  });

  return service;
}
