/**
 * Campaigns' HTTP surface (docs/protocols/campaigns.md, updates-contract.md §HTTP): the admin
 * campaign routes, device channels and groups, and the handset's signed assignment and status
 * routes. Parse, authorise, call CampaignService.
 */
import type { FastifyRequest } from "fastify";
import { Type } from "typebox";
import { signedRouteHooks, verifiedDevice } from "../../management/device-signature.ts";
import type { ManagementRoutes } from "../../management/routes.ts";
import type { Platform } from "../../platform/context.ts";
import type { App } from "../../platform/http/app.ts";
import { DEVICE_STATES, MAX_STAGES, REPORTED_STATES } from "./protocol.ts";
import { CampaignService, type CampaignUpdates } from "./server.ts";

const CampaignId = Type.String({ pattern: "^cmp_[A-Za-z0-9_-]{16}$" });
const DeviceId = Type.String({ pattern: "^dev_[A-Za-z0-9_-]{16}$" });
const Label = Type.String({ pattern: "^[a-z0-9][a-z0-9._-]{0,31}$" });
const Version = Type.String({ maxLength: 80 });
const Hour = Type.Integer({ minimum: 0, maximum: 23 });
const QueryInt = Type.String({ pattern: "^[0-9]{1,6}$" });
const ErrorBody = Type.Object({ error: Type.Object({ code: Type.String(), message: Type.String() }) });
const Window = Type.Object({ startHourUtc: Hour, endHourUtc: Hour }, { additionalProperties: false });

const CreateBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    packageId: Type.String({ minLength: 1, maxLength: 100 }),
    target: Type.Object(
      {
        models: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 100 }), { maxItems: 100 })),
        versionRange: Type.Optional(
          Type.Object(
            { min: Type.Optional(Version), max: Type.Optional(Version) },
            { additionalProperties: false },
          ),
        ),
        groups: Type.Optional(Type.Array(Label, { maxItems: 100 })),
        deviceIds: Type.Optional(Type.Array(DeviceId, { maxItems: 10_000 })),
      },
      { additionalProperties: false },
    ),
    channel: Type.Optional(Label),
    stages: Type.Array(Type.Integer({ minimum: 1, maximum: 100 }), { minItems: 1, maxItems: MAX_STAGES }),
    errorThreshold: Type.Number({ minimum: 0, maximum: 1 }),
    maintenanceWindow: Type.Optional(Type.Union([Window, Type.Null()])),
  },
  { additionalProperties: false },
);

const Assignment = Type.Object({
  assignment: Type.Union([
    Type.Null(),
    Type.Object({
      campaignId: Type.String(),
      packageId: Type.String(),
      tufPath: Type.String(),
      version: Type.String(),
      kind: Type.Union([Type.Literal("full"), Type.Literal("delta")]),
      fromVersion: Type.Optional(Type.String()),
      wrappedContentKey: Type.String(),
      installWindow: Type.Union([Window, Type.Null()]),
    }),
  ]),
});

export interface CampaignRouteDeps {
  management: ManagementRoutes;
  updates: CampaignUpdates;
}

/** How often late joiners are enrolled and failed notifications retried. */
export const CAMPAIGN_TICK_MS = 60_000;

