/**
 * The zone server's HTTP surface (docs/protocols/trustzone.md §7). Three kinds of caller:
 * - the carrier (master TSM): platform admins, under /v1/admin/tsm (platform/auth/guard.ts);
 * - service managers: `Authorization: Bearer <apiKey>` (stored as SHA-256, looked up by hash);
 * - zones: RFC 9421 hmac-sha256 under ZRK with keyid = zone id, nonce claimed once (platform/replay.ts).
 * Routes parse, authenticate and call TrustzoneService; every refusal is audited there or here.
 */
import type { FastifyReply, FastifyRequest } from "fastify";
import type { Kysely } from "kysely";
import { Type } from "typebox";
import { fromBase64url } from "../core/codec/base64url.ts";
import { fromUtf8 } from "../core/codec/bytes.ts";
import { HandsafeError } from "../core/errors.ts";
import {
  hmacSha256Key,
  nonceRetentionUntil,
  type ParsedSignature,
  parseSignature,
  verifySignature,
} from "../core/http-signatures/index.ts";
import { bearerToken } from "../platform/auth/guard.ts";
import type { Principal } from "../platform/auth/store.ts";
import type { Platform } from "../platform/context.ts";
import type { App } from "../platform/http/app.ts";
import { createBodyCapture, signedRequestView } from "../platform/http/signed-request.ts";
import { createDatabaseReplayGuard, type ReplayTables } from "../platform/replay.ts";
import { TrustzoneService, ZONE_REQUEST_SIGNATURE, type ZoneReport } from "./server.ts";
import * as store from "./store.ts";

const ErrorBody = Type.Object({ error: Type.Object({ code: Type.String(), message: Type.String() }) });
const Id = Type.String({ minLength: 1, maxLength: 100 });
const Loose = Type.Record(Type.String(), Type.Unknown());
/** A container index in a path (strings: path parameters are not coerced). */
const Index = Type.String({ pattern: "^(0|[1-9][0-9]{0,8})$" });
/** How long a relay call may wait for the zone's answer (?wait=seconds). */
export const MAX_RELAY_WAIT_SECONDS = 10;
/** A relayed package (64 KiB sealed) as base64url inside JSON, with room. */
const RELAY_BODY_LIMIT = 128 * 1024;
const MANAGER_REGISTRATIONS_PER_MINUTE = 30;
const capture = createBodyCapture(RELAY_BODY_LIMIT);

export interface TrustzoneRoutes {
  service: TrustzoneService;
  /** Resolves once the signing key exists (created on first start). */
  ready: Promise<void>;
}

