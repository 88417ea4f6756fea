/** The nonce replay guard, in the database (both engines, two nodes) and in memory. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { randomToken } from "../../src/core/crypto/random.ts";
import {
  createDatabaseReplayGuard,
  createMemoryReplayGuard,
  type ReplayGuard,
} from "../../src/platform/replay.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { startTestPlatform, type TestPlatform } from "./harness.ts";

const pgOk = await postgresAvailable();

function behavesAsAGuard(make: () => { guard: ReplayGuard; now: { ms: number } }) {
  it("accepts a nonce once per scope, refuses its replay, forgets it when its time is over", async () => {
    const { guard, now } = make();
    const nonce = randomToken(16);
    const until = now.ms + 301_000;
    expect(await guard.claim("messaging:mh_1", nonce, until)).toBe(true);
    expect(await guard.claim("messaging:mh_1", nonce, until)).toBe(false);
    expect(await guard.claim("messaging:mh_2", nonce, until)).toBe(true);
    expect(await guard.claim("messaging:mh_1", randomToken(16), until)).toBe(true);
    now.ms = until; // still remembered at its last millisecond
    expect(await guard.claim("messaging:mh_1", nonce, until)).toBe(false);
    now.ms = until + 1;
    expect(await guard.purgeExpired()).toBeGreaterThanOrEqual(3);
    expect(await guard.claim("messaging:mh_1", nonce, now.ms + 301_000)).toBe(true);
  });
  it("keeps scopes apart even when scope and nonce could be re-split", async () => {
    const { guard, now } = make();
    expect(await guard.claim("ab", "cdefghijklmnopqrstuv", now.ms + 1000)).toBe(true);
    expect(await guard.claim("abc", "defghijklmnopqrstuv", now.ms + 1000)).toBe(true);
  });
  it("refuses what is no scope or nonce", async () => {
    const { guard, now } = make();
    await expect(guard.claim("", "n", now.ms)).rejects.toThrow();
    await expect(guard.claim("s", "x".repeat(129), now.ms)).rejects.toThrow();
  });
}

describe("the memory guard", () => {
  behavesAsAGuard(() => {
    const now = { ms: 1_800_000_000_000 };
    return { guard: createMemoryReplayGuard(() => now.ms), now };
  });
});

describe.each(databaseKinds)("the database guard on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("replay_nonces", () => {
    let node: TestPlatform;
    beforeAll(async () => {
      node = await startTestPlatform(kind, { now: { ms: 1_800_000_000_000 } });
    });
    afterAll(() => node.close());

    behavesAsAGuard(() => ({
      guard: createDatabaseReplayGuard(node.platform.db, node.platform.clock),
      now: node.now,
    }));

    it("two nodes claiming one nonce at once: exactly one wins", async () => {
      const second =
        kind === "postgres" ? await startTestPlatform(kind, { shareDatabaseOf: node }) : undefined;
      try {
        const a = createDatabaseReplayGuard(node.platform.db, node.platform.clock);
        const b = createDatabaseReplayGuard((second ?? node).platform.db, node.platform.clock);
        for (let i = 0; i < 20; i++) {
          const nonce = randomToken(16);
          const until = node.now.ms + 301_000;
          const results = await Promise.all([
            a.claim("s", nonce, until),
            b.claim("s", nonce, until),
            a.claim("s", nonce, until),
            b.claim("s", nonce, until),
          ]);
          expect(results.filter(Boolean)).toHaveLength(1);
        }
      } finally {
        await second?.close();
      }
    });
  });
});
