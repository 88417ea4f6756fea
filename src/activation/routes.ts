/**
 * Activation's HTTP surface: parse (schemas at the edge), authorise, call ActivationService.
 * docs/protocols/activation.md describes each message.
 */

import type { FastifyRequest } from "fastify";
import type { Kysely } from "kysely";
import { Type } from "typebox";
import { fromBase64urlOfLength } from "../core/codec/base64url.ts";
import { HandsafeError } from "../core/errors.ts";
import { DEFAULT_FAILURE_LIMITS, FailureLimiter } from "../platform/auth/failure-limiter.ts";
import { type AuthTables, authenticateUser, issueToken, type Principal } from "../platform/auth/store.ts";
import type { Platform } from "../platform/context.ts";
import type { App } from "../platform/http/app.ts";
import { takeNotifications } from "../platform/notify/inbox.ts";
import { enrolHandset } from "../platform/registry/handsets.ts";
import { CommandService } from "./commands.ts";
import { ACTIVATION_CONTENT_TYPE, verifyLoginProof } from "./protocol.ts";
import { registerActivationAdminRoutes } from "./routes-admin.ts";
import {
  b64u,
  ErrorBody,
  HandsetId,
  LoginBody,
  QueryInt,
  ServiceInfoSchema,
  ServiceUid,
  SignedGrantSchema,
} from "./schemas.ts";
import { ActivationService } from "./server.ts";

const SESSION_TTL_MS = 15 * 60 * 1000;
/** Logins are limited per client address and per account, so neither can be brute-forced. */
const LOGIN_RATE = { max: 10, timeWindow: 60_000 };

