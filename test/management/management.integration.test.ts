/**
 * The management channel end to end, on SQLite and PostgreSQL: provisioning → key file → dynamic
 * key by SMS → signed requests over real HTTPS → use counting, exhaustion, expiry, renewal — and
 * the attacks on each step answered with their codes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toBase64url } from "../../src/core/codec/base64url.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { fromKeyFile } from "../../src/management/device-wrapper.ts";
import { ManagementClient } from "../../src/management/handset.ts";
import {
  type DeviceKeyFile,
  deriveSessionKey,
  isManagementSms,
  signRequest,
} from "../../src/management/protocol.ts";
import { createSmsProcessor, readDynamicKey } from "../../src/management/sms-processor.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { imei } from "./fixtures.ts";
import { type ManagementTestServer, startManagementServer } from "./harness.ts";

const MSISDN_A = "+4915112345601";
const MSISDN_B = "+4915112345602";
const pgOk = await postgresAvailable();

describe.each(databaseKinds)("management channel on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let t: ManagementTestServer;
    let now = Date.now();
    const clock = () => now;
    let files: DeviceKeyFile[] = [];
    const hwA = imei("35100000000001");
    const hwB = imei("35100000000002");

    beforeAll(async () => {
      t = await startManagementServer(kind, { clock });
    });
    afterAll(async () => t?.close());

    function client(file: DeviceKeyFile, msisdn: string, keystore = new MemoryKeystore()) {
      return new ManagementClient({
        baseUrl: t.url,
        transport: t.transport(),
        device: fromKeyFile(file),
        keystore,
        nextSms: t.sms.inbox(msisdn),
        clock,
      });
    }

    /** A request signed by hand from a key file and a keystore, sent through app.inject. */
    async function signedInject(
      file: DeviceKeyFile,
      keystore: MemoryKeystore,
      opts: { method?: string; path?: string; sendPath?: string; nonce?: string; created?: number } = {},
    ) {
      const device = fromKeyFile(file);
      const stored = (await readDynamicKey(keystore, device.deviceId))!;
      const session = device.withStaticKey((k) =>
        deriveSessionKey(k, stored.key, device.deviceId, "requests"),
      );
      const method = opts.method ?? "GET";
      const path = opts.path ?? "/v1/management/ping";
      const headers = signRequest(
        session.reveal(),
        { method, url: `http://localhost${path}` },
        {
          keyId: stored.keyId,
          created: opts.created ?? Math.floor(now / 1000),
          ...(opts.nonce ? { nonce: opts.nonce } : {}),
        },
      );
      const res = await t.app.inject({ method: method as "GET", url: opts.sendPath ?? path, headers });
      return { status: res.statusCode, code: res.json()?.error?.code as string | undefined, headers };
    }

    it("imports a CSV batch: good rows registered with key files, bad rows reported by line", async () => {
      const csv = [
        "model,hardware_id,firmware_version,msisdn,owner,memory_layout,static_key",
        `HS-100,${hwA},1.0.0,${MSISDN_A},Ada,"{""slots"":[""a"",""b""]}",`,
        `HS-100,490154203237519,1.0.0,,,,`,
        `HS-200,${hwB},2.0.0,${MSISDN_B},,,${toBase64url(randomBytes(32))}`,
      ].join("\n");
      const res = await t.admin("POST", "/v1/admin/devices/batches", csv, "text/csv");
      expect(res.status).toBe(201);
      const body = res.json();
      expect(body.accepted).toBe(2);
      expect(
        body.rows.map((r: { line: number; status: string; code?: string }) => [r.line, r.status, r.code]),
      ).toEqual([
        [2, "accepted", undefined],
        [3, "rejected", "provisioning.invalid_hardware_id"],
        [4, "accepted", undefined],
      ]);
      files = body.keyFiles;
      expect(files.map((f) => f.hardwareId)).toEqual([hwA, hwB]);
      expect(files[0]!.serverPin).toBe(t.pin);

      const again = await t.admin(
        "POST",
        "/v1/admin/devices/batches",
        [
          { model: "HS-100", hardware_id: hwA, firmware_version: "1" },
          { model: "HS-300", hardware_id: imei("35100000000003"), firmware_version: "1" },
        ],
        "application/json",
      );
      expect(again.json().rows.map((r: { status: string; code?: string }) => r.code ?? r.status)).toEqual([
        "provisioning.duplicate_device",
        "accepted",
      ]);

      const device = (await t.admin("GET", `/v1/admin/devices/${files[0]!.deviceId}`)).json();
      expect(device).toMatchObject({
        hardwareId: hwA,
        msisdn: MSISDN_A,
        memoryLayout: { slots: ["a", "b"] },
      });
      expect(JSON.stringify(device)).not.toContain(files[0]!.staticKey);
      const list = (await t.admin("GET", "/v1/admin/devices?model=HS-100")).json();
      expect(list.devices.map((d: { hardwareId: string }) => d.hardwareId)).toEqual([hwA]);
    });

    it("refuses batch imports without an admin token", async () => {
      const res = await t.app.inject({
        method: "POST",
        url: "/v1/admin/devices/batches",
        headers: { "content-type": "text/csv" },
        payload: "model,hardware_id,firmware_version\nM,490154203237518,1",
      });
      expect(res.statusCode).toBe(401);
      expect(res.json().error.code).toBe("auth.unauthenticated");
    });

    it("issue → SMS → handset → signed pings until exhaustion → a fresh key is sent → works again", async () => {
      const a = files[0]!;
      const c = client(a, MSISDN_A);
      const issued = await t.admin("POST", `/v1/admin/devices/${a.deviceId}/dynamic-keys`, {
        maxUses: 3,
        ttlSeconds: 3600,
      });
      expect(issued.status).toBe(201);
      const texts = t.sms.textsTo(MSISDN_A);
      expect(texts).toHaveLength(1);
      expect(isManagementSms(texts[0]!)).toBe(true);
      expect(texts[0]!.length).toBeLessThanOrEqual(160);

      const p1 = await c.ping();
      expect(p1.body).toMatchObject({
        ok: true,
        deviceId: a.deviceId,
        keyId: issued.json().keyId,
        usesLeft: 2,
      });
      const p2 = await c.request<{ echo: unknown }>("POST", "/v1/management/ping", {
        echo: { hello: "world" },
      });
      expect(p2.body.echo).toEqual({ hello: "world" });
      expect((await c.ping()).body.usesLeft).toBe(0);

      const p4 = await c.ping(); // 401 exhausted → fresh SMS → processed → retried
      expect(p4.body.keyId).not.toBe(issued.json().keyId);
      expect(t.sms.textsTo(MSISDN_A)).toHaveLength(2);
      const keys = (await t.admin("GET", `/v1/admin/devices/${a.deviceId}/dynamic-keys`)).json().keys;
      expect(
        keys.map((k: { state: string; uses: number; counter: number }) => [k.state, k.uses, k.counter]),
      ).toEqual([
        ["exhausted", 3, 1],
        ["active", 1, 2],
      ]);
      expect(keys[1].policy.reason).toBe("exhausted");
      expect(await t.auditOk()).toBe(true);
    });

    it("an expired dynamic key answers management.dynamic_key_expired and a fresh key follows", async () => {
      const a = files[1]!;
      const keystore = new MemoryKeystore();
      const c = client(a, MSISDN_B, keystore);
      await t.admin("POST", `/v1/admin/devices/${a.deviceId}/dynamic-keys`, { ttlSeconds: 60 });
      await c.awaitDynamicKey();
      now += 61_000;
      const raw = await signedInject(a, keystore);
      expect(raw).toMatchObject({ status: 401, code: "management.dynamic_key_expired" });
      expect(t.sms.textsTo(MSISDN_B)).toHaveLength(2);
      // A second request with the same dead key is refused but sends no further text.
      expect(await signedInject(a, keystore)).toMatchObject({
        status: 401,
        code: "management.dynamic_key_expired",
      });
      expect(t.sms.textsTo(MSISDN_B)).toHaveLength(2);
      expect((await c.ping()).status).toBe(200);
    });

    it("a superseded key is refused; the client picks up the newer key and retries", async () => {
      const a = files[0]!;
      const keystore = new MemoryKeystore();
      const c = client(a, MSISDN_A, keystore);
      await t.admin("POST", `/v1/admin/devices/${a.deviceId}/dynamic-keys`, {});
      await c.awaitDynamicKey();
      await t.admin("POST", `/v1/admin/devices/${a.deviceId}/dynamic-keys`, {});
      expect(await signedInject(a, keystore)).toMatchObject({
        status: 401,
        code: "management.dynamic_key_superseded",
      });
      expect((await c.ping()).status).toBe(200);
    });

    describe("attacks on signed requests", () => {
      let keystore: MemoryKeystore;
      beforeAll(async () => {
        keystore = new MemoryKeystore();
        const c = client(files[0]!, MSISDN_A, keystore);
        await t.admin("POST", `/v1/admin/devices/${files[0]!.deviceId}/dynamic-keys`, { maxUses: 100 });
        await c.awaitDynamicKey();
      });

      it("a replayed nonce", async () => {
        const nonce = toBase64url(randomBytes(16));
        expect((await signedInject(files[0]!, keystore, { nonce })).status).toBe(200);
        expect(await signedInject(files[0]!, keystore, { nonce })).toMatchObject({
          status: 401,
          code: "signature.replayed",
        });
      });
      it("a request sent to another path than the one signed", async () => {
        expect(
          await signedInject(files[0]!, keystore, {
            path: "/v1/management/ping?a=1",
            sendPath: "/v1/management/ping?a=2",
          }),
        ).toMatchObject({ status: 401, code: "signature.invalid" });
      });
      it("a stale signature", async () => {
        expect(
          await signedInject(files[0]!, keystore, { created: Math.floor(now / 1000) - 600 }),
        ).toMatchObject({
          status: 401,
          code: "signature.stale",
        });
      });
      it("a signature from another device's keys under this key id", async () => {
        const other = new MemoryKeystore();
        const c = client(files[1]!, MSISDN_B, other);
        await t.admin("POST", `/v1/admin/devices/${files[1]!.deviceId}/dynamic-keys`, { maxUses: 100 });
        await c.awaitDynamicKey();
        const mine = (await readDynamicKey(keystore, files[0]!.deviceId))!;
        const theirs = (await readDynamicKey(other, files[1]!.deviceId))!;
        const device = fromKeyFile(files[1]!);
        const session = device.withStaticKey((k) =>
          deriveSessionKey(k, theirs.key, device.deviceId, "requests"),
        );
        const headers = signRequest(
          session.reveal(),
          { method: "GET", url: "http://localhost/v1/management/ping" },
          {
            keyId: mine.keyId,
            created: Math.floor(now / 1000),
          },
        );
        const res = await t.app.inject({ method: "GET", url: "/v1/management/ping", headers });
        expect([res.statusCode, res.json().error.code]).toEqual([401, "signature.invalid"]);
      });
      it("no signature, an unknown key id", async () => {
        const res = await t.app.inject({ method: "GET", url: "/v1/management/ping" });
        expect([res.statusCode, res.json().error.code]).toEqual([401, "signature.missing"]);
        const forged = signRequest(
          randomBytes(32),
          { method: "GET", url: "http://localhost/v1/management/ping" },
          {
            keyId: "dk_AAAAAAAAAAAAAAAA",
            created: Math.floor(now / 1000),
          },
        );
        const res2 = await t.app.inject({ method: "GET", url: "/v1/management/ping", headers: forged });
        expect([res2.statusCode, res2.json().error.code]).toEqual([401, "signature.unknown_key"]);
      });
      it("a tampered body on a signed POST", async () => {
        const device = fromKeyFile(files[0]!);
        const stored = (await readDynamicKey(keystore, device.deviceId))!;
        const session = device.withStaticKey((k) =>
          deriveSessionKey(k, stored.key, device.deviceId, "requests"),
        );
        const body = new TextEncoder().encode('{"echo":1}');
        const headers = signRequest(
          session.reveal(),
          {
            method: "POST",
            url: "http://localhost/v1/management/ping",
            headers: { "content-type": "application/json" },
            body,
          },
          { keyId: stored.keyId, created: Math.floor(now / 1000) },
        );
        const res = await t.app.inject({
          method: "POST",
          url: "/v1/management/ping",
          headers: { ...headers, "content-type": "application/json" },
          payload: '{"echo":2}',
        });
        expect([res.statusCode, res.json().error.code]).toEqual([401, "signature.digest_mismatch"]);
      });
    });

    describe("attacks on notifications", () => {
      it("a notification replayed from another device is refused, and so is a replay of its own", async () => {
        const a = files[0]!;
        const b = files[1]!;
        const keystore = new MemoryKeystore();
        const processor = createSmsProcessor({ device: fromKeyFile(a), keystore });
        await t.admin("POST", `/v1/admin/devices/${b.deviceId}/dynamic-keys`, {});
        const textForB = t.sms.textsTo(MSISDN_B).at(-1)!;
        await expect(processor.process({ from: "+1", text: textForB })).rejects.toMatchObject({
          code: "management.notification_forged",
        });
        await t.admin("POST", `/v1/admin/devices/${a.deviceId}/dynamic-keys`, {});
        const textForA = t.sms.textsTo(MSISDN_A).at(-1)!;
        expect((await processor.process({ from: "+1", text: textForA })).kind).toBe("management-key");
        const earlierForA = t.sms.textsTo(MSISDN_A).at(-2)!;
        await expect(processor.process({ from: "+1", text: earlierForA })).rejects.toMatchObject({
          code: "management.notification_replayed",
        });
        expect(await t.auditOk()).toBe(true);
      });
    });
  });
});