export function registerTrustzoneRoutes(app: App, platform: Platform): TrustzoneRoutes {
  const service = new TrustzoneService(platform);
  const ready = service.init();
  // Awaited by startServer; a failure there must not also surface as an unhandled rejection.
  ready.catch(() => undefined);
  const replay = createDatabaseReplayGuard(platform.db as Kysely<ReplayTables>, platform.clock);
  const origin = (request: FastifyRequest) => `ip:${request.ip}`;
  const manager = (request: FastifyRequest) =>
    service.authenticateManager(bearerToken(request), origin(request));

  /** The platform admin guard, its refusals audited. */
  const carrier = async (request: FastifyRequest, action: string, subject?: string): Promise<string> => {
    let p: Principal;
    try {
      p = await platform.guards.admin(request);
    } catch (e) {
      return service.refuse(e, { actor: origin(request), action, ...(subject ? { subject } : {}) });
    }
    return p.userId ? `admin:${p.userId}` : "admin";
  };

  // --- the zone's signed requests -------------------------------------------------------------------

  const zones = new WeakMap<FastifyRequest, store.ZoneRow>();
  const requireZone = async (request: FastifyRequest): Promise<void> => {
    const refuse = (e: unknown, actor = origin(request)) =>
      service.refuse(e, {
        actor,
        action: "tsm.zone_request",
        details: { route: `${request.method} ${request.routeOptions.url ?? "?"}` },
      });
    let parsed: ParsedSignature;
    try {
      parsed = parseSignature(ZONE_REQUEST_SIGNATURE, request.headers);
    } catch (e) {
      return refuse(e);
    }
    const zone = await store.findZone(service.db, parsed.keyId);
    if (!zone)
      return refuse(new HandsafeError("signature.unknown_key", "keyid names no zone", { status: 401 }));
    // While a reset waits for the zone's acknowledgement, the zone still holds the old epoch's keys.
    const epoch = zone.state === "personalised" ? zone.epoch : zone.epoch - 1;
    const zrk = service.zoneRequestKey(zone, epoch);
    try {
      verifySignature(ZONE_REQUEST_SIGNATURE, parsed, signedRequestView(request), hmacSha256Key(zrk), {
        nowMs: platform.clock(),
        body: capture.bodyOf(request),
      });
    } catch (e) {
      return refuse(e, `zone:${zone.id}`);
    } finally {
      zrk.fill(0);
    }
    const until = nonceRetentionUntil(ZONE_REQUEST_SIGNATURE, parsed.created);
    if (!(await replay.claim(`tsm:${zone.id}`, parsed.nonce, until)))
      return refuse(
        new HandsafeError("signature.replayed", "this signature's nonce was already used", { status: 401 }),
        `zone:${zone.id}`,
      );
    zones.set(request, zone);
  };
  const zoneRoute = { preParsing: [capture.preParsing], preHandler: [requireZone] };
  const zoneOf = (request: FastifyRequest): store.ZoneRow => {
    const z = zones.get(request);
    if (!z) throw new HandsafeError("internal", "route is missing the zone signature check", { status: 500 });
    return z;
  };

  // --- public ---------------------------------------------------------------------------------------

  app.get(
    "/v1/tsm/keys",
    {
      schema: {
        tags: ["trustzone"],
        summary: "The trust-zone token-signing keys (Ed25519, by kid): what zones pin",
        response: {
          200: Type.Object({
            keys: Type.Array(
              Type.Object({
                kid: Type.String(),
                alg: Type.String(),
                crv: Type.String(),
                publicKey: Type.String(),
                current: Type.Boolean(),
              }),
            ),
            zoneSignature: Type.Object({ label: Type.String(), alg: Type.String(), tag: Type.String() }),
          }),
        },
      },
    },
    async () => {
      await ready;
      return {
        keys: (await service.publicKeys()).map((k) => ({ ...k, alg: "EdDSA", crv: "Ed25519" })),
        zoneSignature: {
          label: ZONE_REQUEST_SIGNATURE.label,
          alg: ZONE_REQUEST_SIGNATURE.alg,
          tag: ZONE_REQUEST_SIGNATURE.tag,
        },
      };
    },
  );

  app.post(
    "/v1/tsm/managers",
    {
      config: { rateLimit: { max: MANAGER_REGISTRATIONS_PER_MINUTE, timeWindow: 60_000 } },
      schema: {
        tags: ["trustzone"],
        summary:
          "Register a service manager (pending until the carrier validates it); the API key is shown once",
        body: Type.Object(
          {
            name: Type.String({ maxLength: 200 }),
            identificationCode: Type.String({ maxLength: 100 }),
            certification: Type.Optional(Loose),
            memoryBytes: Type.Optional(Type.Integer()),
            applications: Type.Optional(
              Type.Array(Type.Object({ appId: Type.String(), sha256: Type.String() }), { maxItems: 32 }),
            ),
            x25519PublicKey: Type.String({ maxLength: 64 }),
            webhookUrl: Type.Optional(Type.String({ maxLength: 4096 })),
          },
          { additionalProperties: false },
        ),
        response: {
          201: Type.Object({
            managerId: Type.String(),
            apiKey: Type.String(),
            state: Type.String(),
            webhookSecret: Type.Optional(Type.String()),
          }),
          400: ErrorBody,
          429: ErrorBody,
        },
      },
    },
    async (request, reply) => {
      const created = await service.registerManager(request.body, origin(request));
      reply.header("cache-control", "no-store");
      return reply.status(201).send(created);
    },
  );

  // --- the carrier ----------------------------------------------------------------------------------

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
  const relayResponses = { 200: RelayView, 202: RelayView, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody };
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

  return { service, ready };
}
