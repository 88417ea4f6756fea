/**
 * Secure backup's HTTP surface (docs/protocols/backup.md §5). Every call is signed by an account
 * (request-auth.ts); account creation is signed by the key it registers. Routes parse, authorise
 * and call the service (server.ts). They live in one encapsulated plugin so the two bodies that are
 * not JSON get their own parsers: an envelope is read whole as bytes (≤ 16 MiB, its digest is
 * checked against them), an upload chunk is handed over as the request stream (≤ 64 MiB, never
 * buffered).
 */
import { Readable } from "node:stream";
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { Kysely } from "kysely";
import { Type } from "typebox";
import { parseRecipient } from "../core/age/keys.ts";
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { HandsafeError } from "../core/errors.ts";
import type { BlobStore } from "../platform/blobs/types.ts";
import type { Platform } from "../platform/context.ts";
import type { App } from "../platform/http/app.ts";
import { createDatabaseReplayGuard, type ReplayTables } from "../platform/replay.ts";
import { accountIdOf, createBackupRequestAuth } from "./request-auth.ts";
import { BackupService, MAX_ENVELOPE_BYTES, MAX_PATCH_BYTES } from "./server.ts";

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
export const UPLOAD_CONTENT_TYPE = "application/offset+octet-stream";

export interface BackupRouteDeps {
  blobs: BlobStore;
  quotaBytes: number;
}

function mediaType(request: FastifyRequest): string {
  return String(request.headers["content-type"] ?? "")
    .split(";")[0]!
    .trim()
    .toLowerCase();
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

    // --- resumable uploads --------------------------------------------------------------------------

    scope.post(
      "/v1/backup/uploads",
      {
        ...auth.accountRoute,
        schema: {
          tags: ["backup"],
          summary: "Start a resumable blob upload of a declared size and SHA-256",
          body: Type.Object(
            { size: Type.Integer({ minimum: 0 }), sha256: Type.String({ pattern: "^[0-9a-f]{64}$" }) },
            { additionalProperties: false },
          ),
          response: {
            201: Type.Object({ uploadId: Type.String(), uri: Type.String() }),
            400: ErrorBody,
            401: ErrorBody,
            413: ErrorBody,
          },
        },
      },
      async (request, reply) => {
        const started = await service.beginUpload(auth.accountOf(request), request.body);
        reply.header("location", started.uri);
        return reply.status(201).send(started);
      },
    );

    scope.head(
      "/v1/backup/uploads/:id",
      {
        ...auth.accountRoute,
        schema: {
          tags: ["backup"],
          summary: "How many bytes of the upload the server holds (Upload-Offset)",
          params: Type.Object({ id: Id }),
        },
      },
      async (request, reply) => {
        const { offset, size } = await service.uploadOffset(auth.accountOf(request), request.params.id);
        reply.header("upload-offset", String(offset));
        reply.header("upload-length", String(size));
        reply.header("cache-control", "no-store");
        return reply.status(200).send();
      },
    );

    scope.patch(
      "/v1/backup/uploads/:id",
      {
        ...auth.uploadRoute,
        bodyLimit: MAX_PATCH_BYTES,
        // Before anything is read: a chunk says how long it is, and is at most 64 MiB.
        onRequest: async (request) => {
          const length = request.headers["content-length"];
          if (length === undefined || !/^\d{1,16}$/.test(length))
            throw new HandsafeError("request.length_required", "an upload chunk needs Content-Length", {
              status: 411,
            });
          if (Number(length) > MAX_PATCH_BYTES)
            throw new HandsafeError(
              "request.too_large",
              `an upload chunk is at most ${MAX_PATCH_BYTES} bytes`,
              {
                status: 413,
              },
            );
          if (Number(length) > 0 && mediaType(request) !== UPLOAD_CONTENT_TYPE)
            throw new HandsafeError(
              "request.unsupported_media_type",
              `an upload chunk is ${UPLOAD_CONTENT_TYPE}`,
              {
                status: 415,
              },
            );
        },
        schema: {
          tags: ["backup"],
          summary: "Append a chunk at Upload-Offset (application/offset+octet-stream)",
          params: Type.Object({ id: Id }),
          headers: Type.Object({ "upload-offset": Type.String({ pattern: "^\\d{1,16}$" }) }),
          response: { 204: Type.Null(), 401: ErrorBody, 404: ErrorBody, 409: ErrorBody, 422: ErrorBody },
        },
      },
      async (request, reply) => {
        const offset = Number(request.headers["upload-offset"]);
        const length = Number(request.headers["content-length"]);
        const body = (request.body as AsyncIterable<Uint8Array> | undefined) ?? new Uint8Array(0);
        try {
          const stored = await service.appendUpload(
            auth.accountOf(request),
            request.params.id,
            offset,
            length,
            body,
          );
          reply.header("upload-offset", String(stored));
          return reply.status(204).send(null);
        } catch (e) {
          if (e instanceof HandsafeError && e.code === "backup.offset_mismatch")
            reply.header("upload-offset", String(e.details?.["offset"] ?? 0));
          throw e;
        }
      },
    );

    scope.post(
      "/v1/backup/uploads/:id/complete",
      {
        ...auth.accountRoute,
        schema: {
          tags: ["backup"],
          summary: "Check the upload's size and SHA-256 against the declared ones and publish the blob",
          params: Type.Object({ id: Id }),
          response: {
            200: Type.Object({ uri: Type.String(), size: Type.Integer(), sha256: Type.String() }),
            401: ErrorBody,
            404: ErrorBody,
            413: ErrorBody,
            422: ErrorBody,
          },
        },
      },
      async (request) => service.completeUpload(auth.accountOf(request), request.params.id),
    );

    // --- blobs --------------------------------------------------------------------------------------

    scope.get(
      "/v1/backup/blobs/:id",
      {
        ...auth.accountRoute,
        schema: {
          tags: ["backup"],
          summary: "A blob's bytes (Range: one bytes= range → 206), to its owner or an account a share names",
          params: Type.Object({ id: Id }),
        },
      },
      async (request, reply) => {
        const range = request.headers["range"];
        const blob = await service.openBlob(
          auth.accountOf(request),
          request.params.id,
          typeof range === "string" ? range : undefined,
        );
        reply.header("accept-ranges", "bytes");
        reply.header("content-type", "application/octet-stream");
        reply.header("cache-control", "private, no-store");
        reply.header("x-content-sha256", blob.sha256);
        if (blob.range) {
          reply.status(206);
          reply.header("content-range", `bytes ${blob.range.start}-${blob.range.end}/${blob.size}`);
          reply.header("content-length", String(blob.range.end - blob.range.start + 1));
        } else {
          reply.status(200);
          reply.header("content-length", String(blob.size));
        }
        return reply.send(Readable.from(blob.body, { objectMode: false }));
      },
    );

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
          summary: "List a backup: the SyncML envelope, signed (Envelope-Signature) — all or nothing",
          params: Type.Object({ id: Id }),
          response: {
            201: Type.Object(Summary),
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
        const listed = await service.putEnvelope(
          auth.accountOf(request),
          request.params.id,
          new Uint8Array(xml.buffer, xml.byteOffset, xml.byteLength),
          typeof signature === "string" ? signature : undefined,
        );
        return reply.status(201).send(listed);
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
          summary: "A backup's envelope (XML) and its Envelope-Signature, to the owner or a share's account",
          params: Type.Object({ id: Id }),
        },
      },
      async (request, reply) => {
        const e = await service.getBackup(auth.accountOf(request), request.params.id);
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
