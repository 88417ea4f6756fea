/**
 * Messaging's HTTP surface (docs/protocols/messaging.md): admins create senders; senders post
 * messages and read their status and replies (API key); handsets register (no key yet: the number
 * is proved by a code) and then pull, acknowledge, read, delete and reply with signed requests
 * (request-auth.ts). Parse, authorise, call the services; bodies are checked by protocol.ts so a
 * bad one answers its own messaging.* code.
 */
import type { FastifyRequest } from "fastify";
import type { Kysely } from "kysely";
import { Type } from "typebox";
import { HPKE_AEAD_ID, HPKE_KDF_ID, HPKE_KEM_ID } from "../core/crypto/hpke.ts";
import { HandsafeError } from "../core/errors.ts";
import { bearerToken } from "../platform/auth/guard.ts";
import type { Platform } from "../platform/context.ts";
import type { App } from "../platform/http/app.ts";
import { createDatabaseReplayGuard, type ReplayTables } from "../platform/replay.ts";
import { HandsetInbox } from "./inbox.ts";
import {
  CODE_DIGITS,
  HANDSET_CODE_PREFIX,
  LABELS,
  MAX_ATTACHMENT_BYTES,
  MESSAGE_ID_PATTERN,
} from "./protocol.ts";
import { EVENTS_CONTENT_TYPE, INBOX_EVENTS_PATH, MessagingPush } from "./push.ts";
import { RegistrationService } from "./registration.ts";
import { createHandsetRequestAuth } from "./request-auth.ts";
import { type MessagingDeps, MessagingService } from "./server.ts";

const ErrorBody = Type.Object({ error: Type.Object({ code: Type.String(), message: Type.String() }) });
const MessageId = Type.String({ pattern: MESSAGE_ID_PATTERN });
const RegistrationId = Type.String({ pattern: "^reg_[A-Za-z0-9_-]{16}$" });
/** Loose at the edge on purpose: protocol.ts answers messaging.invalid_body / body_too_large. */
const Body = Type.Unknown();
/** One of MESSAGE_STATUSES (protocol.ts). */
const Status = Type.String();
const Accepted = Type.Object({ id: Type.String(), status: Status });
const RegistrationAnswer = Type.Object({
  registrationId: Type.String(),
  /** One of REGISTRATION_STATES (protocol.ts). */
  state: Type.String(),
  handsetId: Type.String(),
  expiresAt: Type.Integer(),
});
const StatusView = Type.Object({
  id: Type.String(),
  to: Type.String(),
  status: Status,
  createdAt: Type.Integer(),
  expiresAt: Type.Integer(),
  deliveredAt: Type.Union([Type.Integer(), Type.Null()]),
  readAt: Type.Union([Type.Integer(), Type.Null()]),
  deliveries: Type.Array(
    Type.Object({
      handsetId: Type.String(),
      deviceType: Type.String(),
      state: Type.String(),
      deliveredAt: Type.Optional(Type.Integer()),
      readAt: Type.Optional(Type.Integer()),
    }),
  ),
  replies: Type.Integer(),
});
const InboxItem = Type.Object({
  id: Type.String(),
  senderId: Type.String(),
  senderName: Type.String(),
  state: Type.String(),
  enc: Type.String(),
  ciphertext: Type.String(),
  createdAt: Type.Integer(),
  expiresAt: Type.Integer(),
});
/** A 64 KiB attachment as base64url inside JSON, with room to spare. */
const MESSAGE_BODY_LIMIT = Math.ceil((MAX_ATTACHMENT_BYTES * 4) / 3) + 16 * 1024;

export interface MessagingRoutes {
  service: MessagingService;
  registrations: RegistrationService;
  inbox: HandsetInbox;
}

export interface MessagingRouteDeps extends MessagingDeps {
  /** The number handsets text "HSREG <code>" to (the SMS gateway's service number). */
  serviceNumber: string;
  codeTtlSeconds: number;
  /** Registration requests per minute per client address; 0 = off. */
  registrationRateLimitPerMinute: number;
}

