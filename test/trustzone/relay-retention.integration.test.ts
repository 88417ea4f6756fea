/**
 * Sealed packages do not pile up on the zone server (docs/protocols/trustzone.md §6 "Relay
 * retention"): an answered command is handed to its manager once and then deleted with its result;
 * what no manager fetches, and what no zone pulls, the sweeper removes after the retention. On
 * SQLite and PostgreSQL.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { fromBase64url } from "../../src/core/codec/base64url.ts";
import { fromUtf8, utf8 } from "../../src/core/codec/bytes.ts";
import { MAX_PACKAGE_BYTES, openPackage } from "../../src/trustzone/protocol.ts";
import { RELAY_RESULT_RETENTION_MS } from "../../src/trustzone/server.ts";
import * as store from "../../src/trustzone/store.ts";
import { sweepTrustzone } from "../../src/trustzone/sweeper.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { codeOf, startTrustzoneServer, type TrustzoneHarness } from "./harness.ts";

const pgOk = await postgresAvailable();

describe.each(databaseKinds)("relay retention on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let h: TrustzoneHarness;
    beforeAll(async () => {
      h = await startTrustzoneServer(kind);
    }, 30_000);
    afterAll(async () => {
      await h?.close();
    });
    // Zones sign with the real clock: the server's clock goes back to it after a test moved it.
    afterEach(() => {
      if (h) h.clock.ms = Date.now();
    });

    const row = (id: unknown) => store.findRelay(h.server.trustzone.service.db, String(id));

    /** A manager holding container 0 of a fresh zone, with a package stored there through the relay. */
    async function bankWithPackage(name: string) {
      const bank = await h.manager(name);
      const { driver, bundle } = await h.zone();
      const t = await h.issue(bank.id, bundle.zoneId, { containers: [0] });
      const sub = await h.subKey(bank, t.token);
      await driver.sync();
      const key = { zoneId: bundle.zoneId, epoch: sub.epoch, ck: sub.ck(0) };
      const put = await h.relay(bank, key, 0, "put", "card", utf8("PAN 4111"));
      await driver.sync();
      expect(
        (await bank.http.get<{ state: string }>(`/v1/tsm/relay/${put.body["relayId"]}`)).body.state,
      ).toBe("done");
      return { bank, driver, bundle, key, sub };
    }

    describe("a sealed package left in tsm_relay after its manager read it", () => {
      it("is handed over once: the row and its result are gone after the fetch", async () => {
        const { bank, driver, bundle, sub, key } = await bankWithPackage("Keeper");
        const get = await h.relay(bank, key, 0, "get", "card");
        await driver.sync();
        const answered = await row(get.body["relayId"]);
        expect(answered).toMatchObject({ state: "done" });
        expect(answered!.result!["package"]).toEqual(expect.any(String));

        const got = await bank.http.get<{ state: string; result: { package: string } }>(
          `/v1/tsm/relay/${get.body["relayId"]}`,
        );
        expect(
          fromUtf8(openPackage(sub.ck(0), bundle.zoneId, 0, "card", fromBase64url(got.body.result.package))),
        ).toBe("PAN 4111");
        expect(await row(get.body["relayId"])).toBeUndefined();
        expect(await codeOf(bank.http.get(`/v1/tsm/relay/${get.body["relayId"]}`))).toBe("tsm.not_found");
      });

      it("a long-poll that gets the answer purges it too", async () => {
        const { bank, driver, key } = await bankWithPackage("Poller");
        const queued = await h.relay(bank, key, 0, "list");
        const waited = bank.http.get<{ state: string }>(`/v1/tsm/relay/${queued.body["relayId"]}?wait=5`);
        await driver.sync();
        expect((await waited).body.state).toBe("done");
        expect(await row(queued.body["relayId"])).toBeUndefined();
      });

      it("a queued command is not purged by a status read", async () => {
        const { bank, key } = await bankWithPackage("Patient");
        const queued = await h.relay(bank, key, 0, "get", "card");
        const status = await bank.http.get<{ state: string }>(`/v1/tsm/relay/${queued.body["relayId"]}`);
        expect([status.status, status.body.state]).toEqual([202, "queued"]);
        expect(await row(queued.body["relayId"])).toMatchObject({ state: "queued" });
      });

      it("another manager's fetch neither reads nor purges it", async () => {
        const { bank, driver, key } = await bankWithPackage("Owner");
        const thief = await h.manager("Thief");
        const get = await h.relay(bank, key, 0, "get", "card");
        await driver.sync();
        expect(await codeOf(thief.http.get(`/v1/tsm/relay/${get.body["relayId"]}`))).toBe("tsm.not_found");
        expect(await row(get.body["relayId"])).toMatchObject({ state: "done" });
      });
    });

    describe("a manager parking an oversized package on the server", () => {
      it("is refused before it is queued (zone.full), as the zone would refuse it", async () => {
        const { bank, key } = await bankWithPackage("Hoarder");
        const big = new Uint8Array(MAX_PACKAGE_BYTES - 28 + 1); // sealed: + 12-byte nonce + 16-byte tag
        expect(await codeOf(h.relay(bank, key, 0, "put", "big", big))).toBe("zone.full");
        const fits = await h.relay(bank, key, 0, "put", "fits", big.subarray(1));
        expect(fits.status).toBe(202);
      });
    });

    describe("a sealed package left in tsm_relay that no one fetches", () => {
      it("is deleted by the sweeper after the retention, not before", async () => {
        const { bank, driver, key } = await bankWithPackage("Forgetful");
        const get = await h.relay(bank, key, 0, "get", "card");
        await driver.sync();
        h.clock.advance(RELAY_RESULT_RETENTION_MS / 2);
        await sweepTrustzone(h.server.trustzone.service);
        expect(await row(get.body["relayId"])).toMatchObject({ state: "done" });
        h.clock.advance(RELAY_RESULT_RETENTION_MS / 2 + 1000);
        const report = await sweepTrustzone(h.server.trustzone.service);
        expect(report.relayPurged).toBeGreaterThanOrEqual(1);
        expect(await row(get.body["relayId"])).toBeUndefined();
      });

      it("a command no zone pulls fails after the retention, its package dropped, then goes", async () => {
        const { bank, key } = await bankWithPackage("Offline");
        const put = await h.relay(bank, key, 0, "put", "late", utf8("never delivered"));
        expect((await row(put.body["relayId"]))!.package).not.toBeNull();
        h.clock.advance(RELAY_RESULT_RETENTION_MS + 1000);
        const report = await sweepTrustzone(h.server.trustzone.service);
        expect(report.relayExpired).toBeGreaterThanOrEqual(1);
        expect(await row(put.body["relayId"])).toMatchObject({
          state: "failed",
          errorCode: "tsm.relay_expired",
          package: null,
        });
        h.clock.advance(RELAY_RESULT_RETENTION_MS + 1000);
        await sweepTrustzone(h.server.trustzone.service);
        expect(await row(put.body["relayId"])).toBeUndefined();
      });
    });
  });
});
