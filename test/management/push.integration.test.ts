/**
 * The push channel end to end, on SQLite and PostgreSQL, over real HTTPS: a handset subscribed to
 * GET /v1/management/push gets its dynamic keys (issued, renewed on expiry and exhaustion) without
 * SMS, even with no phone number; disconnected, it falls back to SMS and catches up when it comes
 * back; forged, stale and replayed subscriptions are refused and audited; a replayed push is
 * refused by the handset like a replayed SMS. On PostgreSQL, a second node reaches a handset
 * connected to the first (LISTEN/NOTIFY); on SQLite it falls back to SMS, as documented.
 */

import { sql } from "kysely";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { toBase64url } from "../../src/core/codec/base64url.ts";
import { fromUtf8 } from "../../src/core/codec/bytes.ts";
import { type SseEvent, SseParser } from "../../src/core/codec/sse.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import type { StreamingHttpTransport } from "../../src/handset/http-client.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { createNodeTransport } from "../../src/handset/node-transport.ts";
import { fromKeyFile } from "../../src/management/device-wrapper.ts";
import { ManagementClient } from "../../src/management/handset.ts";
import {
  type DeviceKeyFile,
  DynamicKey,
  derivePushAuthKey,
  deriveSessionKey,
  PUSH_SIGNATURE_TAG,
  pushKeyId,
  signRequest,
} from "../../src/management/protocol.ts";
import type { PushSubscriber, PushSubscriberEvent } from "../../src/management/push.ts";
import { readDynamicKey } from "../../src/management/sms-processor.ts";
import { listAudit } from "../../src/platform/audit.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { until } from "../helpers/wait.ts";
import { imei } from "./fixtures.ts";
import { type ManagementTestServer, startManagementServer } from "./harness.ts";

const pgOk = await postgresAvailable();
const NO_SMS = () => new Promise<{ from: string; text: string }>(() => {});

