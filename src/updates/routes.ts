/**
 * Updates' HTTP surface (docs/protocols/updates.md §HTTP): admin package upload, deltas and the TUF
 * root ceremony; public TUF metadata; signed device downloads of package ciphertext with Range.
 * Parse, authorise, call PackageService / TufRepositoryService; audit every admin action.
 */
import { Readable } from "node:stream";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { Type } from "typebox";
import { toBase64url } from "../core/codec/base64url.ts";
import { HandsafeError } from "../core/errors.ts";
import { signedRouteHooks, verifiedDevice } from "../management/device-signature.ts";
import type { ManagementRoutes } from "../management/routes.ts";
import type { BlobStore } from "../platform/blobs/types.ts";
import type { Platform } from "../platform/context.ts";
import { type App, continueWhenRead, deferContinue } from "../platform/http/app.ts";
import { parseRange } from "../platform/http/range.ts";
import { wrapContentKey } from "./content.ts";
import { PackageService, tufPathOf, type UpdatePackage } from "./packages.ts";
import { TufRepositoryService } from "./repository-service.ts";
import type { RoleName } from "./tuf/index.ts";

/** How often each node checks whether the online TUF roles need re-signing. */
const REFRESH_INTERVAL_MS = 10 * 60 * 1000;
const CONTENT_NAME = /^packages\/[0-9a-f]{64}\.pkg_[A-Za-z0-9_-]{16}\.hspkg$/;
const TUF_NAME = /^[A-Za-z0-9.]{1,64}$/;

const ErrorBody = Type.Object({ error: Type.Object({ code: Type.String(), message: Type.String() }) });
const PackageId = Type.String({ pattern: "^pkg_[A-Za-z0-9_-]{16}$" });
const VersionText = Type.String({ maxLength: 80 });
const PackageSchema = Type.Object({
  id: Type.String(),
  version: Type.String(),
  kind: Type.Union([Type.Literal("full"), Type.Literal("delta")]),
  fromVersion: Type.Optional(Type.String()),
  fromPackageId: Type.Optional(Type.String()),
  models: Type.Array(Type.String()),
  versionRange: Type.Optional(
    Type.Object({ min: Type.Optional(Type.String()), max: Type.Optional(Type.String()) }),
  ),
  channel: Type.String(),
  plaintextLength: Type.Integer(),
  plaintextSha256: Type.String(),
  imageLength: Type.Integer(),
  imageSha256: Type.String(),
  encryptedLength: Type.Integer(),
  encryptedSha256: Type.String(),
  tufPath: Type.String(),
  fileName: Type.String(),
  createdAt: Type.Integer(),
});

/** What other capabilities (campaigns) and the composition root use. */
export interface UpdatesService {
  readonly packages: PackageService;
  readonly repository: TufRepositoryService;
  /** Resolves once the TUF repository exists (created on the first start). */
  readonly ready: Promise<void>;
  getPackage(id: string): Promise<UpdatePackage>;
  listPackages(): Promise<UpdatePackage[]>;
  /** The opened content key; wipe it after use. Prefer wrapContentKeyFor. */
  contentKeyOf(packageId: string): Promise<Uint8Array>;
  tufPathOf(packageId: string): string;
  /**
   * The package's content key wrapped for one device under the content session key of its
   * active dynamic key (content.ts wrapContentKey), base64url — the assignment's wrappedContentKey.
   */
  wrapContentKeyFor(deviceId: string, packageId: string): Promise<string>;
}

export interface UpdateRoutesDeps {
  blobs: BlobStore;
  management: ManagementRoutes;
  /** Largest accepted image; default the config's (HANDSAFE_MAX_PACKAGE_BYTES, 1 GiB). */
  maxPackageBytes?: number;
}

