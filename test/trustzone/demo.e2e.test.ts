/**
 * The trust-zone demo on a real server, on both databases, checked against the server's records:
 * the carrier's container map and audit trail of the zone, the managers' review state, the tokens'
 * use counts and the audit chain. The demo's own words are not the proof; the server's records are.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runTrustzoneDemo, type TrustzoneDemoResult } from "../../src/cli/demo-trustzone.ts";
import type { ZoneMap } from "../../src/cli/tsm.ts";
import { sweepTrustzone } from "../../src/trustzone/sweeper.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

const pgOk = await postgresAvailable();

type Audit = Array<{ action: string; outcome: string; actor: string; details: Record<string, unknown> }>;

describe.each(databaseKinds)("the trust-zone demo on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let t: TestServer;
    let result: TrustzoneDemoResult;
    let map: ZoneMap & { tokens: Array<{ jti: string; uses: number; maxUses: number; revoked: boolean }> };
    let audit: Audit;
    const lines: string[] = [];

    beforeAll(async () => {
      t = await startTestServer(kind);
      result = await runTrustzoneDemo(
        t.admin,
        { url: t.server.url, pin: t.server.pin },
        {
          say: (line) => lines.push(line),
          sweep: () => sweepTrustzone(t.server.trustzone.service),
          bankLimitSeconds: 3,
        },
      );
      map = (await t.admin.get<typeof map>(`/v1/admin/tsm/zones/${result.zoneId}`)).body;
      audit = (map as unknown as { audit: Audit }).audit;
    }, 90_000);
    afterAll(async () => t?.close());

    it("the zone was personalised for alice, reset, and personalised again for bob at epoch 2", () => {
      expect(result.epochs, lines.join("\n")).toEqual({ before: 1, after: 2 });
      expect(map.zone).toMatchObject({ zoneId: result.zoneId, handsetId: result.handsetId, epoch: 2 });
      expect(map.zone.state).toBe("personalised");
      const personalised = audit.filter((a) => a.action === "tsm.zone_personalised" && a.outcome === "allow");
      expect(personalised).toHaveLength(2);
      expect(audit.some((a) => a.action === "tsm.zone_reset" && a.outcome === "allow")).toBe(true);
      expect(audit.some((a) => a.action === "tsm.zone_reset_acknowledged" && a.outcome === "allow")).toBe(
        true,
      );
      expect(result.userKeysDiffer).toBe(true);
      // Nothing survived the reset: every container free, in the inventory and in the zone.
      expect(map.containers.every((c) => c.state === "free")).toBe(true);
      expect(result.finalZone.every((c) => c.state === "free" && c.packages === 0)).toBe(true);
    });

    it("only validated managers got tokens: the third was refused while pending and once rejected", async () => {
      const state = async (id: string) =>
        (await t.admin.get<{ state: string }>(`/v1/admin/tsm/managers/${id}`)).body.state;
      expect(await state(result.bankId)).toBe("validated");
      expect(await state(result.transitId)).toBe("validated");
      expect(await state(result.rejectedId)).toBe("rejected");
      expect(result.refusals.unvalidatedToken).toBe("tsm.manager_not_validated");
      expect(result.refusals.rejectedToken).toBe("tsm.manager_rejected");
      const denied = audit
        .filter((a) => a.action === "tsm.token_issued" && a.outcome === "deny")
        .map((a) => [a.details["managerId"], a.details["code"]]);
      expect(denied).toEqual([
        [result.rejectedId, "tsm.manager_not_validated"],
        [result.rejectedId, "tsm.manager_rejected"],
      ]);
    });

    it("each token was used once: the bank's by the server, the transit's by the handset's zone", () => {
      const uses = Object.fromEntries(map.tokens.map((tk) => [tk.jti, [tk.uses, tk.maxUses]]));
      expect(uses[result.tokens.bank]).toEqual([1, 1]);
      expect(uses[result.tokens.transit]).toEqual([1, 1]);
      const bySubkey = audit.find((a) => a.action === "tsm.subkey_generated" && a.outcome === "allow");
      expect(bySubkey).toMatchObject({ actor: `manager:${result.bankId}` });
      expect(bySubkey!.details["containers"]).toEqual(result.containers.bank);
      const byZone = audit.find((a) => a.action === "tsm.token_redeemed" && a.outcome === "allow");
      expect(byZone).toMatchObject({ actor: `zone:${result.zoneId}` });
      expect(byZone!.details["containers"]).toEqual(result.containers.transit);
    });

    it("each stored and read its own package; neither opened the other's container", () => {
      expect(result.readBack.bank).toMatch(/^PAN /);
      expect(result.readBack.transit).toMatch(/^Zones 1-3/);
      expect(result.refusals.bankRelaysToTransit).toBe("tsm.forbidden");
      expect(result.refusals.bankKeyOnTransitContainer).toBe("zone.wrong_key");
      expect(result.refusals.transitKeyOnBankContainer).toBe("zone.wrong_key");
      const forbidden = audit.find(
        (a) => a.action === "tsm.relay_get" && a.outcome === "deny" && a.details["code"] === "tsm.forbidden",
      );
      expect(forbidden).toMatchObject({ actor: `manager:${result.bankId}` });
      const puts = audit.filter((a) => a.action === "tsm.relay_answered" && a.details["op"] === "put");
      expect(puts.map((a) => a.details["managerId"]).sort()).toEqual(
        [result.bankId, result.transitId].sort(),
      );
      // The map while both held containers: occupants and sizes, as the carrier saw them.
      for (const i of result.containers.bank)
        expect(result.mapWhileBound[i]).toMatchObject({ state: "bound", managerId: result.bankId });
      for (const i of result.containers.transit)
        expect(result.mapWhileBound[i]).toMatchObject({ state: "bound", managerId: result.transitId });
      expect(result.mapWhileBound[result.containers.bank[0]!]!.bytes).toBeGreaterThan(0);
    });

    it("the bank's limit passed, the sweep reclaimed its containers and the bank heard, signed", () => {
      expect(result.refusals.bankAfterLimit).toBe("zone.expired");
      expect(result.sweep).toBe("service");
      expect(result.reclaimed).toEqual(result.containers.bank);
      const swept = audit.find(
        (a) =>
          a.action === "tsm.containers_reclaimed" &&
          a.actor === "system" &&
          a.details["reason"] === "expired",
      );
      expect(swept?.details["containers"]).toEqual(result.containers.bank);
      expect(result.bankWebhook).toEqual({
        type: "tsm.containers_reclaimed",
        reason: "expired",
        containers: result.containers.bank,
        verified: true,
      });
    });

    it("after the reset no earlier key or token opens anything; the audit chain is intact", async () => {
      expect(result.refusals.oldKeyAfterReset).toBe("zone.wrong_key");
      expect(result.refusals.oldRelayAfterReset).toBe("tsm.forbidden");
      expect(result.refusals.oldTokenAfterReset).toBe("token.revoked");
      const { body } = await t.admin.get<{ ok: boolean }>("/v1/admin/audit/verify");
      expect(body.ok).toBe(true);
    });
  });
});
