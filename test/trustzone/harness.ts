/**
 * A real handsafe server for the trust-zone tests, on the database kind asked for, with a clock the
 * test moves; real SecureZones (handset/secure-zone.ts on a MemoryKeystore) that the test drives by
 * pulling their signals over pinned HTTPS, signed with ZRK by the zone itself (zone.signRequest);
 * service managers as a test would write one: an API key, an X25519 key pair, and protocol.ts.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromBase64url, toBase64url } from "../../src/core/codec/base64url.ts";
import { utf8 } from "../../src/core/codec/bytes.ts";
import { generateHpkeKeyPair, type HpkeKeyPair } from "../../src/core/crypto/hpke.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import { isHandsafeError } from "../../src/core/errors.ts";
import { contentDigest, requestViewOfUrl, signatureBase } from "../../src/core/http-signatures/index.ts";
import type { Parameters } from "../../src/core/http-signatures/structured-fields.ts";
import type { HttpClient } from "../../src/handset/http-client.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { createNodeHttpClient } from "../../src/handset/node-transport.ts";
import { SecureZone } from "../../src/handset/secure-zone.ts";
import { loadConfig } from "../../src/platform/config.ts";
import { type RunningServer, startServer } from "../../src/platform/server.ts";
import {
  deriveContainerKey,
  openSubKey,
  type RelayCommand,
  relayProof,
  sealPackage,
  ZONE_REQUEST_SIGNATURE,
  type ZoneSignal,
} from "../../src/trustzone/protocol.ts";
import type { ProvisioningBundle } from "../../src/trustzone/server.ts";
import { createTestDatabase, type DatabaseKind } from "../helpers/databases.ts";

export interface Clock {
  ms: number;
  advance(ms: number): void;
}

export function withHeaders(base: HttpClient, headers: Record<string, string>): HttpClient {
  const c: HttpClient = {
    ...base,
    request: (method, path, opts = {}) =>
      base.request(method, path, { ...opts, headers: { ...headers, ...opts.headers } }),
    get: (path, opts = {}) => c.request("GET", path, opts),
    post: (path, json, opts = {}) => c.request("POST", path, { ...opts, json }),
    delete: (path, opts = {}) => c.request("DELETE", path, opts),
  };
  return c;
}

/** The error code of a refused call (the test fails when the call succeeds). */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isHandsafeError(e)) return e.code;
    throw e;
  }
  throw new Error("expected a refusal, the call succeeded");
}

export interface TestManager {
  id: string;
  apiKey: string;
  keys: HpkeKeyPair;
  http: HttpClient;
}

export interface SubKey {
  jti: string;
  zoneId: string;
  epoch: number;
  containers: number[];
  notAfter: number;
  sk: Uint8Array;
  ck(i: number): Uint8Array;
}

/** A SecureZone and the loop a handset runs for it: pull signals and commands, apply, report. */
export class ZoneDriver {
  constructor(
    readonly zone: SecureZone,
    readonly http: HttpClient,
    readonly baseUrl: string,
  ) {}

  get zoneId(): string {
    return this.zone.zoneId!;
  }

  /** The zone's request, signed RFC 9421 hmac-sha256 under ZRK: the HMAC is computed inside the zone. */
  signed<T>(method: string, path: string, json?: unknown): Promise<{ status: number; body: T }> {
    return this.send<T>(method, path, json, this.signatureHeaders(method, path, json));
  }

  /** Sends a request with the given (e.g. replayed) signature headers. */
  send<T>(
    method: string,
    path: string,
    json: unknown,
    headers: Record<string, string>,
  ): Promise<{ status: number; body: T }> {
    return this.http.request<T>(method, path, { ...(json === undefined ? {} : { json }), headers });
  }

  signatureHeaders(method: string, path: string, json?: unknown): Record<string, string> {
    const body = json === undefined ? undefined : utf8(JSON.stringify(json));
    const added: Record<string, string> = body ? { "content-digest": contentDigest(body) } : {};
    const components = [...ZONE_REQUEST_SIGNATURE.requiredComponents, ...(body ? ["content-digest"] : [])];
    const view = requestViewOfUrl(method, this.baseUrl + path, added);
    const params: Parameters = [
      ["created", Math.floor(Date.now() / 1000)],
      ["keyid", this.zoneId],
      ["nonce", toBase64url(randomBytes(16))],
      ["alg", ZONE_REQUEST_SIGNATURE.alg],
      ["tag", ZONE_REQUEST_SIGNATURE.tag],
    ];
    const { base, signatureParams } = signatureBase(view, components, params);
    const mac = this.zone.signRequest(utf8(base));
    const label = ZONE_REQUEST_SIGNATURE.label;
    return {
      ...added,
      "signature-input": `${label}=${signatureParams}`,
      signature: `${label}=:${Buffer.from(mac).toString("base64")}:`,
    };
  }

