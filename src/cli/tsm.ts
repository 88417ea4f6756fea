/**
 * Trust-zone containers from the command line (docs/protocols/trustzone.md), thin shells over the
 * carrier's admin API, the service managers' API and the zone SDK (handset/secure-zone.ts):
 *
 * the carrier (admin token, as `handsafe admin …`):
 *   handsafe tsm managers                                  managers registered and their state
 *   handsafe tsm manager <id> / validate <id> / reject <id> --reason R
 *   handsafe tsm zone-create --user-info U [--containers N] (--out bundle.json | --zone-dir ZDIR)
 *   handsafe tsm token --manager M --zone Z (--count N | --containers 0,1) [--max-uses 1] [--expires 1d]
 *                      [--limit 1d] [--max-attempts 5] [--out token.jws]
 *   handsafe tsm zone <id>                                 the container map as a table + the audit trail
 *   handsafe tsm reclaim <zone> (--containers 0,1 | --manager M) / tsm reset <zone>
 *   handsafe tsm personalise <zone> --user-info U (--out bundle.json | --zone-dir ZDIR)   after a reset
 *
 * a service manager (its folder MDIR: manager.json + keystore/ holding the API key, the X25519 key
 * pair and its sub-keys, under the passphrase as for `handsafe handset …`):
 *   handsafe tsm register --dir MDIR --name N --identification C [--memory B] [--app id:sha256]…
 *   handsafe tsm token-status --dir MDIR <jti>             uses left, expiry: spends nothing
 *   handsafe tsm subkey --dir MDIR --token T|--token-file F  server placement: SK opened and kept
 *   handsafe tsm put|get|delete --dir MDIR --zone Z --container i --name N [--file F] [--wait s]
 *   handsafe tsm relay --dir MDIR <relayId> [--out F]      a relayed command's answer (a get's package opened)
 *
 * a simulated handset zone kept in a folder ZDIR (zone.json + keystore/ holding the SecureZone):
 *   handsafe tsm zone-sim --dir ZDIR personalise --bundle bundle.json
 *   handsafe tsm zone-sim --dir ZDIR sync                  pull signals and relayed commands, apply, report
 *   handsafe tsm zone-sim --dir ZDIR show / reset          the zone's own map; a factory reset (acknowledged)
 *
 * No command prints a sub-key or a container key; the ZMK leaves only in a provisioning bundle file
 * (mode 0600) or straight into a zone folder.
 */
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { generateHpkeKeyPair, type HpkeKeyPair } from "../core/crypto/hpke.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import { FolderKeystore } from "../handset/folder-keystore.ts";
import type { ServerAddress } from "../handset/handset.ts";
import type { HttpClient } from "../handset/http-client.ts";
import type { Keystore } from "../handset/keystore.ts";
import { SecureZone, type ZoneBundle } from "../handset/secure-zone.ts";
import {
  deriveContainerKey,
  openPackage,
  openSubKey,
  type RelayCommand,
  relayProof,
  sealPackage,
} from "../trustzone/protocol.ts";
import type { ProvisioningBundle, RelayView } from "../trustzone/server.ts";
import { ZoneLink, type ZoneSyncReport } from "../trustzone/zone-link.ts";
import { type AdminOptions, print, withAdmin, withServer } from "./admin-command.ts";
import {
  adminClient,
  pinnedClient,
  readPassphrase,
  requirePin,
  resolveServer,
  type ServerOptions,
} from "./connect.ts";

// --- the SDK pieces a carrier, a manager and a handset put together (also used by the demo and bench) ---

/** A provisioning bundle as the server sends it → what SecureZone.personalise takes. */
export function zoneBundleOf(bundle: ProvisioningBundle): ZoneBundle {
  return {
    zoneId: bundle.zoneId,
    zmk: fromBase64url(bundle.zmk, "zmk"),
    userInfo: bundle.userInfo,
    epoch: bundle.epoch,
    trustZonePublicKeys: Object.fromEntries(
      bundle.trustZonePublicKeys.map((k) => [k.kid, fromBase64url(k.publicKey, "publicKey")]),
    ),
  };
}

/** What a manager keeps of a sub-key besides SK itself. */
export interface SubKeyInfo {
  jti: string;
  zoneId: string;
  epoch: number;
  containers: number[];
  notAfter: number;
}

export interface SubKey extends SubKeyInfo {
  sk: Uint8Array;
}

/** What a relayed command needs: the zone, its epoch and CK_i. */
export interface ContainerKey {
  zoneId: string;
  epoch: number;
  container: number;
  ck: Uint8Array;
}

export function containerKeyOf(sub: SubKey, container: number): ContainerKey {
  return { zoneId: sub.zoneId, epoch: sub.epoch, container, ck: deriveContainerKey(sub.sk, container) };
}

/** A service manager on the network: its API key (bearer) and X25519 key pair. */
export class ManagerLink {
  constructor(
    readonly http: HttpClient,
    readonly keys: HpkeKeyPair,
    /** The clock relay commands are dated with (the zone refuses one outside ±5 min of its own). */
    readonly now: () => number = Date.now,
  ) {}

  /** Server placement (§4): redeems the token; SK arrives HPKE-sealed to this manager and is opened. */
  async subKey(token: string): Promise<SubKey> {
    const { body } = await this.http.post<SubKeyInfo & { sealedSubKey: { enc: string; ciphertext: string } }>(
      "/v1/tsm/subkeys",
      { token },
    );
    const sk = openSubKey(
      this.keys.privateKey,
      {
        enc: fromBase64url(body.sealedSubKey.enc, "enc"),
        ciphertext: fromBase64url(body.sealedSubKey.ciphertext, "ciphertext"),
      },
      body.jti,
    );
    return {
      jti: body.jti,
      zoneId: body.zoneId,
      epoch: body.epoch,
      containers: body.containers,
      notAfter: body.notAfter,
      sk,
    };
  }

