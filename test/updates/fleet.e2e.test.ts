/**
 * The whole update path on a real server, on both databases: a manufacturer batch, dynamic keys
 * by SMS (the built-in SMS centre), a signed delta, a staged campaign, simulated handsets that
 * download over pinned HTTPS with signed requests, verify against TUF, decrypt, install into their
 * inactive slot — one of them failing its health check and rolling back. What the demo says is
 * then checked against the server's own records.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type UpdatesDemoResult, runUpdatesDemo } from "../../src/cli/demo-updates.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

const pgOk = await postgresAvailable();

interface DeviceRow {
  deviceId: string;
  state: string;
  reason: string | null;
}

describe.each(databaseKinds)("a staged campaign to a simulated fleet on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let t: TestServer;
    let result: UpdatesDemoResult;
    const lines: string[] = [];

    beforeAll(async () => {
      t = await startTestServer(kind);
      result = await runUpdatesDemo(t.admin, { url: t.server.url, pin: t.server.pin }, t.server.adminToken!, {
        devices: 5,
        say: (line) => lines.push(line),
        progressStream: { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream,
      });
    }, 120_000);
    afterAll(async () => t?.close());

    it("reaches 100%: every handset installed except the failing one, which rolled back", () => {
      expect(result.finalState, lines.join("\n")).toBe("completed");
      expect(result.percentDone).toBe(100);
      expect(result.byState).toMatchObject({ installed: 4, rolled_back: 1 });
      for (const d of result.devices) {
        expect(d.outcome).toBe(d.failing ? "rolled_back" : "installed");
        expect(d.version).toBe(d.failing ? "1.0.0" : "1.1.0");
      }
      expect(lines.join("\n")).toMatch(/row 6 rejected, nothing else: provisioning\.invalid_hardware_id/);
    });

    it("the server's records agree, device by device", async () => {
      const { body } = await t.admin.get<{ devices: DeviceRow[] }>(
        `/v1/admin/campaigns/${result.campaignId}/devices`,
      );
      const byId = new Map(body.devices.map((d) => [d.deviceId, d]));
      expect(byId.size).toBe(5);
      for (const d of result.devices) {
        const row = byId.get(d.deviceId)!;
        expect(row.state).toBe(d.failing ? "rolled_back" : "installed");
        if (d.failing) expect(row.reason).toBe("updates.health_check_failed");
      }
    });

    it("the installed handsets report their new version; the failing one still runs the old", async () => {
      for (const d of result.devices) {
        const { body } = await t.admin.get<{ reportedVersion: string | null }>(
          `/v1/admin/device-channels/${d.deviceId}`,
        );
        expect(body.reportedVersion).toBe(d.failing ? null : "1.1.0");
      }
    });

    it("every download was a signed request under a dynamic key sent by SMS; the audit chain holds", async () => {
      for (const d of result.devices) {
        const { body } = await t.admin.get<{ keys: Array<{ state: string; uses: number; policy: object }> }>(
          `/v1/admin/devices/${d.deviceId}/dynamic-keys`,
        );
        const used = body.keys.filter((k) => k.uses > 0);
        expect(used.length).toBeGreaterThanOrEqual(1);
        // assignment, the download, and a status report per state: several uses of one key.
        expect(used[0]!.uses).toBeGreaterThanOrEqual(4);
        expect(used[0]!.policy).toMatchObject({ profile: "update" });
      }
      const { body } = await t.admin.get<{ ok: boolean }>("/v1/admin/audit/verify");
      expect(body.ok).toBe(true);
    });
  });
});