export function registerMessagingRoutes(
  app: App,
  platform: Platform,
  deps: MessagingRouteDeps,
): MessagingRoutes {
  const service = new MessagingService(platform, deps);
  const registrations = new RegistrationService(platform, service, deps.codeTtlSeconds);
  const inbox = new HandsetInbox(service);
  const auth = createHandsetRequestAuth(
    platform,
    createDatabaseReplayGuard(platform.db as Kysely<ReplayTables>, platform.clock),
  );
  const { guards } = platform;
  const origin = (request: FastifyRequest) => `ip:${request.ip}`;
  const sender = (request: FastifyRequest) =>
    service.authenticateSender(bearerToken(request), origin(request));
  const limit = deps.registrationRateLimitPerMinute;
  const registrationRate = limit > 0 ? { max: limit, timeWindow: 60_000 } : false;

  // --- admin ----------------------------------------------------------------------------------------

  app.post(
    "/v1/admin/senders",
    {
      schema: {
        tags: ["messaging"],
        summary: "Create a sender: its API key and webhook secret are shown once",
        security: [{ bearer: [] }],
        body: Type.Object(
          {
            name: Type.String({ maxLength: 200 }),
            webhookUrl: Type.Optional(Type.String({ maxLength: 4096 })),
          },
          { additionalProperties: false },
        ),
        response: {
          201: Type.Object({
            id: Type.String(),
            name: Type.String(),
            webhookUrl: Type.Union([Type.String(), Type.Null()]),
            createdAt: Type.Integer(),
            apiKey: Type.String(),
            webhookSecret: Type.String(),
          }),
          400: ErrorBody,
        },
      },
    },
    async (request, reply) => {
      const admin = await guards.admin(request);
      const created = await service.createSender(
        request.body,
        admin.userId ? `admin:${admin.userId}` : "admin",
      );
      reply.header("cache-control", "no-store");
      return reply.status(201).send(created);
    },
  );

  app.get(
    "/v1/admin/senders",
    {
      schema: {
        tags: ["messaging"],
        summary: "Senders (never their keys)",
        security: [{ bearer: [] }],
        response: {
          200: Type.Object({
            senders: Type.Array(
              Type.Object({
                id: Type.String(),
                name: Type.String(),
                webhookUrl: Type.Union([Type.String(), Type.Null()]),
                createdAt: Type.Integer(),
                disabledAt: Type.Union([Type.Integer(), Type.Null()]),
              }),
            ),
          }),
        },
      },
    },
    async (request) => {
      await guards.admin(request);
      return { senders: await service.listSenders() };
    },
  );

  app.delete(
    "/v1/admin/senders/:id",
    {
      schema: {
        tags: ["messaging"],
        summary: "Disable a sender: its API key stops working at once",
        security: [{ bearer: [] }],
        params: Type.Object({ id: Type.String({ maxLength: 100 }) }),
        response: { 204: Type.Null(), 404: ErrorBody },
      },
    },
    async (request, reply) => {
      const admin = await guards.admin(request);
      await service.disableSender(request.params.id, admin.userId ? `admin:${admin.userId}` : "admin");
      return reply.status(204).send(null);
    },
  );

  // --- senders --------------------------------------------------------------------------------------

  app.post(
    "/v1/messages",
    {
      bodyLimit: MESSAGE_BODY_LIMIT,
      schema: {
        tags: ["messaging"],
        summary: "Send a secure message to a phone number (sender API key; optional Idempotency-Key)",
        security: [{ bearer: [] }],
        headers: Type.Object({ "idempotency-key": Type.Optional(Type.String({ maxLength: 200 })) }),
        body: Type.Object(
          {
            to: Type.String({ maxLength: 200 }),
            body: Body,
            expiresInSeconds: Type.Optional(Type.Unknown()),
            replyWebhook: Type.Optional(Type.String({ maxLength: 4096 })),
          },
          { additionalProperties: false },
        ),
        response: { 202: Accepted, 200: Accepted, 400: ErrorBody, 401: ErrorBody, 413: ErrorBody },
      },
    },
    async (request, reply) => {
      const s = await sender(request);
      const key = request.headers["idempotency-key"];
      const accepted = await service.sendMessage(s, request.body, typeof key === "string" ? key : undefined);
      if (accepted.duplicate) reply.header("idempotent-replayed", "true");
      return reply.status(202).send({ id: accepted.id, status: accepted.status });
    },
  );

  app.get(
    "/v1/messages/:id",
    {
      schema: {
        tags: ["messaging"],
        summary: "A message's status with per-handset delivery and read receipts (its sender only)",
        security: [{ bearer: [] }],
        params: Type.Object({ id: Type.String({ maxLength: 100 }) }),
        response: { 200: StatusView, 401: ErrorBody, 404: ErrorBody },
      },
    },
    async (request) => service.messageStatus(await sender(request), request.params.id),
  );

  app.get(
    "/v1/messages/:id/replies",
    {
      schema: {
        tags: ["messaging"],
        summary: "The replies to a message still within retention (its sender only)",
        security: [{ bearer: [] }],
        params: Type.Object({ id: Type.String({ maxLength: 100 }) }),
        response: {
          200: Type.Object({
            replies: Type.Array(
              Type.Object({
                id: Type.String(),
                handsetId: Type.String(),
                at: Type.Integer(),
                body: Type.Unknown(),
              }),
            ),
          }),
          401: ErrorBody,
          404: ErrorBody,
        },
      },
    },
    async (request) => ({ replies: await service.messageReplies(await sender(request), request.params.id) }),
  );

  // --- registration ---------------------------------------------------------------------------------

  app.get(
    "/v1/messaging/service",
    {
      schema: {
        tags: ["messaging"],
        summary: "What an app needs before it registers: the service number, code form, HPKE suite",
        response: {
          200: Type.Object({
            serviceNumber: Type.String(),
            handsetCodePrefix: Type.String(),
            codeDigits: Type.Integer(),
            codeTtlSeconds: Type.Integer(),
            hpke: Type.Object({
              kem: Type.Integer(),
              kdf: Type.Integer(),
              aead: Type.Integer(),
              info: Type.String(),
            }),
            signatureTag: Type.String(),
          }),
        },
      },
    },
    async () => ({
      serviceNumber: deps.serviceNumber,
      handsetCodePrefix: HANDSET_CODE_PREFIX,
      codeDigits: CODE_DIGITS,
      codeTtlSeconds: deps.codeTtlSeconds,
      hpke: { kem: HPKE_KEM_ID, kdf: HPKE_KDF_ID, aead: HPKE_AEAD_ID, info: LABELS.hpkeInfo },
      signatureTag: LABELS.requestTag,
    }),
  );

  app.post(
    "/v1/messaging/registrations",
    {
      config: { rateLimit: registrationRate },
      schema: {
        tags: ["messaging"],
        summary:
          "Register a handset's keys for a number: server_otp texts a code (201); handset_otp matches the app's texted code (200 confirmed, or 202 waiting for the text)",
        body: Type.Object(
          {
            variant: Type.String({ maxLength: 40 }),
            phoneNumber: Type.String({ maxLength: 200 }),
            deviceType: Type.String({ maxLength: 200 }),
            encryptionKey: Type.String({ maxLength: 200 }),
            authKey: Type.String({ maxLength: 200 }),
            code: Type.Optional(Type.String({ maxLength: 40 })),
            replaces: Type.Optional(Type.String({ maxLength: 100 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: RegistrationAnswer,
          201: RegistrationAnswer,
          202: RegistrationAnswer,
          400: ErrorBody,
          409: ErrorBody,
          429: ErrorBody,
        },
      },
    },
    async (request, reply) => {
      const answer = await registrations.start(request.body, origin(request));
      const status = answer.state === "confirmed" ? 200 : request.body.variant === "server_otp" ? 201 : 202;
      reply.header("cache-control", "no-store");
      return reply.status(status).send(answer);
    },
  );

  app.post(
    "/v1/messaging/registrations/:id/confirm",
    {
      config: { rateLimit: registrationRate },
      schema: {
        tags: ["messaging"],
        summary: "Confirm a server_otp registration with the texted code",
        params: Type.Object({ id: RegistrationId }),
        body: Type.Object(
          { phoneNumber: Type.String({ maxLength: 200 }), code: Type.String({ maxLength: 40 }) },
          { additionalProperties: false },
        ),
        response: {
          200: RegistrationAnswer,
          401: ErrorBody,
          404: ErrorBody,
          409: ErrorBody,
          410: ErrorBody,
          423: ErrorBody,
        },
      },
    },
    async (request) => registrations.confirm(request.params.id, request.body, origin(request)),
  );

  app.get(
    "/v1/messaging/registrations/:id",
    {
      schema: {
        tags: ["messaging"],
        summary: "A registration's state, for the app holding its auth key (signed with it)",
        params: Type.Object({ id: RegistrationId }),
        response: { 200: RegistrationAnswer, 401: ErrorBody, 404: ErrorBody },
      },
    },
    async (request) => {
      const view = await registrations.view(request.params.id);
      if (!view) {
        await platform.audit({
          actor: origin(request),
          action: "messaging.registration_status",
          subject: `registration:${request.params.id}`,
          outcome: "deny",
          details: { code: "messaging.unknown_registration" },
        });
        throw new HandsafeError("messaging.unknown_registration", "no such registration", { status: 404 });
      }
      await auth.verifyWith(request, { keyId: view.handsetId, publicKey: view.authKey });
      return {
        registrationId: view.registrationId,
        state: view.state,
        handsetId: view.handsetId,
        expiresAt: view.expiresAt,
      };
    },
  );

  // --- the handset's inbox (signed) -----------------------------------------------------------------

  app.get(
    "/v1/messaging/inbox",
    {
      ...auth.handsetRoute,
      schema: {
        tags: ["messaging"],
        summary: "Messages sealed to this handset: pending ones, or every one still held with ?all=1",
        querystring: Type.Object(
          { all: Type.Optional(Type.Union([Type.Literal("0"), Type.Literal("1")])) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ messages: Type.Array(InboxItem) }), 401: ErrorBody },
      },
    },
    async (request) => ({
      messages: await inbox.list(auth.handsetOf(request), { all: request.query.all === "1" }),
    }),
  );

  // The push stream (push.ts): a `message` event whenever a copy is sealed to this handset.
  const push = new MessagingPush(platform, {}, (what, err) => app.log.warn({ err }, what));
  service.push = push;
  app.get(
    INBOX_EVENTS_PATH,
    {
      ...auth.handsetRoute,
      schema: {
        tags: ["messaging"],
        summary:
          "This handset's push stream (text/event-stream): a `message` event naming each message as a copy " +
          "is sealed to it; signed like every inbox request (refusals: 401 signature.*)",
      },
    },
    async (request, reply) => {
      const connection = push.open(auth.handsetOf(request).id);
      // However the response ends (client gone, server closing), the stream leaves the hub.
      reply.raw.once("close", () => connection.stream.destroy());
      if (reply.raw.destroyed || request.raw.socket.destroyed) connection.stream.destroy();
      void reply
        .header("content-type", `${EVENTS_CONTENT_TYPE}; charset=utf-8`)
        .header("cache-control", "no-store")
        .header("x-accel-buffering", "no");
      return reply.send(connection.stream);
    },
  );
  // Open streams would hold app.close() forever: end them first.
  app.addHook("preClose", async () => push.endStreams());
  app.addHook("onClose", async () => push.close());

  const inboxAction = (
    method: "POST" | "DELETE",
    path: string,
    summary: string,
    act: (handset: ReturnType<typeof auth.handsetOf>, id: string) => Promise<void>,
  ) =>
    app.route({
      method,
      url: path,
      ...auth.handsetRoute,
      schema: {
        tags: ["messaging"],
        summary,
        params: Type.Object({ id: MessageId }),
        response: { 204: Type.Null(), 401: ErrorBody, 404: ErrorBody, 410: ErrorBody },
      },
      handler: async (request, reply) => {
        await act(auth.handsetOf(request), (request.params as { id: string }).id);
        return reply.status(204).send(null);
      },
    });

  inboxAction("POST", "/v1/messaging/inbox/:id/ack", "This handset has the message (delivered)", (h, id) =>
    inbox.acknowledge(h, id),
  );
  inboxAction("POST", "/v1/messaging/inbox/:id/read", "Read receipt", (h, id) => inbox.markRead(h, id));
  inboxAction("DELETE", "/v1/messaging/inbox/:id", "Drop this handset's copy", (h, id) =>
    inbox.deleteCopy(h, id),
  );

  app.post(
    "/v1/messaging/inbox/:id/reply",
    {
      ...auth.handsetRoute,
      bodyLimit: MESSAGE_BODY_LIMIT,
      schema: {
        tags: ["messaging"],
        summary: "Reply to a message: stored sealed, the sender's webhook is told",
        params: Type.Object({ id: MessageId }),
        body: Type.Object({ body: Body }, { additionalProperties: false }),
        response: { 202: Type.Object({ id: Type.String() }), 400: ErrorBody, 401: ErrorBody, 404: ErrorBody },
      },
    },
    async (request, reply) =>
      reply
        .status(202)
        .send(await inbox.reply(auth.handsetOf(request), request.params.id, request.body.body)),
  );

  return { service, registrations, inbox };
}