  async tokenStatus(jti: string): Promise<Record<string, unknown>> {
    return (await this.http.get<Record<string, unknown>>(`/v1/tsm/tokens/${encodeURIComponent(jti)}`)).body;
  }

  /** A package command for container i, its proof an HMAC under CK_i; queued for the zone (?wait=s). */
  async relay(
    key: ContainerKey,
    op: RelayCommand["op"],
    name?: string,
    plaintext?: Uint8Array,
    waitSeconds = 0,
  ): Promise<RelayView> {
    if (op === "put" && (name === undefined || plaintext === undefined))
      throw new HandsafeError("cli.invalid_argument", "a put needs a name and a package", { status: 0 });
    const command: RelayCommand = {
      op,
      zoneId: key.zoneId,
      epoch: key.epoch,
      container: key.container,
      ...(name === undefined ? {} : { name }),
      ...(op === "put"
        ? { package: toBase64url(sealPackage(key.ck, key.zoneId, key.container, name!, plaintext!)) }
        : {}),
      id: toBase64url(randomBytes(12)),
      created: this.now(),
    };
    const proof = toBase64url(relayProof(key.ck, command));
    const base = `/v1/tsm/zones/${encodeURIComponent(key.zoneId)}/containers/${key.container}/packages`;
    const path = `${op === "list" ? base : `${base}/${encodeURIComponent(name!)}`}?wait=${waitSeconds}`;
    const method = op === "put" ? "PUT" : op === "delete" ? "DELETE" : "GET";
    const { body } = await this.http.request<RelayView>(method, path, {
      ...(op === "put"
        ? { json: { command, proof } }
        : {
            headers: {
              "tsm-relay-command": toBase64url(utf8(JSON.stringify(command))),
              "tsm-relay-proof": proof,
            },
          }),
    });
    return body;
  }

  async relayStatus(relayId: string, waitSeconds = 0): Promise<RelayView> {
    return (
      await this.http.get<RelayView>(`/v1/tsm/relay/${encodeURIComponent(relayId)}?wait=${waitSeconds}`)
    ).body;
  }
}

/** The package a finished `get` brought back, opened with CK_i (undefined: no such package). */
export function openedPackage(view: RelayView, key: ContainerKey): Uint8Array | undefined {
  const text = view.result?.["package"];
  if (typeof text !== "string") return undefined;
  return openPackage(key.ck, key.zoneId, key.container, view.name ?? "", fromBase64url(text, "package"));
}

/** A bearer-authenticated client (a manager's API key). */
/** A manager's client: its API key as the bearer token. */
export function bearerClient(server: ServerAddress, key: string): HttpClient {
  return adminClient(server, key);
}

// --- helpers ------------------------------------------------------------------------------------------

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

const iso = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? "—" : new Date(ms).toISOString().replace(/\.[0-9]{3}Z$/, "Z");

function invalidArgument(message: string): HandsafeError {
  return new HandsafeError("cli.invalid_argument", message, { status: 0 });
}

/** "90", "90s", "30m", "12h", "1d" → seconds. */
export function parseDuration(value: string, name: string): number {
  const m = /^([0-9]{1,9})([smhd]?)$/.exec(value.trim());
  if (!m) throw invalidArgument(`${name} wants a duration like 90s, 30m, 12h or 1d, got ${value}`);
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86_400 }[m[2] as "" | "s" | "m" | "h" | "d"];
  return Number(m[1]) * unit;
}

function wholeNumber(value: string, name: string): number {
  if (!/^[0-9]{1,9}$/.test(value.trim())) throw invalidArgument(`${name} wants a whole number, got ${value}`);
  return Number(value.trim());
}

function indexList(value: string, name: string): number[] {
  return value.split(",").map((v) => wholeNumber(v, name));
}

async function writeSecretFile(path: string, text: string): Promise<void> {
  await writeFile(resolve(path), text, { flag: "wx", mode: 0o600 }).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== "EEXIST") throw e;
    throw new HandsafeError("cli.file_exists", `${path} exists already; nothing was replaced`, { status: 0 });
  });
}

async function emptyFolder(dir: string, what: string): Promise<void> {
  const existing = await readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return [];
    if (e.code === "ENOTDIR") return [dir];
    throw e;
  });
  if (existing.length > 0)
    throw new HandsafeError(
      "cli.folder_not_empty",
      `${dir} is not an empty folder: a ${what} needs a new one (delete this to start over)`,
      { status: 0 },
    );
  await mkdir(dir, { recursive: true, mode: 0o700 });
}

async function readJsonFile<T>(path: string, missing: string, code: string): Promise<T> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    throw new HandsafeError(code, missing, { status: 0 });
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new HandsafeError(code, `${path}: not JSON`, { status: 0 });
  }
}

type PassphraseOptions = { passphraseFile?: string };

function withPassphrase(cmd: Command): Command {
  return cmd.option(
    "--passphrase-file <file>",
    "file holding the keystore passphrase (default: HANDSAFE_HANDSET_PASSPHRASE or a prompt)",
  );
}

function withConnection(cmd: Command): Command {
  return cmd
    .option("--url <url>", "server URL (default: HANDSAFE_URL or the local server's data/server.json)")
    .option("--pin <pin>", "server SPKI SHA-256 pin (default: HANDSAFE_PIN or the local server's)")
    .option("--data-dir <dir>", "the local server's data folder (default: HANDSAFE_DATA_DIR or ./data)");
}

// --- a simulated zone in a folder -------------------------------------------------------------------

const ZONE_FORMAT = "handsafe-simulated-zone";
const ZONE_FILE = "zone.json";
const KEYSTORE_DIR = "keystore";

interface ZoneFolderConfig {
  format: typeof ZONE_FORMAT;
  version: 1;
  containers: number;
  server: { url: string; pin: string };
  createdAt: string;
}

