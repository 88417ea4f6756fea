/**
 * The messaging demo on a real server, on both databases, checked against the server's records: a
 * number with no handset, registration by both variants, HPKE to each handset, a signed webhook for
 * the reply. The demo's own words are not the proof; the sender's API and the audit chain are.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type MessagingDemoResult, runMessagingDemo } from "../../src/cli/demo-messaging.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

const pgOk = await postgresAvailable();

describe.each(databaseKinds)("the messaging demo on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let t: TestServer;
    let result: MessagingDemoResult;
    const lines: string[] = [];

    beforeAll(async () => {
      t = await startTestServer(kind, {}, {});
      result = await runMessagingDemo(
        t.admin,
        { url: t.server.url, pin: t.server.pin },
        {
          say: (line) => lines.push(line),
        },
      );
    }, 120_000);
    afterAll(async () => t?.close());

    it("the first message waited for a handset, then the phone decrypted it", () => {
      expect(result.waitingStatus, lines.join("\n")).toBe("waiting_registration");
      expect(result.opened.phone[result.firstMessageId]).toMatch(/Dr\. Okafor/);
      // The tablet registered after the phone had acknowledged the first message: it never got it.
      expect(result.opened.tablet[result.firstMessageId]).toBeUndefined();
    });

    it("the second message reached both handsets, each under its own key", () => {
      expect(result.phoneId).not.toBe(result.tabletId);
      expect(result.opened.phone[result.secondMessageId]).toMatch(/ECG/);
      expect(result.opened.tablet[result.secondMessageId]).toBe(result.opened.phone[result.secondMessageId]);
    });

    it("the reply reached the clinic: a signed webhook, and the text through the sender API", () => {
      const replyCall = result.webhooks.find((c) => c.type === "reply");
      expect(replyCall?.verified).toBe(true);
      expect(replyCall?.messageId).toBe(result.secondMessageId);
      expect(result.webhooks.every((c) => c.verified)).toBe(true);
      expect(result.replyText).toBe("YES");
    });

    it("the server's records agree: read receipt, both deliveries, the reply, an intact audit chain", async () => {
      const clinic = t.anonymous();
      const auth = { headers: { authorization: `Bearer ${result.senderApiKey}` } };
      type Status = {
        status: string;
        deliveries: Array<{ handsetId: string; state: string }>;
        replies: number;
      };
      const first = (await clinic.get<Status>(`/v1/messages/${result.firstMessageId}`, auth)).body;
      expect(first.status).toBe("read");
      expect(first.deliveries).toEqual([
        expect.objectContaining({ handsetId: result.phoneId, state: "read" }),
      ]);
      const second = (await clinic.get<Status>(`/v1/messages/${result.secondMessageId}`, auth)).body;
      expect(second.deliveries.map((d) => d.handsetId).sort()).toEqual(
        [result.phoneId, result.tabletId].sort(),
      );
      expect(second.deliveries.every((d) => d.state === "delivered" || d.state === "read")).toBe(true);
      expect(second.replies).toBe(1);
      const { body: audit } = await t.admin.get<{ ok: boolean }>("/v1/admin/audit/verify");
      expect(audit.ok).toBe(true);
    });
  });
});