export function registerCampaignRoutes(
  app: App,
  platform: Platform,
  deps: CampaignRouteDeps,
): CampaignService {
  const service = new CampaignService(platform, {
    management: deps.management.service,
    updates: deps.updates,
  });
  const { guards } = platform;

  async function adminActor(request: FastifyRequest): Promise<string> {
    const p = await guards.admin(request);
    return p.userId ? `admin:${p.userId}` : "admin";
  }

  app.post(
    "/v1/admin/campaigns",
    {
      schema: {
        tags: ["campaigns"],
        summary: "Create a draft campaign of a package: target, channel, stages, error threshold, window",
        security: [{ bearer: [] }],
        body: CreateBody,
      },
    },
    async (request, reply) => {
      const actor = await adminActor(request);
      return reply.status(201).send(await service.create(request.body, actor));
    },
  );

  app.get(
    "/v1/admin/campaigns",
    {
      schema: {
        tags: ["campaigns"],
        summary: "Every campaign with its progress",
        security: [{ bearer: [] }],
      },
    },
    async (request) => {
      await guards.admin(request);
      return { campaigns: await service.list() };
    },
  );

  app.get(
    "/v1/admin/campaigns/:id",
    {
      schema: {
        tags: ["campaigns"],
        summary: "A campaign and its progress by state",
        security: [{ bearer: [] }],
        params: Type.Object({ id: CampaignId }),
      },
    },
    async (request) => {
      await guards.admin(request);
      return service.get(request.params.id);
    },
  );

  app.get(
    "/v1/admin/campaigns/:id/devices",
    {
      schema: {
        tags: ["campaigns"],
        summary: "A campaign's enrolled devices: bucket, state, percent, reason",
        security: [{ bearer: [] }],
        params: Type.Object({ id: CampaignId }),
        querystring: Type.Object(
          {
            state: Type.Optional(Type.Union(DEVICE_STATES.map((s) => Type.Literal(s)))),
            after: Type.Optional(DeviceId),
            limit: Type.Optional(QueryInt),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request) => {
      await guards.admin(request);
      const q = request.query;
      return {
        devices: await service.listDevices(request.params.id, {
          limit: Math.min(Math.max(Number(q.limit ?? 100), 1), 1000),
          ...(q.state ? { state: q.state } : {}),
          ...(q.after ? { after: q.after } : {}),
        }),
      };
    },
  );

  for (const action of ["start", "pause", "resume", "abort", "advance"] as const) {
    app.post(
      `/v1/admin/campaigns/:id/${action}`,
      {
        schema: {
          tags: ["campaigns"],
          summary: `${action[0]!.toUpperCase()}${action.slice(1)} a campaign`,
          security: [{ bearer: [] }],
          params: Type.Object({ id: CampaignId }),
        },
      },
      async (request) => {
        const actor = await adminActor(request);
        return service[action](request.params.id, actor);
      },
    );
  }

  app.get(
    "/v1/admin/device-channels/:deviceId",
    {
      schema: {
        tags: ["campaigns"],
        summary: "A device's release channel (default stable) and groups",
        security: [{ bearer: [] }],
        params: Type.Object({ deviceId: DeviceId }),
      },
    },
    async (request) => {
      await guards.admin(request);
      return service.getDeviceChannel(request.params.deviceId);
    },
  );

  app.put(
    "/v1/admin/device-channels/:deviceId",
    {
      schema: {
        tags: ["campaigns"],
        summary: "Set a device's release channel and groups; it joins running campaigns it now matches",
        security: [{ bearer: [] }],
        params: Type.Object({ deviceId: DeviceId }),
        body: Type.Object(
          { channel: Label, groups: Type.Array(Label, { maxItems: 32 }) },
          { additionalProperties: false },
        ),
      },
    },
    async (request) => {
      const actor = await adminActor(request);
      return service.setDeviceChannel(request.params.deviceId, request.body, actor);
    },
  );

  const signed = signedRouteHooks(deps.management.service);

  app.get(
    "/v1/updates/devices/me/assignment",
    {
      ...signed,
      schema: {
        tags: ["campaigns"],
        summary: "The signed device's current update assignment, or null",
        response: { 200: Assignment, 401: ErrorBody },
      },
    },
    async (request, reply) => {
      reply.header("cache-control", "no-store");
      return { assignment: await service.assignmentFor(verifiedDevice(request).deviceId) };
    },
  );

  app.post(
    "/v1/updates/devices/me/status",
    {
      ...signed,
      schema: {
        tags: ["campaigns"],
        summary: "The signed device reports its state in a campaign",
        body: Type.Object(
          {
            campaignId: CampaignId,
            state: Type.Union(REPORTED_STATES.map((s) => Type.Literal(s))),
            percent: Type.Optional(Type.Integer({ minimum: 0, maximum: 100 })),
            reason: Type.Optional(Type.String({ maxLength: 200 })),
            installedVersion: Type.Optional(Version),
          },
          { additionalProperties: false },
        ),
        response: { 204: Type.Null(), 401: ErrorBody, 404: ErrorBody, 409: ErrorBody },
      },
    },
    async (request, reply) => {
      await service.reportStatus(verifiedDevice(request).deviceId, request.body);
      return reply.status(204).send(null);
    },
  );

  const ticker = setInterval(() => {
    service.tick().catch((err: unknown) => app.log.error({ err }, "campaign tick failed"));
  }, CAMPAIGN_TICK_MS);
  ticker.unref();
  app.addHook("onClose", async () => clearInterval(ticker));

  return service;
}