async function readZoneConfig(dir: string): Promise<ZoneFolderConfig | undefined> {
  try {
    await readFile(join(dir, ZONE_FILE));
  } catch {
    return undefined;
  }
  const c = await readJsonFile<Partial<ZoneFolderConfig>>(
    join(dir, ZONE_FILE),
    "",
    "cli.zone_config_invalid",
  );
  if (c.format !== ZONE_FORMAT || c.version !== 1 || typeof c.server?.url !== "string")
    throw new HandsafeError("cli.zone_config_invalid", `${join(dir, ZONE_FILE)}: not a zone`, { status: 0 });
  return c as ZoneFolderConfig;
}

/** Opens the zone folder (creating it, when `create` gives the server, on first use). */
async function openZoneFolder(
  dir: string,
  o: PassphraseOptions,
  create?: { server: { url: string; pin: string }; containers: number },
): Promise<{ zone: SecureZone; config: ZoneFolderConfig; keystore: Keystore }> {
  let config = await readZoneConfig(dir);
  if (config === undefined) {
    if (!create)
      throw new HandsafeError(
        "cli.no_zone",
        `${dir} holds no zone: run \`handsafe tsm zone-sim --dir ${dir} personalise --bundle …\` first`,
        { status: 0 },
      );
    await emptyFolder(dir, "zone");
    config = {
      format: ZONE_FORMAT,
      version: 1,
      containers: create.containers,
      server: create.server,
      createdAt: new Date().toISOString(),
    };
    await writeFile(join(dir, ZONE_FILE), `${JSON.stringify(config, null, 2)}\n`, { flag: "wx" });
  }
  const keystore = await FolderKeystore.open(join(dir, KEYSTORE_DIR), await readPassphrase(o));
  const zone = await SecureZone.open(keystore, { containers: config.containers });
  return { zone, config, keystore };
}

async function readBundle(path: string): Promise<ProvisioningBundle> {
  const b = await readJsonFile<ProvisioningBundle>(
    resolve(path),
    `no bundle file ${path}`,
    "cli.bundle_invalid",
  );
  if (typeof b?.zoneId !== "string" || typeof b.zmk !== "string" || !Array.isArray(b.trustZonePublicKeys))
    throw new HandsafeError("cli.bundle_invalid", `${path} is not a provisioning bundle`, { status: 0 });
  return b;
}

async function deliverToFolder(
  dir: string,
  bundle: ProvisioningBundle,
  server: ServerAddress,
  o: PassphraseOptions & { containers?: number },
): Promise<SecureZone> {
  const { zone } = await openZoneFolder(resolve(dir), o, {
    server: requirePin(server, "simulated zone"),
    containers: o.containers ?? 8,
  });
  await zone.personalise(zoneBundleOf(bundle));
  return zone;
}

function printZoneView(zone: SecureZone): void {
  say(`zone ${zone.zoneId ?? "(not personalised)"} epoch ${zone.epoch ?? "—"}, last signal ${zone.lastSeq}`);
  for (const c of zone.masterView())
    say(
      `  ${String(c.index).padStart(3)}  ${c.state.padEnd(6)} ${(c.occupant ?? "").padEnd(20)} ` +
        `until ${iso(c.notAfter)}  attempts ${c.attemptsLeft}/${c.maxAttempts}  ${c.packages} packages, ${c.bytes} bytes`,
    );
}

function registerZoneSim(tsm: Command): void {
  const sim = tsm
    .command("zone-sim")
    .description("a simulated handset trust zone kept in a folder (zone.json + an encrypted keystore)")
    .option("--dir <dir>", "the zone's folder", process.env["HANDSAFE_ZONE_DIR"] ?? "./zone");
  const dirOf = (cmd: Command) => resolve((cmd.parent!.opts() as { dir: string }).dir);

  withPassphrase(
    withConnection(
      sim
        .command("personalise")
        .description("deliver a provisioning bundle (from `tsm zone-create --out`) to the zone"),
    ),
  )
    .requiredOption("--bundle <file>", "the provisioning bundle (JSON)")
    .option("--containers <n>", "containers of a new zone", "8")
    .option("--json", "print the answer as JSON")
    .action(
      async (
        o: PassphraseOptions & ServerOptions & { bundle: string; containers: string; json?: boolean },
        cmd: Command,
      ) => {
        const dir = dirOf(cmd);
        const bundle = await readBundle(o.bundle);
        const existing = await readZoneConfig(dir);
        const server = existing ? existing.server : resolveServer(o);
        const zone = await deliverToFolder(dir, bundle, server, {
          ...o,
          containers: wholeNumber(o.containers, "--containers"),
        });
        if (o.json) return print({ zoneId: zone.zoneId, epoch: zone.epoch, dir });
        say(`zone ${zone.zoneId} personalised at epoch ${zone.epoch} in ${dir}`);
      },
    );

  withPassphrase(
    sim.command("sync").description("pull the zone's signals and relayed commands, apply them, report"),
  )
    .option("--json", "print the answer as JSON")
    .action(async (o: PassphraseOptions & { json?: boolean }, cmd: Command) => {
      const { zone, config } = await openZoneFolder(dirOf(cmd), o);
      const http = pinnedClient(config.server);
      try {
        const report = await new ZoneLink(zone, http).sync();
        if (o.json) return print(report);
        say(
          `zone ${zone.zoneId}: ${report.applied.length} signals applied${
            report.applied.length ? ` (${report.applied.join(", ")})` : ""
          }, ${report.rejected.length} refused${report.rejected.length ? ` (${report.rejected.join(", ")})` : ""}, ` +
            `${report.relay.length} relayed commands answered`,
        );
        for (const r of report.relay)
          say(`  ${r.id} ${r.op} container ${r.container}: ${r.ok ? "done" : `refused ${r.code}`}`);
        if (report.locked.length) say(`  locked containers: ${report.locked.join(", ")}`);
      } finally {
        http.close();
      }
    });

  withPassphrase(sim.command("show").description("the zone's own container map (never contents or keys)"))
    .option("--json", "print the answer as JSON")
    .action(async (o: PassphraseOptions & { json?: boolean }, cmd: Command) => {
      const { zone } = await openZoneFolder(dirOf(cmd), o);
      if (o.json)
        return print({
          zoneId: zone.zoneId ?? null,
          epoch: zone.epoch ?? null,
          containers: zone.masterView(),
        });
      printZoneView(zone);
    });

  withPassphrase(
    sim
      .command("reset")
      .description("factory reset the carrier ordered: acknowledged to the server, then everything wiped"),
  ).action(async (o: PassphraseOptions, cmd: Command) => {
    const { zone, config } = await openZoneFolder(dirOf(cmd), o);
    const http = pinnedClient(config.server);
    try {
      const was = zone.zoneId;
      const epoch = await new ZoneLink(zone, http).factoryReset();
      say(`zone ${was} wiped; it waits for a bundle of epoch ${epoch} (\`tsm personalise\`)`);
    } finally {
      http.close();
    }
  });
}

