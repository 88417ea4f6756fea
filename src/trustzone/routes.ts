/**
 * The zone server's HTTP surface (docs/protocols/trustzone.md §7). Three kinds of caller:
 * - the carrier (master TSM): platform admins, under /v1/admin/tsm (platform/auth/guard.ts);
 * - service managers: `Authorization: Bearer <apiKey>` (stored as SHA-256, looked up by hash);
 * - zones: RFC 9421 hmac-sha256 under ZRK with keyid = zone id, nonce claimed once (platform/replay.ts).
 * Routes parse, authenticate and call TrustzoneService; every refusal is audited there or here.
 * The routes themselves are in routes-carrier.ts, routes-manager.ts and routes-zone.ts; this module
 * builds the service, the callers' checks (the zone's signature above all) and the public routes.
 */
import type { FastifyRequest } from "fastify";
import type { Kysely } from "kysely";
import { Type } from "typebox";
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
import { registerCarrierRoutes } from "./routes-carrier.ts";
import { ErrorBody, Loose, RELAY_BODY_LIMIT, type RouteContext } from "./routes-common.ts";
import { registerManagerRoutes } from "./routes-manager.ts";
import { registerZoneRoutes } from "./routes-zone.ts";
import { TrustzoneService, ZONE_REQUEST_SIGNATURE } from "./server.ts";

export { MAX_RELAY_WAIT_SECONDS } from "./routes-common.ts";

import * as store from "./store.ts";

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

  const ctx: RouteContext = { app, platform, service, ready, origin, manager, carrier, zoneRoute, zoneOf };
  registerCarrierRoutes(ctx);
  registerManagerRoutes(ctx);
  registerZoneRoutes(ctx);

  return { service, ready };
}
