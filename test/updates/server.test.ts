/**
 * Update packages end to end on SQLite and PostgreSQL, over real HTTPS: upload (streamed by the
 * CLI's uploader) → TUF target → metadata served → a signed device downloads (whole and resumed
 * with Range), verifies against TUF, unwraps its content key and decrypts the image; deltas;
 * refusals with their codes; the offline-root ceremony.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { uploadPackage } from "../../src/cli/updates.ts";
import { fromBase64url } from "../../src/core/codec/base64url.ts";
import { concatBytes, fromUtf8 } from "../../src/core/codec/bytes.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { createNodeTransport } from "../../src/handset/node-transport.ts";
import { fromKeyFile } from "../../src/management/device-wrapper.ts";
import { ManagementClient } from "../../src/management/handset.ts";
import { type DeviceKeyFile, deriveSessionKey, signRequest } from "../../src/management/protocol.ts";
import { readDynamicKey } from "../../src/management/sms-processor.ts";
import { decryptContent, unwrapContentKey } from "../../src/updates/content.ts";
import { applyImageDelta } from "../../src/updates/delta.ts";
import type { UpdatePackage } from "../../src/updates/packages.ts";
import { type ExportedRootKey, signRootOffline } from "../../src/updates/repository-service.ts";
import { createTargetVerifier, parseUpdateCustom, TufClient } from "../../src/updates/tuf/index.ts";
import { databaseKinds, postgresAvailable } from "../helpers/databases.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";
import { imei } from "../management/fixtures.ts";

const pgOk = await postgresAvailable();
const MSISDN = ["+4915112345611", "+4915112345612"];

function image(size: number, seed: number): Uint8Array {
  const out = randomBytes(size);
  out[0] = seed;
  return out;
}

describe.each(databaseKinds)("update packages on %s", (kind) => {
  describe.skipIf(kind === "postgres" && !pgOk)("", () => {
    let t: TestServer;
    let files: DeviceKeyFile[] = [];
    const keystores = [new MemoryKeystore(), new MemoryKeystore()];
    const transport = () => createNodeTransport({ pin: t.server.pin, maxResponseBytes: 64 * 1024 * 1024 });
    const dir = mkdtempSync(join(tmpdir(), "handsafe-upd-"));
    const v1 = image(300_000, 1);
    const v2 = v1.slice();
    for (let i = 0; i < v2.length; i += 5000) v2[i] = (v2[i]! + 1) & 0xff; // ~0.02 % changed
    let pkg1: UpdatePackage;
    let pkg2: UpdatePackage;

    beforeAll(async () => {
      t = await startTestServer(kind);
      const res = await t.admin.post<{ keyFiles: DeviceKeyFile[] }>("/v1/admin/devices/batches", [
        {
          model: "HS-100",
          hardware_id: imei("35200000000001"),
          firmware_version: "1.0.0",
          msisdn: MSISDN[0],
        },
        {
          model: "HS-100",
          hardware_id: imei("35200000000002"),
          firmware_version: "1.0.0",
          msisdn: MSISDN[1],
        },
      ]);
      files = res.body.keyFiles;
      for (const f of files)
        await t.admin.post(`/v1/admin/devices/${f.deviceId}/dynamic-keys`, {
          maxUses: 100,
          ttlSeconds: 3600,
        });
      for (let i = 0; i < 2; i++) await client(i).awaitDynamicKey();
    });
    afterAll(async () => {
      await t?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    /** The device's SMS inbox, read from the built-in SMS centre. */
    function inbox(msisdn: string) {
      let after: string | undefined;
      return async () => {
        for (let i = 0; i < 50; i++) {
          const q = `/v1/sms/outbox?to=${encodeURIComponent(msisdn)}${after ? `&after=${after}` : ""}`;
          const texts = (await t.admin.get<{ texts: Array<{ id: string; from: string; text: string }> }>(q))
            .body.texts;
          if (texts.length > 0) {
            after = texts[0]!.id;
            return { from: texts[0]!.from, text: texts[0]!.text };
          }
          await new Promise((r) => setTimeout(r, 50));
        }
        throw new Error(`no SMS to ${msisdn}`);
      };
    }
    const inboxes = MSISDN.map(inbox);
    function client(i: number) {
      return new ManagementClient({
        baseUrl: t.server.url,
        transport: transport(),
        device: fromKeyFile(files[i]!),
        keystore: keystores[i]!,
        nextSms: inboxes[i]!,
      });
    }

    /** A signed GET from device i, with extra headers (Range), returning raw bytes. */
    async function deviceGet(i: number, path: string, headers: Record<string, string> = {}, sendPath = path) {
      const device = fromKeyFile(files[i]!);
      const stored = (await readDynamicKey(keystores[i]!, device.deviceId))!;
      const session = device.withStaticKey((k) =>
        deriveSessionKey(k, stored.key, device.deviceId, "requests"),
      );
      const url = `${t.server.url}${path}`;
      const sig = signRequest(session.reveal(), { method: "GET", url }, { keyId: stored.keyId });
      const tr = transport();
      try {
        return await tr.send({
          method: "GET",
          url: `${t.server.url}${sendPath}`,
          headers: { ...headers, ...sig },
        });
      } finally {
        tr.close();
      }
    }

    function contentKeyOpen(i: number, wrapped: string, packageId: string): Uint8Array {
      const device = fromKeyFile(files[i]!);
      return device.withStaticKey((k) => {
        const stored = keystoresSync[i]!;
        const session = deriveSessionKey(k, stored.key, device.deviceId, "content");
        return unwrapContentKey(fromBase64url(wrapped), session.reveal(), {
          deviceId: device.deviceId,
          packageId,
        });
      });
    }
    const keystoresSync: Array<Awaited<ReturnType<typeof readDynamicKey>>> = [];

    async function upload(
      bytes: Uint8Array,
      params: { version: string; models: string[]; channel?: string },
    ) {
      const file = join(dir, `img-${params.version}-${Math.random()}`);
      writeFileSync(file, bytes);
      const progress: number[] = [];
      const pkg = await uploadPackage(
        { url: t.server.url, pin: t.server.pin },
        t.server.adminToken!,
        file,
        params,
        (s) => progress.push(s),
      );
      expect(progress.at(-1)).toBe(bytes.length);
      return pkg;
    }

    async function tufClient(): Promise<TufClient> {
      const fetchFile = async (name: string) => {
        const res = await t.server.app.inject({ method: "GET", url: `/v1/updates/tuf/${name}` });
        if (res.statusCode === 404) return null;
        expect(res.statusCode).toBe(200);
        return new Uint8Array(res.rawPayload);
      };
      const client = TufClient.fromTrustedRoot((await fetchFile("1.root.json"))!);
      await client.refresh(fetchFile, { now: new Date(t.server.platform.clock()) });
      return client;
    }

    it("uploads a full image: encrypted, a TUF target with the contract's custom, metadata served", async () => {
      pkg1 = await upload(v1, { version: "1.0.0", models: ["HS-100"] });
      expect(pkg1).toMatchObject({
        version: "1.0.0",
        kind: "full",
        models: ["HS-100"],
        channel: "stable",
        plaintextLength: v1.length,
        imageLength: v1.length,
        tufPath: `packages/${pkg1.id}.hspkg`,
      });
      expect(pkg1.fileName).toBe(`packages/${pkg1.encryptedSha256}.${pkg1.id}.hspkg`);
      const tuf = await tufClient();
      const info = tuf.getTargetInfo(pkg1.tufPath);
      expect(info.fileName).toBe(pkg1.fileName);
      expect(info.length).toBe(pkg1.encryptedLength);
      expect(info.custom).toMatchObject({
        packageId: pkg1.id,
        version: "1.0.0",
        kind: "full",
        models: ["HS-100"],
        channel: "stable",
        imageSha256: pkg1.plaintextSha256,
        imageLength: v1.length,
      });
      expect(parseUpdateCustom(info.custom).toVersion).toBe("1.0.0");
      const list = await t.admin.get<{ packages: UpdatePackage[] }>("/v1/admin/updates/packages");
      expect(list.body.packages.map((p) => p.id)).toContain(pkg1.id);
      const next = await t.server.app.inject({ method: "GET", url: "/v1/updates/tuf/99.root.json" });
      expect(next.statusCode).toBe(404);
      expect(next.json().error.code).toBe("tuf.not_found");
    });

    it("a device downloads whole and resumed with Range, verifies against TUF, unwraps its key, decrypts", async () => {
      const tuf = await tufClient();
      const info = tuf.getTargetInfo(pkg1.tufPath);
      const path = `/v1/updates/content/${info.fileName}`;
      const whole = await deviceGet(0, path);
      expect(whole.status).toBe(200);
      expect(whole.headers["accept-ranges"]).toBe("bytes");
      expect(whole.body.length).toBe(info.length);

      // An interrupted first part, then the rest from where it stopped.
      const cut = 100_001;
      const first = await deviceGet(0, path, { range: `bytes=0-${cut - 1}` });
      expect(first.status).toBe(206);
      expect(first.headers["content-range"]).toBe(`bytes 0-${cut - 1}/${info.length}`);
      const rest = await deviceGet(0, path, { range: `bytes=${cut}-` });
      expect(rest.status).toBe(206);
      expect(rest.headers["content-range"]).toBe(`bytes ${cut}-${info.length - 1}/${info.length}`);
      const verifier = createTargetVerifier(info);
      verifier.update(first.body);
      verifier.update(rest.body);
      verifier.finish();
      const ciphertext = concatBytes(first.body, rest.body);
      expect(ciphertext).toEqual(whole.body);

      const past = await deviceGet(0, path, { range: `bytes=${info.length}-` });
      expect(past.status).toBe(416);
      expect(past.headers["content-range"]).toBe(`bytes */${info.length}`);

      const wrapped = await t.server.updates.wrapContentKeyFor(files[0]!.deviceId, pkg1.id);
      keystoresSync[0] = await readDynamicKey(keystores[0]!, files[0]!.deviceId);
      const key = contentKeyOpen(0, wrapped, pkg1.id);
      expect(decryptContent(key, ciphertext)).toEqual(v1);
    });

    it("refuses an unsigned download and a badly signed one", async () => {
      const path = `/v1/updates/content/${pkg1.fileName}`;
      const anon = await t.server.app.inject({ method: "GET", url: path });
      expect(anon.statusCode).toBe(401);
      expect(anon.json().error.code).toMatch(/^signature\./);
      // Signed for one package path, sent for another: the signature covers the path.
      const moved = await deviceGet(
        0,
        path,
        {},
        // Another first hex digit than the real one (a fixed "0" was the real one 1 time in 16).
        `/v1/updates/content/${pkg1.fileName.replace(/^packages\/(.)/, (_m, c: string) => `packages/${c === "0" ? "1" : "0"}`)}`,
      );
      expect(moved.status).toBe(401);
      expect(JSON.parse(fromUtf8(moved.body)).error.code).toMatch(/^signature\./);
      const unknown = await deviceGet(0, `/v1/updates/content/packages/${"0".repeat(64)}.${pkg1.id}.hspkg`);
      expect(unknown.status).toBe(404);
      expect(JSON.parse(fromUtf8(unknown.body)).error.code).toBe("updates.unknown_content");
    });

    it("a content key wrapped for another device does not open", async () => {
      const forB = await t.server.updates.wrapContentKeyFor(files[1]!.deviceId, pkg1.id);
      keystoresSync[0] = await readDynamicKey(keystores[0]!, files[0]!.deviceId);
      expect(() => contentKeyOpen(0, forB, pkg1.id)).toThrowError(
        expect.objectContaining({ code: "updates.content_key_invalid" }),
      );
    });

    it("a delta package turns the old image into the new one", async () => {
      pkg2 = await upload(v2, { version: "1.1.0", models: ["HS-100"] });
      const res = await t.admin.post<UpdatePackage>(`/v1/admin/updates/packages/${pkg2.id}/delta`, {
        fromPackageId: pkg1.id,
      });
      expect(res.status).toBe(201);
      const delta = res.body;
      expect(delta).toMatchObject({
        kind: "delta",
        version: "1.1.0",
        fromVersion: "1.0.0",
        versionRange: { min: "1.0.0", max: "1.0.0" },
        imageSha256: pkg2.plaintextSha256,
        imageLength: v2.length,
      });
      expect(delta.plaintextLength).toBeLessThan(v2.length / 10);
      const tuf = await tufClient();
      const info = tuf.getTargetInfo(delta.tufPath);
      expect(info.custom).toMatchObject({
        kind: "delta",
        fromVersion: "1.0.0",
        imageSha256: pkg2.plaintextSha256,
      });
      const got = await deviceGet(0, `/v1/updates/content/${info.fileName}`);
      const verifier = createTargetVerifier(info);
      verifier.update(got.body);
      verifier.finish();
      const wrapped = await t.server.updates.wrapContentKeyFor(files[0]!.deviceId, delta.id);
      keystoresSync[0] = await readDynamicKey(keystores[0]!, files[0]!.deviceId);
      const patch = decryptContent(contentKeyOpen(0, wrapped, delta.id), got.body);
      expect(applyImageDelta(v1, patch)).toEqual(v2);

      const backwards = await t.admin
        .post(`/v1/admin/updates/packages/${pkg1.id}/delta`, { fromPackageId: pkg2.id })
        .catch((e) => e);
      expect(backwards.code).toBe("updates.invalid_delta");
    });

    it("refuses unknown models, bad versions, other kinds and oversized bodies with codes", async () => {
      const bad = async (params: Parameters<typeof upload>[1]) =>
        (await upload(image(1000, 9), params).catch((e) => e)).code;
      expect(await bad({ version: "1.2.0", models: ["NO-SUCH-MODEL"] })).toBe("updates.unknown_model");
      expect(await bad({ version: "1.2.0-beta", models: ["HS-100"] })).toBe("updates.invalid_version");
      expect(await bad({ version: "1.2.0", models: ["bad model!"] })).toBe("updates.invalid_models");
      const inject = (url: string, payload: Buffer) =>
        t.server.app.inject({
          method: "POST",
          url,
          payload,
          headers: {
            authorization: `Bearer ${t.server.adminToken}`,
            "content-type": "application/octet-stream",
          },
        });
      const delta = await inject(
        "/v1/admin/updates/packages?version=1.2.0&models=HS-100&kind=delta",
        Buffer.from("x"),
      );
      expect(delta.json().error.code).toBe("updates.invalid_kind");
      const empty = await inject("/v1/admin/updates/packages?version=1.2.0&models=HS-100", Buffer.alloc(0));
      expect(empty.json().error.code).toBe("updates.empty_package");
      const noAdmin = await t.server.app.inject({
        method: "POST",
        url: "/v1/admin/updates/packages?version=1.2.0&models=HS-100",
        payload: Buffer.from("x"),
        headers: { "content-type": "application/octet-stream" },
      });
      expect(noAdmin.statusCode).toBe(401);
      const audit = await t.admin.get<{ ok: boolean }>("/v1/admin/audit/verify");
      expect(audit.body.ok).toBe(true);
    });

    it("re-signs timestamp.json when it is served within half its lifetime of expiry", async () => {
      const before = JSON.parse(fromUtf8(await t.server.updates.repository.file("timestamp.json")));
      const { platform } = t.server;
      const realClock = platform.clock;
      (platform as { clock: () => number }).clock = () => realClock() + 13 * 3600 * 1000;
      try {
        const after = JSON.parse(fromUtf8(await t.server.updates.repository.file("timestamp.json")));
        expect(after.signed.version).toBe(before.signed.version + 1);
        expect(Date.parse(after.signed.expires)).toBeGreaterThan(Date.parse(before.signed.expires));
      } finally {
        (platform as { clock: () => number }).clock = realClock;
      }
    });

    it("offline root: export the key, prepare a rotation, sign with no server, commit; clients follow", async () => {
      const tufBefore = await tufClient();
      const keyPath = join(dir, "root.key");
      const exported = await t.admin.post<ExportedRootKey>("/v1/admin/updates/tuf/root-key/export", {});
      writeFileSync(keyPath, JSON.stringify(exported.body), { mode: 0o600 });
      await t.admin.delete(`/v1/admin/updates/tuf/root-key/${exported.body.keyid}`);
      const again = await t.admin.post("/v1/admin/updates/tuf/root-key/export", {}).catch((e) => e);
      expect(again.code).toBe("updates.root_key_offline");

      const prepared = await t.server.app.inject({
        method: "POST",
        url: "/v1/admin/updates/tuf/root/prepare",
        headers: { authorization: `Bearer ${t.server.adminToken}`, "content-type": "application/json" },
        payload: JSON.stringify({ rotate: ["timestamp"] }),
      });
      expect(prepared.statusCode).toBe(200);
      const unsigned = prepared.body;

      // Without the root's signature the server cannot commit (its root key is gone).
      const unsignedCommit = await t.admin
        .post("/v1/admin/updates/tuf/root/commit", JSON.parse(unsigned))
        .catch((e) => e);
      expect(unsignedCommit.code).toBe("tuf.threshold_not_met");

      // The offline machine: only the key file and the unsigned document.
      const signed = signRootOffline(unsigned, JSON.parse(readFileSync(keyPath, "utf8")));
      const tampered = structuredClone(signed);
      tampered.signed.expires = "2099-01-01T00:00:00Z";
      expect((await t.admin.post("/v1/admin/updates/tuf/root/commit", tampered).catch((e) => e)).code).toBe(
        "updates.root_mismatch",
      );
      const committed = await t.admin.post<{ version: number }>("/v1/admin/updates/tuf/root/commit", signed);
      expect(committed.body.version).toBe(2);

      // A client that trusted root 1 walks to root 2 and accepts the timestamp by the new key.
      const fetchFile = async (name: string) => {
        const res = await t.server.app.inject({ method: "GET", url: `/v1/updates/tuf/${name}` });
        return res.statusCode === 404 ? null : new Uint8Array(res.rawPayload);
      };
      await tufBefore.refresh(fetchFile, { now: new Date() });
      expect(JSON.parse(tufBefore.state.root).signed.version).toBe(2);
      expect(tufBefore.getTargetInfo(pkg1.tufPath).fileName).toBe(pkg1.fileName);
      const keys = (
        await t.admin.get<{ keys: Array<{ role: string; state: string; online: boolean }> }>(
          "/v1/admin/updates/tuf/keys",
        )
      ).body.keys;
      expect(keys.filter((k) => k.role === "timestamp").map((k) => [k.state, k.online])).toEqual([
        ["retired", false],
        ["active", true],
      ]);
      expect(keys.find((k) => k.role === "root")).toMatchObject({ state: "active", online: false });

      // Still publishing after the rotation, with the root offline.
      const pkg3 = await upload(image(2000, 3), { version: "1.2.0", models: ["HS-100"], channel: "beta" });
      await tufBefore.refresh(fetchFile, { now: new Date() });
      expect(tufBefore.getTargetInfo(pkg3.tufPath).custom).toMatchObject({ channel: "beta" });
    });
  });
});
