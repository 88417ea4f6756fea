/**
 * A real handsafe server for the trust-zone tests, on the database kind asked for, with a clock the
 * test moves; real SecureZones (handset/secure-zone.ts on a MemoryKeystore) that the test drives by
 * pulling their signals over pinned HTTPS, signed with ZRK by the zone itself (zone.signRequest);
 * service managers as a test would write one: an API key, an X25519 key pair, and protocol.ts.
 */

import { fromBase64url, toBase64url } from "../../src/core/codec/base64url.ts";
import { utf8 } from "../../src/core/codec/bytes.ts";
import { generateHpkeKeyPair, type HpkeKeyPair } from "../../src/core/crypto/hpke.ts";
import { randomBytes } from "../../src/core/crypto/random.ts";
import { isHandsafeError } from "../../src/core/errors.ts";
import { type HttpClient, withHeaders } from "../../src/handset/http-client.ts";
import { MemoryKeystore } from "../../src/handset/keystore.ts";
import { SecureZone } from "../../src/handset/secure-zone.ts";
import type { RunningServer } from "../../src/platform/server.ts";
import {
  deriveContainerKey,
  openSubKey,
  type RelayCommand,
  relayProof,
  sealPackage,
} from "../../src/trustzone/protocol.ts";
import type { ProvisioningBundle } from "../../src/trustzone/server.ts";
import { ZoneLink } from "../../src/trustzone/zone-link.ts";
import type { DatabaseKind } from "../helpers/databases.ts";
import { type Clock, movableClock, startTestServer } from "../helpers/server.ts";

export type { Clock };
export { withHeaders };

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

/**
 * The SDK's ZoneLink (src/trustzone/zone-link.ts: signed requests, the pull → apply → report loop)
 * plus what only a test wants: a request sent with headers it chose (a replayed signature).
 */
export class ZoneDriver extends ZoneLink {
  /** Sends a request with the given (e.g. replayed) signature headers. */
  send<T>(
    method: string,
    path: string,
    json: unknown,
    headers: Record<string, string>,
  ): Promise<{ status: number; body: T }> {
    return this.http.request<T>(method, path, { ...(json === undefined ? {} : { json }), headers });
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
  const clock = movableClock();
  const t = await startTestServer(kind, options.env ?? {}, {
    clock: () => clock.ms,
    ...(options.webhookCa ? { webhookCa: options.webhookCa } : {}),
  });
  const { server } = t;
  const client = t.client;
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
      return { driver: new ZoneDriver(zone, client()), bundle };
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
    close: () => t.close(),
  };
}
