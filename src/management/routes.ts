/**
 * Management's HTTP surface (docs/protocols/management.md): admin provisioning and dynamic keys,
 * the handset's signed management requests and its push stream (push-route.ts). Parse, authorise,
 * call ManagementService.
 */
import type { FastifyInstance, FastifyRequest } from "fastify";
import { Type } from "typebox";
import type { Platform } from "../platform/context.ts";
import type { App } from "../platform/http/app.ts";
import {
  captureSignedBody,
  type requireDeviceSignature,
  signedRouteHooks,
  verifiedDevice,
} from "./device-signature.ts";
import { registerPushRoute } from "./push-route.ts";
import { type ManagementDeps, ManagementService } from "./server.ts";

const DeviceId = Type.String({ pattern: "^dev_[A-Za-z0-9_-]{16}$" });
const QueryInt = Type.String({ pattern: "^[0-9]{1,6}$" });
const ErrorBody = Type.Object({ error: Type.Object({ code: Type.String(), message: Type.String() }) });
const DeviceSchema = Type.Object({
  id: Type.String(),
  model: Type.String(),
  hardwareId: Type.String(),
  hardwareIdKind: Type.String(),
  firmwareVersion: Type.String(),
  memoryLayout: Type.Record(Type.String(), Type.Unknown()),
  msisdn: Type.Union([Type.String(), Type.Null()]),
  owner: Type.Union([Type.String(), Type.Null()]),
  keySource: Type.String(),
  batchId: Type.String(),
  handsetId: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.Integer(),
});
const PingAnswer = Type.Object({
  ok: Type.Literal(true),
  deviceId: Type.String(),
  keyId: Type.String(),
  usesLeft: Type.Integer(),
  expiresAt: Type.Integer(),
  echo: Type.Optional(Type.Unknown()),
});

export interface ManagementRoutes {
  service: ManagementService;
  /** preHandler for other capabilities' signed handset routes (with captureSignedBody as preParsing). */
  requireDeviceSignature: ReturnType<typeof requireDeviceSignature>;
  captureSignedBody: typeof captureSignedBody;
}

export function registerManagementRoutes(
  app: App,
  platform: Platform,
  deps: ManagementDeps,
): ManagementRoutes {
  const service = new ManagementService(platform, {
    ...deps,
    onPushError: deps.onPushError ?? ((what, err) => app.log.warn({ err }, `management push: ${what}`)),
  });
  const { guards } = platform;

  async function adminActor(request: FastifyRequest): Promise<string> {
    const p = await guards.admin(request);
    return p.userId ? `admin:${p.userId}` : "admin";
  }

  // Batches come as CSV or JSON text; this scope reads both as strings (the parser is the check).
  void app.register(async (scope: FastifyInstance) => {
    scope.removeContentTypeParser("application/json");
    for (const type of ["application/json", "text/csv"])
      scope.addContentTypeParser(type, { parseAs: "string" }, (_request, body, done) => done(null, body));
    scope.post(
      "/v1/admin/devices/batches",
      {
        onRequest: async (request) => {
          await guards.admin(request);
        },
        schema: {
          tags: ["management"],
          summary: "Import a manufacturer batch (text/csv or application/json); key files are returned once",
          security: [{ bearer: [] }],
        },
      },
      async (request, reply) => {
        const type = String(request.headers["content-type"] ?? "")
          .split(";")[0]!
          .trim()
          .toLowerCase();
        const format = type === "text/csv" ? "csv" : "json";
        const result = await service.importBatch(
          String(request.body ?? ""),
          format,
          await adminActor(request),
        );
        reply.header("cache-control", "no-store");
        return reply.status(201).send(result);
      },
    );
  });

  const typed = app as App;

  typed.get(
    "/v1/admin/devices",
    {
      schema: {
        tags: ["management"],
        summary: "Registered devices, by id",
        security: [{ bearer: [] }],
        querystring: Type.Object(
          {
            after: Type.Optional(DeviceId),
            limit: Type.Optional(QueryInt),
            model: Type.Optional(Type.String({ maxLength: 100 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ devices: Type.Array(DeviceSchema) }) },
      },
    },
    async (request) => {
      await guards.admin(request);
      const limit = Math.min(Math.max(Number(request.query.limit ?? 100), 1), 1000);
      return {
        devices: await service.listDevices({
          limit,
          ...(request.query.after ? { after: request.query.after } : {}),
          ...(request.query.model ? { model: request.query.model } : {}),
        }),
      };
    },
  );

  typed.get(
    "/v1/admin/devices/:deviceId",
    {
      schema: {
        tags: ["management"],
        summary: "One device (never its keys)",
        security: [{ bearer: [] }],
        params: Type.Object({ deviceId: DeviceId }),
        response: { 200: DeviceSchema, 404: ErrorBody },
      },
    },
    async (request) => {
      await guards.admin(request);
      return service.getDevice(request.params.deviceId);
    },
  );

  typed.get(
    "/v1/admin/devices/:deviceId/dynamic-keys",
    {
      schema: {
        tags: ["management"],
        summary: "A device's dynamic keys: state, uses, expiry (never the keys)",
        security: [{ bearer: [] }],
        params: Type.Object({ deviceId: DeviceId }),
      },
    },
    async (request) => {
      await guards.admin(request);
      return { keys: await service.listDynamicKeys(request.params.deviceId) };
    },
  );

  typed.post(
    "/v1/admin/devices/:deviceId/dynamic-keys",
    {
      schema: {
        tags: ["management"],
        summary:
          "Issue a dynamic key per policy and send it to the device: over its push stream when open, else by SMS",
        security: [{ bearer: [] }],
        params: Type.Object({ deviceId: DeviceId }),
        body: Type.Object(
          {
            profile: Type.Optional(Type.String({ pattern: "^[a-z0-9._-]{1,64}$" })),
            maxUses: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
            ttlSeconds: Type.Optional(Type.Integer({ minimum: 60, maximum: 30 * 86_400 })),
          },
          { additionalProperties: false },
        ),
        response: {
          201: Type.Object({
            keyId: Type.String(),
            deviceId: Type.String(),
            counter: Type.Integer(),
            expiresAt: Type.Integer(),
            maxUses: Type.Integer(),
            messageId: Type.String(),
            channel: Type.Union([Type.Literal("sms"), Type.Literal("push")]),
          }),
        },
      },
    },
    async (request, reply) => {
      const actor = await adminActor(request);
      const issued = await service.issueDynamicKey(request.params.deviceId, request.body ?? {}, actor);
      return reply.status(201).send(issued);
    },
  );

  const signed = signedRouteHooks(service);

  typed.get(
    "/v1/management/ping",
    {
      ...signed,
      schema: {
        tags: ["management"],
        summary: "A signed management request that proves the session works (counts one use)",
        response: { 200: PingAnswer, 401: ErrorBody },
      },
    },
    async (request) => ({ ok: true as const, ...verifiedDevice(request) }),
  );

  typed.post(
    "/v1/management/ping",
    {
      ...signed,
      schema: {
        tags: ["management"],
        summary: "A signed management request with a body (covered by Content-Digest); echoes it",
        body: Type.Object({ echo: Type.Unknown() }, { additionalProperties: false }),
        response: { 200: PingAnswer, 401: ErrorBody },
      },
    },
    async (request) => ({ ok: true as const, ...verifiedDevice(request), echo: request.body.echo }),
  );

  registerPushRoute(typed, service);

  return { service, requireDeviceSignature: signed.preHandler[0]!, captureSignedBody };
}
