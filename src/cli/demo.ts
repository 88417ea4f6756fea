/**
 * `handsafe demo`: activation end to end, narrated. Without --url it starts a throwaway embedded
 * server (SQLite in a temporary folder) so it also works alone.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  acceptCommands,
  activate,
  fetchSealedCommands,
  listActivated,
  login,
  pullCommands,
  revoke,
} from "../activation/handset.ts";
import { randomToken } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import { Handset } from "../handset/handset.ts";
import type { HttpClient } from "../handset/http-client.ts";
import { MemoryKeystore } from "../handset/keystore.ts";
import { loadConfig } from "../platform/config.ts";
import { type RunningServer, startServer } from "../platform/server.ts";
import { sweepTrustzone } from "../trustzone/sweeper.ts";
import { adminClient, pinnedClient, resolveAdminToken, resolveServer } from "./connect.ts";
import { runBackupDemo } from "./demo-backup.ts";
import { runMessagingDemo } from "./demo-messaging.ts";
import { runTrustzoneDemo } from "./demo-trustzone.ts";
import { runUpdatesDemo } from "./demo-updates.ts";

const PARTS = ["activation", "updates", "messaging", "trustzone", "backup"] as const;

function demoParts(only: string | undefined): readonly string[] {
  if (only === undefined) return PARTS;
  if (!(PARTS as readonly string[]).includes(only))
    throw new HandsafeError("cli.invalid_argument", `--only wants one of ${PARTS.join(", ")}, got ${only}`);
  return [only];
}

const say = (text: string) => process.stdout.write(`${text}\n`);
const step = (n: number, text: string) => say(`\n${n}. ${text}`);

export interface DemoOptions {
  url?: string;
  pin?: string;
  token?: string;
  /** "activation", "updates" or "messaging"; all by default. */
  only?: string;
  /** Handsets in the update demo's batch. */
  devices?: string;
}

export async function runDemo(options: DemoOptions): Promise<void> {
  const parts = demoParts(options.only);
  const devices = Number(options.devices ?? "6");
  if (!Number.isInteger(devices) || devices < 2 || devices > 200)
    throw new HandsafeError(
      "cli.invalid_argument",
      `--devices wants a whole number 2–200, got ${options.devices}`,
    );
  let embedded: RunningServer | undefined;
  let tempDir: string | undefined;
  let server: { url: string; pin?: string };
  let token: string;
  if (options.url) {
    server = resolveServer(options);
    token = resolveAdminToken(options);
    say(`handsafe demo against ${server.url}`);
    say(`  watch it in the console: ${server.url}/console (campaigns, senders, trust zones, the audit log)`);
  } else {
    tempDir = mkdtempSync(join(tmpdir(), "handsafe-demo-"));
    embedded = await startServer({
      config: loadConfig({ HANDSAFE_DATA_DIR: tempDir, HANDSAFE_PORT: "0", HANDSAFE_LOG_LEVEL: "silent" }),
    });
    server = { url: embedded.url, pin: embedded.pin };
    token = embedded.adminToken!;
    say(`handsafe demo on a throwaway embedded server at ${server.url} (SQLite in ${tempDir})`);
    say(`  server certificate ${embedded.fingerprint}`);
  }
  const admin = adminClient(server, token);
  let handset: Handset | undefined;
  try {
    if (parts.includes("activation")) handset = await narrate(admin, server);
    if (parts.includes("updates")) {
      if (!server.pin)
        throw new HandsafeError(
          "cli.no_pin",
          "the update demo pins the server: give --pin (or HANDSAFE_PIN)",
        );
      say("\nSecure updates: static + dynamic keys, a signed delta package, a staged campaign");
      await runUpdatesDemo(admin, { url: server.url, pin: server.pin }, token, { devices });
    }
    if (parts.includes("messaging")) {
      say(
        "\nSecure messaging: a number with no handset, registration by both variants, HPKE to each handset",
      );
      await runMessagingDemo(admin, server);
    }
    if (parts.includes("backup")) {
      say("\nSecure backup: age-encrypted items, a signed SyncML envelope, restore on a new handset, sharing");
      await runBackupDemo(server);
    }
    if (parts.includes("trustzone")) {
      say(
        "\nTrust-zone containers: a carrier, two service managers, sub-keys, limits, a refurbished handset",
      );
      const tz = embedded?.trustzone.service;
      await runTrustzoneDemo(admin, server, tz ? { sweep: () => sweepTrustzone(tz) } : {});
    }
    say("\nDone.");
  } finally {
    handset?.close();
    admin.close();
    if (embedded) await embedded.close();
    if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  }
}

