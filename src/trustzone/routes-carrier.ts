import { Type } from "typebox";
import { ErrorBody, Id, Loose, type RouteContext } from "./routes-common.ts";

export function registerCarrierRoutes(ctx: RouteContext): void {
  const { app, service, ready, carrier } = ctx;
  // --- the carrier ----------------------------------------------------------------------------------

  app.get(
    "/v1/admin/tsm/managers",
    {
      schema: {
        tags: ["trustzone"],
        summary: "Every registered service manager and its review state",
        security: [{ bearer: [] }],
        response: { 200: Loose, 401: ErrorBody, 403: ErrorBody },
      },
    },
    async (request) => {
      await carrier(request, "tsm.managers_listed", "managers");
      return { managers: await service.listManagers() };
    },
  );

  app.get(
    "/v1/admin/tsm/managers/:id",
    {
      schema: {
        tags: ["trustzone"],
        summary: "A service manager's registration and review state",
        security: [{ bearer: [] }],
        params: Type.Object({ id: Id }),
        response: { 200: Loose, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody },
      },
    },
    async (request) => {
      await carrier(request, "tsm.manager_viewed", `manager:${request.params.id}`);
      return service.managerView(request.params.id);
    },
  );

  for (const decision of ["validate", "reject"] as const)
    app.post(
      `/v1/admin/tsm/managers/:id/${decision}`,
      {
        schema: {
          tags: ["trustzone"],
          summary: decision === "validate" ? "Validate a service manager" : "Reject a service manager",
          security: [{ bearer: [] }],
          params: Type.Object({ id: Id }),
          body: Type.Optional(
            Type.Object(
              { reason: Type.Optional(Type.String({ maxLength: 500 })) },
              { additionalProperties: false },
            ),
          ),
          response: {
            200: Type.Object({ managerId: Type.String(), state: Type.String() }),
            401: ErrorBody,
            403: ErrorBody,
            404: ErrorBody,
          },
        },
      },
      async (request) => {
        const action = decision === "validate" ? "tsm.manager_validated" : "tsm.manager_rejected";
        const actor = await carrier(request, action, `manager:${request.params.id}`);
        return service.reviewManager(
          request.params.id,
          decision === "validate" ? "validated" : "rejected",
          request.body?.reason ?? null,
          actor,
        );
      },
    );

  app.post(
    "/v1/admin/tsm/managers/:id/applications/:app/validate",
    {
      schema: {
        tags: ["trustzone"],
        summary: "Validate one of a service manager's applications",
        security: [{ bearer: [] }],
        params: Type.Object({ id: Id, app: Id }),
        response: { 200: Type.Object({ appId: Type.String(), state: Type.String() }), 404: ErrorBody },
      },
    },
    async (request) => {
      const actor = await carrier(request, "tsm.application_validated", `manager:${request.params.id}`);
      return service.reviewApplication(request.params.id, request.params.app, actor);
    },
  );

  const Bundle = Type.Object({
    zoneId: Type.String(),
    zmk: Type.String(),
    userInfo: Type.String(),
    epoch: Type.Integer(),
    trustZonePublicKeys: Type.Array(Type.Object({ kid: Type.String(), publicKey: Type.String() })),
  });

  app.post(
    "/v1/admin/tsm/zones",
    {
      schema: {
        tags: ["trustzone"],
        summary: "Personalise a zone (ZMK, epoch 1): the provisioning bundle, its ZMK shown once",
        security: [{ bearer: [] }],
        body: Type.Object(
          {
            handsetId: Type.Optional(Type.String({ maxLength: 200 })),
            userInfo: Type.String({ maxLength: 1000 }),
            containers: Type.Optional(Type.Integer()),
          },
          { additionalProperties: false },
        ),
        response: { 201: Bundle, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody },
      },
    },
    async (request, reply) => {
      await ready;
      const actor = await carrier(request, "tsm.zone_personalised");
      const bundle = await service.personaliseZone(request.body, actor);
      reply.header("cache-control", "no-store");
      return reply.status(201).send(bundle);
    },
  );

  app.post(
    "/v1/admin/tsm/zones/:zone/personalise",
    {
      schema: {
        tags: ["trustzone"],
        summary: "Personalise a factory-reset zone again, for its next user (fresh ZMK, the new epoch)",
        security: [{ bearer: [] }],
        params: Type.Object({ zone: Id }),
        body: Type.Object(
          {
            userInfo: Type.String({ maxLength: 1000 }),
            handsetId: Type.Optional(Type.String({ maxLength: 200 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Bundle, 400: ErrorBody, 404: ErrorBody, 409: ErrorBody },
      },
    },
    async (request, reply) => {
      const actor = await carrier(request, "tsm.zone_personalised", `zone:${request.params.zone}`);
      reply.header("cache-control", "no-store");
      return service.repersonaliseZone(request.params.zone, request.body, actor);
    },
  );

  app.get(
    "/v1/admin/tsm/zones/:zone",
    {
      schema: {
        tags: ["trustzone"],
        summary: "A zone's container map (occupant, limits, expiry, token uses, sizes) and audit trail",
        security: [{ bearer: [] }],
        params: Type.Object({ zone: Id }),
        response: { 200: Loose, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody },
      },
    },
    async (request) => {
      const actor = await carrier(request, "tsm.zone_viewed", `zone:${request.params.zone}`);
      return service.zoneView(request.params.zone, actor);
    },
  );

  app.post(
    "/v1/admin/tsm/tokens",
    {
      schema: {
        tags: ["trustzone"],
        summary: "Issue a token to a validated manager for a zone's containers (by index or count)",
        security: [{ bearer: [] }],
        body: Type.Object(
          {
            managerId: Id,
            zoneId: Id,
            containers: Type.Optional(Type.Array(Type.Integer(), { maxItems: 1024 })),
            count: Type.Optional(Type.Integer()),
            maxUses: Type.Optional(Type.Integer()),
            expiresInSeconds: Type.Optional(Type.Integer()),
            limits: Type.Optional(
              Type.Object(
                {
                  containerSeconds: Type.Optional(Type.Integer()),
                  maxAttempts: Type.Optional(Type.Integer()),
                },
                { additionalProperties: false },
              ),
            ),
          },
          { additionalProperties: false },
        ),
        response: { 201: Loose, 400: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody },
      },
    },
    async (request, reply) => {
      await ready;
      const actor = await carrier(request, "tsm.token_issued", `zone:${request.body.zoneId}`);
      reply.header("cache-control", "no-store");
      return reply.status(201).send(await service.issueToken(request.body, actor));
    },
  );

  app.post(
    "/v1/admin/tsm/zones/:zone/reclaim",
    {
      schema: {
        tags: ["trustzone"],
        summary: "Reclaim containers (by index, or a manager's): freed, the zone told to wipe them",
        security: [{ bearer: [] }],
        params: Type.Object({ zone: Id }),
        body: Type.Object(
          {
            containers: Type.Optional(Type.Array(Type.Integer(), { maxItems: 1024 })),
            managerId: Type.Optional(Id),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ containers: Type.Array(Type.Integer()) }),
          400: ErrorBody,
          401: ErrorBody,
          403: ErrorBody,
          404: ErrorBody,
          409: ErrorBody,
        },
      },
    },
    async (request) => {
      const actor = await carrier(request, "tsm.containers_reclaimed", `zone:${request.params.zone}`);
      return service.reclaim(request.params.zone, request.body, actor, "carrier");
    },
  );

  app.post(
    "/v1/admin/tsm/zones/:zone/reset",
    {
      schema: {
        tags: ["trustzone"],
        summary: "Factory reset: epoch + 1, every container freed, every token revoked",
        security: [{ bearer: [] }],
        params: Type.Object({ zone: Id }),
        response: {
          200: Type.Object({ zoneId: Type.String(), epoch: Type.Integer(), state: Type.String() }),
          401: ErrorBody,
          403: ErrorBody,
          404: ErrorBody,
        },
      },
    },
    async (request) => {
      const actor = await carrier(request, "tsm.zone_reset", `zone:${request.params.zone}`);
      return service.resetZone(request.params.zone, actor);
    },
  );
}