// --- a service manager in a folder -----------------------------------------------------------------

const MANAGER_FORMAT = "handsafe-service-manager";
const MANAGER_FILE = "manager.json";
const ENTRY = {
  apiKey: "tsm/api-key",
  privateKey: "tsm/x25519-private",
  publicKey: "tsm/x25519-public",
  subKey: (jti: string) => `tsm/sk/${jti}`,
  subKeyInfo: (jti: string) => `tsm/sk-info/${jti}`,
  subKeyInfoPrefix: "tsm/sk-info/",
} as const;

interface ManagerConfig {
  format: typeof MANAGER_FORMAT;
  version: 1;
  managerId: string;
  name: string;
  server: { url: string; pin: string };
  createdAt: string;
}

type ManagerOptions = PassphraseOptions & { dir: string; json?: boolean };

function withManager(cmd: Command): Command {
  return withPassphrase(cmd)
    .option("--dir <dir>", "the manager's folder", process.env["HANDSAFE_MANAGER_DIR"] ?? "./manager")
    .option("--json", "print the answer as JSON");
}

interface OpenManager {
  config: ManagerConfig;
  keystore: Keystore;
  link: ManagerLink;
  http: HttpClient;
}

async function withManagerFolder<T>(o: ManagerOptions, fn: (m: OpenManager) => Promise<T>): Promise<T> {
  const dir = resolve(o.dir);
  const c = await readJsonFile<Partial<ManagerConfig>>(
    join(dir, MANAGER_FILE),
    `${dir} holds no service manager: run \`handsafe tsm register --dir ${o.dir}\` first`,
    "cli.no_manager",
  );
  if (c.format !== MANAGER_FORMAT || c.version !== 1 || typeof c.managerId !== "string" || !c.server)
    throw new HandsafeError("cli.manager_config_invalid", `${join(dir, MANAGER_FILE)}: not a manager`, {
      status: 0,
    });
  const config = c as ManagerConfig;
  const keystore = await FolderKeystore.open(join(dir, KEYSTORE_DIR), await readPassphrase(o));
  const [apiKey, privateKey, publicKey] = await Promise.all([
    keystore.get(ENTRY.apiKey),
    keystore.get(ENTRY.privateKey),
    keystore.get(ENTRY.publicKey),
  ]);
  if (!apiKey || !privateKey || !publicKey)
    throw new HandsafeError("cli.manager_config_invalid", `${dir}: the keystore lacks the manager's keys`, {
      status: 0,
    });
  const http = bearerClient(config.server, fromUtf8(apiKey));
  try {
    return await fn({ config, keystore, http, link: new ManagerLink(http, { privateKey, publicKey }) });
  } finally {
    http.close();
  }
}

async function storedSubKeys(keystore: Keystore): Promise<SubKeyInfo[]> {
  const out: SubKeyInfo[] = [];
  for (const name of await keystore.list(ENTRY.subKeyInfoPrefix)) {
    const bytes = await keystore.get(name);
    if (bytes) out.push(JSON.parse(fromUtf8(bytes)) as SubKeyInfo);
  }
  return out;
}

/** CK_i of the newest sub-key this manager holds for the zone's container. */
async function containerKeyFor(keystore: Keystore, zoneId: string, container: number): Promise<ContainerKey> {
  const candidates = (await storedSubKeys(keystore))
    .filter((s) => s.zoneId === zoneId && s.containers.includes(container))
    .sort((a, b) => b.epoch - a.epoch || b.notAfter - a.notAfter);
  const info = candidates[0];
  const sk = info ? await keystore.get(ENTRY.subKey(info.jti)) : undefined;
  if (!info || !sk)
    throw new HandsafeError(
      "cli.no_subkey",
      `no sub-key for container ${container} of ${zoneId}: run \`handsafe tsm subkey --token …\` first`,
      { status: 0 },
    );
  try {
    return containerKeyOf({ ...info, sk }, container);
  } finally {
    sk.fill(0);
  }
}

function printRelay(view: RelayView, opened?: Uint8Array, saved?: string): void {
  const what = `${view.op} ${view.name === null ? "" : `${JSON.stringify(view.name)} `}container ${view.container} of ${view.zoneId}`;
  if (view.state === "queued") {
    say(`relay ${view.relayId} queued: ${what}`);
    say(
      "  the zone answers when the handset syncs (`handsafe tsm zone-sim sync`); then `handsafe tsm relay <id>`",
    );
    return;
  }
  if (view.state === "failed") {
    say(`relay ${view.relayId} failed: ${what}: ${view.error?.code ?? "?"}`);
    return;
  }
  say(`relay ${view.relayId} done: ${what}`);
  if (view.op === "get") {
    if (opened === undefined) say("  no such package");
    else if (saved) say(`  package opened (${opened.length} bytes), saved to ${saved}`);
    else say(`  package: ${JSON.stringify(fromUtf8(opened))}`);
  }
  if (view.op === "delete") say(`  deleted: ${String(view.result?.["deleted"])}`);
  if (view.op === "list")
    say(`  names: ${((view.result?.["names"] as string[] | undefined) ?? []).join(", ")}`);
  if (view.op === "put") say(`  container holds ${String(view.result?.["bytes"] ?? "?")} bytes`);
}

