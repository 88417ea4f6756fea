/** Who is calling: bearer tokens resolved to a principal, and the checks routes call first. */
import type { FastifyRequest } from "fastify";
import type { Kysely } from "kysely";
import { HandsafeError } from "../../core/errors.ts";
import { type AuthTables, type Principal, resolveToken } from "./store.ts";

export interface Guards {
  /** Any valid token, or a 401. */
  principal(request: FastifyRequest): Promise<Principal>;
  admin(request: FastifyRequest): Promise<Principal>;
  /** A handset session (user signed in on a handset) — or an admin, when `allowAdmin`. */
  session(request: FastifyRequest, options?: { allowAdmin?: boolean }): Promise<Principal>;
}

export function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (typeof header !== "string") return undefined;
  const match = /^Bearer ([A-Za-z0-9_-]{1,200})$/.exec(header.trim());
  return match?.[1];
}

export function createGuards(db: Kysely<AuthTables>, clock: () => number = Date.now): Guards {
  async function principal(request: FastifyRequest): Promise<Principal> {
    const token = bearerToken(request);
    const p = token ? await resolveToken(db, token, clock()) : undefined;
    if (!p)
      throw new HandsafeError("auth.unauthenticated", "a valid bearer token is required", { status: 401 });
    return p;
  }
  return {
    principal,
    async admin(request) {
      const p = await principal(request);
      if (p.kind !== "admin") throw new HandsafeError("auth.forbidden", "admins only", { status: 403 });
      return p;
    },
    async session(request, options = {}) {
      const p = await principal(request);
      if (p.kind === "session" || (options.allowAdmin && p.kind === "admin")) return p;
      throw new HandsafeError("auth.forbidden", "a handset session is required", { status: 403 });
    },
  };
}
