/**
 * Replay protection for signed requests (RFC 9421 §7.2.2): a verifier remembers every nonce it
 * accepted until a request carrying it could no longer be fresh, and refuses it a second time.
 * The core (src/core/http-signatures) says how long (`nonceRetentionUntil(profile, created)`);
 * this module remembers. Storage-agnostic: a capability takes a `ReplayGuard` and does not care
 * whether it is the database table below (every node of a fleet sees every nonce) or memory (one
 * process: tests, a webhook receiver).
 *
 *   const parsed = parseSignature(PROFILE, headers);
 *   verifySignature(PROFILE, parsed, view, key, { nowMs, body });
 *   if (!(await replay.claim(`messaging:${parsed.keyId}`, parsed.nonce,
 *                            nonceRetentionUntil(PROFILE, parsed.created))))
 *     throw signatureError("signature.replayed", "…");
 *
 * Claim only after the signature verified: otherwise anyone could burn nonces, or fill the table.
 * Management keeps its own table (signature_nonces, 0007_management) with the same rules.
 */
import type { Kysely } from "kysely";
import { HandsafeError } from "../core/errors.ts";
import { timeType } from "./db/columns.ts";
import type { MigrationRegistry } from "./db/migrate.ts";

export interface ReplayGuard {
  /**
   * Records `nonce` within `scope` (who signed: "messaging:<handset id>") until `until` (epoch
   * ms). True the first time; false when that scope already used that nonce (a replay).
   */
  claim(scope: string, nonce: string, until: number): Promise<boolean>;
  /** Forgets nonces whose time is over; returns how many. Claims also do it now and then. */
  purgeExpired(): Promise<number>;
}

export interface ReplayTables {
  replay_nonces: { scope: string; nonce: string; expires_at: number };
}

export const replayMigrations: MigrationRegistry = {
  "0013_replay_nonces": {
    async up(db) {
      await db.schema
        .createTable("replay_nonces")
        .addColumn("scope", "text", (c) => c.notNull())
        .addColumn("nonce", "text", (c) => c.notNull())
        .addColumn("expires_at", timeType, (c) => c.notNull())
        .addPrimaryKeyConstraint("replay_nonces_pk", ["scope", "nonce"])
        .execute();
      await db.schema.createIndex("replay_nonces_expiry").on("replay_nonces").column("expires_at").execute();
    },
  },
};

/** Purge about once every this many claims (per guard). */
const PURGE_EVERY = 200;
const MAX_SCOPE_LENGTH = 200;
const MAX_NONCE_LENGTH = 128;

function checkClaim(scope: string, nonce: string, until: number): void {
  if (
    scope.length === 0 ||
    scope.length > MAX_SCOPE_LENGTH ||
    nonce.length === 0 ||
    nonce.length > MAX_NONCE_LENGTH
  )
    throw new HandsafeError("internal", "a replay scope is 1–200 and a nonce 1–128 characters", {
      status: 500,
    });
  if (!Number.isSafeInteger(until))
    throw new HandsafeError("internal", "until is epoch milliseconds", { status: 500 });
}

/**
 * The database guard (table replay_nonces, migration 0013): an insert on the primary key (scope,
 * nonce) decides, so concurrent nodes agree. A row past its time is taken over by the next claim
 * (that nonce could only come with a fresh `created` again — a new request, not a replay).
 */
export function createDatabaseReplayGuard(
  db: Kysely<ReplayTables>,
  clock: () => number = Date.now,
): ReplayGuard {
  let sincePurge = 0;
  const purgeExpired = async (): Promise<number> => {
    const r = await db.deleteFrom("replay_nonces").where("expires_at", "<", clock()).executeTakeFirst();
    return Number(r.numDeletedRows);
  };
  return {
    async claim(scope, nonce, until) {
      checkClaim(scope, nonce, until);
      const now = clock();
      const r = await db
        .insertInto("replay_nonces")
        .values({ scope, nonce, expires_at: Math.max(until, now) })
        .onConflict((oc) =>
          oc
            .columns(["scope", "nonce"])
            .doUpdateSet((eb) => ({ expires_at: eb.ref("excluded.expires_at") }))
            .where("replay_nonces.expires_at", "<", now),
        )
        .executeTakeFirst();
      if (++sincePurge >= PURGE_EVERY) {
        sincePurge = 0;
        await purgeExpired();
      }
      return Number(r.numInsertedOrUpdatedRows ?? 0n) === 1;
    },
    purgeExpired,
  };
}

/** The guard of one process (tests, a webhook receiver): a map, purged as it is used. */
export function createMemoryReplayGuard(clock: () => number = Date.now): ReplayGuard {
  const seen = new Map<string, number>();
  let sincePurge = 0;
  const purgeExpired = async (): Promise<number> => {
    const now = clock();
    let n = 0;
    for (const [k, until] of seen)
      if (until < now) {
        seen.delete(k);
        n++;
      }
    return n;
  };
  return {
    async claim(scope, nonce, until) {
      checkClaim(scope, nonce, until);
      const now = clock();
      if (++sincePurge >= PURGE_EVERY) {
        sincePurge = 0;
        await purgeExpired();
      }
      // Length-prefixed, so ("ab", "c") and ("a", "bc") are different keys.
      const key = `${scope.length}:${scope}${nonce}`;
      const previous = seen.get(key);
      if (previous !== undefined && previous >= now) return false;
      seen.set(key, Math.max(until, now));
      return true;
    },
    purgeExpired,
  };
}