export function registerUpdateRoutes(app: App, platform: Platform, deps: UpdateRoutesDeps): UpdatesService {
  const { guards } = platform;
  const management = deps.management.service;
  const maxPackageBytes = deps.maxPackageBytes ?? platform.config.maxPackageBytes;
  const repository = new TufRepositoryService(platform);
  const packages = new PackageService(platform, {
    blobs: deps.blobs,
    repository,
    knownModel: async (model) => (await management.listDevices({ model, limit: 1 })).length > 0,
  });
  const ready = repository.init();
  ready.catch((err: unknown) => app.log.error({ err }, "TUF repository setup failed"));

  const refresher = setInterval(() => {
    repository.refreshIfDue().catch((err: unknown) => app.log.error({ err }, "TUF refresh failed"));
  }, REFRESH_INTERVAL_MS);
  refresher.unref();
  app.addHook("onClose", async () => clearInterval(refresher));

  async function adminActor(request: FastifyRequest): Promise<string> {
    const p = await guards.admin(request);
    return p.userId ? `admin:${p.userId}` : "admin";
  }

  /** Runs an admin action and audits it, allowed or refused (with the refusal's code). */
  async function audited<T>(
    actor: string,
    action: string,
    work: () => Promise<T>,
    subjectOf: (result: T) => string | undefined,
    details: Record<string, unknown> = {},
  ): Promise<T> {
    try {
      const result = await work();
      const subject = subjectOf(result);
      await platform.audit({ actor, action, ...(subject ? { subject } : {}), outcome: "allow", details });
      return result;
    } catch (e) {
      await platform.audit({
        actor,
        action,
        outcome: "deny",
        details: { ...details, code: e instanceof HandsafeError ? e.code : "internal" },
      });
      throw e;
    }
  }

  // --- upload: the body is the raw image stream ---------------------------------------------------
  deferContinue(app, "POST", "/v1/admin/updates/packages");
  void app.register(async (scope: FastifyInstance) => {
    // Hands the raw request stream to the route; the route counts and limits it.
    scope.addContentTypeParser("application/octet-stream", (_request, payload, done) => done(null, payload));
    (scope as unknown as App).post(
      "/v1/admin/updates/packages",
      {
        bodyLimit: maxPackageBytes,
        onRequest: async (request) => {
          await guards.admin(request);
          const declared = Number(request.headers["content-length"] ?? 0);
          if (declared > maxPackageBytes)
            throw new HandsafeError(
              "updates.package_too_large",
              `the package is larger than ${maxPackageBytes} bytes`,
              { status: 413 },
            );
        },
        schema: {
          tags: ["updates"],
          summary:
            "Upload a full image (application/octet-stream): encrypted, added to TUF targets, published",
          security: [{ bearer: [] }],
          querystring: Type.Object(
            {
              version: VersionText,
              models: Type.String({ maxLength: 6600 }),
              channel: Type.Optional(Type.String({ maxLength: 40 })),
              kind: Type.Optional(Type.String({ maxLength: 10 })),
              min: Type.Optional(VersionText),
              max: Type.Optional(VersionText),
            },
            { additionalProperties: false },
          ),
          response: { 201: PackageSchema, 400: ErrorBody, 413: ErrorBody, 422: ErrorBody },
        },
      },
      async (request, reply) => {
        const actor = await adminActor(request);
        const q = request.query as {
          version: string;
          models: string;
          channel?: string;
          kind?: string;
          min?: string;
          max?: string;
        };
        const raw = request.body as AsyncIterable<Uint8Array> | undefined;
        // A client that sent Expect: 100-continue sends the image only once the checks passed.
        const body = raw && continueWhenRead(request, reply, raw);
        const pkg = await audited(
          actor,
          "updates.package_upload",
          async () => {
            if (q.kind !== undefined && q.kind !== "full")
              throw new HandsafeError(
                "updates.invalid_kind",
                "uploads are full images; make a delta with POST /v1/admin/updates/packages/:id/delta",
                { status: 400 },
              );
            return packages.upload(
              {
                version: q.version,
                models: q.models.split(","),
                ...(q.channel !== undefined ? { channel: q.channel } : {}),
                ...(q.min !== undefined || q.max !== undefined
                  ? { versionRange: { ...(q.min ? { min: q.min } : {}), ...(q.max ? { max: q.max } : {}) } }
                  : {}),
              },
              body ?? [],
              { maxBytes: maxPackageBytes, actor },
            );
          },
          (p) => `package:${p.id}`,
          { version: q.version.slice(0, 80), models: q.models.slice(0, 200) },
        );
        return reply.status(201).send(pkg);
      },
    );
  });

  app.post(
    "/v1/admin/updates/packages/:id/delta",
    {
      schema: {
        tags: ["updates"],
        summary: "Build a delta package from fromPackageId's image to this package's image",
        security: [{ bearer: [] }],
        params: Type.Object({ id: PackageId }),
        body: Type.Object({ fromPackageId: PackageId }, { additionalProperties: false }),
        response: { 201: PackageSchema, 400: ErrorBody, 404: ErrorBody, 413: ErrorBody },
      },
    },
    async (request, reply) => {
      const actor = await adminActor(request);
      const pkg = await audited(
        actor,
        "updates.package_delta",
        () => packages.createDelta(request.params.id, request.body.fromPackageId, actor),
        (p) => `package:${p.id}`,
        { to: request.params.id, from: request.body.fromPackageId },
      );
      return reply.status(201).send(pkg);
    },
  );

  app.get(
    "/v1/admin/updates/packages",
    {
      schema: {
        tags: ["updates"],
        summary: "Update packages, oldest first",
        security: [{ bearer: [] }],
        response: { 200: Type.Object({ packages: Type.Array(PackageSchema) }) },
      },
    },
    async (request) => {
      await guards.admin(request);
      return { packages: await packages.listPackages() };
    },
  );

  app.get(
    "/v1/admin/updates/packages/:id",
    {
      schema: {
        tags: ["updates"],
        summary: "One update package (never its key)",
        security: [{ bearer: [] }],
        params: Type.Object({ id: PackageId }),
        response: { 200: PackageSchema, 404: ErrorBody },
      },
    },
    async (request) => {
      await guards.admin(request);
      return packages.getPackage(request.params.id);
    },
  );

  // --- TUF: public metadata, and the root ceremony for admins --------------------------------------

  app.get(
    "/v1/updates/tuf/:name",
    {
      schema: {
        tags: ["updates"],
        summary: "TUF metadata: N.root.json, N.targets.json, N.snapshot.json, timestamp.json",
        params: Type.Object({ name: Type.String({ maxLength: 64 }) }),
      },
    },
    async (request, reply) => {
      await ready;
      const { name } = request.params;
      if (!TUF_NAME.test(name))
        throw new HandsafeError("tuf.not_found", `no TUF metadata file ${name}`, { status: 404 });
      const bytes = await repository.file(name);
      // Versioned files never change; timestamp.json does.
      reply.header(
        "cache-control",
        name === "timestamp.json" ? "no-cache" : "public, max-age=31536000, immutable",
      );
      return reply
        .type("application/json")
        .send(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    },
  );

  app.get(
    "/v1/admin/updates/tuf/keys",
    {
      schema: {
        tags: ["updates"],
        summary: "The TUF role keys the server knows (public parts, state, whether it holds the seed)",
        security: [{ bearer: [] }],
      },
    },
    async (request) => {
      await guards.admin(request);
      return { keys: await repository.keys() };
    },
  );

  app.post(
    "/v1/admin/updates/tuf/root-key/export",
    {
      schema: {
        tags: ["updates"],
        summary: "The root key's seed, to move it offline; then DELETE it from the server",
        security: [{ bearer: [] }],
      },
    },
    async (request, reply) => {
      const actor = await adminActor(request);
      reply.header("cache-control", "no-store");
      return repository.exportRootKey(actor);
    },
  );

  app.delete(
    "/v1/admin/updates/tuf/root-key/:keyid",
    {
      schema: {
        tags: ["updates"],
        summary: "Delete the root key's seed from the server (the root is offline from then on)",
        security: [{ bearer: [] }],
        params: Type.Object({ keyid: Type.String({ pattern: "^[0-9a-f]{64}$" }) }),
      },
    },
    async (request, reply) => {
      const actor = await adminActor(request);
      await repository.forgetRootKey(request.params.keyid, actor);
      return reply.status(204).send();
    },
  );

  app.post(
    "/v1/admin/updates/tuf/root/prepare",
    {
      schema: {
        tags: ["updates"],
        summary: "Prepare root N+1 (fresh server keys for the rotated roles), unsigned, for offline signing",
        security: [{ bearer: [] }],
        body: Type.Object(
          {
            rotate: Type.Array(
              Type.Union([
                Type.Literal("root"),
                Type.Literal("targets"),
                Type.Literal("snapshot"),
                Type.Literal("timestamp"),
              ]),
              { maxItems: 4 },
            ),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      const actor = await adminActor(request);
      const text = await repository.prepareRoot(request.body.rotate as RoleName[], actor);
      return reply.type("application/json").send(text);
    },
  );

  app.post(
    "/v1/admin/updates/tuf/root/commit",
    {
      schema: {
        tags: ["updates"],
        summary: "Commit the prepared root with its offline signatures (signed metadata or {keyid, sig}s)",
        security: [{ bearer: [] }],
        response: { 200: Type.Object({ version: Type.Integer() }) },
      },
    },
    async (request) => {
      const actor = await adminActor(request);
      return repository.commitRoot(request.body, actor);
    },
  );

  // --- package content: signed device downloads with Range ----------------------------------------

  const signed = signedRouteHooks(management);
  app.get(
    "/v1/updates/content/*",
    {
      ...signed,
      schema: {
        tags: ["updates"],
        summary:
          "A package's ciphertext by its TUF consistent-snapshot name (signed device request; Range: bytes=a- / a-b)",
      },
    },
    async (request, reply) => serveContent(request, reply),
  );

  async function serveContent(request: FastifyRequest, reply: FastifyReply) {
    const { deviceId } = verifiedDevice(request);
    const name = (request.params as { "*": string })["*"];
    const pkg = CONTENT_NAME.test(name) ? await packages.byFileName(name) : undefined;
    if (!pkg)
      throw new HandsafeError("updates.unknown_content", `no package content ${name}`, { status: 404 });
    const device = await management.getDevice(deviceId);
    if (!pkg.models.includes(device.model)) {
      await platform.audit({
        actor: `device:${deviceId}`,
        action: "updates.content_download",
        subject: `package:${pkg.id}`,
        outcome: "deny",
        details: { code: "updates.wrong_model" },
      });
      throw new HandsafeError("updates.wrong_model", `package ${pkg.id} is not for model ${device.model}`, {
        status: 403,
      });
    }
    const size = pkg.encryptedLength;
    const range = parseRange(request.headers.range, size);
    reply.header("accept-ranges", "bytes");
    reply.header("etag", `"${pkg.encryptedSha256}"`);
    reply.header("cache-control", "private, no-store");
    reply.type("application/octet-stream");
    if (range === "unsatisfiable") {
      reply.header("content-range", `bytes */${size}`);
      throw new HandsafeError("updates.range_not_satisfiable", `the package is ${size} bytes`, {
        status: 416,
      });
    }
    if (range === undefined) {
      reply.header("content-length", String(size));
      return reply.status(200).send(Readable.from(deps.blobs.get(pkg.blobKey)));
    }
    reply.header("content-range", `bytes ${range.start}-${range.end}/${size}`);
    reply.header("content-length", String(range.end - range.start + 1));
    return reply.status(206).send(Readable.from(deps.blobs.get(pkg.blobKey, range)));
  }

  return {
    packages,
    repository,
    ready,
    getPackage: (id) => packages.getPackage(id),
    listPackages: () => packages.listPackages(),
    contentKeyOf: (id) => packages.contentKeyOf(id),
    tufPathOf,
    async wrapContentKeyFor(deviceId, packageId) {
      const contentKey = await packages.contentKeyOf(packageId);
      try {
        return await management.withSessionKey(deviceId, "content", (sessionKey) =>
          toBase64url(wrapContentKey(contentKey, sessionKey, { deviceId, packageId })),
        );
      } finally {
        contentKey.fill(0);
      }
    },
  };
}