  /** One round: every signal applied in order (a refused one reported), every command answered. */
  async sync(): Promise<{ applied: ZoneSignal["type"][]; rejected: string[]; relay: number }> {
    const { body } = await this.signed<{
      signals: Array<{ signal: ZoneSignal; mac: string }>;
      relay: Array<{ id: string; command: RelayCommand; proof: string }>;
    }>("GET", "/v1/tsm/zone/signals");
    const applied: ZoneSignal["type"][] = [];
    const rejected: Array<{ seq: number; code: string }> = [];
    for (const { signal, mac } of body.signals) {
      try {
        applied.push((await this.zone.applySignal(signal, mac)).type);
      } catch (e) {
        if (!isHandsafeError(e)) throw e;
        rejected.push({ seq: signal.seq, code: e.code });
      }
    }
    const relay: Array<{ id: string; ok: boolean; result?: Record<string, unknown>; code?: string }> = [];
    for (const { id, command, proof } of body.relay) {
      try {
        const r = await this.zone.relay(command, proof);
        relay.push({
          id,
          ok: true,
          result: {
            op: r.op,
            ...(r.package === undefined ? {} : { package: toBase64url(r.package) }),
            ...(r.deleted === undefined ? {} : { deleted: r.deleted }),
            ...(r.names === undefined ? {} : { names: r.names }),
            ...(r.op === "put" ? { bytes: this.zone.masterView()[command.container]?.bytes ?? 0 } : {}),
          },
        });
      } catch (e) {
        if (!isHandsafeError(e)) throw e;
        relay.push({ id, ok: false, code: e.code });
      }
    }
    const locked = this.zone
      .masterView()
      .filter((c) => c.state === "locked")
      .map((c) => c.index);
    await this.signed("POST", "/v1/tsm/zone/reports", {
      applied: this.zone.lastSeq,
      ...(rejected.length ? { rejected } : {}),
      ...(relay.length ? { relay } : {}),
      ...(locked.length ? { locked } : {}),
    });
    return { applied, rejected: rejected.map((r) => r.code), relay: relay.length };
  }
}

export interface TrustzoneHarness {
  server: RunningServer;
  admin: HttpClient;
  anonymous: HttpClient;
  clock: Clock;
  bearer(token: string): HttpClient;
  /** Registers a manager; validated by the carrier unless `validate: false`. */
  manager(name: string, options?: { validate?: boolean; webhookUrl?: string }): Promise<TestManager>;
  /** Personalises a zone on the server and delivers the bundle to a fresh SecureZone. */
  zone(options?: {
    containers?: number;
    userInfo?: string;
  }): Promise<{ driver: ZoneDriver; bundle: ProvisioningBundle }>;
  /** Delivers a (re-)personalisation bundle to an existing zone. */
  deliver(zone: SecureZone, bundle: ProvisioningBundle): Promise<void>;
  issue(
    managerId: string,
    zoneId: string,
    options?: Record<string, unknown>,
  ): Promise<{ token: string; jti: string; containers: number[] }>;
  /** Server-placement sub-key, opened with the manager's X25519 private key. */
  subKey(m: TestManager, token: string): Promise<SubKey>;
  /** A relayed command, signed with CK_i: the HTTP call, with ?wait=0 (the zone answers on sync). */
  relay(
    m: TestManager,
    key: { zoneId: string; epoch: number; ck: Uint8Array },
    container: number,
    op: RelayCommand["op"],
    name?: string,
    plaintext?: Uint8Array,
  ): Promise<{ status: number; body: Record<string, unknown> }>;
  close(): Promise<void>;
}

