/**
 * The messaging push stream (docs/protocols/messaging.md §Push) on SQLite and PostgreSQL: a
 * subscribed handset hears of each message sealed to it, and of nothing else; the stream is
 * refused without a handset's signature; on PostgreSQL a second node, on the same database,
 * wakes a handset whose stream is held by the first.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { MessagingApp } from "../../src/messaging/handset.ts";
import { INBOX_EVENTS_PATH } from "../../src/messaging/push.ts";
import { SimulatedMessagingHandset } from "../../src/messaging/simulator.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";
import { type MessagingHarness, startMessagingServer } from "./harness.ts";

const pgOk = await postgresAvailable();

/** Collects what a subscription hears; `next` waits for a message id. */
function listener() {
  const heard: Array<string | undefined> = [];
  const waiters: Array<() => void> = [];
  return {
    heard,
    onMessage(id: string | undefined) {
      heard.push(id);
      for (const w of waiters.splice(0)) w();
    },
    async waitFor(id: string, ms = 10_000): Promise<void> {
      const deadline = Date.now() + ms;
      while (!heard.includes(id)) {
        if (Date.now() > deadline) throw new Error(`no event for ${id}; heard ${JSON.stringify(heard)}`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 100);
        });
      }
    },
  };
}

describe.each(databaseKinds)("the messaging push stream on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let t: MessagingHarness;
    beforeAll(async () => {
      t = await startMessagingServer(kind);
    }, 60_000);
    afterAll(async () => t?.close());

    it("wakes the handset with each message sealed to it, and with nothing else", async () => {
      const phone = await t.handset("+447911123501");
      await phone.registerByServerCode("phone");
      const other = await t.handset("+447911123502");
      await other.registerByServerCode("phone");
      const clinic = await t.sender("Clinic");

      const mine = listener();
      const theirs = listener();
      const subscription = phone.app.subscribe({ onMessage: (id) => mine.onMessage(id) });
      const otherSubscription = other.app.subscribe({ onMessage: (id) => theirs.onMessage(id) });
      try {
        await subscription.connected();
        await otherSubscription.connected();
        // On (re)connecting the app is told to look once, with no id.
        expect(mine.heard).toEqual([undefined]);

        const { body } = await clinic.http.post<{ id: string }>("/v1/messages", {
          to: "+447911123501",
          body: { type: "text", text: "pushed" },
        });
        await mine.waitFor(body.id);
        const { messages } = await phone.app.pull();
        expect(messages.map((m) => m.id)).toEqual([body.id]);
        // The other number's handset heard nothing of it.
        await new Promise((r) => setTimeout(r, 300));
        expect(theirs.heard).toEqual([undefined]);
      } finally {
        await subscription.close();
        await otherSubscription.close();
      }
    });

    it("wakes the handset again when its re-registration seals a pending copy to the new key", async () => {
      const number = "+447911123503";
      const clinic = await t.sender("Clinic 2");
      const phone = await t.handset(number);
      await phone.registerByServerCode("phone");
      const heard = listener();
      const subscription = phone.app.subscribe({ onMessage: (id) => heard.onMessage(id) });
      try {
        await subscription.connected();
        const { body } = await clinic.http.post<{ id: string }>("/v1/messages", {
          to: number,
          body: { type: "text", text: "not read yet" },
        });
        await heard.waitFor(body.id);
        // The same app registers the number again (a new encryption key): the copy it never took is
        // sealed again, to the new key, and the stream says so.
        await phone.registerByServerCode("phone");
        const deadline = Date.now() + 10_000;
        while (heard.heard.filter((h) => h === body.id).length < 2 && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 50));
        expect(heard.heard.filter((h) => h === body.id)).toHaveLength(2);
        const { messages } = await phone.app.pull();
        expect(messages.map((m) => m.body)).toEqual([{ type: "text", text: "not read yet" }]);
      } finally {
        await subscription.close();
      }
    });

    it("a refused subscription stops and says why; an app with no number cannot subscribe", async () => {
      const keystore = new MemoryKeystore();
      const phone = await t.handset("+447911123505", keystore);
      await phone.registerByServerCode("phone");
      // The same handset with a clock an hour slow: every signature it makes is stale.
      const slow = await MessagingApp.open({
        http: t.anonymous,
        keystore,
        clock: () => t.clock.ms - 3_600_000,
      });
      const events: string[] = [];
      const subscription = slow.subscribe({
        onMessage: () => {},
        onEvent: (e) => events.push(e.kind === "connected" ? e.kind : `${e.kind} ${e.error.code}`),
      });
      await expect(subscription.connected()).rejects.toMatchObject({ code: "signature.stale", status: 401 });
      await subscription.close();
      expect(events).toEqual(["stopped signature.stale"]);

      const stranger = await MessagingApp.open({ http: t.anonymous, keystore: new MemoryKeystore() });
      expect(() => stranger.subscribe({ onMessage: () => {} })).toThrow(
        expect.objectContaining({ code: "messaging.not_registered" }),
      );
    });

    it("refuses the stream without a registered handset's signature", async () => {
      const res = await t.anonymous.request("GET", INBOX_EVENTS_PATH).catch((e: unknown) => e);
      expect(res).toMatchObject({ status: 401 });
      expect((res as { code: string }).code).toMatch(/^signature\./);
    });
  });
});

describe.skipIf(!pgOk)("the messaging push stream across two nodes on one PostgreSQL database", () => {
  let a: MessagingHarness;
  let b: TestServer;
  beforeAll(async () => {
    a = await startMessagingServer("postgres");
    const url = a.server.platform.config.databaseUrl;
    b = await startTestServer("postgres", {
      HANDSAFE_DATABASE_URL: url,
      HANDSAFE_MESSAGING_REGISTRATION_RATE_LIMIT: "0",
      HANDSAFE_SMS_PER_NUMBER_PER_HOUR: "0",
    });
  }, 60_000);
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  it("a message accepted on one node wakes the stream held by the other", async () => {
    const number = "+447911123504";
    // The handset talks to node b only; the sender to node a.
    const app = await MessagingApp.open({ http: b.client(), keystore: new MemoryKeystore() });
    const handset = new SimulatedMessagingHandset(app, a.phone(number));
    await handset.registerByServerCode("phone");
    const heard = listener();
    const subscription = app.subscribe({ onMessage: (id) => heard.onMessage(id) });
    try {
      await subscription.connected();
      // The listener on b may still be connecting: send until one arrives, each a new message.
      const clinic = await a.sender("Clinic");
      let id = "";
      for (let i = 0; i < 20 && !heard.heard.some((h) => h !== undefined); i++) {
        ({ id } = (
          await clinic.http.post<{ id: string }>("/v1/messages", {
            to: number,
            body: { type: "text", text: `n${i}` },
          })
        ).body);
        await new Promise((r) => setTimeout(r, 250));
      }
      await heard.waitFor(id);
    } finally {
      await subscription.close();
    }
  });
});