describe.each(databaseKinds)("push channel on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let t: ManagementTestServer;
    let now = Date.now();
    const clock = () => now;
    const files = new Map<string, DeviceKeyFile>();
    const open: PushSubscriber[] = [];
    let serial = 0;

    beforeAll(async () => {
      // Three streams per device: the replay test holds two on one handset and one eavesdropping.
      t = await startManagementServer(kind, {
        clock,
        push: { relayAckTimeoutMs: 400, maxStreamsPerDevice: 3 },
      });
    });
    afterEach(async () => {
      for (const p of open.splice(0)) await p.close();
    });
    afterAll(async () => t?.close());

    /** Registers one device (with or without a number) and returns its key file. */
    async function device(msisdn: string | null): Promise<DeviceKeyFile> {
      const hw = imei(`3520000000${String(++serial).padStart(4, "0")}`);
      const res = await t.admin(
        "POST",
        "/v1/admin/devices/batches",
        [{ model: "HS-100", hardware_id: hw, firmware_version: "1.0", ...(msisdn ? { msisdn } : {}) }],
        "application/json",
      );
      expect(res.status).toBe(201);
      const file = res.json().keyFiles[0] as DeviceKeyFile;
      files.set(file.deviceId, file);
      return file;
    }

    function handset(
      file: DeviceKeyFile,
      msisdn: string | null,
      on: {
        server?: ManagementTestServer;
        keystore?: MemoryKeystore;
        transport?: StreamingHttpTransport;
      } = {},
    ) {
      const server = on.server ?? t;
      const keystore = on.keystore ?? new MemoryKeystore();
      const client = new ManagementClient({
        baseUrl: server.url,
        transport: on.transport ?? server.transport(),
        device: fromKeyFile(file),
        keystore,
        nextSms: msisdn ? t.sms.inbox(msisdn) : NO_SMS,
        clock,
      });
      const events: PushSubscriberEvent[] = [];
      const subscribe = () => {
        const push = client.openPush({ onEvent: (e) => events.push(e), minRetryMs: 50, maxRetryMs: 200 });
        open.push(push);
        return push;
      };
      return { client, keystore, events, subscribe };
    }

    const issue = (deviceId: string, body: object = {}) =>
      t.admin("POST", `/v1/admin/devices/${deviceId}/dynamic-keys`, body);

    async function audit(action: string) {
      const all = await listAudit(t.platform.database, { limit: 1000 });
      return all.filter((r) => r.action === action);
    }

    /** Push subscription headers signed by hand (for the attacks). */
    function pushHeaders(
      file: DeviceKeyFile,
      opts: { key?: Uint8Array; keyId?: string; created?: number; nonce?: string; tag?: "normal" } = {},
    ) {
      const key =
        opts.key ??
        fromKeyFile(file).withStaticKey((s) => derivePushAuthKey(s, file.deviceId).reveal().slice());
      return signRequest(
        key,
        { method: "GET", url: `${t.url}/v1/management/push` },
        {
          keyId: opts.keyId ?? pushKeyId(file.deviceId),
          created: opts.created ?? Math.floor(now / 1000),
          ...(opts.nonce ? { nonce: opts.nonce } : {}),
          ...(opts.tag === "normal" ? {} : { tag: PUSH_SIGNATURE_TAG }),
        },
      );
    }

    /** A raw subscription over HTTPS: the events as they come, and a way to hang up. */
    async function rawStream(headers: Record<string, string>, server = t) {
      const transport = server.transport() as StreamingHttpTransport;
      const abort = new AbortController();
      const res = await transport.stream({
        method: "GET",
        url: `${server.url}/v1/management/push`,
        headers: { accept: "text/event-stream", ...headers },
        signal: abort.signal,
      });
      const events: SseEvent[] = [];
      const parser = new SseParser();
      const decoder = new TextDecoder();
      const done = (async () => {
        try {
          for await (const piece of res.body)
            events.push(...parser.push(decoder.decode(piece, { stream: true })));
        } catch {
          // hung up
        }
      })();
      return {
        status: res.status,
        events,
        async close() {
          abort.abort();
          await done;
        },
      };
    }

    it("a connected device receives its key by push (no SMS) and makes signed requests with it", async () => {
      const file = await device("+4915120000001");
      const h = handset(file, "+4915120000001");
      const push = h.subscribe();
      await push.connected();
      const issued = await issue(file.deviceId, { maxUses: 5 });
      expect(issued.status).toBe(201);
      expect(issued.json()).toMatchObject({ channel: "push" });
      expect(issued.json().messageId).toMatch(/^push_/);
      const ping = await h.client.ping();
      expect(ping.body).toMatchObject({ ok: true, deviceId: file.deviceId, keyId: issued.json().keyId });
      expect(t.sms.textsTo("+4915120000001")).toHaveLength(0);
      expect(h.events.map((e) => e.kind)).toEqual(["connected", "key"]);

      const [record] = (await audit("management.dynamic_key_issued")).filter(
        (r) => r.details["keyId"] === issued.json().keyId,
      );
      expect(record?.details).toMatchObject({
        channel: "push",
        gateway: "push",
        node: t.service.push.nodeId,
      });
      const row = await sql<{ last_channel: string }>`select last_channel from management_notifications
        where device_id = ${file.deviceId}`.execute(t.platform.db);
      expect(row.rows[0]?.last_channel).toBe("push");
      expect((await audit("management.push_subscribe")).some((r) => r.outcome === "allow")).toBe(true);
      expect(await t.auditOk()).toBe(true);
    });

    it("an exhausted key and then an expired key are renewed over push, and the retry succeeds", async () => {
      const file = await device("+4915120000002");
      const h = handset(file, "+4915120000002");
      await h.subscribe().connected();
      const first = (await issue(file.deviceId, { maxUses: 2, ttlSeconds: 120 })).json().keyId;
      expect((await h.client.ping()).body.keyId).toBe(first);
      expect((await h.client.ping()).body.usesLeft).toBe(0);
      const renewed = await h.client.ping(); // 401 exhausted → fresh key pushed → retried
      expect(renewed.status).toBe(200);
      expect(renewed.body.keyId).not.toBe(first);
      now += 121_000;
      const afterExpiry = await h.client.ping(); // 401 expired → pushed → retried
      expect(afterExpiry.body.keyId).not.toBe(renewed.body.keyId);
      const keys = (await t.admin("GET", `/v1/admin/devices/${file.deviceId}/dynamic-keys`)).json().keys;
      expect(
        keys.map((k: { state: string; policy: { reason: string } }) => [k.state, k.policy.reason]),
      ).toEqual([
        ["exhausted", "admin"],
        ["expired", "exhausted"],
        ["active", "expired"],
      ]);
      expect(t.sms.textsTo("+4915120000002")).toHaveLength(0);
    });

    it("a device with no phone number gets keys once it is connected (refused clearly before)", async () => {
      const file = await device(null);
      const before = await issue(file.deviceId);
      expect([before.status, before.json().error.code]).toEqual([409, "management.no_msisdn"]);
      const h = handset(file, null);
      await h.subscribe().connected();
      const issued = await issue(file.deviceId, { maxUses: 1 });
      expect(issued.json().channel).toBe("push");
      expect((await h.client.ping()).status).toBe(200);
      expect((await h.client.ping()).status).toBe(200); // exhausted → renewed by push
      expect(await readDynamicKey(h.keystore, file.deviceId)).toMatchObject({ counter: 2 });
    });

    describe("attacks on the push subscription", () => {
      let file: DeviceKeyFile;
      beforeAll(async () => {
        file = await device(null);
      });
      /** Over real HTTPS, so @authority is what the handset signed. */
      const inject = async (headers: Record<string, string>) => {
        const res = await t.transport().send({ method: "GET", url: `${t.url}/v1/management/push`, headers });
        return [res.status, JSON.parse(fromUtf8(res.body)).error.code];
      };

      it("no signature, a forged key, an unknown device, a dynamic-key profile, a stale created", async () => {
        expect(await inject({})).toEqual([401, "signature.missing"]);
        expect(await inject(pushHeaders(file, { key: randomBytes(32) }))).toEqual([401, "signature.invalid"]);
        expect(await inject(pushHeaders(file, { keyId: "push:dev_AAAAAAAAAAAAAAAA" }))).toEqual([
          401,
          "signature.unknown_key",
        ]);
        expect(await inject(pushHeaders(file, { keyId: "dk_AAAAAAAAAAAAAAAA" }))).toEqual([
          401,
          "signature.unknown_key",
        ]);
        expect(await inject(pushHeaders(file, { tag: "normal" }))).toEqual([401, "signature.malformed"]);
        expect(await inject(pushHeaders(file, { created: Math.floor(now / 1000) - 600 }))).toEqual([
          401,
          "signature.stale",
        ]);
        expect(await inject({ ...pushHeaders(file), "last-event-id": "-1" })).toEqual([
          400,
          "request.invalid",
        ]);
        const denied = (await audit("management.push_subscribe")).filter((r) => r.outcome === "deny");
        expect(denied.map((r) => r.details["code"])).toEqual(
          expect.arrayContaining([
            "signature.missing",
            "signature.invalid",
            "signature.unknown_key",
            "signature.malformed",
            "signature.stale",
          ]),
        );
      });

      it("a session key (static + dynamic) is not a push key", async () => {
        const d = fromKeyFile(file);
        const session = d.withStaticKey((s) =>
          deriveSessionKey(s, DynamicKey.generate(), file.deviceId, "requests").reveal().slice(),
        );
        expect(await inject(pushHeaders(file, { key: session }))).toEqual([401, "signature.invalid"]);
      });

      it("a replayed subscription (same nonce) is refused", async () => {
        const headers = pushHeaders(file, { nonce: toBase64url(randomBytes(16)) });
        const first = await rawStream(headers);
        expect(first.status).toBe(200);
        await until(() => first.events.length > 0, 5000, "ready");
        expect(first.events[0]?.event).toBe("ready");
        await first.close();
        expect(await inject(headers)).toEqual([401, "signature.replayed"]);
      });

      it("a handset holding the wrong static key stops with the server's code", async () => {
        const forged = { ...file, staticKey: toBase64url(randomBytes(32)) };
        const h = handset(forged, null);
        const push = h.subscribe();
        await expect(push.connected()).rejects.toMatchObject({ code: "signature.invalid", status: 401 });
        expect(push.state).toBe("stopped");
      });
    });

    it("a pushed notification replayed is refused by the handset, like a replayed SMS", async () => {
      const file = await device(null);
      const h = handset(file, null);
      // Two streams of the same device on one handset: the server writes the key to both.
      await h.subscribe().connected();
      await h.subscribe().connected();
      // An eavesdropper's recording of the pushed text (as if lifted off the wire).
      const spy = await rawStream(pushHeaders(file));
      await until(() => spy.events.length > 0, 5000, "spy ready");
      const issued = (await issue(file.deviceId)).json();
      await until(
        () => h.events.filter((e) => e.kind !== "connected").length >= 2,
        5000,
        "both streams delivered",
      );
      expect(h.events.filter((e) => e.kind === "key")).toHaveLength(1);
      const refused = h.events.find((e) => e.kind === "refused");
      expect(refused).toMatchObject({ error: { code: "management.notification_replayed" } });
      await until(() => spy.events.some((e) => e.event === "notification"), 5000, "spy recorded");
      const recorded = spy.events.find((e) => e.event === "notification")!;
      expect(recorded.id).toBe(String(issued.counter));
      await expect(h.client.receive({ from: "push", text: recorded.data })).rejects.toMatchObject({
        code: "management.notification_replayed",
      });
      await spy.close();
    });

    it("disconnected: the key goes by SMS; back online, a key it missed is pushed again (catch-up)", async () => {
      const msisdn = "+4915120000003";
      const file = await device(msisdn);
      const h = handset(file, msisdn);
      const push = h.subscribe();
      await push.connected();
      expect((await issue(file.deviceId)).json().channel).toBe("push");
      await push.close();
      await until(
        async () => !(await t.service.push.reachable(file.deviceId)),
        5000,
        "server saw the hang-up",
      );
      const bySms = (await issue(file.deviceId)).json();
      expect(bySms.channel).toBe("sms");
      expect(t.sms.textsTo(msisdn)).toHaveLength(1);
      expect((await h.client.ping()).body.keyId).toBe(bySms.keyId); // superseded → SMS → retried

      // A key whose SMS the handset never reads: its next subscription brings it.
      const missed = (await issue(file.deviceId)).json();
      expect(missed.channel).toBe("sms");
      const again = h.subscribe();
      await until(() => h.events.some((e) => e.kind === "key" && e.keyId === missed.keyId), 5000, "catch-up");
      await again.connected();
      expect(await readDynamicKey(h.keystore, file.deviceId)).toMatchObject({ keyId: missed.keyId });
      const resent = (await audit("management.dynamic_key_resent")).filter(
        (r) => r.details["keyId"] === missed.keyId,
      );
      expect(resent).toHaveLength(1);
      // Up to date now: another subscription sends nothing again.
      await again.close();
      const third = h.subscribe();
      await third.connected();
      expect(
        (await audit("management.dynamic_key_resent")).filter((r) => r.details["keyId"] === missed.keyId),
      ).toHaveLength(1);
    });

    it("a device with no number whose stream closed is refused clearly", async () => {
      const file = await device(null);
      const h = handset(file, null);
      const push = h.subscribe();
      await push.connected();
      await push.close();
      await until(
        async () => !(await t.service.push.reachable(file.deviceId)),
        5000,
        "server saw the hang-up",
      );
      const res = await issue(file.deviceId);
      expect([res.status, res.json().error.code]).toEqual([409, "management.no_msisdn"]);
    });

    describe("several nodes", () => {
      let node2: ManagementTestServer;
      beforeAll(async () => {
        node2 = await startManagementServer(kind, {
          clock,
          shareDatabaseOf: t,
          push: { relayAckTimeoutMs: 400 },
        });
      });
      afterAll(async () => {
        for (const p of open.splice(0)) await p.close();
        await node2?.close();
      });

      it.runIf(kind === "postgres")(
        "a key issued on one node reaches a handset connected to another",
        async () => {
          const file = await device(null);
          const h = handset(file, null, { server: node2 });
          await h.subscribe().connected();
          const issued = await issue(file.deviceId, { maxUses: 1 }); // on node 1
          expect(issued.status).toBe(201);
          expect(issued.json().channel).toBe("push");
          const [record] = (await audit("management.dynamic_key_issued")).filter(
            (r) => r.details["keyId"] === issued.json().keyId,
          );
          expect(record?.details["node"]).toBe(node2.service.push.nodeId);
          expect((await h.client.ping()).status).toBe(200);
          // Exhausted on node 2, renewed there, delivered there.
          expect((await h.client.ping()).status).toBe(200);
        },
      );

      it.runIf(kind === "postgres")(
        "a node that died without cleaning up costs one wait, then SMS",
        async () => {
          const msisdn = "+4915120000004";
          const file = await device(msisdn);
          await sql`insert into management_push_presence (device_id, node_id, connected_at)
          values (${file.deviceId}, ${"node_gone"}, ${now})`.execute(t.platform.db);
          expect(await t.service.push.reachable(file.deviceId)).toBe(true);
          const res = await issue(file.deviceId);
          expect(res.json().channel).toBe("sms");
          expect(await t.service.push.reachable(file.deviceId)).toBe(false);
          expect(t.sms.textsTo(msisdn)).toHaveLength(1);
        },
      );

      it.runIf(kind === "sqlite")(
        "without PostgreSQL a handset on another node is reached by SMS",
        async () => {
          const msisdn = "+4915120000005";
          const file = await device(msisdn);
          const h = handset(file, msisdn, { server: node2 });
          await h.subscribe().connected();
          const res = await issue(file.deviceId);
          expect(res.json().channel).toBe("sms");
          expect((await h.client.ping()).status).toBe(200);
        },
      );

      it("closing a node ends its streams; the handset notices and keeps trying", async () => {
        const node3 = await startManagementServer(kind, { clock, shareDatabaseOf: t });
        const file = await device(null);
        // A transport of its own: the harness closes its transports before the server.
        const transport = createNodeTransport({ pin: node3.pin });
        const h = handset(file, null, { server: node3, transport });
        const push = h.subscribe();
        await push.connected();
        await node3.close();
        await until(() => h.events.some((e) => e.kind === "disconnected"), 5000, "disconnected");
        // The stream ended cleanly; the next attempts find no server and are retried, not fatal.
        expect(h.events.find((e) => e.kind === "disconnected")).not.toHaveProperty("error");
        await until(
          () => h.events.some((e) => e.kind === "disconnected" && e.error?.code === "transport.unreachable"),
          5000,
          "a failed reconnect",
        );
        expect(push.state === "waiting" || push.state === "connecting").toBe(true);
        await push.close();
        transport.close();
      });
    });
  });
});
