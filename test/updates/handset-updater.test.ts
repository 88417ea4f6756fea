/**
 * The Updater against an in-process stand-in for the server's routes: a real TUF repository, real
 * content encryption and key wrapping under the device's content session key. Only HTTP is
 * faked (the end-to-end test on a real server is separate).
 */
import { createDelta } from "fossil-delta";
import { describe, expect, it } from "vitest";
import { toBase64url } from "../../src/core/codec/base64url.ts";
import { concatBytes, toHex, utf8 } from "../../src/core/codec/bytes.ts";
import { sha256 } from "../../src/core/crypto/hash.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import { HandsafeError } from "../../src/core/errors.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { embedded } from "../../src/management/device-wrapper.ts";
import type { ManagementClient } from "../../src/management/handset.ts";
import { DynamicKey, deriveSessionKey } from "../../src/management/protocol.ts";
import { dynamicKeyEntry } from "../../src/management/sms-processor.ts";
import { encryptContentToBytes, generateContentKey, wrapContentKey } from "../../src/updates/content.ts";
import { MemoryPartialStore } from "../../src/updates/download.ts";
import { type Assignment, type StatusReport, Updater } from "../../src/updates/handset.ts";
import { MemorySlotStore } from "../../src/updates/slots.ts";
import { seedSigner, TufRepository } from "../../src/updates/tuf/index.ts";

const V1 = utf8("firmware 1.0.0 ".repeat(20_000));
const V2 = concatBytes(V1.subarray(0, 100_000), utf8("a fix ".repeat(5000)), V1.subarray(130_000));
const MODEL = "model-x";

function newDevice(deviceId = `dev_${toBase64url(randomBytes(12))}`) {
  const staticKey = randomBytes(32);
  const dynamicKey = randomBytes(32);
  const device = embedded({ deviceId, hardwareId: "IMEI:490154203237518", model: MODEL, staticKey });
  const keystore = new MemoryKeystore();
  const contentSessionKey = deriveSessionKey(staticKey, new DynamicKey(dynamicKey), deviceId, "content");
  return { deviceId, device, keystore, dynamicKey, contentSessionKey: contentSessionKey.reveal() };
}

type Device = ReturnType<typeof newDevice>;

async function storeDynamicKey(d: Device) {
  const record = {
    keyId: `dk_${toBase64url(randomBytes(12))}`,
    key: toBase64url(d.dynamicKey),
    expiresAt: Date.now() + 86_400_000,
    maxUses: 20,
    counter: 1,
    receivedAt: Date.now(),
  };
  await d.keystore.put(dynamicKeyEntry(d.deviceId), utf8(JSON.stringify(record)));
}

interface PackageSpec {
  image: Uint8Array;
  kind?: "full" | "delta";
  from?: Uint8Array;
  models?: string[];
  /** Bytes the content route serves instead of the real ciphertext. */
  serve?: (cipher: Uint8Array) => Uint8Array;
  window?: Assignment["installWindow"];
  wrapFor?: string;
}

/** The server's side, in process: one package, its TUF target, the assignment, the reports. */
async function server(d: Device, spec: PackageSpec) {
  const kind = spec.kind ?? "full";
  const signers = [1, 2, 3, 4].map((n) => seedSigner(new Uint8Array(32).fill(n)));
  const key = (i: number) => ({ keys: [signers[i]!.key], threshold: 1 });
  const repo = await TufRepository.create({
    roles: { root: key(0), targets: key(1), snapshot: key(2), timestamp: key(3) },
    signers,
  });
  const packageId = "pkg_0123456789abcdef";
  const tufPath = `packages/${packageId}.hspkg`;
  const contentKey = generateContentKey();
  const plaintext = kind === "delta" ? createDelta(spec.from!, spec.image) : spec.image;
  const cipher = await encryptContentToBytes(contentKey, plaintext);
  repo.addTargetBytes(tufPath, cipher, {
    packageId,
    version: "2.0.0",
    kind,
    ...(kind === "delta" ? { fromVersion: "1.0.0" } : {}),
    models: spec.models ?? [MODEL],
    channel: "stable",
    imageSha256: toHex(sha256(spec.image)),
    imageLength: spec.image.length,
  });
  await repo.publish(signers);
  const files = repo.files(new Map([[tufPath, cipher]]));
  const assignment: Assignment = {
    campaignId: "cmp_1",
    packageId,
    tufPath,
    version: "2.0.0",
    kind,
    ...(kind === "delta" ? { fromVersion: "1.0.0" } : {}),
    wrappedContentKey: toBase64url(
      wrapContentKey(contentKey, d.contentSessionKey, { deviceId: spec.wrapFor ?? d.deviceId, packageId }),
    ),
    installWindow: spec.window ?? null,
  };
  const reports: StatusReport[] = [];
  const served: string[] = [];
  let current: Assignment | null = assignment;
  const notFound = () => new HandsafeError("http.not_found", "no such file", { status: 404 });
  const management = {
    async request(method: string, path: string, json?: unknown) {
      if (method === "GET" && path === "/v1/updates/devices/me/assignment")
        return { status: 200, headers: {}, body: { assignment: current } };
      if (method === "POST" && path === "/v1/updates/devices/me/status") {
        reports.push(json as StatusReport);
        return { status: 204, headers: {}, body: undefined };
      }
      throw notFound();
    },
    async requestRaw(_method: string, path: string) {
      const file = files.get(path.replace("/v1/updates/tuf/", ""));
      if (!file) throw notFound();
      return { status: 200, headers: {}, body: file };
    },
    async requestStream(_method: string, path: string) {
      const name = path.replace("/v1/updates/content/", "");
      served.push(name);
      const file = files.get(name);
      if (!file) throw notFound();
      const body = spec.serve ? spec.serve(file) : file;
      return {
        status: 200,
        headers: { "content-length": String(body.length) },
        body: (async function* () {
          yield body;
        })(),
      };
    },
  } as unknown as ManagementClient;
  return {
    management,
    reports,
    served,
    clearAssignment: () => {
      current = null;
    },
  };
}

