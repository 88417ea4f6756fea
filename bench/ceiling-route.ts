/**
 * The ceiling that several benchmarks stand next to: "one authenticated request + one durable
 * insert" on the same server, added through StartOptions.extend. `authenticate` is the capability's
 * own caller check (a sender's or a manager's API key), so the route pays exactly what the real
 * routes pay to learn who calls, then stores the body as one row.
 */
import type { FastifyRequest } from "fastify";
import { type Kysely, sql } from "kysely";
import { randomToken } from "../src/core/crypto/random.ts";
import { prepareQuery } from "../src/platform/db/compiled.ts";
import type { RunningServer, StartOptions } from "../src/platform/server.ts";
import { type BenchServer, startBenchServer } from "./server.ts";

export const CEILING_PATH = "/bench/ceiling";

interface CeilingTables {
  bench_ceiling: { id: string; caller_id: string; body: string; created_at: number };
}

/** Compiled once, as the real routes' hot statements are (db/compiled.ts): the least an insert costs. */
const insertRow = prepareQuery(
  4,
  (db: Kysely<CeilingTables>, id: string, callerId: string, body: string, createdAt: number) =>
    db.insertInto("bench_ceiling").values({ id, caller_id: callerId, body, created_at: createdAt }),
);

export function ceilingRoute(
  authenticate: (request: FastifyRequest) => Promise<{ id: string }>,
): NonNullable<StartOptions["extend"]> {
  return async (app, platform) => {
    await sql`create table if not exists bench_ceiling (id text primary key, caller_id text not null, body text not null, created_at bigint not null)`.execute(
      platform.db,
    );
    app.post(CEILING_PATH, async (request, reply) => {
      const caller = await authenticate(request);
      await insertRow.execute(
        platform.db,
        randomToken(12),
        caller.id,
        JSON.stringify(request.body),
        Date.now(),
      );
      return reply.status(202).send({ ok: true });
    });
  };
}

/** A bench server (server.ts) with the ceiling route, whose `authenticate` asks the running server's own capability. */
export async function startCeilingServer(
  name: string,
  env: Record<string, string>,
  authenticate: (server: RunningServer, request: FastifyRequest) => Promise<{ id: string }>,
): Promise<BenchServer> {
  let running: RunningServer | undefined;
  const bench = await startBenchServer(
    name,
    env,
    ceilingRoute((request) => authenticate(running!, request)),
  );
  running = bench.server;
  return bench;
}
