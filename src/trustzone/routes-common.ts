/**
 * What the trust-zone route modules share (docs/protocols/trustzone.md §7): the schemas they reuse
 * and the context registerTrustzoneRoutes (routes.ts) hands each of them.
 */
import type { FastifyRequest } from "fastify";
import { Type } from "typebox";
import type { Platform } from "../platform/context.ts";
import type { App } from "../platform/http/app.ts";
import type { BodyCapture } from "../platform/http/signed-request.ts";
import type { TrustzoneService } from "./server.ts";
import type * as store from "./store.ts";

export const ErrorBody = Type.Object({ error: Type.Object({ code: Type.String(), message: Type.String() }) });
export const Id = Type.String({ minLength: 1, maxLength: 100 });
export const Loose = Type.Record(Type.String(), Type.Unknown());
/** A container index in a path (strings: path parameters are not coerced). */
export const Index = Type.String({ pattern: "^(0|[1-9][0-9]{0,8})$" });
/** How long a relay call may wait for the zone's answer (?wait=seconds). */
export const MAX_RELAY_WAIT_SECONDS = 10;
/** A relayed package (64 KiB sealed) as base64url inside JSON, with room. */
export const RELAY_BODY_LIMIT = 128 * 1024;

export interface RouteContext {
  app: App;
  platform: Platform;
  service: TrustzoneService;
  /** Resolves once the signing key exists. */
  ready: Promise<void>;
  origin(request: FastifyRequest): string;
  /** The calling service manager (Bearer API key), or a 401 (audited). */
  manager(request: FastifyRequest): Promise<store.ManagerRow>;
  /** The platform admin guard, its refusals audited: the carrier's actor name. */
  carrier(request: FastifyRequest, action: string, subject?: string): Promise<string>;
  /** Route options of a ZRK-signed zone request (body capture + signature check). */
  zoneRoute: {
    preParsing: BodyCapture["preParsing"][];
    preHandler: ((request: FastifyRequest) => Promise<void>)[];
  };
  /** The zone whose signature the request carried. */
  zoneOf(request: FastifyRequest): store.ZoneRow;
}
