/**
 * The resumable-upload and blob routes of secure backup (docs/protocols/backup.md §5), registered
 * by routes.ts inside its plugin (which holds the upload body parser: the request stream itself).
 * An upload chunk streams into the blob store, never buffered; a blob streams out once the store's
 * header agrees with its row (server.ts openBlob).
 */
import { Readable } from "node:stream";
import type { FastifyRequest } from "fastify";
import { Type } from "typebox";
import { HandsafeError } from "../core/errors.ts";
import type { App } from "../platform/http/app.ts";
import { MAX_PATCH_BYTES } from "./protocol.ts";
import type { BackupRequestAuth } from "./request-auth.ts";
import type { BackupService } from "./server.ts";

export const UPLOAD_CONTENT_TYPE = "application/offset+octet-stream";

const ErrorBody = Type.Object({
  error: Type.Object({ code: Type.String(), message: Type.String(), details: Type.Optional(Type.Unknown()) }),
});
const Id = Type.String({ maxLength: 100 });

export function mediaType(request: FastifyRequest): string {
  return String(request.headers["content-type"] ?? "")
    .split(";")[0]!
    .trim()
    .toLowerCase();
}

/** A completion's body: none, or `{sha256?}` with the hash as 64 lower-case hex digits. */
function completionInput(body: unknown): { sha256?: string } {
  if (body === undefined || body === null) return {};
  if (typeof body !== "object" || Array.isArray(body))
    throw new HandsafeError("request.invalid", "body must be object", { status: 400 });
  const { sha256, ...rest } = body as Record<string, unknown>;
  if (Object.keys(rest).length > 0)
    throw new HandsafeError("request.invalid", "body must NOT have additional properties", { status: 400 });
  if (sha256 === undefined) return {};
  if (typeof sha256 !== "string" || !/^[0-9a-f]{64}$/.test(sha256))
    throw new HandsafeError("request.invalid", "sha256 is 64 lower-case hex digits", { status: 400 });
  return { sha256 };
}

export function registerUploadRoutes(scope: App, service: BackupService, auth: BackupRequestAuth): void {
  // --- resumable uploads --------------------------------------------------------------------------

  scope.post(
    "/v1/backup/uploads",
    {
      ...auth.accountRoute,
      schema: {
        tags: ["backup"],
        summary:
          "Start a resumable blob upload of a declared size (and SHA-256, or declare it at completion)",
        body: Type.Object(
          {
            size: Type.Integer({ minimum: 0 }),
            sha256: Type.Optional(Type.String({ pattern: "^[0-9a-f]{64}$" })),
          },
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
        summary: "Check the upload's size and SHA-256 (declared here or at the start) and publish the blob",
        // The body `{sha256}` is optional (an upload that declared it at the start may send none),
        // which a body schema cannot say: completionInput checks it.
        params: Type.Object({ id: Id }),
        response: {
          200: Type.Object({ uri: Type.String(), size: Type.Integer(), sha256: Type.String() }),
          400: ErrorBody,
          401: ErrorBody,
          404: ErrorBody,
          413: ErrorBody,
          422: ErrorBody,
        },
      },
    },
    async (request) =>
      service.completeUpload(auth.accountOf(request), request.params.id, completionInput(request.body)),
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
}