async function narrate(admin: HttpClient, server: { url: string; pin?: string }): Promise<Handset> {
  const run = randomToken(4)
    .toLowerCase()
    .replace(/[^a-z0-9]/g, "x");
  const email = `demo-${run}@example.org`;
  const password = `demo-${randomToken(12)}`;
  const [mail, contacts] = [`mail-${run}`, `contacts-${run}`];

  step(
    1,
    "The operator creates an account and two activation-capable services, each with its own Ed25519 key.",
  );
  await admin.post("/v1/admin/users", { email, password });
  for (const [uid, name] of [
    [mail, "Mail"],
    [contacts, "Contacts sync"],
  ] as const) {
    const { body } = await admin.post<{ keyId: string }>("/v1/admin/services", { uid, name });
    say(`   service ${uid} (${name}) signing key ${body.keyId}`);
  }

  step(
    2,
    "A simulated handset is created: an identity key in its keystore, HTTPS pinned to the server's key.",
  );
  const handset = await Handset.open(new MemoryKeystore(), (a) => pinnedClient(a), server);
  say(`   handset ${handset.id}`);

  step(3, "The handset signs in over TLS and activates both services. For each, the service returns a");
  say("   one-time secret signed with its key; the handset checks the signature against the pinned key and");
  say("   runs CPace (X25519, SHA-512) with it. The secret is never shown to anyone.");
  const session = await login(handset, { email, password });
  const activated = [];
  for (const uid of [mail, contacts]) activated.push(await activate(handset, session, uid));

  step(4, "Both sides hold the same per-service key — compared by fingerprint, never by key:");
  const serverKeys = await keysOnServer(admin, handset.id);
  for (const a of activated) {
    const onServer = serverKeys.find((k) => k.serviceUid === a.serviceUid && k.state === "active");
    const same = onServer?.fingerprint === a.fingerprint;
    say(
      `   ${a.serviceUid.padEnd(20)} handset ${a.fingerprint}  server ${onServer?.fingerprint ?? "—"}  ${same ? "✓ same" : "✗ DIFFERENT"}`,
    );
    if (!same) throw new HandsafeError("demo.mismatch", "the two sides disagree on a key");
  }

  step(5, `The contacts service sends "sync-contacts", authenticated with its per-service key.`);
  await admin.post(`/v1/admin/services/${contacts}/commands`, {
    handsetId: handset.id,
    name: "sync-contacts",
    args: { full: true },
  });
  const pulled = await pullCommands(handset, contacts);
  say(`   the handset accepts: ${pulled.accepted.map((c) => `${c.name} #${c.seq}`).join(", ")}`);
  // What an attacker on the path could try with the same command:
  const key = (await handset.keystore.get(`activation/${contacts}/key`))!;
  const [sealed] = await fetchSealedCommands(handset, contacts, key, 0);
  const ctx = {
    serviceUid: contacts,
    handsetId: handset.id,
    meta: { fingerprint: "", activatedAt: 0, lastSeq: 0 },
  };
  const tampered = acceptCommands(
    key,
    [{ ...sealed!, command: { ...sealed!.command, name: "wipe-device" } }],
    ctx,
  );
  const replayed = acceptCommands(key, [sealed!], {
    ...ctx,
    meta: { ...ctx.meta, lastSeq: pulled.accepted[0]!.seq },
  });
  say(`   a tampered copy ("wipe-device") is refused: ${tampered.refused.map((r) => r.code).join(", ")}`);
  say(`   a replayed copy is refused: ${replayed.refused.map((r) => r.code).join(", ")}`);
  key.fill(0);

  step(6, `The handset revokes ${mail}; ${contacts} is untouched.`);
  await revoke(handset, session, mail);
  for (const k of await keysOnServer(admin, handset.id))
    say(`   server: ${k.serviceUid.padEnd(20)} ${k.state}`);
  say(`   handset holds keys for: ${(await listActivated(handset)).map((s) => s.serviceUid).join(", ")}`);

  step(7, "Every decision above is in the hash-chained audit log:");
  const { body: verification } = await admin.get<{ ok: boolean; count?: number }>("/v1/admin/audit/verify");
  say(`   audit chain ${verification.ok ? `verified, ${verification.count} records` : "BROKEN"}`);
  return handset;
}

async function keysOnServer(
  admin: HttpClient,
  handsetId: string,
): Promise<Array<{ serviceUid: string; fingerprint: string; state: string }>> {
  return (
    await admin.get<Array<{ serviceUid: string; fingerprint: string; state: string }>>(
      `/v1/handsets/${handsetId}/keys`,
    )
  ).body;
}