export async function startTrustzoneServer(
  kind: DatabaseKind,
  options: { env?: Record<string, string>; webhookCa?: string } = {},
): Promise<TrustzoneHarness> {
  const database = await createTestDatabase(kind);
  const dataDir = mkdtempSync(join(tmpdir(), "handsafe-tsm-"));
  const clock: Clock = {
    ms: Date.now(),
    advance(ms) {
      this.ms += ms;
    },
  };
  const config = loadConfig({
    HANDSAFE_DATA_DIR: dataDir,
    HANDSAFE_PORT: "0",
    HANDSAFE_DATABASE_URL: database.url,
    HANDSAFE_LOG_LEVEL: "silent",
    HANDSAFE_RATE_LIMIT: "0",
    ...options.env,
  });
  const server = await startServer({
    config,
    clock: () => clock.ms,
    ...(options.webhookCa ? { webhooks: { ca: options.webhookCa, pollIntervalMs: 50, jitter: 0 } } : {}),
  });
  const clients: Array<{ close(): void }> = [];
  const client = () => {
    const c = createNodeHttpClient({ baseUrl: server.url, pin: server.pin });
    clients.push(c);
    return c;
  };
  const admin = withHeaders(client(), { authorization: `Bearer ${server.adminToken}` });
  const deliver = (zone: SecureZone, bundle: ProvisioningBundle) =>
    zone.personalise({
      zoneId: bundle.zoneId,
      zmk: fromBase64url(bundle.zmk),
      userInfo: bundle.userInfo,
      epoch: bundle.epoch,
      trustZonePublicKeys: Object.fromEntries(
        bundle.trustZonePublicKeys.map((k) => [k.kid, fromBase64url(k.publicKey)]),
      ),
    });
  let zones = 0;
  return {
    server,
    admin,
    anonymous: client(),
    clock,
    bearer: (token) => withHeaders(client(), { authorization: `Bearer ${token}` }),
    async manager(name, opts = {}) {
      const keys = generateHpkeKeyPair();
      const { body } = await client().post<{ managerId: string; apiKey: string }>("/v1/tsm/managers", {
        name,
        identificationCode: `ID-${name}`,
        certification: { scheme: "EMVCo", level: 2 },
        memoryBytes: 65536,
        applications: [{ appId: `${name.toLowerCase()}-wallet`, sha256: "ab".repeat(32) }],
        x25519PublicKey: toBase64url(keys.publicKey),
        ...(opts.webhookUrl ? { webhookUrl: opts.webhookUrl } : {}),
      });
      if (opts.validate !== false) await admin.post(`/v1/admin/tsm/managers/${body.managerId}/validate`, {});
      return {
        id: body.managerId,
        apiKey: body.apiKey,
        keys,
        http: withHeaders(client(), { authorization: `Bearer ${body.apiKey}` }),
      };
    },
    async zone(opts = {}) {
      const userInfo = opts.userInfo ?? `subscriber-${++zones}`;
      const { body: bundle } = await admin.post<ProvisioningBundle>("/v1/admin/tsm/zones", {
        userInfo,
        handsetId: `hs-${zones}`,
        containers: opts.containers ?? 4,
      });
      const zone = await SecureZone.open(new MemoryKeystore(), {
        containers: opts.containers ?? 4,
        now: () => clock.ms,
      });
      await deliver(zone, bundle);
      return { driver: new ZoneDriver(zone, client(), server.url), bundle };
    },
    deliver,
    async issue(managerId, zoneId, opts = {}) {
      const { body } = await admin.post<{ token: string; jti: string; containers: number[] }>(
        "/v1/admin/tsm/tokens",
        { managerId, zoneId, ...opts },
      );
      return body;
    },
    async subKey(m, token) {
      const { body } = await m.http.post<{
        jti: string;
        zoneId: string;
        epoch: number;
        containers: number[];
        notAfter: number;
        sealedSubKey: { enc: string; ciphertext: string };
      }>("/v1/tsm/subkeys", { token });
      const sk = openSubKey(
        m.keys.privateKey,
        {
          enc: fromBase64url(body.sealedSubKey.enc),
          ciphertext: fromBase64url(body.sealedSubKey.ciphertext),
        },
        body.jti,
      );
      return { ...body, sk, ck: (i: number) => deriveContainerKey(sk, i) };
    },
    async relay(m, key, container, op, name, plaintext) {
      const command: RelayCommand = {
        op,
        zoneId: key.zoneId,
        epoch: key.epoch,
        container,
        ...(name === undefined ? {} : { name }),
        ...(op === "put"
          ? {
              package: toBase64url(sealPackage(key.ck, key.zoneId, container, name!, plaintext ?? utf8("x"))),
            }
          : {}),
        id: toBase64url(randomBytes(12)),
        created: clock.ms,
      };
      const proof = toBase64url(relayProof(key.ck, command));
      const path =
        op === "list"
          ? `/v1/tsm/zones/${key.zoneId}/containers/${container}/packages?wait=0`
          : `/v1/tsm/zones/${key.zoneId}/containers/${container}/packages/${encodeURIComponent(name!)}?wait=0`;
      const method = op === "put" ? "PUT" : op === "delete" ? "DELETE" : "GET";
      return m.http.request<Record<string, unknown>>(method, path, {
        ...(op === "put"
          ? { json: { command, proof } }
          : {
              headers: {
                "tsm-relay-command": toBase64url(utf8(JSON.stringify(command))),
                "tsm-relay-proof": proof,
              },
            }),
      });
    },
    async close() {
      for (const c of clients) c.close();
      await server.close();
      await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
