/** Accounts (sign-up, admin-created users) and the audit log's read side for admins. */

import type { Kysely } from "kysely";
import { Type } from "typebox";
import { HandsafeError } from "../../core/errors.ts";
import { listAudit, verifyAuditChain } from "../audit.ts";
import type { Platform } from "../context.ts";
import type { App } from "../http/app.ts";
import { type AuthTables, createUser } from "./store.ts";

const UserBody = Type.Object(
  { email: Type.String({ maxLength: 320 }), password: Type.String({ maxLength: 1024 }) },
  { additionalProperties: false },
);
const UserOut = Type.Object({
  id: Type.String(),
  email: Type.String(),
  role: Type.String(),
  createdAt: Type.Integer(),
});

export function registerAuthRoutes(app: App, platform: Platform, options: { allowSignup: boolean }): void {
  const db = platform.db as Kysely<AuthTables>;

  app.post(
    "/v1/auth/signup",
    {
      schema: {
        tags: ["accounts"],
        summary: "Create an account (email + password)",
        body: UserBody,
        response: { 201: UserOut },
      },
      config: { rateLimit: { max: 5, timeWindow: 60_000 } },
    },
    async (request, reply) => {
      if (!options.allowSignup) {
        throw new HandsafeError("auth.signup_closed", "sign-up is closed on this server; ask an admin", {
          status: 403,
        });
      }
      const user = await createUser(db, request.body, platform.clock());
      await platform.audit({ actor: user.id, action: "auth.signup", subject: user.email, outcome: "allow" });
      return reply.status(201).send(user);
    },
  );

  app.post(
    "/v1/admin/users",
    {
      schema: {
        tags: ["admin"],
        summary: "Create a user account",
        security: [{ bearer: [] }],
        body: Type.Object(
          {
            ...UserBody.properties,
            role: Type.Optional(Type.Union([Type.Literal("user"), Type.Literal("admin")])),
          },
          { additionalProperties: false },
        ),
        response: { 201: UserOut },
      },
    },
    async (request, reply) => {
      await platform.guards.admin(request);
      const user = await createUser(db, request.body, platform.clock());
      await platform.audit({
        actor: "admin",
        action: "admin.user_created",
        subject: user.email,
        outcome: "allow",
      });
      return reply.status(201).send(user);
    },
  );

  app.get(
    "/v1/admin/audit",
    {
      schema: {
        tags: ["admin"],
        summary: "Read the audit log",
        security: [{ bearer: [] }],
        querystring: Type.Object({
          after: Type.Optional(Type.String({ pattern: "^[0-9]{1,15}$" })),
          before: Type.Optional(Type.String({ pattern: "^[1-9][0-9]{0,14}$" })),
          limit: Type.Optional(Type.String({ pattern: "^[0-9]{1,4}$" })),
          latest: Type.Optional(Type.Union([Type.Literal("true"), Type.Literal("false")])),
        }),
      },
    },
    async (request) => {
      await platform.guards.admin(request);
      return {
        records: await listAudit(platform.database, {
          afterSeq: Number(request.query.after ?? 0),
          ...(request.query.before === undefined ? {} : { beforeSeq: Number(request.query.before) }),
          limit: Math.min(1000, Math.max(1, Number(request.query.limit ?? 100))),
          latest: request.query.latest === "true",
        }),
      };
    },
  );

  app.get(
    "/v1/admin/audit/verify",
    { schema: { tags: ["admin"], summary: "Verify the audit log's hash chain", security: [{ bearer: [] }] } },
    async (request) => {
      await platform.guards.admin(request);
      return verifyAuditChain(platform.database);
    },
  );
}
