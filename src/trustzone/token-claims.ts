/**
 * §3 tokens (docs/protocols/trustzone.md): the claims of the JWS the carrier issues to a service
 * manager, their shape and time checks, signing and verification. Pure; re-exported by protocol.ts.
 * Times: `iat`/`exp` are JWT NumericDate seconds (RFC 7519 §2); `ctx.now` is milliseconds.
 */

import { randomToken } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import { type JwsKeys, type JwsSigner, signJws, verifyJws } from "../core/jws.ts";
import {
  indexList,
  isPositiveInt,
  MAX_ZONE_ID_BYTES,
  nonEmptyString,
  TOKEN_CLOCK_SKEW_SECONDS,
  TOKEN_ISSUER,
} from "./encoding.ts";

export interface TokenLimits {
  /** How long a bound container lives, from binding. */
  containerSeconds: number;
  /** Wrong keys a container tolerates before it locks. */
  maxAttempts: number;
}

export interface TokenClaims {
  iss: typeof TOKEN_ISSUER;
  /** The service manager's id. */
  sub: string;
  /** The zone's id. */
  aud: string;
  /** "tok_…" */
  jti: string;
  /** Seconds (NumericDate). */
  iat: number;
  exp: number;
  maxUses: number;
  containers: number[];
  limits: TokenLimits;
}

export interface TokenContext {
  /** Milliseconds since the epoch (Date.now()). */
  now: number;
  zoneId: string;
  /** When known (the caller is authenticated as a manager): must equal `sub`. */
  managerId?: string;
}

function tokenError(code: string, message: string, status = 401): HandsafeError {
  return new HandsafeError(code, message, { status });
}

const TOKEN_MEMBERS = new Set(["iss", "sub", "aud", "jti", "iat", "exp", "maxUses", "containers", "limits"]);

/** A fresh token id: "tok_" + 128 random bits. */
export function newTokenId(): string {
  return `tok_${randomToken(16)}`;
}

/** Shape only (no time or audience): the claims, typed, or `token.invalid`. */
export function parseTokenClaims(value: unknown): TokenClaims {
  const bad = (why: string) => tokenError("token.invalid", `token claims: ${why}`);
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw bad("not an object");
  const c = value as Record<string, unknown>;
  for (const k of Object.keys(c)) if (!TOKEN_MEMBERS.has(k)) throw bad(`unexpected member ${k}`);
  if (c.iss !== TOKEN_ISSUER) throw bad("iss");
  if (!nonEmptyString(c.sub)) throw bad("sub");
  if (!nonEmptyString(c.aud, MAX_ZONE_ID_BYTES)) throw bad("aud");
  if (!nonEmptyString(c.jti) || !c.jti.startsWith("tok_")) throw bad("jti");
  if (!isPositiveInt(c.iat) || !isPositiveInt(c.exp) || c.exp <= c.iat) throw bad("iat/exp");
  if (!isPositiveInt(c.maxUses, 1_000_000)) throw bad("maxUses");
  const containers = indexList(c.containers);
  if (containers === undefined) throw bad("containers");
  const limits = c.limits as Record<string, unknown> | undefined;
  if (typeof limits !== "object" || limits === null || Array.isArray(limits)) throw bad("limits");
  for (const k of Object.keys(limits))
    if (k !== "containerSeconds" && k !== "maxAttempts") throw bad("limits");
  if (!isPositiveInt(limits.containerSeconds) || !isPositiveInt(limits.maxAttempts, 1000))
    throw bad("limits");
  return {
    iss: TOKEN_ISSUER,
    sub: c.sub,
    aud: c.aud,
    jti: c.jti,
    iat: c.iat,
    exp: c.exp,
    maxUses: c.maxUses,
    containers,
    limits: { containerSeconds: limits.containerSeconds, maxAttempts: limits.maxAttempts },
  };
}

/**
 * Shape, then expiry (`token.expired` from `exp`, `token.invalid` for an iat in the future beyond
 * the skew), audience (`token.wrong_zone`) and, when given, manager (`token.wrong_manager`).
 */
export function checkTokenClaims(claims: unknown, ctx: TokenContext): TokenClaims {
  const c = parseTokenClaims(claims);
  const nowSeconds = Math.floor(ctx.now / 1000);
  if (nowSeconds >= c.exp) throw tokenError("token.expired", "token has expired");
  if (c.iat > nowSeconds + TOKEN_CLOCK_SKEW_SECONDS)
    throw tokenError("token.invalid", "token issued in the future");
  if (c.aud !== ctx.zoneId) throw tokenError("token.wrong_zone", "token is for another zone", 403);
  if (ctx.managerId !== undefined && c.sub !== ctx.managerId)
    throw tokenError("token.wrong_manager", "token is for another manager", 403);
  return c;
}

/** Signs the claims (checked for shape first) as a JWS with the trust-zone signing key. */
export function issueToken(claims: TokenClaims, signer: JwsSigner): string {
  const c = parseTokenClaims(claims);
  return signJws(c as unknown as Record<string, unknown>, signer);
}

/** Verifies the JWS against the trust-zone keys (by kid), then checkTokenClaims. */
export function verifyToken(tokenJws: string, keys: JwsKeys, ctx: TokenContext): TokenClaims {
  return checkTokenClaims(verifyJws(tokenJws, keys).payload, ctx);
}
