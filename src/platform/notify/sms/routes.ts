/**
 * The SMS path's HTTP surface:
 * - POST /v1/sms/inbound            the HTTP gateway's webhook (signature checked on the raw body);
 * - GET  /v1/sms/outbox             reading the built-in SMS centre (admin);
 * - POST /v1/sms/outbox/inbound     a simulated handset texts the service (admin).
 * The outbox routes exist only with the outbox gateway, the webhook only with the HTTP gateway.
 */
import type { Kysely } from "kysely";
import { Type } from "typebox";
import { HandsafeError } from "../../../core/errors.ts";
import type { Platform } from "../../context.ts";
import type { App } from "../../http/app.ts";
import type { AnySmsGateway } from "./index.ts";
import { normalisePhoneNumber } from "./phone.ts";
import { listTexts, markTextsRead, SMS_ID_PATTERN, type SmsTables } from "./store.ts";
import { MAX_TEXT_LENGTH } from "./text.ts";

const PhoneNumber = Type.String({ minLength: 1, maxLength: 40 });
const QueryInt = Type.String({ pattern: "^[0-9]{1,4}$" });
const ErrorBody = Type.Object({ error: Type.Object({ code: Type.String(), message: Type.String() }) });
const Text = Type.Object({
  id: Type.String(),
  direction: Type.Union([Type.Literal("mt"), Type.Literal("mo")]),
  from: Type.String(),
  to: Type.String(),
  text: Type.String(),
  at: Type.Integer(),
  readAt: Type.Union([Type.Integer(), Type.Null()]),
});
const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 100;

export function registerSmsRoutes(app: App, platform: Platform, gateway: AnySmsGateway): void {
  if (gateway.kind === "http") {
    const http = gateway;
    // Its own scope: JSON arrives as raw bytes here, because the signature covers the bytes.
    void app.register(async (scope) => {
      scope.addContentTypeParser("application/json", { parseAs: "buffer" }, (_request, body, done) =>
        done(null, body),
      );
      scope.post(
        "/v1/sms/inbound",
        {
          schema: {
            summary: "Inbound text from the SMS provider (signed webhook)",
            tags: ["sms"],
            response: { 200: Type.Object({ id: Type.String() }), 401: ErrorBody },
          },
        },
        async (request) => {
          const raw = request.body;
          if (!(raw instanceof Uint8Array))
            throw new HandsafeError("request.unsupported_media_type", "send application/json", {
              status: 415,
            });
          try {
            const sms = await http.receiveWebhook(request.headers, raw);
            return { id: sms.id };
          } catch (e) {
            if (e instanceof HandsafeError && e.status === 401)
              await platform.audit({
                actor: `ip:${request.ip}`,
                action: "sms.inbound",
                outcome: "deny",
                details: { code: e.code },
              });
            throw e;
          }
        },
      );
    });
  }

  if (gateway.kind !== "outbox") return;
  const outbox = gateway;
  const db = platform.db as Kysely<SmsTables>;

  app.get(
    "/v1/sms/outbox",
    {
      schema: {
        summary: "Texts held by the built-in SMS centre for one number, oldest first",
        tags: ["sms"],
        security: [{ bearer: [] }],
        querystring: Type.Object(
          {
            to: PhoneNumber,
            after: Type.Optional(Type.String({ pattern: SMS_ID_PATTERN })),
            limit: Type.Optional(QueryInt),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ texts: Type.Array(Text) }), 401: ErrorBody, 403: ErrorBody },
      },
    },
    async (request) => {
      await platform.guards.admin(request);
      const { to, after, limit } = request.query;
      const texts = await listTexts(db, {
        to: normalisePhoneNumber(to),
        ...(after ? { after } : {}),
        limit: Math.min(Math.max(Number(limit ?? DEFAULT_LIMIT), 1), MAX_LIMIT),
      });
      // read_at records when a text was first picked up; the listing shows it as it was before.
      await markTextsRead(
        db,
        texts.filter((t) => t.readAt === null).map((t) => t.id),
        platform.clock(),
      );
      return { texts };
    },
  );

  app.post(
    "/v1/sms/outbox/inbound",
    {
      schema: {
        summary: "A simulated handset texts the service",
        tags: ["sms"],
        security: [{ bearer: [] }],
        body: Type.Object(
          {
            from: PhoneNumber,
            to: Type.Optional(PhoneNumber),
            text: Type.String({ minLength: 1, maxLength: MAX_TEXT_LENGTH }),
          },
          { additionalProperties: false },
        ),
        response: { 200: Text, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody },
      },
    },
    async (request) => {
      const admin = await platform.guards.admin(request);
      const { from, to, text } = request.body;
      const stored = await outbox.submitInbound(from, text, to);
      await platform.audit({
        actor: admin.userId ? `admin:${admin.userId}` : "admin",
        action: "sms.simulated_inbound",
        subject: `sms:${stored.id}`,
        outcome: "info",
      });
      return stored;
    },
  );
}