async function setup(spec: PackageSpec, baseImage = V1) {
  const d = newDevice();
  await storeDynamicKey(d);
  const srv = await server(d, spec);
  const slots = new MemorySlotStore({ a: { version: "1.0.0", image: baseImage } });
  const partial = new MemoryPartialStore();
  const updater = new Updater({
    management: srv.management,
    device: d.device,
    keystore: d.keystore,
    slots,
    partial,
  });
  return { d, srv, slots, partial, updater };
}

const states = (reports: StatusReport[]) => reports.map((r) => r.state);

describe("Updater.checkAndInstall", () => {
  it("no assignment: nothing to do", async () => {
    const { srv, updater } = await setup({ image: V2 });
    srv.clearAssignment();
    expect(await updater.checkAndInstall()).toEqual({ status: "no_update" });
    expect(srv.reports).toEqual([]);
  });

  it("installs a full image into the inactive slot and reports each state", async () => {
    const { srv, slots, partial, updater } = await setup({ image: V2 });
    const seen: string[] = [];
    const outcome = await updater.checkAndInstall({ onProgress: (e) => seen.push(e.state) });
    expect(outcome).toEqual({ status: "installed", campaignId: "cmp_1", version: "2.0.0", slot: "b" });
    expect(await slots.active()).toBe("b");
    expect(await slots.pending()).toBeNull();
    expect((await slots.meta("b"))?.sha256).toBe(toHex(sha256(V2)));
    expect(states(srv.reports)).toEqual(["notified", "downloading", "downloading", "verified", "installed"]);
    expect(srv.reports.filter((r) => r.state === "downloading").map((r) => r.percent)).toEqual([0, 100]);
    expect(srv.reports.at(-1)).toEqual({
      campaignId: "cmp_1",
      state: "installed",
      installedVersion: "2.0.0",
    });
    expect(srv.served[0]).toMatch(/^packages\/[0-9a-f]{64}\.pkg_0123456789abcdef\.hspkg$/);
    expect(seen).toContain("verified");
    expect(await partial.size()).toBe(0);

    // Asked again (its report lost): it says installed without downloading anything.
    const again = await updater.checkAndInstall();
    expect(again.status).toBe("installed");
    expect(srv.served).toHaveLength(1);
  });

  it("applies a delta to the running image and checks the result against the signed image hash", async () => {
    const { srv, slots, updater } = await setup({ image: V2, kind: "delta", from: V1 });
    expect((await updater.checkAndInstall()).status).toBe("installed");
    const parts: Uint8Array[] = [];
    for await (const c of slots.read("b")) parts.push(c);
    expect(Buffer.from(concatBytes(...parts)).equals(Buffer.from(V2))).toBe(true);
    expect(states(srv.reports).at(-1)).toBe("installed");
  });

  it("a delta for another base image fails (updates.delta_base_mismatch or image check)", async () => {
    const { srv, slots, updater } = await setup(
      { image: V2, kind: "delta", from: V1 },
      utf8("some other 1.0.0 build ".repeat(1000)),
    );
    const outcome = await updater.checkAndInstall();
    expect(outcome.status).toBe("failed");
    expect(["updates.delta_invalid", "updates.image_mismatch"]).toContain((outcome as { code: string }).code);
    expect(await slots.meta("b")).toBeUndefined();
    expect(srv.reports.at(-1)?.state).toBe("failed");
  });

  it("an image that fails its health check (HSFAIL) is rolled back and reported", async () => {
    const { srv, slots, updater } = await setup({ image: utf8("HSFAIL this build does not boot") });
    const outcome = await updater.checkAndInstall();
    expect(outcome).toEqual({
      status: "rolled_back",
      campaignId: "cmp_1",
      version: "2.0.0",
      reason: "updates.health_check_failed",
    });
    expect(await slots.active()).toBe("a");
    expect(await slots.pending()).toBeNull();
    expect(srv.reports.at(-1)).toEqual({
      campaignId: "cmp_1",
      state: "rolled_back",
      reason: "updates.health_check_failed",
    });
  });

  it("a run cut off mid-download (power lost) resumes in the next run without reporting backwards", async () => {
    const { d, srv, slots, partial } = await setup({ image: V2 });
    let dead = false;
    const offline = () => new HandsafeError("transport.unreachable", "no network", { status: 0 });
    const m = srv.management as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
    const flaky = {
      request: (...a: unknown[]) => (dead ? Promise.reject(offline()) : m["request"]!(...a)),
      requestRaw: (...a: unknown[]) => (dead ? Promise.reject(offline()) : m["requestRaw"]!(...a)),
      async requestStream(...a: unknown[]) {
        if (dead) throw offline();
        const res = (await m["requestStream"]!(...a)) as { body: AsyncIterable<Uint8Array> };
        return {
          ...res,
          body: (async function* () {
            for await (const whole of res.body) {
              yield whole.subarray(0, whole.length >> 1);
              dead = true; // the device loses power halfway through
              throw offline();
            }
          })(),
        };
      },
    } as unknown as ManagementClient;
    const updater = (management: ManagementClient) =>
      new Updater({
        management,
        device: d.device,
        keystore: d.keystore,
        slots,
        partial,
        download: { retryDelayMs: 0 },
      });
    const first = await updater(flaky).checkAndInstall();
    expect(first).toMatchObject({ status: "failed" });
    expect(states(srv.reports)).toEqual(["notified", "downloading"]); // the failure never got out
    expect(await partial.size()).toBeGreaterThan(0);

    srv.reports.length = 0;
    dead = false;
    const second = await updater(srv.management).checkAndInstall();
    expect(second).toMatchObject({ status: "installed", version: "2.0.0" });
    // No "notified" again: the server would refuse it after "downloading" (campaigns.bad_transition).
    expect(states(srv.reports)[0]).toBe("downloading");
    expect(states(srv.reports).slice(-2)).toEqual(["verified", "installed"]);
    expect((await slots.meta(await slots.active()))?.sha256).toBe(toHex(sha256(V2)));
  });

  it("outside its install window it waits and reports nothing", async () => {
    const { srv, updater } = await setup({ image: V2, window: { startHourUtc: 2, endHourUtc: 4 } });
    const outcome = await updater.checkAndInstall({ now: new Date("2030-01-01T12:00:00Z") });
    expect(outcome.status).toBe("waiting_for_window");
    expect(srv.reports).toEqual([]);
  });

  describe("attacks", () => {
    it("a content key wrapped for another device: failed, updates.content_key_invalid", async () => {
      const { srv, updater, slots } = await setup({ image: V2, wrapFor: "dev_AAAAAAAAAAAAAAAA" });
      const outcome = await updater.checkAndInstall();
      expect(outcome).toMatchObject({ status: "failed", code: "updates.content_key_invalid" });
      expect(srv.reports).toEqual([
        { campaignId: "cmp_1", state: "failed", reason: "updates.content_key_invalid" },
      ]);
      expect(await slots.meta("b")).toBeUndefined();
    });

    it("a tampered download: failed with tuf.hash_mismatch, the inactive slot untouched", async () => {
      const { srv, updater, slots } = await setup({
        image: V2,
        serve: (c) => {
          const t = c.slice();
          t[1000]! ^= 1;
          return t;
        },
      });
      const outcome = await updater.checkAndInstall();
      expect(outcome).toMatchObject({ status: "failed", code: "tuf.hash_mismatch" });
      expect(srv.reports.at(-1)).toMatchObject({ state: "failed", reason: "tuf.hash_mismatch" });
      expect(await slots.meta("b")).toBeUndefined();
      expect(await slots.active()).toBe("a");
    });

    it("a truncated download: failed with tuf.length_mismatch", async () => {
      const { updater } = await setup({ image: V2, serve: (c) => c.subarray(0, c.length - 10) });
      expect(await updater.checkAndInstall()).toMatchObject({
        status: "failed",
        code: "tuf.length_mismatch",
      });
    });

    it("a package for another model: failed with updates.wrong_model before downloading", async () => {
      const { srv, updater } = await setup({ image: V2, models: ["model-y"] });
      expect(await updater.checkAndInstall()).toMatchObject({
        status: "failed",
        code: "updates.wrong_model",
      });
      expect(srv.served).toEqual([]);
    });
  });
});