async function finishRelay(
  m: OpenManager,
  view: RelayView,
  o: { json?: boolean; out?: string },
): Promise<void> {
  let opened: Uint8Array | undefined;
  if (view.state === "done" && view.op === "get") {
    const key = await containerKeyFor(m.keystore, view.zoneId, view.container);
    opened = openedPackage(view, key);
    key.ck.fill(0);
    if (opened && o.out) await writeFile(resolve(o.out), opened, { mode: 0o600 });
  }
  if (o.json)
    return print({
      ...view,
      ...(view.result?.["package"] === undefined ? {} : { result: { ...view.result, package: "(sealed)" } }),
      ...(opened === undefined ? {} : { opened: o.out ? { savedTo: o.out } : { text: fromUtf8(opened) } }),
    });
  printRelay(view, opened, o.out);
}

function registerManagerCommands(tsm: Command): void {
  withManager(
    withConnection(
      tsm
        .command("register")
        .description(
          "register a service manager (pending until the carrier validates it): its API key and X25519 key stay in the folder's keystore",
        ),
    ),
  )
    .requiredOption("--name <name>", "the manager's name, e.g. a bank")
    .requiredOption("--identification <code>", "its identification code")
    .option("--memory <bytes>", "memory it asks for, in bytes", "65536")
    .option(
      "--app <id:sha256>",
      "an application: its id and SHA-256 (repeatable)",
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option("--certification <json>", "its certification, a JSON object")
    .option("--webhook-url <url>", "where the carrier's notices go (reclaimed, locked, reset)")
    .action(
      async (
        o: ManagerOptions &
          ServerOptions & {
            name: string;
            identification: string;
            memory: string;
            app: string[];
            certification?: string;
            webhookUrl?: string;
          },
      ) => {
        const server = requirePin(resolveServer(o), "service manager");
        const applications = o.app.map((a) => {
          const [appId, sha256, ...rest] = a.split(":");
          if (!appId || !sha256 || rest.length) throw invalidArgument(`--app wants id:sha256, got ${a}`);
          return { appId, sha256: sha256.toLowerCase() };
        });
        let certification: unknown;
        if (o.certification !== undefined)
          try {
            certification = JSON.parse(o.certification);
          } catch {
            throw invalidArgument("--certification wants a JSON object");
          }
        const dir = resolve(o.dir);
        await emptyFolder(dir, "service manager");
        const keystore = await FolderKeystore.open(join(dir, KEYSTORE_DIR), await readPassphrase(o));
        const keys = generateHpkeKeyPair();
        const http = pinnedClient(server);
        let created: { managerId: string; apiKey: string; state: string; webhookSecret?: string };
        try {
          created = (
            await http.post<typeof created>("/v1/tsm/managers", {
              name: o.name,
              identificationCode: o.identification,
              memoryBytes: wholeNumber(o.memory, "--memory"),
              applications,
              ...(certification === undefined ? {} : { certification }),
              x25519PublicKey: toBase64url(keys.publicKey),
              ...(o.webhookUrl === undefined ? {} : { webhookUrl: o.webhookUrl }),
            })
          ).body;
        } finally {
          http.close();
        }
        await keystore.put(ENTRY.apiKey, utf8(created.apiKey));
        await keystore.put(ENTRY.privateKey, keys.privateKey);
        await keystore.put(ENTRY.publicKey, keys.publicKey);
        if (created.webhookSecret) await keystore.put("tsm/webhook-secret", utf8(created.webhookSecret));
        const config: ManagerConfig = {
          format: MANAGER_FORMAT,
          version: 1,
          managerId: created.managerId,
          name: o.name,
          server,
          createdAt: new Date().toISOString(),
        };
        await writeFile(join(dir, MANAGER_FILE), `${JSON.stringify(config, null, 2)}\n`, { flag: "wx" });
        if (o.json) return print({ managerId: created.managerId, state: created.state, dir });
        say(`manager ${created.managerId} ${JSON.stringify(o.name)}: ${created.state}`);
        say(
          `  API key, X25519 key${created.webhookSecret ? " and webhook secret" : ""} kept in ${join(dir, KEYSTORE_DIR)}`,
        );
      },
    );

  withManager(tsm.command("me").description("this manager's registration and review state")).action(
    async (o: ManagerOptions) =>
      withManagerFolder(o, async (m) => {
        const view = (await m.http.get<Record<string, unknown>>("/v1/tsm/managers/me")).body;
        if (o.json) return print(view);
        say(`manager ${String(view["managerId"])} ${JSON.stringify(view["name"])}: ${String(view["state"])}`);
      }),
  );

  withManager(
    tsm.command("token-status").description("a token's uses left, expiry and containers: spends nothing"),
  )
    .argument("<jti>", "the token's id (tok_…)")
    .action(async (jti: string, o: ManagerOptions) =>
      withManagerFolder(o, async (m) => {
        const s = await m.link.tokenStatus(jti);
        if (o.json) return print(s);
        say(
          `token ${String(s["jti"])} on ${String(s["zoneId"])}: ${String(s["usesLeft"])} of ${String(s["maxUses"])} uses left, ` +
            `expires ${iso(s["exp"] as number)}${s["expired"] ? " (expired)" : ""}${s["revoked"] ? " (revoked)" : ""}, ` +
            `containers ${(s["containers"] as number[]).join(", ")}`,
        );
      }),
    );

  withManager(
    tsm
      .command("subkey")
      .description(
        "server placement: redeem a token; the sub-key arrives sealed to this manager and is kept",
      ),
  )
    .option("--token <jws>", "the token the carrier issued")
    .option("--token-file <file>", "…or a file holding it")
    .action(async (o: ManagerOptions & { token?: string; tokenFile?: string }) => {
      if ((o.token === undefined) === (o.tokenFile === undefined))
        throw invalidArgument("give either --token or --token-file");
      const token = o.token ?? (await readFile(resolve(o.tokenFile!), "utf8")).trim();
      await withManagerFolder(o, async (m) => {
        const sub = await m.link.subKey(token);
        const info: SubKeyInfo = {
          jti: sub.jti,
          zoneId: sub.zoneId,
          epoch: sub.epoch,
          containers: sub.containers,
          notAfter: sub.notAfter,
        };
        await m.keystore.put(ENTRY.subKey(sub.jti), sub.sk);
        await m.keystore.put(ENTRY.subKeyInfo(sub.jti), utf8(JSON.stringify(info)));
        sub.sk.fill(0);
        if (o.json) return print(info);
        say(
          `sub-key for ${sub.jti}: zone ${sub.zoneId} epoch ${sub.epoch}, containers ${sub.containers.join(", ")}, until ${iso(sub.notAfter)}`,
        );
        say("  kept in the manager's keystore; the zone binds the containers when it next syncs");
      });
    });

  withManager(tsm.command("subkeys").description("the sub-keys this manager holds (never the keys)")).action(
    async (o: ManagerOptions) =>
      withManagerFolder(o, async (m) => {
        const subs = await storedSubKeys(m.keystore);
        if (o.json) return print(subs);
        if (subs.length === 0) say("no sub-keys");
        for (const s of subs)
          say(
            `${s.jti}  zone ${s.zoneId} epoch ${s.epoch}  containers ${s.containers.join(",")}  until ${iso(s.notAfter)}`,
          );
      }),
  );

  for (const op of ["put", "get", "delete"] as const)
    withManager(
      tsm
        .command(op)
        .description(
          op === "put"
            ? "store a package (sealed end to end under CK_i here) in one of your containers, through the relay"
            : op === "get"
              ? "read a package of one of your containers through the relay (opened here with CK_i)"
              : "delete a package of one of your containers through the relay",
        ),
    )
      .requiredOption("--zone <id>", "the zone")
      .requiredOption("--container <i>", "the container index")
      .requiredOption("--name <name>", "the package's name")
      .option("--file <file>", op === "put" ? "the package's content" : "get: write the opened package there")
      .option("--text <text>", "put: the package's content as text")
      .option("--wait <seconds>", "wait this long for the zone's answer (≤ 10)", "0")
      .action(
        async (
          o: ManagerOptions & {
            zone: string;
            container: string;
            name: string;
            file?: string;
            text?: string;
            wait: string;
          },
        ) => {
          let plaintext: Uint8Array | undefined;
          if (op === "put") {
            if ((o.file === undefined) === (o.text === undefined))
              throw invalidArgument("put wants --file or --text");
            plaintext =
              o.file === undefined ? utf8(o.text!) : new Uint8Array(await readFile(resolve(o.file)));
          }
          await withManagerFolder(o, async (m) => {
            const key = await containerKeyFor(m.keystore, o.zone, wholeNumber(o.container, "--container"));
            const view = await m.link.relay(key, op, o.name, plaintext, wholeNumber(o.wait, "--wait"));
            key.ck.fill(0);
            await finishRelay(m, view, {
              ...(o.json ? { json: true } : {}),
              ...(op === "get" && o.file ? { out: o.file } : {}),
            });
          });
        },
      );

  withManager(
    tsm.command("relay").description("a relayed command's state and answer (a get's package opened)"),
  )
    .argument("<relayId>", "the relayed command (rly_…)")
    .option("--out <file>", "write a get's opened package there")
    .option("--wait <seconds>", "wait this long for the zone's answer (≤ 10)", "0")
    .action(async (relayId: string, o: ManagerOptions & { out?: string; wait: string }) =>
      withManagerFolder(o, async (m) => {
        const view = await m.link.relayStatus(relayId, wholeNumber(o.wait, "--wait"));
        await finishRelay(m, view, { ...(o.json ? { json: true } : {}), ...(o.out ? { out: o.out } : {}) });
      }),
    );
}

// --- the carrier -------------------------------------------------------------------------------------

interface ZoneMap {
  zone: { zoneId: string; handsetId: string | null; epoch: number; state: string; containers: number };
  containers: Array<{
    index: number;
    state: string;
    managerId: string | null;
    managerName: string | null;
    jti: string | null;
    notAfter: number | null;
    maxAttempts: number | null;
    bytes: number | null;
    tokenUses: number | null;
    tokenMaxUses: number | null;
  }>;
  audit: Array<{
    seq: number;
    at: number;
    actor: string;
    action: string;
    outcome: string;
    details?: Record<string, unknown>;
  }>;
}

/** The container map as table lines (the demo prints the same). */
export function containerTable(map: ZoneMap): string[] {
  const lines = [
    "    i  state   occupant                               until                 bytes  token uses",
  ];
  for (const c of map.containers)
    lines.push(
      `  ${String(c.index).padStart(3)}  ${c.state.padEnd(7)} ${(c.managerId === null ? "—" : `${c.managerName ?? "?"} (${c.managerId})`).padEnd(38)} ` +
        `${iso(c.notAfter).padEnd(21)} ${String(c.bytes ?? 0).padStart(5)}  ${c.tokenUses === null ? "—" : `${c.tokenUses}/${c.tokenMaxUses}`}`,
    );
  return lines;
}

export type { ZoneMap };
export { ZoneLink, type ZoneSyncReport };

async function outputBundle(
  bundle: ProvisioningBundle,
  o: AdminOptions &
    PassphraseOptions & { out?: string; zoneDir?: string; containers?: string; json?: boolean },
): Promise<void> {
  if (o.zoneDir !== undefined) {
    const zone = await deliverToFolder(o.zoneDir, bundle, resolveServer(o), {
      ...(o.passphraseFile === undefined ? {} : { passphraseFile: o.passphraseFile }),
      ...(o.containers === undefined ? {} : { containers: wholeNumber(o.containers, "--containers") }),
    });
    if (o.json) return print({ zoneId: bundle.zoneId, epoch: bundle.epoch, zoneDir: resolve(o.zoneDir) });
    say(`zone ${bundle.zoneId} epoch ${bundle.epoch} personalised for ${JSON.stringify(bundle.userInfo)}`);
    say(`  the bundle went straight into the simulated zone in ${resolve(o.zoneDir)} (epoch ${zone.epoch})`);
    return;
  }
  await writeSecretFile(o.out!, `${JSON.stringify(bundle, null, 2)}\n`);
  if (o.json) return print({ zoneId: bundle.zoneId, epoch: bundle.epoch, out: resolve(o.out!) });
  say(`zone ${bundle.zoneId} epoch ${bundle.epoch} personalised for ${JSON.stringify(bundle.userInfo)}`);
  say(`  provisioning bundle written to ${o.out} (mode 0600)`);
  process.stderr.write(
    "warning: the bundle holds the zone's master key, shown this once: deliver it to the handset's zone and delete it\n",
  );
}

function registerCarrierCommands(tsm: Command): void {
  withServer(tsm.command("managers").description("the service managers registered and their state"))
    .option("--json", "print the answer as JSON")
    .action(async (o: AdminOptions & { json?: boolean }) =>
      withAdmin(o, async (c) => {
        const views = (await c.get<{ managers: Array<Record<string, unknown>> }>("/v1/admin/tsm/managers"))
          .body.managers;
        if (o.json) return print(views);
        if (views.length === 0) return say("no service managers");
        for (const v of views)
          say(
            `${String(v["managerId"])}  ${String(v["state"]).padEnd(9)} ${JSON.stringify(v["name"])}  id ${String(v["identificationCode"])}` +
              `  apps ${((v["applications"] as Array<{ appId: string; state: string }>) ?? []).map((a) => `${a.appId}(${a.state})`).join(", ") || "none"}`,
          );
      }),
    );

  withServer(tsm.command("manager").description("one service manager's registration and review state"))
    .argument("<id>", "the manager (mgr_…)")
    .action(async (id: string, o: AdminOptions) =>
      withAdmin(o, async (c) =>
        print((await c.get(`/v1/admin/tsm/managers/${encodeURIComponent(id)}`)).body),
      ),
    );

  withServer(tsm.command("validate").description("validate a service manager (or one of its applications)"))
    .argument("<id>", "the manager (mgr_…)")
    .option("--app <appId>", "validate this application of it instead")
    .action(async (id: string, o: AdminOptions & { app?: string }) =>
      withAdmin(o, async (c) => {
        const path = `/v1/admin/tsm/managers/${encodeURIComponent(id)}`;
        if (o.app !== undefined) {
          await c.post(`${path}/applications/${encodeURIComponent(o.app)}/validate`, {});
          return say(`application ${o.app} of ${id}: validated`);
        }
        const { body } = await c.post<{ managerId: string; state: string }>(`${path}/validate`, {});
        say(`manager ${body.managerId}: ${body.state}`);
      }),
    );

  withServer(tsm.command("reject").description("reject a service manager: it gets no token"))
    .argument("<id>", "the manager (mgr_…)")
    .option("--reason <text>", "why (kept with the decision)")
    .action(async (id: string, o: AdminOptions & { reason?: string }) =>
      withAdmin(o, async (c) => {
        const { body } = await c.post<{ managerId: string; state: string }>(
          `/v1/admin/tsm/managers/${encodeURIComponent(id)}/reject`,
          o.reason === undefined ? {} : { reason: o.reason },
        );
        say(`manager ${body.managerId}: ${body.state}${o.reason ? ` (${o.reason})` : ""}`);
      }),
    );

  withPassphrase(
    withServer(
      tsm
        .command("zone-create")
        .description(
          "personalise a handset's zone for a user: the provisioning bundle to a file, or straight into a simulated zone folder",
        ),
    ),
  )
    .requiredOption("--user-info <text>", "the user the zone is personalised for")
    .option("--handset-id <id>", "the handset it belongs to")
    .option("--containers <n>", "how many containers the zone has")
    .option("--out <file>", "write the bundle there (mode 0600)")
    .option("--zone-dir <dir>", "…or deliver it to this simulated zone folder (see `tsm zone-sim`)")
    .option("--json", "print the answer as JSON")
    .action(
      async (
        o: AdminOptions &
          PassphraseOptions & {
            userInfo: string;
            handsetId?: string;
            containers?: string;
            out?: string;
            zoneDir?: string;
            json?: boolean;
          },
      ) => {
        if ((o.out === undefined) === (o.zoneDir === undefined))
          throw invalidArgument("give either --out or --zone-dir");
        const bundle = await withAdmin(
          o,
          async (c) =>
            (
              await c.post<ProvisioningBundle>("/v1/admin/tsm/zones", {
                userInfo: o.userInfo,
                ...(o.handsetId === undefined ? {} : { handsetId: o.handsetId }),
                ...(o.containers === undefined
                  ? {}
                  : { containers: wholeNumber(o.containers, "--containers") }),
              })
            ).body,
        );
        await outputBundle(bundle, o);
      },
    );

  withPassphrase(
    withServer(
      tsm.command("personalise").description("personalise a factory-reset zone again, for its next user"),
    ),
  )
    .argument("<zone>", "the zone")
    .requiredOption("--user-info <text>", "the next user")
    .option("--out <file>", "write the bundle there (mode 0600)")
    .option("--zone-dir <dir>", "…or deliver it to this simulated zone folder")
    .option("--json", "print the answer as JSON")
    .action(
      async (
        zoneId: string,
        o: AdminOptions &
          PassphraseOptions & { userInfo: string; out?: string; zoneDir?: string; json?: boolean },
      ) => {
        if ((o.out === undefined) === (o.zoneDir === undefined))
          throw invalidArgument("give either --out or --zone-dir");
        const bundle = await withAdmin(
          o,
          async (c) =>
            (
              await c.post<ProvisioningBundle>(
                `/v1/admin/tsm/zones/${encodeURIComponent(zoneId)}/personalise`,
                {
                  userInfo: o.userInfo,
                },
              )
            ).body,
        );
        await outputBundle(bundle, o);
      },
    );

  withServer(tsm.command("token").description("issue a token to a validated manager for a zone's containers"))
    .requiredOption("--manager <id>", "the manager (mgr_…)")
    .requiredOption("--zone <id>", "the zone")
    .option("--count <n>", "this many free containers")
    .option("--containers <list>", "…or these, e.g. 0,1 (free, or the manager's own: a renewal)")
    .option("--max-uses <n>", "how many sub-keys it may give", "1")
    .option("--expires <duration>", "how long the token is valid, e.g. 1d, 12h, 600", "1h")
    .option("--limit <duration>", "how long a bound container lives, e.g. 1d", "1d")
    .option("--max-attempts <n>", "wrong keys a container tolerates before it locks", "5")
    .option("--out <file>", "also write the token there (mode 0600)")
    .option("--json", "print the answer as JSON")
    .action(
      async (
        o: AdminOptions & {
          manager: string;
          zone: string;
          count?: string;
          containers?: string;
          maxUses: string;
          expires: string;
          limit: string;
          maxAttempts: string;
          out?: string;
          json?: boolean;
        },
      ) => {
        if (o.count !== undefined && o.containers !== undefined)
          throw invalidArgument("give --count or --containers, not both");
        const body = {
          managerId: o.manager,
          zoneId: o.zone,
          ...(o.containers !== undefined
            ? { containers: indexList(o.containers, "--containers") }
            : { count: wholeNumber(o.count ?? "1", "--count") }),
          maxUses: wholeNumber(o.maxUses, "--max-uses"),
          expiresInSeconds: parseDuration(o.expires, "--expires"),
          limits: {
            containerSeconds: parseDuration(o.limit, "--limit"),
            maxAttempts: wholeNumber(o.maxAttempts, "--max-attempts"),
          },
        };
        await withAdmin(o, async (c) => {
          const t = (
            await c.post<{ token: string; jti: string; containers: number[]; exp: number }>(
              "/v1/admin/tsm/tokens",
              body,
            )
          ).body;
          if (o.out) await writeSecretFile(o.out, `${t.token}\n`);
          if (o.json) return print(t);
          say(
            `token ${t.jti} for ${o.manager} on ${o.zone}: containers ${t.containers.join(", ")}, ` +
              `${body.maxUses} use${body.maxUses === 1 ? "" : "s"}, expires ${iso(t.exp)}, container limit ${o.limit}`,
          );
          say(`  token: ${t.token}`);
        });
      },
    );

  withServer(
    tsm
      .command("zone")
      .description("a zone's container map (occupant, limits, expiry, uses, sizes) and audit trail"),
  )
    .argument("<zone>", "the zone")
    .option("--audit <n>", "audit records to show (the latest)", "20")
    .option("--json", "print the answer as JSON")
    .action(async (zoneId: string, o: AdminOptions & { audit: string; json?: boolean }) =>
      withAdmin(o, async (c) => {
        const map = (await c.get<ZoneMap>(`/v1/admin/tsm/zones/${encodeURIComponent(zoneId)}`)).body;
        if (o.json) return print(map);
        say(
          `zone ${map.zone.zoneId} (${map.zone.handsetId ?? "no handset id"}): epoch ${map.zone.epoch}, ${map.zone.state}, ${map.zone.containers} containers`,
        );
        for (const line of containerTable(map)) say(line);
        const n = wholeNumber(o.audit, "--audit");
        say(`audit trail (latest ${Math.min(n, map.audit.length)} of ${map.audit.length}):`);
        for (const a of map.audit.slice(-n)) {
          const code = typeof a.details?.["code"] === "string" ? ` ${a.details["code"]}` : "";
          say(`  #${a.seq} ${iso(a.at)} ${a.outcome.padEnd(5)} ${a.action.padEnd(30)} ${a.actor}${code}`);
        }
      }),
    );

  withServer(
    tsm
      .command("reclaim")
      .description("reclaim containers (by index, or a manager's): freed, the zone told to wipe them"),
  )
    .argument("<zone>", "the zone")
    .option("--containers <list>", "these containers, e.g. 0,1")
    .option("--manager <id>", "every container this manager holds in the zone")
    .action(async (zoneId: string, o: AdminOptions & { containers?: string; manager?: string }) => {
      if (o.containers === undefined && o.manager === undefined)
        throw invalidArgument("give --containers or --manager");
      await withAdmin(o, async (c) => {
        const { body } = await c.post<{ containers: number[] }>(
          `/v1/admin/tsm/zones/${encodeURIComponent(zoneId)}/reclaim`,
          {
            ...(o.containers === undefined ? {} : { containers: indexList(o.containers, "--containers") }),
            ...(o.manager === undefined ? {} : { managerId: o.manager }),
          },
        );
        say(
          body.containers.length
            ? `reclaimed containers ${body.containers.join(", ")} of ${zoneId}; the zone wipes them when it syncs`
            : "nothing to reclaim",
        );
      });
    });

  withServer(
    tsm
      .command("reset")
      .description("factory reset a zone: epoch + 1, every container freed, every token revoked"),
  )
    .argument("<zone>", "the zone")
    .action(async (zoneId: string, o: AdminOptions) =>
      withAdmin(o, async (c) => {
        const { body } = await c.post<{ zoneId: string; epoch: number; state: string }>(
          `/v1/admin/tsm/zones/${encodeURIComponent(zoneId)}/reset`,
          {},
        );
        say(`zone ${body.zoneId}: ${body.state}, next epoch ${body.epoch}`);
      }),
    );
}

export function registerTsmCommands(program: Command): void {
  const tsm = program
    .command("tsm")
    .description(
      "trust-zone containers: the carrier (master TSM), service managers, a simulated handset zone",
    );
  registerCarrierCommands(tsm);
  registerManagerCommands(tsm);
  registerZoneSim(tsm);
}
