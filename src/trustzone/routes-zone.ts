import { Type } from "typebox";
import { ErrorBody, Id, Loose, RELAY_BODY_LIMIT, type RouteContext } from "./routes-common.ts";
import type { ZoneReport } from "./server.ts";

export function registerZoneRoutes(ctx: RouteContext): void {
  const { app, service, ready, zoneRoute, zoneOf } = ctx;
  // --- zones (ZRK-signed) ---------------------------------------------------------------------------

  app.get(
    "/v1/tsm/zone/signals",
    {
      ...zoneRoute,
      schema: {
        tags: ["trustzone"],
        summary: "The zone pulls its provisioning signals (MAC'd with ZAK) and relayed commands",
        response: { 200: Loose, 401: ErrorBody },
      },
    },
    async (request) => service.zoneInbox(zoneOf(request)),
  );

  app.post(
    "/v1/tsm/zone/reports",
    {
      ...zoneRoute,
      bodyLimit: RELAY_BODY_LIMIT,
      schema: {
        tags: ["trustzone"],
        summary:
          "The zone reports signals applied or refused, relay answers, locked/wiped containers, a reset",
        body: Type.Object(
          {
            applied: Type.Optional(Type.Integer({ minimum: 0 })),
            rejected: Type.Optional(
              Type.Array(Type.Object({ seq: Type.Integer(), code: Type.String({ maxLength: 100 }) }), {
                maxItems: 100,
              }),
            ),
            relay: Type.Optional(
              Type.Array(
                Type.Object({
                  id: Id,
                  ok: Type.Boolean(),
                  result: Type.Optional(Loose),
                  code: Type.Optional(Type.String({ maxLength: 100 })),
                }),
                { maxItems: 100 },
              ),
            ),
            locked: Type.Optional(Type.Array(Type.Integer({ minimum: 0 }), { maxItems: 1024 })),
            wiped: Type.Optional(Type.Array(Type.Integer({ minimum: 0 }), { maxItems: 1024 })),
            reset: Type.Optional(Type.Object({ epoch: Type.Integer({ minimum: 1 }) })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ ok: Type.Boolean() }), 400: ErrorBody, 401: ErrorBody },
      },
    },
    async (request) => service.zoneReport(zoneOf(request), request.body as ZoneReport),
  );

  app.post(
    "/v1/tsm/tokens/:jti/redeem",
    {
      ...zoneRoute,
      schema: {
        tags: ["trustzone"],
        summary: "Handset placement: the zone counts one use of a token it derived a sub-key from",
        params: Type.Object({ jti: Id }),
        body: Type.Object({ token: Type.String({ maxLength: 8192 }) }, { additionalProperties: false }),
        response: { 200: Loose, 401: ErrorBody, 403: ErrorBody, 409: ErrorBody },
      },
    },
    async (request) => {
      await ready;
      return service.zoneRedeem(zoneOf(request), request.params.jti, request.body.token);
    },
  );
}
