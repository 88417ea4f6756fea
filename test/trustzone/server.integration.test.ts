/**
 * The zone server end to end (docs/protocols/trustzone.md §3–§8) on a real HTTPS server, on SQLite
 * and PostgreSQL, with real SecureZones pulling their signals over HTTPS. One `describe` per attack.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBase64url } from "../../src/core/codec/base64url.ts";
import { fromUtf8, utf8 } from "../../src/core/codec/bytes.ts";
import { generateSigningKey } from "../../src/core/crypto/index.ts";
import { signJws } from "../../src/core/jws.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { SecureZone } from "../../src/handset/secure-zone.ts";
import { verifyAuditChain } from "../../src/platform/audit.ts";
import { openPackage, openSubKey, sealPackage } from "../../src/trustzone/protocol.ts";
import type { ProvisioningBundle } from "../../src/trustzone/server.ts";
import { sweepTrustzone } from "../../src/trustzone/sweeper.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { WebhookReceiver } from "../messaging/harness.ts";
import { codeOf, startTrustzoneServer, type TrustzoneHarness, ZoneDriver } from "./harness.ts";

const pgOk = await postgresAvailable();

describe.each(databaseKinds)("trust-zone server on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let h: TrustzoneHarness;
    let receiver: WebhookReceiver;

    beforeAll(async () => {
      receiver = await WebhookReceiver.start();
      h = await startTrustzoneServer(kind, { webhookCa: receiver.cert.certPem });
    }, 30_000);
    afterAll(async () => {
      await h?.close();
      await receiver?.close();
    });

    it("publishes the token-signing key the zones pin", async () => {
      const { body } = await h.anonymous.get<{
        keys: Array<{ kid: string; alg: string; publicKey: string }>;
      }>("/v1/tsm/keys");
      expect(body.keys).toHaveLength(1);
      expect(body.keys[0]!.alg).toBe("EdDSA");
      expect(fromBase64url(body.keys[0]!.publicKey)).toHaveLength(32);
    });

    it("registration → validate → token → sub-key → bind → packages via the relay and the zone SDK", async () => {
      const bank = await h.manager("Bank", { validate: false });
      const me = await bank.http.get<{ state: string }>("/v1/tsm/managers/me");
      expect(me.body.state).toBe("pending");
      const { driver, bundle } = await h.zone();
      // Not validated: no token.
      expect(await codeOf(h.issue(bank.id, bundle.zoneId))).toBe("tsm.manager_not_validated");
      await h.admin.post(`/v1/admin/tsm/managers/${bank.id}/validate`, {});
      await h.admin.post(`/v1/admin/tsm/managers/${bank.id}/applications/bank-wallet/validate`, {});
      const view = await h.admin.get<{ state: string; applications: Array<{ state: string }> }>(
        `/v1/admin/tsm/managers/${bank.id}`,
      );
      expect(view.body.state).toBe("validated");
      expect(view.body.applications[0]!.state).toBe("validated");
      // The carrier's list holds the same view; a manager's own key does not open it.
      const { body: list } = await h.admin.get<{ managers: Array<{ managerId: string; state: string }> }>(
        "/v1/admin/tsm/managers",
      );
      expect(list.managers.find((m) => m.managerId === bank.id)).toEqual(view.body);
      expect(await codeOf(bank.http.get("/v1/admin/tsm/managers"))).toMatch(/^auth\./);

      const issued = await h.issue(bank.id, bundle.zoneId, {
        count: 2,
        limits: { containerSeconds: 3600, maxAttempts: 3 },
      });
      expect(issued.containers).toEqual([0, 1]);
      const sub = await h.subKey(bank, issued.token);
      expect(sub.containers).toEqual([0, 1]);
      expect((await driver.sync()).applied).toEqual(["bind"]);
      expect(
        driver.zone
          .masterView()
          .slice(0, 2)
          .map((c) => [c.state, c.occupant]),
      ).toEqual([
        ["bound", bank.id],
        ["bound", bank.id],
      ]);

      // Through the relay: put, then get, answered when the zone reports.
      const key = { zoneId: bundle.zoneId, epoch: sub.epoch, ck: sub.ck(0) };
      const put = await h.relay(bank, key, 0, "put", "card", utf8("PAN 4111"));
      expect(put.status).toBe(202);
      expect((await driver.sync()).relay).toHaveLength(1);
      const putDone = await bank.http.get<{ state: string }>(`/v1/tsm/relay/${put.body["relayId"]}`);
      expect(putDone.body.state).toBe("done");
      const get = await h.relay(bank, key, 0, "get", "card");
      await driver.sync();
      const got = await bank.http.get<{ state: string; result: { package: string } }>(
        `/v1/tsm/relay/${get.body["relayId"]}`,
      );
      expect(
        fromUtf8(openPackage(sub.ck(0), bundle.zoneId, 0, "card", fromBase64url(got.body.result.package))),
      ).toBe("PAN 4111");
      // Long-poll: the manager waits while the zone answers.
      const listing = h.relay(bank, key, 0, "list");
      const queued = await listing;
      const waited = bank.http.get<{ state: string; result: { names: string[] } }>(
        `/v1/tsm/relay/${queued.body["relayId"]}?wait=5`,
      );
      await driver.sync();
      expect((await waited).body.result.names).toEqual(["card"]);

      // Directly through the zone SDK with CK_1.
      const handle = await driver.zone.openContainer(1, sub.ck(1));
      await handle.put("ticket", sealPackage(sub.ck(1), bundle.zoneId, 1, "ticket", utf8("day pass")));
      expect(
        fromUtf8(openPackage(sub.ck(1), bundle.zoneId, 1, "ticket", (await handle.get("ticket"))!)),
      ).toBe("day pass");

      // The carrier's map: occupant, limits, token uses; the audit trail of the zone.
      const map = await h.admin.get<{
        containers: Array<{
          index: number;
          state: string;
          managerId: string;
          tokenUses: number;
          maxAttempts: number;
        }>;
        audit: Array<{ action: string; outcome: string }>;
      }>(`/v1/admin/tsm/zones/${bundle.zoneId}`);
      expect(map.body.containers[0]).toMatchObject({
        state: "bound",
        managerId: bank.id,
        tokenUses: 1,
        maxAttempts: 3,
      });
      expect(map.body.containers[2]!.state).toBe("free");
      const actions = map.body.audit.map((a) => a.action);
      for (const a of ["tsm.zone_personalised", "tsm.token_issued", "tsm.subkey_generated", "tsm.relay_put"])
        expect(actions).toContain(a);
      expect(JSON.stringify(map.body)).not.toContain(toB64(sub.sk));
      expect(await verifyAuditChain(h.server.platform.database)).toMatchObject({ ok: true });
    });

    describe("a forged, expired, over-used, replayed or misdirected token", () => {
      let bank: Awaited<ReturnType<TrustzoneHarness["manager"]>>;
      let transit: Awaited<ReturnType<TrustzoneHarness["manager"]>>;
      let bundle: ProvisioningBundle;
      let other: ProvisioningBundle;

      beforeAll(async () => {
        bank = await h.manager("Bank2");
        transit = await h.manager("Transit");
        bundle = (await h.zone()).bundle;
        other = (await h.zone()).bundle;
      });

      it("refuses a token signed by another key, or altered", async () => {
        const forger = generateSigningKey();
        const { body: keys } = await h.anonymous.get<{ keys: Array<{ kid: string }> }>("/v1/tsm/keys");
        const now = Math.floor(h.clock.ms / 1000);
        const claims = {
          iss: "handsafe-mtsm",
          sub: bank.id,
          aud: bundle.zoneId,
          jti: "tok_forgedforgedforged",
          iat: now,
          exp: now + 600,
          maxUses: 1,
          containers: [0],
          limits: { containerSeconds: 600, maxAttempts: 3 },
        };
        const forged = signJws(claims, { kid: keys.keys[0]!.kid, seed: forger.seed });
        expect(await codeOf(h.subKey(bank, forged))).toBe("token.invalid");
        const real = await h.issue(bank.id, bundle.zoneId, { containers: [3] });
        const [head, , sig] = real.token.split(".");
        const payload = JSON.parse(fromUtf8(fromBase64url(real.token.split(".")[1]!)));
        payload.containers = [0, 1, 2, 3];
        const tampered = `${head}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}.${sig}`;
        expect(await codeOf(h.subKey(bank, tampered))).toBe("token.invalid");
      });

      it("counts uses on the server: maxUses 1, the second redeem (even concurrent) is refused", async () => {
        const t = await h.issue(bank.id, bundle.zoneId, { containers: [0], maxUses: 1 });
        const status = async () =>
          (await bank.http.get<{ usesLeft: number; uses: number }>(`/v1/tsm/tokens/${t.jti}`)).body;
        expect(await status()).toMatchObject({ uses: 0, usesLeft: 1 });
        expect(await status()).toMatchObject({ uses: 0, usesLeft: 1 }); // status spends nothing
        const results = await Promise.allSettled(Array.from({ length: 5 }, () => h.subKey(bank, t.token)));
        expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
        for (const r of results)
          if (r.status === "rejected")
            expect((r.reason as { code: string }).code).toMatch(/^token\.exhausted$/);
        expect(await status()).toMatchObject({ uses: 1, usesLeft: 0 });
        // A replay of the same token later: exhausted as well.
        expect(await codeOf(h.subKey(bank, t.token))).toBe("token.exhausted");
      });

      it("refuses an expired token", async () => {
        const t = await h.issue(bank.id, bundle.zoneId, { containers: [1], expiresInSeconds: 60 });
        h.clock.advance(61_000);
        expect(await codeOf(h.subKey(bank, t.token))).toBe("token.expired");
        const s = await bank.http.get<{ expired: boolean; usesLeft: number }>(`/v1/tsm/tokens/${t.jti}`);
        expect(s.body).toMatchObject({ expired: true, usesLeft: 1 });
      });

      it("refuses another manager's token, and hides its status", async () => {
        const t = await h.issue(bank.id, bundle.zoneId, { containers: [1] });
        expect(await codeOf(h.subKey(transit, t.token))).toBe("token.wrong_manager");
        expect(await codeOf(transit.http.get(`/v1/tsm/tokens/${t.jti}`))).toBe("tsm.not_found");
        const s = await bank.http.get<{ uses: number }>(`/v1/tsm/tokens/${t.jti}`);
        expect(s.body.uses).toBe(0);
      });

      it("refuses a token for another zone", async () => {
        const t = await h.issue(bank.id, other.zoneId, { containers: [0] });
        expect(
          await codeOf(bank.http.post("/v1/tsm/subkeys", { token: t.token, zoneId: bundle.zoneId })),
        ).toBe("token.wrong_zone");
      });

      it("refuses a token whose containers another manager took first", async () => {
        const forBank = await h.issue(bank.id, bundle.zoneId, { containers: [2] });
        const forTransit = await h.issue(transit.id, bundle.zoneId, { containers: [2] });
        await h.subKey(transit, forTransit.token);
        expect(await codeOf(h.subKey(bank, forBank.token))).toBe("token.containers_taken");
        // …and the use was not spent by the refusal.
        const s = await bank.http.get<{ uses: number }>(`/v1/tsm/tokens/${forBank.jti}`);
        expect(s.body.uses).toBe(0);
        // Nor can the carrier issue one for a container someone holds.
        expect(await codeOf(h.issue(bank.id, bundle.zoneId, { containers: [2] }))).toBe(
          "token.containers_taken",
        );
      });

      it("says so when no free container is left", async () => {
        expect(await codeOf(h.issue(bank.id, bundle.zoneId, { count: 4 }))).toBe("tsm.no_free_containers");
      });

      it("refuses the relay for containers the token did not cover", async () => {
        const t = await h.issue(bank.id, other.zoneId, { containers: [1] });
        const sub = await h.subKey(bank, t.token);
        const r = h.relay(bank, { zoneId: other.zoneId, epoch: sub.epoch, ck: sub.ck(2) }, 2, "put", "x");
        expect(await codeOf(r)).toBe("tsm.forbidden");
      });
    });

    it("renews: a new token for the manager's own containers, new keys, later limit", async () => {
      const bank = await h.manager("Bank3");
      const { driver, bundle } = await h.zone();
      const first = await h.subKey(
        bank,
        (await h.issue(bank.id, bundle.zoneId, { containers: [0], limits: { containerSeconds: 600 } })).token,
      );
      await driver.sync();
      const before = driver.zone.masterView()[0]!.notAfter!;
      h.clock.advance(60_000);
      const again = await h.issue(bank.id, bundle.zoneId, {
        containers: [0],
        limits: { containerSeconds: 3600 },
      });
      const renewed = await h.subKey(bank, again.token);
      expect(await driver.sync()).toMatchObject({ applied: ["renew"] });
      expect(driver.zone.masterView()[0]!.notAfter!).toBeGreaterThan(before);
      await driver.zone.openContainer(0, renewed.ck(0));
      expect(await codeOf(driver.zone.openContainer(0, first.ck(0)))).toBe("zone.wrong_key");
    });

    it("sweeps expired containers: the inventory frees them, the zone wipes them, the manager hears", async () => {
      const bank = await h.manager("Bank4", { webhookUrl: `${receiver.base}/tsm` });
      const { driver, bundle } = await h.zone();
      const t = await h.issue(bank.id, bundle.zoneId, { containers: [1], limits: { containerSeconds: 60 } });
      const sub = await h.subKey(bank, t.token);
      await driver.sync();
      const handle = await driver.zone.openContainer(1, sub.ck(1));
      await handle.put("p", sealPackage(sub.ck(1), bundle.zoneId, 1, "p", utf8("secret")));
      h.clock.advance(61_000);
      expect(
        await codeOf(h.relay(bank, { zoneId: bundle.zoneId, epoch: 1, ck: sub.ck(1) }, 1, "get", "p")),
      ).toBe("zone.expired");
      const report = await sweepTrustzone(h.server.trustzone.service);
      expect(report.reclaimed).toBeGreaterThanOrEqual(1);
      expect(await driver.sync()).toMatchObject({ applied: ["reclaim"] });
      expect(driver.zone.masterView()[1]).toMatchObject({ state: "free", packages: 0 });
      const call = await receiver.waitFor(
        (b) => b["type"] === "tsm.containers_reclaimed" && b["managerId"] === bank.id,
      );
      expect(JSON.parse(call.body.toString())).toMatchObject({
        zoneId: bundle.zoneId,
        containers: [1],
        reason: "expired",
      });
      const map = await h.admin.get<{ containers: Array<{ state: string }> }>(
        `/v1/admin/tsm/zones/${bundle.zoneId}`,
      );
      expect(map.body.containers[1]!.state).toBe("free");
    });

    it("the carrier reclaims a manager's containers: freed, wiped, its unspent tokens revoked", async () => {
      const bank = await h.manager("Bank8");
      const { driver, bundle } = await h.zone();
      const sub = await h.subKey(bank, (await h.issue(bank.id, bundle.zoneId, { containers: [0, 1] })).token);
      const spare = await h.issue(bank.id, bundle.zoneId, { containers: [0], maxUses: 2 });
      await driver.sync();
      await h.relay(bank, { zoneId: bundle.zoneId, epoch: 1, ck: sub.ck(0) }, 0, "put", "doc");
      const pending = await h.relay(
        bank,
        { zoneId: bundle.zoneId, epoch: 1, ck: sub.ck(0) },
        0,
        "get",
        "doc",
      );
      const { body } = await h.admin.post<{ containers: number[] }>(
        `/v1/admin/tsm/zones/${bundle.zoneId}/reclaim`,
        {
          managerId: bank.id,
        },
      );
      expect(body.containers).toEqual([0, 1]);
      // Commands still waiting for those containers fail instead of reaching the zone.
      const failed = await bank.http.get<{ state: string; error: { code: string } }>(
        `/v1/tsm/relay/${pending.body["relayId"]}`,
      );
      expect(failed.body).toMatchObject({ state: "failed", error: { code: "zone.reclaimed" } });
      expect(await driver.sync()).toMatchObject({ applied: ["reclaim"], relay: [] });
      expect(
        driver.zone
          .masterView()
          .slice(0, 2)
          .map((c) => [c.state, c.packages]),
      ).toEqual([
        ["free", 0],
        ["free", 0],
      ]);
      expect(await codeOf(h.subKey(bank, spare.token))).toBe("token.revoked");
      expect(
        await codeOf(h.relay(bank, { zoneId: bundle.zoneId, epoch: 1, ck: sub.ck(0) }, 0, "get", "doc")),
      ).toBe("tsm.forbidden");
    });

    it("factory reset: old tokens and keys open nothing; the zone is personalised again", async () => {
      const bank = await h.manager("Bank5");
      const { driver, bundle } = await h.zone({ userInfo: "first owner" });
      const t1 = await h.issue(bank.id, bundle.zoneId, { containers: [0] });
      const sub = await h.subKey(bank, t1.token);
      await driver.sync();
      const unused = await h.issue(bank.id, bundle.zoneId, { containers: [1] });

      const reset = await h.admin.post<{ epoch: number; state: string }>(
        `/v1/admin/tsm/zones/${bundle.zoneId}/reset`,
        {},
      );
      expect(reset.body).toMatchObject({ epoch: 2, state: "resetting" });
      // A second order before the zone acknowledges changes nothing (the zone still holds epoch 1's ZRK).
      const twice = await h.admin.post<{ epoch: number; state: string }>(
        `/v1/admin/tsm/zones/${bundle.zoneId}/reset`,
        {},
      );
      expect(twice.body).toMatchObject({ epoch: 2, state: "resetting" });
      // The zone acknowledges (with the keys it still has), then wipes itself.
      await driver.signed("POST", "/v1/tsm/zone/reports", { reset: { epoch: 2 } });
      await driver.zone.factoryReset();
      expect(await codeOf(h.subKey(bank, unused.token))).toBe("token.revoked");
      expect(await codeOf(h.issue(bank.id, bundle.zoneId, { count: 1 }))).toBe("zone.not_personalised");

      const { body: again } = await h.admin.post<ProvisioningBundle>(
        `/v1/admin/tsm/zones/${bundle.zoneId}/personalise`,
        { userInfo: "second owner" },
      );
      expect(again.epoch).toBe(2);
      await h.deliver(driver.zone, again);
      // The old CK_0 opens nothing now, and a relay with it is refused by the server.
      expect(await codeOf(driver.zone.openContainer(0, sub.ck(0)))).toBe("zone.wrong_key");
      expect(
        await codeOf(h.relay(bank, { zoneId: bundle.zoneId, epoch: 1, ck: sub.ck(0) }, 0, "get", "p")),
      ).toBe("tsm.forbidden");
      const map = await h.admin.get<{ zone: { epoch: number; state: string; resetAcknowledgedAt: number } }>(
        `/v1/admin/tsm/zones/${bundle.zoneId}`,
      );
      expect(map.body.zone).toMatchObject({ epoch: 2, state: "personalised" });
      expect(map.body.zone.resetAcknowledgedAt).toBeGreaterThan(0);
      // A fresh token and sub-key work at the new epoch.
      const fresh = await h.subKey(bank, (await h.issue(bank.id, bundle.zoneId, { containers: [0] })).token);
      expect((await driver.sync()).applied).toEqual(["bind"]);
      await driver.zone.openContainer(0, fresh.ck(0));
    });

    it("handset placement: the zone derives the sub-key, the server counts the use once", async () => {
      const bank = await h.manager("Bank6");
      const { driver, bundle } = await h.zone();
      const t = await h.issue(bank.id, bundle.zoneId, { containers: [3] });
      const made = await driver.zone.generateSubKey(t.token, bank.keys.publicKey);
      const sk = openSubKey(bank.keys.privateKey, made.sealedSubKey, t.jti);
      expect(sk).toHaveLength(32);
      const body = await driver.signed<{ usesLeft: number }>("POST", `/v1/tsm/tokens/${t.jti}/redeem`, {
        token: t.token,
      });
      expect(body.usesLeft).toBe(0);
      expect(await codeOf(driver.signed("POST", `/v1/tsm/tokens/${t.jti}/redeem`, { token: t.token }))).toBe(
        "token.exhausted",
      );
      // A token for another zone, presented by this zone: wrong zone.
      const elsewhere = await h.zone();
      const t2 = await h.issue(bank.id, elsewhere.bundle.zoneId, { containers: [0] });
      expect(
        await codeOf(driver.signed("POST", `/v1/tsm/tokens/${t2.jti}/redeem`, { token: t2.token })),
      ).toBe("token.wrong_zone");
    });

    it("refuses zone requests that are unsigned, signed by another zone's key, or replayed", async () => {
      const { driver } = await h.zone();
      expect(await codeOf(h.anonymous.get("/v1/tsm/zone/signals"))).toBe("signature.missing");
      // A zone with the same id but other keys (a clone without the ZMK).
      const clone = await SecureZone.open(new MemoryKeystore());
      const { body: keys } = await h.anonymous.get<{ keys: Array<{ kid: string; publicKey: string }> }>(
        "/v1/tsm/keys",
      );
      await clone.personalise({
        zoneId: driver.zoneId,
        zmk: new Uint8Array(32).fill(7),
        userInfo: "x",
        epoch: 1,
        trustZonePublicKeys: { [keys.keys[0]!.kid]: fromBase64url(keys.keys[0]!.publicKey) },
      });
      const impostor = new ZoneDriver(clone, h.anonymous);
      expect(await codeOf(impostor.signed("GET", "/v1/tsm/zone/signals"))).toBe("signature.invalid");
      // The same signed request sent twice: the nonce is claimed once.
      const headers = driver.signatureHeaders("GET", "/v1/tsm/zone/signals");
      await driver.send("GET", "/v1/tsm/zone/signals", undefined, headers);
      expect(await codeOf(driver.send("GET", "/v1/tsm/zone/signals", undefined, headers))).toBe(
        "signature.replayed",
      );
      // A signal tampered on the way is refused by the zone (and reported).
      const bank = await h.manager("Bank7");
      await h.subKey(bank, (await h.issue(bank.id, driver.zoneId, { containers: [0] })).token);
      const body = await driver.signed<{ signals: Array<{ signal: { notAfter: number }; mac: string }> }>(
        "GET",
        "/v1/tsm/zone/signals",
      );
      const [first] = body.signals;
      expect(
        await codeOf(
          driver.zone.applySignal(
            { ...first!.signal, notAfter: first!.signal.notAfter + 1 } as never,
            first!.mac,
          ),
        ),
      ).toBe("zone.signal_invalid");
      expect((await driver.sync()).applied).toEqual(["bind"]);
      expect(await codeOf(driver.zone.applySignal(first!.signal as never, first!.mac))).toBe(
        "zone.signal_invalid",
      );
    });
  });
});

function toB64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64url");
}
