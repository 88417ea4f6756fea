/**
 * Who may touch which container (docs/protocols/trustzone.md §1, §6, §7), as one table: every cell of
 * {master manager, manager A, manager B, an unvalidated manager, an outsider}
 *   × {A's container, B's container, a free container} × {read, write, delete, reassign}
 * is either "allow" or the error code the spec gives. read/write/delete go through the server's
 * relay (the only remote way in); reassign is the carrier's reclaim-and-reissue. A second table
 * checks the zone itself (handset/secure-zone.ts): which key opens which container.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBase64url } from "../../src/core/codec/base64url.ts";
import { fromUtf8, utf8 } from "../../src/core/codec/bytes.ts";
import { deriveFreeContainerKey, deriveUserKey, openPackage } from "../../src/trustzone/protocol.ts";
import type { ProvisioningBundle } from "../../src/trustzone/server.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import {
  type SubKey,
  startTrustzoneServer,
  type TestManager,
  type TrustzoneHarness,
  type ZoneDriver,
} from "./harness.ts";

const pgOk = await postgresAvailable();

type Actor = "master" | "managerA" | "managerB" | "unvalidated" | "outsider";
type Target = "A's" | "B's" | "free";
type Op = "read" | "write" | "delete" | "reassign";
type Outcome = "allow" | string;

const A = 0;
const B = 1;
const FREE = 2;
const INDEX: Record<Target, number> = { "A's": A, "B's": B, free: FREE };

/** The spec's answer for every cell. */
const EXPECTED: Record<Actor, Record<Target, Record<Op, Outcome>>> = {
  // The carrier views, wipes, reclaims and reassigns — never reads or writes a container's data.
  master: {
    "A's": {
      read: "auth.unauthenticated",
      write: "auth.unauthenticated",
      delete: "auth.unauthenticated",
      reassign: "allow",
    },
    "B's": {
      read: "auth.unauthenticated",
      write: "auth.unauthenticated",
      delete: "auth.unauthenticated",
      reassign: "allow",
    },
    free: {
      read: "auth.unauthenticated",
      write: "auth.unauthenticated",
      delete: "auth.unauthenticated",
      reassign: "allow",
    },
  },
  managerA: {
    "A's": { read: "allow", write: "allow", delete: "allow", reassign: "auth.unauthenticated" },
    "B's": {
      read: "tsm.forbidden",
      write: "tsm.forbidden",
      delete: "tsm.forbidden",
      reassign: "auth.unauthenticated",
    },
    free: {
      read: "tsm.forbidden",
      write: "tsm.forbidden",
      delete: "tsm.forbidden",
      reassign: "auth.unauthenticated",
    },
  },
  managerB: {
    "A's": {
      read: "tsm.forbidden",
      write: "tsm.forbidden",
      delete: "tsm.forbidden",
      reassign: "auth.unauthenticated",
    },
    "B's": { read: "allow", write: "allow", delete: "allow", reassign: "auth.unauthenticated" },
    free: {
      read: "tsm.forbidden",
      write: "tsm.forbidden",
      delete: "tsm.forbidden",
      reassign: "auth.unauthenticated",
    },
  },
  unvalidated: {
    "A's": {
      read: "tsm.manager_not_validated",
      write: "tsm.manager_not_validated",
      delete: "tsm.manager_not_validated",
      reassign: "auth.unauthenticated",
    },
    "B's": {
      read: "tsm.manager_not_validated",
      write: "tsm.manager_not_validated",
      delete: "tsm.manager_not_validated",
      reassign: "auth.unauthenticated",
    },
    free: {
      read: "tsm.manager_not_validated",
      write: "tsm.manager_not_validated",
      delete: "tsm.manager_not_validated",
      reassign: "auth.unauthenticated",
    },
  },
  outsider: {
    "A's": {
      read: "auth.unauthenticated",
      write: "auth.unauthenticated",
      delete: "auth.unauthenticated",
      reassign: "auth.unauthenticated",
    },
    "B's": {
      read: "auth.unauthenticated",
      write: "auth.unauthenticated",
      delete: "auth.unauthenticated",
      reassign: "auth.unauthenticated",
    },
    free: {
      read: "auth.unauthenticated",
      write: "auth.unauthenticated",
      delete: "auth.unauthenticated",
      reassign: "auth.unauthenticated",
    },
  },
};

const ACTORS: Actor[] = ["managerA", "managerB", "unvalidated", "outsider", "master"];
const TARGETS: Target[] = ["A's", "B's", "free"];
// Reassign last (it changes who holds what), the master's reassignments last of all.
const OPS: Op[] = ["write", "read", "delete", "reassign"];
const CELLS = OPS.flatMap((op) =>
  ACTORS.flatMap((actor) => TARGETS.map((target) => ({ actor, target, op }))),
);

/** The zone's own answer: which key opens which container (the last line of defence). */
type ZoneKey = "A's CK" | "B's CK" | "master's FK";
const ZONE_EXPECTED: Record<ZoneKey, Record<Target, Outcome>> = {
  "A's CK": { "A's": "allow", "B's": "zone.wrong_key", free: "zone.wrong_key" },
  "B's CK": { "A's": "zone.wrong_key", "B's": "allow", free: "zone.wrong_key" },
  "master's FK": { "A's": "zone.wrong_key", "B's": "zone.wrong_key", free: "allow" },
};

