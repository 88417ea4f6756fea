/**
 * The trust-zone part of `handsafe demo` (docs/protocols/trustzone.md): the carrier personalises a
 * handset's zone for "alice"; a bank and a transit operator register, the carrier validates both and
 * rejects a third that never gets a token; each gets a one-use, one-day token and its sub-key — the
 * bank from the server (server placement), the transit from the handset's zone itself (handset
 * placement) — and stores a package through the relay; neither opens the other's container; the
 * carrier's map shows who holds what; the bank's short container limit passes and the carrier's sweep
 * reclaims its containers (the bank's webhook is told); the handset is factory reset and personalised
 * again for "bob", and every earlier key opens nothing.
 *
 * The handset's zone is the SDK's SecureZone on a MemoryKeystore, pulling its signals over pinned
 * HTTPS with requests signed inside the zone (ZoneLink). `runTrustzoneDemo` returns what happened so
 * a test can check it against the server's records.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { constantTimeEqual } from "../core/crypto/ct.ts";
import { sha256 } from "../core/crypto/hash.ts";
import { generateHpkeKeyPair, type HpkeKeyPair } from "../core/crypto/hpke.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import type { ServerAddress } from "../handset/handset.ts";
import type { HttpClient } from "../handset/http-client.ts";
import { MemoryKeystore } from "../handset/keystore.ts";
import { SecureZone } from "../handset/secure-zone.ts";
import { verifyWebhookSignature } from "../platform/notify/webhooks.ts";
import { deriveContainerKey, deriveUserKey, openPackage, openSubKey } from "../trustzone/protocol.ts";
import { type ProvisioningBundle, WEBHOOK_TAG } from "../trustzone/server.ts";
import { adminClient, pinnedClient } from "./connect.ts";
import { randomImei } from "./demo-data.ts";
import {
  type ContainerKey,
  containerKeyOf,
  containerTable,
  ManagerLink,
  openedPackage,
  type SubKey,
  ZoneLink,
  type ZoneMap,
  zoneBundleOf,
} from "./tsm.ts";

export interface TrustzoneDemoOptions {
  say?: (text: string) => void;
  /**
   * The carrier's sweep (sweepTrustzone on the server's service) when the demo can reach it (its own
   * embedded server, a test). Otherwise the carrier reclaims the lapsed containers by hand, as the
   * sweep would a minute later.
   */
  sweep?: () => Promise<unknown>;
  /** The bank's container limit, in seconds (default 4): the demo waits for it to pass. */
  bankLimitSeconds?: number;
  /** How long to wait for the bank's webhook (default 20 s). */
  webhookTimeoutMs?: number;
}

export interface TrustzoneDemoResult {
  zoneId: string;
  handsetId: string;
  bankId: string;
  transitId: string;
  /** The third manager, never validated, then rejected. */
  rejectedId: string;
  tokens: { bank: string; transit: string };
  containers: { bank: number[]; transit: number[] };
  placements: { bank: "server"; transit: "handset" };
  /** What each manager read back of its own package (through the relay, opened with CK_i). */
  readBack: { bank: string; transit: string };
  /** Every refusal the demo provoked, by what was tried → the code. */
  refusals: {
    unvalidatedToken: string;
    rejectedToken: string;
    bankRelaysToTransit: string;
    bankKeyOnTransitContainer: string;
    transitKeyOnBankContainer: string;
    bankAfterLimit: string;
    oldKeyAfterReset: string;
    oldRelayAfterReset: string;
    oldTokenAfterReset: string;
  };
  /** The carrier's map while both held containers. */
  mapWhileBound: ZoneMap["containers"];
  reclaimed: number[];
  sweep: "service" | "carrier";
  bankWebhook: { type: string; reason: string; containers: number[]; verified: boolean } | null;
  epochs: { before: number; after: number };
  /** Whether alice's and bob's user keys differ (computed from the two bundles' ZMKs, then wiped). */
  userKeysDiffer: boolean;
  /** The zone's own map at the end (all free, nothing stored). */
  finalZone: Array<{ index: number; state: string; packages: number }>;
}

interface WebhookCall {
  body: Record<string, unknown>;
  verified: boolean;
}

