/** A service manager's routes (Bearer API key): its registration, token status, server-placement sub-keys and the package relay (docs/protocols/trustzone.md §4, §7). */
import type { FastifyReply, FastifyRequest } from "fastify";
import { Type } from "typebox";
import { fromBase64url } from "../core/codec/base64url.ts";
import { fromUtf8 } from "../core/codec/bytes.ts";
import { HandsafeError } from "../core/errors.ts";
import {
  ErrorBody,
  Id,
  Index,
  Loose,
  MAX_RELAY_WAIT_SECONDS,
  RELAY_BODY_LIMIT,
  type RouteContext,
} from "./routes-common.ts";
import type * as store from "./store.ts";

export function registerManagerRoutes(ctx: RouteContext): void {
  const { app, service, ready, manager } = ctx;
  // --- service managers -----------------------------------------------------------------------------

  app.get(
    "/v1/tsm/managers/me",
    {
      schema: {
        tags: ["trustzone"],
        summary: "The calling manager's registration and review state",
        security: [{ bearer: [] }],
        response: { 200: Loose, 401: ErrorBody },
      },
    },
    async (request) => service.managerView((await manager(request)).id),
  );

  app.get(
    "/v1/tsm/tokens/:jti",
    {
      schema: {
        tags: ["trustzone"],
        summary: "A token's uses left, expiry and containers (its manager only): spends nothing",
        security: [{ bearer: [] }],
        params: Type.Object({ jti: Id }),
        response: { 200: Loose, 401: ErrorBody, 404: ErrorBody },
      },
    },
    async (request) => service.tokenStatus(await manager(request), request.params.jti),
  );

  app.post(
    "/v1/tsm/subkeys",
    {
      schema: {
        tags: ["trustzone"],
        summary: "Server-placement sub-key: redeems the token, binds its containers, SK HPKE-sealed to you",
        security: [{ bearer: [] }],
        body: Type.Object(
          { token: Type.String({ maxLength: 8192 }), zoneId: Type.Optional(Id) },
          { additionalProperties: false },
        ),
        response: { 201: Loose, 401: ErrorBody, 403: ErrorBody, 409: ErrorBody },
      },
    },
    async (request, reply) => {
      await ready;
      const m = await manager(request);
      reply.header("cache-control", "no-store");
      return reply.status(201).send(await service.serverSubKey(m, request.body));
    },
  );

  const waitOf = (request: FastifyRequest): number => {
    const raw = (request.query as { wait?: string } | undefined)?.wait;
    const s = raw === undefined ? 0 : Number(raw);
    if (!Number.isFinite(s) || s < 0)
      throw new HandsafeError("tsm.invalid_request", "wait is a number of seconds", { status: 400 });
    return Math.min(s, MAX_RELAY_WAIT_SECONDS) * 1000;
  };
  const headerCommand = (request: FastifyRequest): { command: unknown; proof: unknown } => {
    const c = request.headers["tsm-relay-command"];
    let command: unknown;
    try {
      command =
        typeof c === "string" ? JSON.parse(fromUtf8(fromBase64url(c, "tsm-relay-command"))) : undefined;
    } catch {
      throw new HandsafeError("zone.relay_invalid", "tsm-relay-command is base64url JSON", { status: 400 });
    }
    return { command, proof: request.headers["tsm-relay-proof"] };
  };
  const RelayView = Type.Object({
    relayId: Type.String(),
    state: Type.String(),
    op: Type.String(),
    zoneId: Type.String(),
    container: Type.Integer(),
    name: Type.Union([Type.String(), Type.Null()]),
    result: Type.Optional(Loose),
    error: Type.Optional(Type.Object({ code: Type.String() })),
  });
  const relayAnswer = async (
    request: FastifyRequest,
    reply: FastifyReply,
    m: store.ManagerRow,
    queued: { relayId: string },
  ) => {
    const view = await service.relayStatus(m, queued.relayId, waitOf(request));
    return reply.status(view.state === "queued" ? 202 : 200).send(view);
  };
  const relayResponses = {
    200: RelayView,
    202: RelayView,
    400: ErrorBody,
    401: ErrorBody,
    403: ErrorBody,
    409: ErrorBody,
    410: ErrorBody,
    413: ErrorBody,
    423: ErrorBody,
  };
  const PackageParams = Type.Object({
    zone: Id,
    i: Index,
    name: Type.String({ minLength: 1, maxLength: 128 }),
  });
  const Wait = Type.Object({ wait: Type.Optional(Type.String({ maxLength: 8 })) });

  app.put(
    "/v1/tsm/zones/:zone/containers/:i/packages/:name",
    {
      bodyLimit: RELAY_BODY_LIMIT,
      schema: {
        tags: ["trustzone"],
        summary: "Store a package (sealed under CK_i by you) in your container, relayed to the zone",
        security: [{ bearer: [] }],
        params: PackageParams,
        querystring: Wait,
        body: Type.Object(
          { command: Loose, proof: Type.String({ maxLength: 64 }) },
          { additionalProperties: false },
        ),
        response: relayResponses,
      },
    },
    async (request, reply) => {
      const m = await manager(request);
      const { zone, i, name } = request.params;
      const queued = await service.queueRelay(
        m,
        { zoneId: zone, container: Number(i), op: "put", name },
        request.body.command,
        request.body.proof,
      );
      return relayAnswer(request, reply, m, queued);
    },
  );

  for (const [method, op] of [
    ["GET", "get"],
    ["DELETE", "delete"],
  ] as const)
    app.route({
      method,
      url: "/v1/tsm/zones/:zone/containers/:i/packages/:name",
      schema: {
        tags: ["trustzone"],
        summary: `${op === "get" ? "Read" : "Delete"} a package of your container, relayed to the zone (command and proof in tsm-relay-* headers)`,
        security: [{ bearer: [] }],
        params: PackageParams,
        querystring: Wait,
        response: relayResponses,
      },
      handler: async (request, reply) => {
        const m = await manager(request);
        const { zone, i, name } = request.params as { zone: string; i: string; name: string };
        const { command, proof } = headerCommand(request);
        const target = { zoneId: zone, container: Number(i), op, name };
        const queued = await service.queueRelay(m, target, command, proof);
        return relayAnswer(request, reply, m, queued);
      },
    });

  app.get(
    "/v1/tsm/zones/:zone/containers/:i/packages",
    {
      schema: {
        tags: ["trustzone"],
        summary:
          "List your container's packages, relayed to the zone (command and proof in tsm-relay-* headers)",
        security: [{ bearer: [] }],
        params: Type.Object({ zone: Id, i: Index }),
        querystring: Wait,
        response: relayResponses,
      },
    },
    async (request, reply) => {
      const m = await manager(request);
      const { command, proof } = headerCommand(request);
      const target = {
        zoneId: request.params.zone,
        container: Number(request.params.i),
        op: "list" as const,
        name: null,
      };
      return relayAnswer(request, reply, m, await service.queueRelay(m, target, command, proof));
    },
  );

  app.get(
    "/v1/tsm/relay/:id",
    {
      schema: {
        tags: ["trustzone"],
        summary: "A relayed command's state and the zone's answer (its manager only); ?wait=s long-polls",
        security: [{ bearer: [] }],
        params: Type.Object({ id: Id }),
        querystring: Wait,
        response: { 200: RelayView, 202: RelayView, 401: ErrorBody, 404: ErrorBody },
      },
    },
    async (request, reply) =>
      relayAnswer(request, reply, await manager(request), { relayId: request.params.id }),
  );
}