describe.each(databaseKinds)("container isolation on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let h: TrustzoneHarness;
    let driver: ZoneDriver;
    let bundle: ProvisioningBundle;
    let managers: Record<"managerA" | "managerB" | "unvalidated", TestManager>;
    let keys: { managerA: SubKey; managerB: SubKey };

    beforeAll(async () => {
      h = await startTrustzoneServer(kind);
      ({ driver, bundle } = await h.zone({ containers: 4 }));
      managers = {
        managerA: await h.manager("BankA"),
        managerB: await h.manager("TransitB"),
        unvalidated: await h.manager("Pending", { validate: false }),
      };
      keys = {
        managerA: await h.subKey(
          managers.managerA,
          (await h.issue(managers.managerA.id, bundle.zoneId, { containers: [A] })).token,
        ),
        managerB: await h.subKey(
          managers.managerB,
          (await h.issue(managers.managerB.id, bundle.zoneId, { containers: [B] })).token,
        ),
      };
      await driver.sync();
      // Each owner stores the package the read and delete cells will look for.
      for (const [who, i] of [
        ["managerA", A],
        ["managerB", B],
      ] as const)
        await h.relay(managers[who], keyOf(who, i), i, "put", "doc", utf8(`${who}'s doc`));
      await driver.sync();
    }, 30_000);
    afterAll(async () => {
      await h?.close();
    });

    /** The key an actor would sign a command with: its own CK for that index (it has no other). */
    function keyOf(actor: "managerA" | "managerB", i: number) {
      return { zoneId: bundle.zoneId, epoch: 1, ck: keys[actor].ck(i) };
    }

    /** One attempt, and — when the server let it through — the zone's answer. */
    async function attempt(actor: Actor, target: Target, op: Op): Promise<Outcome> {
      const i = INDEX[target];
      if (op === "reassign") return reassign(actor, i);
      const relayOp = op === "read" ? "get" : op === "write" ? "put" : "delete";
      const name = op === "write" ? "written" : "doc";
      const asker: TestManager =
        actor === "master"
          ? { ...managers.managerA, http: h.admin }
          : actor === "outsider"
            ? { ...managers.managerA, http: h.bearer("hs_tsm_notakeyatallnotakeyatallnotakeyatall123") }
            : managers[actor];
      const signer = actor === "managerB" ? "managerB" : "managerA";
      let queued: { status: number; body: Record<string, unknown> };
      try {
        queued = await h.relay(asker, keyOf(signer, i), i, relayOp, name, utf8("payload"));
      } catch (e) {
        return (e as { code: string }).code;
      }
      expect(queued.status).toBe(202);
      await driver.sync();
      const { body } = await asker.http.get<{
        state: string;
        result?: { package?: string };
        error?: { code: string };
      }>(`/v1/tsm/relay/${queued.body["relayId"]}`);
      if (body.state !== "done") return body.error?.code ?? body.state;
      if (op === "read") {
        const sealed = fromBase64url(body.result!.package!);
        expect(fromUtf8(openPackage(keys[signer].ck(i), bundle.zoneId, i, "doc", sealed))).toBe(
          `${signer}'s doc`,
        );
      }
      return "allow";
    }

    /** Reclaim the container, then issue a token for it to the other manager: only the carrier can. */
    async function reassign(actor: Actor, i: number): Promise<Outcome> {
      const http =
        actor === "master" ? h.admin : actor === "outsider" ? h.bearer("not-a-token") : managers[actor].http;
      const to = i === A ? managers.managerB : managers.managerA;
      try {
        await http.post(`/v1/admin/tsm/zones/${bundle.zoneId}/reclaim`, { containers: [i] });
        const { body } = await http.post<{ containers: number[] }>("/v1/admin/tsm/tokens", {
          managerId: to.id,
          zoneId: bundle.zoneId,
          containers: [i],
        });
        expect(body.containers).toEqual([i]);
      } catch (e) {
        return (e as { code: string }).code;
      }
      await driver.sync();
      expect(driver.zone.masterView()[i]!.state).toBe("free");
      return "allow";
    }

    it("the zone opens each container only with its own key", async () => {
      const uk = deriveUserKey(fromBase64url(bundle.zmk), bundle.userInfo, bundle.epoch);
      const keyFor = (k: ZoneKey, i: number) =>
        k === "A's CK"
          ? keys.managerA.ck(i)
          : k === "B's CK"
            ? keys.managerB.ck(i)
            : deriveFreeContainerKey(uk, i);
      const outcomes: Record<string, Outcome> = {};
      const expected: Record<string, Outcome> = {};
      for (const k of Object.keys(ZONE_EXPECTED) as ZoneKey[])
        for (const t of TARGETS) {
          const i = INDEX[t];
          const open =
            k === "master's FK"
              ? driver.zone.masterOpenFree(i, keyFor(k, i))
              : driver.zone.openContainer(i, keyFor(k, i));
          outcomes[`${k} → ${t}`] = await open.then(
            () => "allow",
            (e: { code: string }) => e.code,
          );
          expected[`${k} → ${t}`] = ZONE_EXPECTED[k][t];
        }
      expect(outcomes).toEqual(expected);
      // The wrong keys above spent attempts; the right ones restored them.
      expect(
        driver.zone
          .masterView()
          .slice(0, 3)
          .map((c) => c.state),
      ).toEqual(["bound", "bound", "free"]);
    });

    it.each(CELLS)("$actor · $op · $target", async ({ actor, target, op }) => {
      expect(await attempt(actor, target, op)).toBe(EXPECTED[actor][target][op]);
    });

    it("every refusal above is in the audit log", async () => {
      const { body } = await h.admin.get<{ audit: Array<{ outcome: string; details: { code?: string } }> }>(
        `/v1/admin/tsm/zones/${bundle.zoneId}`,
      );
      const denied = body.audit.filter((a) => a.outcome === "deny").map((a) => a.details.code);
      expect(denied).toContain("tsm.forbidden");
      expect(denied).toContain("tsm.manager_not_validated");
    });
  });
});