/** The bank's webhook endpoint: keeps each call and whether its RFC 9421 signature held. */
async function startReceiver(secret: () => Uint8Array | undefined, keyId: () => string | undefined) {
  const calls: WebhookCall[] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = new Uint8Array(Buffer.concat(chunks));
      let verified = false;
      try {
        const s = secret();
        if (s) {
          verifyWebhookSignature({
            secret: s,
            tag: WEBHOOK_TAG,
            url: `http://${req.headers.host}${req.url}`,
            headers: req.headers,
            body,
            ...(keyId() ? { keyId: keyId()! } : {}),
          });
          verified = true;
        }
      } catch {
        verified = false;
      }
      let payload: Record<string, unknown> = {};
      try {
        payload = JSON.parse(fromUtf8(body)) as Record<string, unknown>;
      } catch {
        // kept, unverified
      }
      calls.push({ body: payload, verified });
      res.writeHead(verified ? 204 : 401).end();
    });
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/bank/tsm`,
    calls,
    async waitFor(match: (c: WebhookCall) => boolean, timeoutMs: number): Promise<WebhookCall | null> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = calls.find(match);
        if (found) return found;
        if (Date.now() >= deadline) return null;
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    close: () => new Promise<void>((done) => server.close(() => done())),
  };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isHandsafeError(e)) return e.code;
    throw e;
  }
  throw new HandsafeError("demo.unexpected", "a call the demo expected to be refused succeeded", {
    status: 0,
  });
}

interface DemoManager {
  id: string;
  name: string;
  link: ManagerLink;
  keys: HpkeKeyPair;
  webhookSecret?: string;
}

export async function runTrustzoneDemo(
  admin: HttpClient,
  server: ServerAddress,
  options: TrustzoneDemoOptions = {},
): Promise<TrustzoneDemoResult> {
  const say = options.say ?? ((t: string) => process.stdout.write(`${t}\n`));
  const step = (n: string, text: string) => say(`\n${n}. ${text}`);
  const bankLimit = options.bankLimitSeconds ?? 4;
  let webhookSecret: Uint8Array | undefined;
  let bankIdForHook: string | undefined;
  const receiver = await startReceiver(
    () => webhookSecret,
    () => bankIdForHook,
  );
  const clients: HttpClient[] = [];
  const client = () => {
    const c = pinnedClient(server);
    clients.push(c);
    return c;
  };
  const wipe: Uint8Array[] = [];
  try {
    step("Z1", 'The carrier (master TSM) personalises the handset\'s secure zone for "alice": a fresh ZMK,');
    say("   epoch 1, delivered once in a provisioning bundle; the zone pins the server's token-signing key.");
    const handsetId = `imei:${randomImei()}`;
    const { body: bundle } = await admin.post<ProvisioningBundle>("/v1/admin/tsm/zones", {
      userInfo: "alice",
      handsetId,
      containers: 8,
    });
    const zone = await SecureZone.open(new MemoryKeystore(), { containers: 8 });
    await zone.personalise(zoneBundleOf(bundle));
    const handset = new ZoneLink(zone, client());
    const zoneId = bundle.zoneId;
    say(
      `   zone ${zoneId} on handset ${handsetId}: 8 containers, all free (only the master's FK_i opens them)`,
    );

    step("Z2", "A bank and a transit operator register as service managers (each an X25519 key for its");
    say("   sub-key deliveries; the bank a webhook); a third, uncertified, registers too.");
    const register = async (name: string, code: string, webhookUrl?: string): Promise<DemoManager> => {
      const keys = generateHpkeKeyPair();
      wipe.push(keys.privateKey);
      const { body } = await client().post<{ managerId: string; apiKey: string; webhookSecret?: string }>(
        "/v1/tsm/managers",
        {
          name,
          identificationCode: code,
          certification: { scheme: "GlobalPlatform TEE PP", level: "EAL2+" },
          memoryBytes: 65_536,
          applications: [
            {
              appId: `${name.toLowerCase().replace(/\W+/g, "-")}-app`,
              sha256: Buffer.from(sha256(utf8(`${name} wallet 1.0`))).toString("hex"),
            },
          ],
          x25519PublicKey: toBase64url(keys.publicKey),
          ...(webhookUrl ? { webhookUrl } : {}),
        },
      );
      const link = new ManagerLink(adminClient(server, body.apiKey), keys);
      clients.push(link.http);
      say(`   ${name.padEnd(18)} ${body.managerId} (pending)`);
      return {
        id: body.managerId,
        name,
        link,
        keys,
        ...(body.webhookSecret ? { webhookSecret: body.webhookSecret } : {}),
      };
    };
    const bank = await register("Northbank", "BIC NBNKGB2L", receiver.url);
    bankIdForHook = bank.id;
    webhookSecret = fromBase64url(bank.webhookSecret!, "webhookSecret");
    const transit = await register("Metro Transit", "ITSO-0042");
    const shady = await register("QuickLoans", "NONE");

    step("Z3", "The carrier validates the bank and the transit operator; the third is refused a token while");
    say("   unvalidated, then rejected, and refused again.");
    const issue = (m: DemoManager, extra: Record<string, unknown>) =>
      admin.post<{ token: string; jti: string; containers: number[]; exp: number }>("/v1/admin/tsm/tokens", {
        managerId: m.id,
        zoneId,
        count: 2,
        maxUses: 1,
        expiresInSeconds: 86_400,
        ...extra,
      });
    const unvalidatedToken = await codeOf(issue(shady, {}));
    say(`   token for ${shady.name} while pending: refused, ${unvalidatedToken}`);
    for (const m of [bank, transit]) {
      await admin.post(`/v1/admin/tsm/managers/${m.id}/validate`, {});
      say(`   ${m.name}: validated`);
    }
    await admin.post(`/v1/admin/tsm/managers/${shady.id}/reject`, { reason: "no TEE certification" });
    const rejectedToken = await codeOf(issue(shady, {}));
    say(`   ${shady.name}: rejected ("no TEE certification"); a token now: refused, ${rejectedToken}`);

    step("Z4", "Tokens: one use, valid one day, two containers each. The bank's containers live only");
    say(`   ${bankLimit} s (to show the limit passing); the transit's a day.`);
    const bankToken = (await issue(bank, { limits: { containerSeconds: bankLimit, maxAttempts: 5 } })).body;
    const transitToken = (await issue(transit, { limits: { containerSeconds: 86_400, maxAttempts: 5 } }))
      .body;
    for (const [m, t] of [
      [bank, bankToken],
      [transit, transitToken],
    ] as const)
      say(`   ${m.name.padEnd(14)} ${t.jti}: containers ${t.containers.join(", ")}, expires ${iso(t.exp)}`);
    const status = await bank.link.tokenStatus(bankToken.jti);
    say(`   the bank checks its token (spends nothing): ${String(status["usesLeft"])} use left`);

    step(
      "Z5",
      "Sub-keys. The bank asks the server (server placement): the server derives SK from the zone's",
    );
    say("   user key and the token, seals it to the bank's X25519 key, and signals the zone to bind. The");
    say("   transit's token goes to the handset (handset placement): the zone checks the token against the");
    say("   pinned key, derives SK itself and seals it to the transit; the server counts the use.");
    const bankSub = await bank.link.subKey(bankToken.token);
    wipe.push(bankSub.sk);
    const synced = await handset.sync();
    say(
      `   bank: SK for containers ${bankSub.containers.join(", ")}; the zone applied: ${synced.applied.join(", ")}`,
    );
    const made = await zone.generateSubKey(transitToken.token, transit.keys.publicKey);
    const redeemed = await handset.redeem(made.jti, transitToken.token);
    const transitSk = openSubKey(transit.keys.privateKey, made.sealedSubKey, made.jti);
    const transitSub: SubKey = {
      jti: made.jti,
      zoneId,
      epoch: bundle.epoch,
      containers: made.containers.map((c) => c.index),
      notAfter: made.notAfter,
      sk: transitSk,
    };
    wipe.push(transitSk);
    say(
      `   transit: SK from the zone for containers ${transitSub.containers.join(", ")}; the server counted it (${redeemed.usesLeft} uses left)`,
    );

    step("Z6", "Each stores a package, sealed end to end under its container key CK_i, through the relay:");
    say(
      "   the server queues the command with its proof (an HMAC under CK_i), the handset pulls and answers.",
    );
    const relayed = async (
      key: ContainerKey,
      m: DemoManager,
      op: "put" | "get",
      name: string,
      text?: string,
    ) => {
      const queued = await m.link.relay(key, op, name, text === undefined ? undefined : utf8(text));
      await handset.sync();
      const done = await m.link.relayStatus(queued.relayId);
      if (done.state !== "done")
        throw new HandsafeError("demo.relay_failed", `${op} ${name}: ${done.error?.code ?? done.state}`, {
          status: 0,
        });
      return done;
    };
    const bankKey = containerKeyOf(bankSub, bankSub.containers[0]!);
    const transitKey = containerKeyOf(transitSub, transitSub.containers[0]!);
    wipe.push(bankKey.ck, transitKey.ck);
    await relayed(bankKey, bank, "put", "card", "PAN 5500 0000 0000 0004, exp 09/29");
    await relayed(transitKey, transit, "put", "season-ticket", "Zones 1-3, valid to 2027-01-31");
    const readBack = {
      bank: fromUtf8(openedPackage(await relayed(bankKey, bank, "get", "card"), bankKey)!),
      transit: fromUtf8(
        openedPackage(await relayed(transitKey, transit, "get", "season-ticket"), transitKey)!,
      ),
    };
    say(`   bank reads back container ${bankKey.container}: "${readBack.bank}"`);
    say(`   transit reads back container ${transitKey.container}: "${readBack.transit}"`);

    step("Z7", "Neither opens the other's container:");
    const bankRelaysToTransit = await codeOf(
      bank.link.relay({ ...bankKey, container: transitKey.container }, "get", "season-ticket"),
    );
    say(
      `   the bank relays a read of the transit's container ${transitKey.container}: ${bankRelaysToTransit}`,
    );
    const bankKeyOnTransitContainer = await codeOf(zone.openContainer(transitKey.container, bankKey.ck));
    say(
      `   the bank's CK on the transit's container, in the zone: ${bankKeyOnTransitContainer} (one attempt spent)`,
    );
    const transitKeyOnBankContainer = await codeOf(zone.openContainer(bankKey.container, transitKey.ck));
    say(`   the transit's CK on the bank's container, in the zone: ${transitKeyOnBankContainer}`);
    const own = await zone.openContainer(transitKey.container, transitKey.ck);
    const sealed = await own.get("season-ticket");
    const crossOpen = await codeOf(
      Promise.resolve().then(() =>
        openPackage(bankKey.ck, zoneId, transitKey.container, "season-ticket", sealed!),
      ),
    );
    say(`   and the transit's sealed package under the bank's key: ${crossOpen}`);

    step("Z8", "The carrier's container map: occupant, limits, expiry, token uses, sizes — never contents.");
    const { body: map } = await admin.get<ZoneMap>(`/v1/admin/tsm/zones/${zoneId}`);
    for (const line of containerTable(map)) say(line);

    step(
      "Z9",
      `The bank's ${bankLimit} s limit passes; its containers refuse everyone, then the sweep reclaims`,
    );
    say("   them: freed in the inventory, the zone told to wipe them, the bank told by webhook.");
    const wait = bankSub.notAfter - Date.now() + 250;
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const bankAfterLimit = await codeOf(bank.link.relay(bankKey, "get", "card"));
    say(`   the bank reads its card now: ${bankAfterLimit}`);
    let reclaimed: number[];
    let sweep: "service" | "carrier";
    if (options.sweep) {
      await options.sweep();
      sweep = "service";
      const after = (await admin.get<ZoneMap>(`/v1/admin/tsm/zones/${zoneId}`)).body;
      reclaimed = bankSub.containers.filter((i) => after.containers[i]?.state === "free");
      say(`   the sweep reclaimed containers ${reclaimed.join(", ")}`);
    } else {
      sweep = "carrier";
      reclaimed = (
        await admin.post<{ containers: number[] }>(`/v1/admin/tsm/zones/${zoneId}/reclaim`, {
          containers: bankSub.containers,
        })
      ).body.containers;
      say(
        `   (a remote server sweeps every minute; the carrier reclaims them now) containers ${reclaimed.join(", ")}`,
      );
    }
    const wiped = await handset.sync();
    say(
      `   the zone applied: ${wiped.applied.join(", ")}; container ${bankKey.container} holds ${zone.masterView()[bankKey.container]!.packages} packages`,
    );
    const hook = await receiver.waitFor(
      (c) => c.body["type"] === "tsm.containers_reclaimed",
      options.webhookTimeoutMs ?? 20_000,
    );
    const bankWebhook = hook
      ? {
          type: String(hook.body["type"]),
          reason: String(hook.body["reason"]),
          containers: (hook.body["containers"] as number[]) ?? [],
          verified: hook.verified,
        }
      : null;
    say(
      bankWebhook
        ? `   the bank's webhook: ${bankWebhook.type}, reason ${bankWebhook.reason}, containers ${bankWebhook.containers.join(", ")}, signature ${bankWebhook.verified ? "verified" : "BAD"}`
        : "   the bank's webhook was not called in time",
    );

    step(
      "Z10",
      "The handset is refurbished: the carrier orders a factory reset (epoch 2), the zone acknowledges",
    );
    say('   and wipes itself, and the carrier personalises it for its next user, "bob".');
    await admin.post(`/v1/admin/tsm/zones/${zoneId}/reset`, {});
    await handset.factoryReset();
    const { body: again } = await admin.post<ProvisioningBundle>(
      `/v1/admin/tsm/zones/${zoneId}/personalise`,
      {
        userInfo: "bob",
      },
    );
    await zone.personalise(zoneBundleOf(again));
    const ukAlice = deriveUserKey(fromBase64url(bundle.zmk), bundle.userInfo, bundle.epoch);
    const ukBob = deriveUserKey(fromBase64url(again.zmk), again.userInfo, again.epoch);
    const userKeysDiffer = !constantTimeEqual(ukAlice, ukBob);
    ukAlice.fill(0);
    ukBob.fill(0);
    say(`   zone ${zoneId}: epoch ${again.epoch}, user "bob"; his user key shares nothing with alice's`);

    step("Z11", "Every earlier key opens nothing:");
    const oldCk = deriveContainerKey(transitSub.sk, transitKey.container);
    wipe.push(oldCk);
    const oldKeyAfterReset = await codeOf(zone.openContainer(transitKey.container, oldCk));
    say(`   the transit's old CK in the zone: ${oldKeyAfterReset}`);
    const oldRelayAfterReset = await codeOf(transit.link.relay(transitKey, "get", "season-ticket"));
    say(`   a relayed read with it: ${oldRelayAfterReset}`);
    const spare = (await issue(transit, {}).catch(() => undefined))?.body;
    const oldToken = await codeOf(transit.link.subKey(transitToken.token));
    say(`   the transit's old token, presented again: ${oldToken}`);
    if (spare)
      say(
        `   (the carrier can issue tokens for bob's zone again: ${spare.jti}, containers ${spare.containers.join(", ")})`,
      );
    const { body: audit } = await admin.get<{ ok: boolean; count?: number }>("/v1/admin/audit/verify");
    if (!audit.ok)
      throw new HandsafeError("demo.audit_broken", "the audit chain does not verify", { status: 0 });
    say(`   audit chain verified, ${audit.count} records`);

    return {
      zoneId,
      handsetId,
      bankId: bank.id,
      transitId: transit.id,
      rejectedId: shady.id,
      tokens: { bank: bankToken.jti, transit: transitToken.jti },
      containers: { bank: bankSub.containers, transit: transitSub.containers },
      placements: { bank: "server", transit: "handset" },
      readBack,
      refusals: {
        unvalidatedToken,
        rejectedToken,
        bankRelaysToTransit,
        bankKeyOnTransitContainer,
        transitKeyOnBankContainer,
        bankAfterLimit,
        oldKeyAfterReset,
        oldRelayAfterReset,
        oldTokenAfterReset: oldToken,
      },
      mapWhileBound: map.containers,
      reclaimed,
      sweep,
      bankWebhook,
      epochs: { before: bundle.epoch, after: again.epoch },
      userKeysDiffer,
      finalZone: zone.masterView().map((c) => ({ index: c.index, state: c.state, packages: c.packages })),
    };
  } finally {
    for (const k of wipe) k.fill(0);
    for (const c of clients) c.close();
    await receiver.close();
  }
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.[0-9]{3}Z$/, "Z");
