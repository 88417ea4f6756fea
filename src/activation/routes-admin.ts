/** Activation's admin routes: services, on-behalf activations, secret pools, commands. */
import type { Kysely } from "kysely";
import { Type } from "typebox";
import { HandsafeError } from "../core/errors.ts";
import { type AuthTables, findUserByEmail } from "../platform/auth/store.ts";
import type { Platform } from "../platform/context.ts";
import type { App } from "../platform/http/app.ts";
import { findHandset } from "../platform/registry/handsets.ts";
import type { CommandService } from "./commands.ts";
import { HandsetId, ServiceInfoSchema, ServiceUid } from "./schemas.ts";
import type { ActivationService } from "./server.ts";

export function registerActivationAdminRoutes(
  app: App,
  platform: Platform,
  service: ActivationService,
  commands: CommandService,
): void {
  const { guards } = platform;
  const authDb = platform.db as Kysely<AuthTables>;

  app.post(
    "/v1/admin/services",
    {
      schema: {
        tags: ["admin"],
        summary: "Create an activation-capable service with its own Ed25519 signing key",
        security: [{ bearer: [] }],
        body: Type.Object(
          { uid: ServiceUid, name: Type.String({ minLength: 1, maxLength: 100 }) },
          { additionalProperties: false },
        ),
        response: { 201: ServiceInfoSchema },
      },
    },
    async (request, reply) => {
      await guards.admin(request);
      const s = await service.createService(request.body, "admin");
      return reply.status(201).send(s);
    },
  );

  app.post(
    "/v1/admin/activations",
    {
      schema: {
        tags: ["admin"],
        summary: "Activate a service on behalf of a user: pending until the handset's client next runs",
        security: [{ bearer: [] }],
        body: Type.Object(
          { email: Type.String(), handsetId: HandsetId, serviceUid: ServiceUid },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      await guards.admin(request);
      const userId = await userIdOf(request.body.email);
      return reply
        .status(201)
        .send(
          await service.activateOnBehalf(
            { userId, handsetId: request.body.handsetId, serviceUid: request.body.serviceUid },
            "admin",
          ),
        );
    },
  );

  app.post(
    "/v1/admin/secret-pool",
    {
      schema: {
        tags: ["admin"],
        summary: "Pre-generate activation secrets for a user and service",
        security: [{ bearer: [] }],
        body: Type.Object(
          {
            email: Type.String(),
            serviceUid: ServiceUid,
            count: Type.Integer({ minimum: 1, maximum: 100 }),
            ttlSeconds: Type.Optional(Type.Integer({ minimum: 60, maximum: 90 * 86400 })),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      await guards.admin(request);
      const userId = await userIdOf(request.body.email);
      return reply.status(201).send(
        await service.pregenerateSecrets(
          {
            userId,
            serviceUid: request.body.serviceUid,
            count: request.body.count,
            ttlSeconds: request.body.ttlSeconds ?? 7 * 86400,
          },
          "admin",
        ),
      );
    },
  );

  app.post(
    "/v1/admin/services/:serviceUid/commands",
    {
      schema: {
        tags: ["admin"],
        summary: "Send a command to an activated handset, authenticated with the per-service key",
        security: [{ bearer: [] }],
        params: Type.Object({ serviceUid: ServiceUid }),
        body: Type.Object(
          {
            handsetId: HandsetId,
            name: Type.String({ pattern: "^[a-z][a-z0-9._-]{0,62}$" }),
            args: Type.Optional(
              Type.Record(
                Type.String({ maxLength: 64 }),
                Type.Union([
                  Type.String({ maxLength: 1024 }),
                  Type.Integer({ minimum: -Number.MAX_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER }),
                  Type.Boolean(),
                ]),
              ),
            ),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      await guards.admin(request);
      const handset = await findHandset(platform.db, request.body.handsetId);
      if (!handset) throw new HandsafeError("handset.unknown", "no such handset", { status: 404 });
      return reply.status(201).send(
        await commands.sendCommand(
          {
            serviceUid: request.params.serviceUid,
            handsetId: request.body.handsetId,
            name: request.body.name,
            args: request.body.args ?? {},
          },
          "admin",
        ),
      );
    },
  );

  async function userIdOf(email: string): Promise<string> {
    const user = await findUserByEmail(authDb, email);
    if (!user) throw new HandsafeError("auth.unknown_user", "no account with this email", { status: 404 });
    return user.id;
  }
}
