/**
 * The ceiling that several benchmarks stand next to: "one authenticated request + one durable
 * insert" on the same server, added through StartOptions.extend. `authenticate` is the capability's
 * own caller check (a sender's or a manager's API key), so the route pays exactly what the real
 * routes pay to learn who calls, then stores the body as one row.
 */
import type { FastifyRequest } from "fastify";
import { sql } from "kysely";
import { randomToken } from "../src/core/crypto/random.ts";
import type { StartOptions } from "../src/platform/server.ts";

export const CEILING_PATH = "/bench/ceiling";

export function ceilingRoute(
  authenticate: (request: FastifyRequest) => Promise<{ id: string }>,
): NonNullable<StartOptions["extend"]> {
  return async (app, platform) => {
    await sql`create table if not exists bench_ceiling (id text primary key, caller_id text not null, body text not null, created_at bigint not null)`.execute(
      platform.db,
    );
    app.post(CEILING_PATH, async (request, reply) => {
      const caller = await authenticate(request);
      await platform.db
        .insertInto("bench_ceiling")
        .values({
          id: randomToken(12),
          caller_id: caller.id,
          body: JSON.stringify(request.body),
          created_at: Date.now(),
        })
        .execute();
      return reply.status(202).send({ ok: true });
    });
  };
}