export function registerActivationRoutes(app: App, platform: Platform): ActivationService {
  const service = new ActivationService(platform);
  const commands = new CommandService(platform, service);
  const authDb = platform.db as Kysely<AuthTables>;
  const { guards } = platform;

  const loginRateLimit = {
    ...LOGIN_RATE,
    // After parsing, so the key can name the account being tried.
    hook: "preHandler" as const,
    keyGenerator: (request: FastifyRequest) => {
      const email = (request.body as { email?: unknown } | undefined)?.email;
      return `login:${request.ip}:${typeof email === "string" ? email.trim().toLowerCase().slice(0, 320) : ""}`;
    },
    onExceeded: (request: FastifyRequest) => {
      void platform.audit({
        actor: `ip:${request.ip}`,
        action: "auth.rate_limited",
        subject: request.routeOptions.url ?? "",
        outcome: "deny",
      });
    },
  };

  const failures = new FailureLimiter(DEFAULT_FAILURE_LIMITS, platform.clock);

  /**
   * Sign-in on a handset: the account's password, plus a signature by the handset's identity key
   * (so a password and someone's public key cannot take that handset's identity). Failed tries
   * count per account and per address, whatever the route's own rate limit.
   */
  async function signIn(
    request: FastifyRequest,
    body: {
      email: string;
      password: string;
      identityKey: string;
      proof: string;
      timestamp: number | string;
      label?: string;
    },
  ) {
    const identityKey = fromBase64urlOfLength(body.identityKey, 32, "identityKey");
    const proof = fromBase64urlOfLength(body.proof, 64, "proof");
    const account = body.email.trim().toLowerCase();
    const deny = async (e: unknown) => {
      await platform.audit({
        actor: `ip:${request.ip}`,
        action: "auth.login",
        subject: "handset",
        outcome: "deny",
        details: { code: e instanceof HandsafeError ? e.code : "internal" },
      });
      return e;
    };
    try {
      failures.check(account, request.ip);
    } catch (e) {
      throw await deny(e);
    }
    let user: Awaited<ReturnType<typeof authenticateUser>>;
    try {
      user = await authenticateUser(authDb, body.email, body.password);
      verifyLoginProof(
        { email: body.email, identityKey, timestamp: Number(body.timestamp), proof },
        platform.clock(),
      );
    } catch (e) {
      failures.fail(account, request.ip);
      throw await deny(e);
    }
    failures.succeed(account);
    const handset = await enrolHandset(
      platform.db,
      { userId: user.id, identityKey, ...(body.label ? { label: body.label } : {}) },
      platform.clock(),
    );
    await platform.audit({ actor: user.id, action: "auth.login", subject: handset.id, outcome: "allow" });
    return { user, handset };
  }

  function handsetOf(p: Principal): { userId: string; handsetId: string } {
    if (p.kind !== "session" || !p.userId || !p.handsetId)
      throw new HandsafeError("auth.forbidden", "a handset session is required", { status: 403 });
    return { userId: p.userId, handsetId: p.handsetId };
  }

  /** A handset session may act on its own handset only; an admin on any. */
  async function mayActOnHandset(request: FastifyRequest, handsetId: string): Promise<Principal> {
    const p = await guards.session(request, { allowAdmin: true });
    if (p.kind === "session" && p.handsetId !== handsetId) {
      await platform.audit({
        actor: p.handsetId ?? "unknown",
        action: "auth.cross_handset",
        subject: handsetId,
        outcome: "deny",
      });
      throw new HandsafeError("auth.forbidden", "a handset may only see its own keys", { status: 403 });
    }
    return p;
  }

  app.post(
    "/v1/activation/login",
    {
      schema: {
        tags: ["activation"],
        summary: "Sign in on a handset (email, password, handset identity key); returns a session",
        body: LoginBody,
        response: {
          200: Type.Object({
            token: Type.String(),
            expiresAt: Type.Integer(),
            handsetId: Type.String(),
            pendingServices: Type.Array(Type.String()),
          }),
          401: ErrorBody,
        },
      },
      config: { rateLimit: loginRateLimit },
    },
    async (request) => {
      const { user, handset } = await signIn(request, request.body);
      const { token, expiresAt } = await issueToken(
        authDb,
        { kind: "session", userId: user.id, handsetId: handset.id, ttlMs: SESSION_TTL_MS },
        platform.clock(),
      );
      return {
        token,
        expiresAt: expiresAt!,
        handsetId: handset.id,
        pendingServices: await service.pendingServices(handset.id),
      };
    },
  );

  app.post(
    "/v1/activation/grants",
    {
      schema: {
        tags: ["activation"],
        summary: "One-time activation secret and service address, signed with the service key",
        security: [{ bearer: [] }],
        body: Type.Object({ serviceUid: ServiceUid }, { additionalProperties: false }),
        response: { 200: SignedGrantSchema },
      },
    },
    async (request, reply) => {
      const { userId, handsetId } = handsetOf(await guards.session(request));
      const signed = await service.issueGrant({ userId, handsetId, serviceUid: request.body.serviceUid });
      reply.header("cache-control", "no-store");
      reply.type(ACTIVATION_CONTENT_TYPE);
      return signed;
    },
  );

  // The browser flow: a sign-in page whose answer is the signed grant itself, in a content type
  // that the browser hands to the handsafe plug-in (SDK: handleActivationResponse).
  app.get(
    "/v1/activation/signin",
    {
      schema: {
        tags: ["activation"],
        summary: "Web sign-in page for the browser flow",
        querystring: Type.Object({ service: ServiceUid }),
      },
    },
    async (request, reply) => {
      const s = await service.getService(request.query.service);
      reply
        .type("text/html; charset=utf-8")
        .header("content-security-policy", "default-src 'none'; form-action 'self'");
      return signinPage(s.uid, s.name);
    },
  );

  app.post(
    "/v1/activation/signin",
    {
      schema: {
        tags: ["activation"],
        summary: "Browser sign-in: answers application/vnd.handsafe.activation+json",
        body: Type.Object(
          { ...LoginBody.properties, serviceUid: ServiceUid },
          { additionalProperties: false },
        ),
        response: { 200: SignedGrantSchema },
      },
      config: { rateLimit: loginRateLimit },
    },
    async (request, reply) => {
      const { user, handset } = await signIn(request, request.body);
      const signed = await service.issueGrant({
        userId: user.id,
        handsetId: handset.id,
        serviceUid: request.body.serviceUid,
      });
      reply.header("cache-control", "no-store");
      reply.type(ACTIVATION_CONTENT_TYPE);
      return signed;
    },
  );

  // The service UID endpoint: no login — CPace authenticates both sides by the secret.
  // Guessing is one try per secret already; this bounds the work (and audit records) one client
  // address can cause on the unauthenticated exchange endpoints.
  // HANDSAFE_EXCHANGE_RATE_LIMIT sets it (0 = off, for a load test from one address).
  const exchangeLimit = platform.config.exchangeRateLimitPerMinute;
  const exchangeRate = exchangeLimit > 0 ? { max: exchangeLimit, timeWindow: 60_000 } : false;
  app.post(
    "/v1/activation/exchange/:serviceUid/start",
    {
      schema: {
        tags: ["activation"],
        summary: "CPace: the handset's Ya; answers the service's Yb and key confirmation",
        params: Type.Object({ serviceUid: ServiceUid }),
        body: Type.Object({ activationId: b64u(22), ya: b64u(43) }, { additionalProperties: false }),
        response: { 200: Type.Object({ yb: Type.String(), confirm: Type.String() }) },
      },
      config: { rateLimit: exchangeRate },
    },
    async (request) => service.exchangeStart(request.params.serviceUid, request.body),
  );

  app.post(
    "/v1/activation/exchange/:serviceUid/confirm",
    {
      schema: {
        tags: ["activation"],
        summary: "CPace: the handset's key confirmation; the service stores the key",
        params: Type.Object({ serviceUid: ServiceUid }),
        body: Type.Object({ activationId: b64u(22), confirm: b64u(43) }, { additionalProperties: false }),
        response: {
          200: Type.Object({
            fingerprint: Type.String(),
            serviceUid: Type.String(),
            handsetId: Type.String(),
          }),
        },
      },
      config: { rateLimit: exchangeRate },
    },
    async (request) => service.exchangeConfirm(request.params.serviceUid, request.body),
  );

  app.get(
    "/v1/services",
    {
      schema: {
        tags: ["activation"],
        summary: "Activation-capable services and their public keys",
        response: { 200: Type.Array(ServiceInfoSchema) },
      },
    },
    async () => service.listServices(),
  );

  app.get(
    "/v1/services/:serviceUid",
    {
      schema: {
        tags: ["activation"],
        summary: "One service's public key (pinned by handsets when they add the service)",
        params: Type.Object({ serviceUid: ServiceUid }),
        response: { 200: ServiceInfoSchema },
      },
    },
    async (request) => service.getService(request.params.serviceUid),
  );

  app.get(
    "/v1/handsets/:handsetId/keys",
    {
      schema: {
        tags: ["activation"],
        summary: "The services a handset holds keys for (fingerprints, never keys)",
        security: [{ bearer: [] }],
        params: Type.Object({ handsetId: HandsetId }),
      },
    },
    async (request) => {
      await mayActOnHandset(request, request.params.handsetId);
      return service.listHandsetKeys(request.params.handsetId);
    },
  );

  app.delete(
    "/v1/handsets/:handsetId/keys/:serviceUid",
    {
      schema: {
        tags: ["activation"],
        summary: "Revoke one service's key on one handset (others untouched)",
        security: [{ bearer: [] }],
        params: Type.Object({ handsetId: HandsetId, serviceUid: ServiceUid }),
      },
    },
    async (request, reply) => {
      const p = await mayActOnHandset(request, request.params.handsetId);
      await service.revoke(request.params.handsetId, request.params.serviceUid, p.userId ?? "admin");
      return reply.status(204).send();
    },
  );

  app.get(
    "/v1/handsets/:handsetId/notifications",
    {
      schema: {
        tags: ["handsets"],
        summary: "Unread notifications for this handset (e.g. an activation set up on its user's behalf)",
        security: [{ bearer: [] }],
        params: Type.Object({ handsetId: HandsetId }),
      },
    },
    async (request) => {
      const p = await mayActOnHandset(request, request.params.handsetId);
      if (p.kind !== "session")
        throw new HandsafeError("auth.forbidden", "only the handset reads its inbox", { status: 403 });
      return {
        notifications: await takeNotifications(platform.db, request.params.handsetId, platform.clock()),
      };
    },
  );

  app.get(
    "/v1/activation/commands/:serviceUid",
    {
      schema: {
        tags: ["activation"],
        summary: "A handset pulls the commands a service sent it, proving it holds the service key",
        params: Type.Object({ serviceUid: ServiceUid }),
        querystring: Type.Object({
          handsetId: HandsetId,
          after: QueryInt,
          ts: QueryInt,
          proof: b64u(43),
        }),
      },
    },
    async (request) => ({
      commands: await commands.pullCommands({
        serviceUid: request.params.serviceUid,
        handsetId: request.query.handsetId,
        afterSeq: Number(request.query.after),
        timestamp: Number(request.query.ts),
        proof: request.query.proof,
      }),
    }),
  );

  registerActivationAdminRoutes(app, platform, service, commands);

  return service;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function signinPage(uid: string, name: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Activate ${escapeHtml(name)}</title></head>
<body><h1>Activate ${escapeHtml(name)}</h1>
<p>Sign in to activate <b>${escapeHtml(name)}</b> on this handset. The handsafe plug-in receives the answer
(<code>${ACTIVATION_CONTENT_TYPE}</code>) and finishes the key exchange; no code is shown to you.</p>
<form method="post" action="/v1/activation/signin">
<input type="hidden" name="serviceUid" value="${escapeHtml(uid)}">
<!-- Filled by the handsafe plug-in (SDK: signInProof): the handset's identity key and its signature. -->
<input type="hidden" name="identityKey" id="identityKey">
<input type="hidden" name="proof" id="proof">
<input type="hidden" name="timestamp" id="timestamp">
<label>Email <input name="email" type="email" required></label>
<label>Password <input name="password" type="password" required></label>
<button type="submit">Sign in</button></form></body></html>`;
}
