/**
 * Secure backup from the command line (docs/protocols/backup.md): a simulated handset kept in a folder,
 * its identity module (WIM) in an encrypted keystore there, its data in a folder of data stores.
 *
 *   handsafe backup init --dir D [--handle H]              the identity module and the account; the PUK once
 *   handsafe backup identity-export --dir D --out card.age [--armor]   the card image (passphrase-sealed)
 *   handsafe backup identity-import --dir D --card card.age            the card on a new handset, new PIN/PUK
 *   handsafe backup run --dir D --data DATA [--select R]… [--exclude R]… [--share-with H]…
 *   handsafe backup list --dir D / backup shared --dir D
 *   handsafe backup restore --dir D --id bk_… --into DATA [--item R]… [--owner H]
 *   handsafe backup share --dir D --id bk_… --with H… [--select R]… / backup revoke --dir D --id bk_… --with H
 *
 * Folder D:  backup.json (the pinned server, the account id and handle: nothing secret) and keystore/
 * (FolderKeystore, passphrase as for `handsafe handset …`), whose "wim" entry is the identity module
 * sealed under the PIN and the PUK. The PIN comes from --pin or HANDSAFE_WIM_PIN (or a prompt) and is
 * never printed; the server's SPKI pin is --server-pin or HANDSAFE_PIN, since --pin is the WIM's.
 *
 * A rule (--select, --exclude, --item) is `kind:contacts`, `item:files/a.txt`, `pattern:files/**`, a
 * bare kind (`contacts`) or a glob (`files/**`; `*` within a segment, `**` across segments).
 */
import { mkdir, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import { FolderDataStores } from "../backup/data-stores.ts";
import {
  BackupClient,
  type BackupProgress,
  type BackupSummary,
  type ProgressListener,
} from "../backup/handset.ts";
import { isItemKind, type Selection, type SelectionRule } from "../backup/selection.ts";
import { HandsafeError } from "../core/errors.ts";
import { FolderKeystore } from "../handset/folder-keystore.ts";
import type { ServerAddress } from "../handset/handset.ts";
import { IdentityModule, type UnlockedIdentity } from "../handset/identity-module.ts";
import { createNodeTransport } from "../handset/node-transport.ts";
import { print } from "./admin-command.ts";
import { prompt, readPassphrase, requirePin, resolveServer } from "./connect.ts";
import { createProgressBar, type ProgressBar } from "./progress.ts";

const FORMAT = "handsafe-backup-handset";
const CONFIG_FILE = "backup.json";
const LOCK_FILE = "lock";
const KEYSTORE_DIR = "keystore";
/** Items at least this large get a progress bar of their own. */
const LARGE_ITEM = 1024 * 1024;
/** A whole 1 GiB blob streams in one GET: allow it time. */
const TRANSPORT_TIMEOUT_MS = 30 * 60 * 1000;

interface BackupHandsetConfig {
  format: typeof FORMAT;
  version: 1;
  server: { url: string; pin: string };
  accountId: string;
  handle: string | null;
  createdAt: string;
}

type DirOptions = { dir: string; passphraseFile?: string; pin?: string; json?: boolean };
type ServerChoice = { url?: string; serverPin?: string; dataDir?: string };

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function cliError(code: string, message: string): HandsafeError {
  return new HandsafeError(code, message, { status: 0 });
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.[0-9]{3}Z$/, "Z");

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** `kind:K`, `item:P`, `pattern:G`, a bare kind, or a glob / path. */
export function parseRule(text: string, exclude = false): SelectionRule {
  const more = exclude ? { exclude: true } : {};
  const colon = /^(kind|item|pattern):(.*)$/.exec(text);
  if (colon) {
    const [, what, value] = colon;
    if (value === "") throw cliError("cli.invalid_argument", `an empty rule: ${text}`);
    if (what === "kind") {
      if (!isItemKind(value))
        throw cliError(
          "cli.invalid_argument",
          `unknown kind ${value}: contacts, messages, calendar, files or appdata`,
        );
      return { kind: value, ...more };
    }
    return what === "item" ? { item: value!, ...more } : { pattern: value!, ...more };
  }
  if (isItemKind(text)) return { kind: text, ...more };
  return text.includes("*") ? { pattern: text, ...more } : { item: text, ...more };
}

export function parseSelection(select: readonly string[], exclude: readonly string[] = []): Selection {
  return [...select.map((s) => parseRule(s)), ...exclude.map((s) => parseRule(s, true))];
}

const ALL_KINDS: Selection = [
  { kind: "contacts" },
  { kind: "messages" },
  { kind: "calendar" },
  { kind: "files" },
  { kind: "appdata" },
];

function withDir(cmd: Command): Command {
  return cmd
    .option("--dir <dir>", "the handset's folder", process.env["HANDSAFE_BACKUP_DIR"] ?? "./backup-handset")
    .option(
      "--passphrase-file <file>",
      "file holding the keystore passphrase (default: HANDSAFE_HANDSET_PASSPHRASE or a prompt)",
    )
    .option("--pin <pin>", "the identity module's PIN (default: HANDSAFE_WIM_PIN or a prompt)")
    .option("--json", "print the answer as JSON");
}

function withServerChoice(cmd: Command): Command {
  return cmd
    .option("--url <url>", "server URL (default: HANDSAFE_URL or the local server's data/server.json)")
    .option("--server-pin <pin>", "server SPKI SHA-256 pin (default: HANDSAFE_PIN or the local server's)")
    .option("--data-dir <dir>", "the local server's data folder (default: HANDSAFE_DATA_DIR or ./data)")
    .option("--handle <handle>", "the account's handle in the directory, e.g. alice");
}

async function wimPin(o: { pin?: string }, question = "Identity module PIN: "): Promise<string> {
  const pin = o.pin ?? process.env["HANDSAFE_WIM_PIN"];
  if (pin) return pin;
  if (!process.stdin.isTTY)
    throw cliError("cli.no_wim_pin", "give the identity module's PIN: --pin or HANDSAFE_WIM_PIN");
  return prompt(question, true);
}

async function cardPassphrase(o: { passphrase?: string }): Promise<string> {
  const passphrase = o.passphrase ?? process.env["HANDSAFE_CARD_PASSPHRASE"];
  if (passphrase) return passphrase;
  if (!process.stdin.isTTY)
    throw cliError(
      "cli.no_card_passphrase",
      "give the card image's passphrase: --passphrase or HANDSAFE_CARD_PASSPHRASE",
    );
  return prompt("Card image passphrase: ", true);
}

function configError(dir: string, why: string): HandsafeError {
  return cliError("cli.backup_config_invalid", `${join(dir, CONFIG_FILE)}: ${why}`);
}

async function readConfig(dir: string): Promise<BackupHandsetConfig | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, CONFIG_FILE), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  let v: Partial<BackupHandsetConfig> | null;
  try {
    v = JSON.parse(text) as Partial<BackupHandsetConfig> | null;
  } catch {
    throw configError(dir, "not JSON");
  }
  if (typeof v !== "object" || v === null || v.format !== FORMAT)
    throw configError(dir, "not a backup handset");
  if (v.version !== 1) throw configError(dir, `version ${JSON.stringify(v.version)}; this build reads 1`);
  if (
    typeof v.server?.url !== "string" ||
    typeof v.server.pin !== "string" ||
    typeof v.accountId !== "string"
  )
    throw configError(dir, "bad server or account");
  return {
    format: FORMAT,
    version: 1,
    server: { url: v.server.url, pin: v.server.pin },
    accountId: v.accountId,
    handle: typeof v.handle === "string" ? v.handle : null,
    createdAt: typeof v.createdAt === "string" ? v.createdAt : "",
  };
}

async function requireConfig(dir: string): Promise<BackupHandsetConfig> {
  const config = await readConfig(dir);
  if (config === undefined)
    throw cliError(
      "cli.no_backup_handset",
      `${dir} holds no backup handset: run \`handsafe backup init\` first`,
    );
  return config;
}

function pinnedServer(o: ServerChoice): { url: string; pin: string } {
  const server: ServerAddress = resolveServer({
    ...(o.url === undefined ? {} : { url: o.url }),
    ...(o.serverPin === undefined ? {} : { pin: o.serverPin }),
    ...(o.dataDir === undefined ? {} : { dataDir: o.dataDir }),
  });
  return requirePin(server, "simulated handset", "--server-pin");
}

/** A new handset folder: the keystore opened (created), nothing else there yet. */
async function newHandsetFolder(dir: string, o: DirOptions): Promise<FolderKeystore> {
  const existing = await readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return [];
    if (e.code === "ENOTDIR") return [dir];
    throw e;
  });
  if (existing.length > 0)
    throw cliError(
      "cli.backup_folder_not_empty",
      `${dir} is not an empty folder: a new handset needs a new one (delete this to start over)`,
    );
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return FolderKeystore.open(join(dir, KEYSTORE_DIR), await readPassphrase(o));
}

async function writeConfig(dir: string, config: BackupHandsetConfig): Promise<void> {
  await writeFile(join(dir, CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`, {
    flag: "wx",
    mode: 0o644,
  });
}

/** Registers the unlocked identity with the server and writes backup.json. */
async function register(
  dir: string,
  server: { url: string; pin: string },
  identity: UnlockedIdentity,
  handle: string | undefined,
): Promise<BackupHandsetConfig> {
  const transport = createNodeTransport({ pin: server.pin });
  try {
    await new BackupClient({ baseUrl: server.url, transport, identity }).register(
      handle === undefined ? {} : { handle },
    );
  } finally {
    transport.close();
  }
  const config: BackupHandsetConfig = {
    format: FORMAT,
    version: 1,
    server,
    accountId: identity.accountId,
    handle: handle ?? null,
    createdAt: new Date().toISOString(),
  };
  await writeConfig(dir, config);
  return config;
}

/**
 * A module just made in `dir` (created or imported): unlocked, its account registered with the
 * pinned server, reported (JSON or lines), the PUK shown once unless the user chose it.
 */
async function registerModule(
  dir: string,
  server: { url: string; pin: string },
  made: { module: IdentityModule; puk: string },
  pin: string,
  o: { handle?: string; puk?: string; json?: boolean },
  what: string,
): Promise<void> {
  const identity = await made.module.unlock(pin);
  try {
    const config = await register(dir, server, identity, o.handle);
    if (o.json)
      print({
        dir,
        accountId: config.accountId,
        handle: config.handle,
        recipient: identity.recipient,
        server: server.url,
        ...(o.puk ? {} : { puk: made.puk }),
      });
    else {
      say(`${what} in ${dir}; account ${config.accountId}${config.handle ? ` (${config.handle})` : ""}`);
      say(`  recipient ${identity.recipient}`);
      say(`  server ${server.url}, pinned`);
    }
    if (!o.puk) warnPuk(made.puk, o.json);
  } finally {
    identity.lock();
  }
}

function warnPuk(puk: string, json: boolean | undefined): void {
  if (!json) say(`PUK: ${puk}`);
  process.stderr.write(
    "warning: the PUK is shown this once; write it down. It unblocks the PIN after 3 wrong tries (10 wrong PUKs erase the module)\n",
  );
}

/**
 * One command at a time per handset folder: the module's PIN try counter is read, spent and given back
 * in the keystore, so two processes unlocking at once could spend each other's tries. A lock left by
 * a process that is gone is taken over.
 */
async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const file = join(dir, LOCK_FILE);
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(file, "wx", 0o600);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw busy(dir, e);
      const pid = Number((await readFile(file, "utf8").catch(() => "")).trim());
      if (Number.isInteger(pid) && pid > 0 && alive(pid)) throw busy(dir, e);
      await rm(file, { force: true });
    }
  }
  try {
    return await fn();
  } finally {
    await rm(file, { force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function busy(dir: string, cause: unknown): unknown {
  if ((cause as NodeJS.ErrnoException).code !== "EEXIST") return cause;
  return cliError("cli.backup_busy", `another handsafe command is using ${dir}; wait for it to finish`);
}

/** The handset in `dir`, unlocked with its PIN, its client on a pinned transport: locked and closed afterwards. */
async function withClient<T>(
  o: DirOptions,
  fn: (client: BackupClient, config: BackupHandsetConfig) => Promise<T>,
): Promise<T> {
  const dir = resolve(o.dir);
  const config = await requireConfig(dir);
  const passphrase = await readPassphrase(o);
  const pin = await wimPin(o);
  return withLock(dir, async () => {
    const keystore = await FolderKeystore.open(join(dir, KEYSTORE_DIR), passphrase);
    const identity = await (await IdentityModule.open(keystore)).unlock(pin);
    const transport = createNodeTransport({ pin: config.server.pin, timeoutMs: TRANSPORT_TIMEOUT_MS });
    try {
      return await fn(new BackupClient({ baseUrl: config.server.url, transport, identity }), config);
    } finally {
      transport.close();
      identity.lock();
    }
  });
}

/**
 * Progress for a run: one bar for the bytes of the whole pass (hash / seal / download), one per large
 * item while it uploads or is sealed again. The phases come one after another, so bars never interleave.
 */
export function progressBars(label: string, enabled = true): { listener: ProgressListener; done(): void } {
  let overall: ProgressBar | undefined;
  let runTotal: number | undefined;
  let passOver = false;
  let item: { bar: ProgressBar; key: string } | undefined;
  const endItem = () => {
    item?.bar.finish();
    item = undefined;
  };
  const endOverall = () => {
    overall?.finish();
    overall = undefined;
  };
  const listener = (p: BackupProgress) => {
    if (!enabled) return;
    const pass = p.phase === "hash" || p.phase === "seal" || p.phase === "download";
    // The first pass over the data (hash / seal, or a restore's download) counts over the run's bytes.
    if (pass && !passOver && p.bytesTotal > 0 && (runTotal === undefined || p.bytesTotal === runTotal)) {
      runTotal ??= p.bytesTotal;
      overall ??= createProgressBar({ label, total: runTotal });
      overall.update(p.bytesDone, p.item);
      if (p.bytesDone >= runTotal) {
        passOver = true;
        endOverall();
      }
      return;
    }
    if ((p.phase === "upload" || p.phase === "seal") && p.item !== undefined && p.bytesTotal >= LARGE_ITEM) {
      passOver = true;
      endOverall();
      const key = `${p.phase} ${p.item}`;
      if (item?.key !== key) {
        endItem();
        item = { bar: createProgressBar({ label: key, total: p.bytesTotal }), key };
      }
      item.bar.update(p.bytesDone);
      return;
    }
    if (p.phase === "envelope" || p.phase === "commit") {
      endItem();
      endOverall();
    }
  };
  return {
    listener,
    done() {
      endItem();
      endOverall();
    },
  };
}

function describeSummary(b: BackupSummary): string {
  return `${b.id}  ${b.kind.padEnd(6)}  ${iso(b.createdAt)}  parent ${b.parent ?? "-"}  ${b.items} items  ${b.bytes} bytes`;
}

export function registerBackupCommands(program: Command): void {
  const backup = program
    .command("backup")
    .description("secure backup from a simulated handset kept in a folder (identity module, data stores)");

  withServerChoice(
    withDir(
      backup
        .command("init")
        .description("create the identity module (PIN; the PUK is printed once) and register the account"),
    ),
  )
    .option("--puk <puk>", "the PUK (8 digits; default: generated and printed once)")
    .action(async (o: DirOptions & ServerChoice & { handle?: string; puk?: string }) => {
      const dir = resolve(o.dir);
      const server = pinnedServer(o);
      const pin = await wimPin(o, "New identity module PIN (4–8 digits): ");
      const keystore = await newHandsetFolder(dir, o);
      const { module, puk } = await IdentityModule.create(keystore, {
        pin,
        ...(o.puk ? { puk: o.puk } : {}),
      });
      await registerModule(dir, server, { module, puk }, pin, o, "backup handset");
    });

  withDir(
    backup
      .command("identity-export")
      .description("export the identity module as a card image: an age file sealed to a passphrase"),
  )
    .requiredOption("--out <file>", "where to write the card image (never overwritten)")
    .option("--armor", "ASCII-armored (PEM-like) instead of binary")
    .option("--passphrase <passphrase>", "the card image's passphrase (default: HANDSAFE_CARD_PASSPHRASE)")
    .action(async (o: DirOptions & { out: string; armor?: boolean; passphrase?: string }) => {
      const dir = resolve(o.dir);
      await requireConfig(dir);
      const out = resolve(o.out);
      const exists = await readFile(out).then(
        () => true,
        () => false,
      );
      if (exists) throw cliError("cli.file_exists", `${out} exists already; nothing was replaced`);
      const passphrase = await cardPassphrase(o);
      const keystorePassphrase = await readPassphrase(o);
      const pin = await wimPin(o);
      const { card, module } = await withLock(dir, async () => {
        const keystore = await FolderKeystore.open(join(dir, KEYSTORE_DIR), keystorePassphrase);
        const module = await IdentityModule.open(keystore);
        return { module, card: await module.exportCard(pin, passphrase, o.armor ? { armor: true } : {}) };
      });
      await writeFile(out, card, { flag: "wx", mode: 0o600 }).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== "EEXIST") throw e;
        throw cliError("cli.file_exists", `${out} exists already; nothing was replaced`);
      });
      if (o.json)
        return print({ out, accountId: module.accountId, bytes: card.length, armor: Boolean(o.armor) });
      say(
        `card image of ${module.accountId} written to ${out} (${card.length} bytes${o.armor ? ", armored" : ""})`,
      );
    });

  withServerChoice(
    withDir(
      backup
        .command("identity-import")
        .description("install a card image on a new handset, under a new PIN (the new PUK is printed once)"),
    ),
  )
    .requiredOption("--card <file>", "the card image (binary or armored)")
    .option("--passphrase <passphrase>", "the card image's passphrase (default: HANDSAFE_CARD_PASSPHRASE)")
    .option("--puk <puk>", "the new PUK (8 digits; default: generated and printed once)")
    .action(
      async (
        o: DirOptions & ServerChoice & { card: string; passphrase?: string; handle?: string; puk?: string },
      ) => {
        const dir = resolve(o.dir);
        const server = pinnedServer(o);
        const card = await readFile(resolve(o.card)).catch((e: NodeJS.ErrnoException) => {
          throw cliError(
            "cli.file_unreadable",
            `cannot read the card image ${o.card}: ${e.code ?? e.message}`,
          );
        });
        const passphrase = await cardPassphrase(o);
        const pin = await wimPin(o, "New identity module PIN (4–8 digits): ");
        const keystore = await newHandsetFolder(dir, o);
        const { module, puk } = await IdentityModule.importCard(keystore, new Uint8Array(card), passphrase, {
          pin,
          ...(o.puk ? { puk: o.puk } : {}),
        });
        await registerModule(dir, server, { module, puk }, pin, o, "imported identity module");
      },
    );

  withDir(
    backup
      .command("run")
      .description(
        "back up what the rules select from a data folder, incrementally against the latest backup",
      ),
  )
    .requiredOption(
      "--data <dir>",
      "the handset's data stores (contacts.json, messages.json, calendar.json, files/, appdata/)",
    )
    .option("--select <rule>", "what to back up (repeatable; default: every store)", collect, [])
    .option("--exclude <rule>", "what not to back up (repeatable)", collect, [])
    .option("--share-with <handle>", "also encrypt to this user (repeatable)", collect, [])
    .option("--full", "a full backup: no parent, every item uploaded again")
    .option("--no-progress", "no progress bars")
    .action(
      async (
        o: DirOptions & {
          data: string;
          select: string[];
          exclude: string[];
          shareWith: string[];
          full?: boolean;
          progress: boolean;
        },
      ) => {
        const selection =
          o.select.length === 0
            ? [...ALL_KINDS, ...parseSelection([], o.exclude)]
            : parseSelection(o.select, o.exclude);
        await withClient(o, async (client) => {
          const bars = progressBars("backup", o.progress);
          let result: Awaited<ReturnType<BackupClient["backup"]>>;
          try {
            result = await client.backup({
              from: new FolderDataStores(resolve(o.data)),
              selection,
              ...(o.shareWith.length > 0 ? { shareWith: o.shareWith } : {}),
              ...(o.full ? { parent: null } : {}),
              onProgress: bars.listener,
            });
          } finally {
            bars.done();
          }
          if (o.json) return print(result);
          say(
            `backup ${result.backupId}${result.parent ? ` (incremental, parent ${result.parent})` : " (full)"}`,
          );
          say(
            `  added ${result.added}, replaced ${result.replaced}, copied ${result.copied}, deleted ${result.deleted}`,
          );
          say(`  uploaded ${result.uploads} blobs, ${result.bytesUploaded} bytes`);
        });
      },
    );

  withDir(backup.command("list").description("this account's backups and shares")).action(
    async (o: DirOptions) =>
      withClient(o, async (client) => {
        const backups = await client.list();
        if (o.json) return print(backups);
        if (backups.length === 0) return say("no backups");
        for (const b of backups.sort((a, b) => a.createdAt - b.createdAt)) say(describeSummary(b));
      }),
  );

  withDir(backup.command("shared").description("backups other users shared with this account")).action(
    async (o: DirOptions) =>
      withClient(o, async (client) => {
        const shared = await client.sharedWithMe();
        if (o.json) return print(shared);
        if (shared.length === 0) return say("nothing shared with this account");
        for (const s of shared) say(`${describeSummary(s)}  from ${s.owner}`);
      }),
  );

  withDir(
    backup
      .command("restore")
      .description(
        "restore a backup (or chosen items) into a data folder: every item checked before anything is replaced",
      ),
  )
    .requiredOption("--id <id>", "backup id (bk_…)")
    .requiredOption("--into <dir>", "the data folder to restore into")
    .option("--item <rule>", "only these items (a path or a rule; repeatable)", collect, [])
    .option("--owner <handle>", "the sharer's handle, for a backup shared with this account")
    .option("--mode <mode>", "replace (the stores become the backup) or merge (add over what is there)")
    .option("--no-progress", "no progress bar")
    .action(
      async (
        o: DirOptions & {
          id: string;
          into: string;
          item: string[];
          owner?: string;
          mode?: string;
          progress: boolean;
        },
      ) => {
        if (o.mode !== undefined && o.mode !== "replace" && o.mode !== "merge")
          throw cliError("cli.invalid_argument", `--mode wants replace or merge, got ${o.mode}`);
        const mode = o.mode as "replace" | "merge" | undefined;
        await withClient(o, async (client) => {
          const bars = progressBars("restore", o.progress);
          let result: Awaited<ReturnType<BackupClient["restore"]>>;
          try {
            result = await client.restore({
              backupId: o.id,
              into: new FolderDataStores(resolve(o.into)),
              ...(o.item.length > 0 ? { items: parseSelection(o.item) } : {}),
              ...(o.owner === undefined ? {} : { owner: o.owner }),
              ...(mode === undefined ? {} : { mode }),
              onProgress: bars.listener,
            });
          } finally {
            bars.done();
          }
          if (o.json) return print(result);
          const bytes = result.items.reduce((n, i) => n + i.size, 0);
          say(
            `restored ${result.items.length} items (${bytes} bytes) of ${result.backupId} into ${resolve(o.into)}`,
          );
        });
      },
    );

  withDir(
    backup
      .command("share")
      .description("share a backup (or the items --select picks) with users: new headers, no payload moves"),
  )
    .requiredOption("--id <id>", "backup id (bk_…)")
    .requiredOption("--with <handle>", "a user's handle (repeatable)", collect)
    .option("--select <rule>", "only these items (repeatable)", collect, [])
    .action(async (o: DirOptions & { id: string; with: string[]; select: string[] }) =>
      withClient(o, async (client) => {
        const shared = await client.share({
          backupId: o.id,
          with: o.with,
          ...(o.select.length > 0 ? { items: parseSelection(o.select) } : {}),
        });
        if (o.json) return print(shared);
        say(
          `share ${shared.backupId} of ${o.id} with ${shared.sharedWith.join(", ")} (${shared.items} items)`,
        );
      }),
    );

  withDir(backup.command("revoke").description("drop a user from a share"))
    .requiredOption("--id <id>", "the share's backup id (bk_…)")
    .requiredOption("--with <who>", "the user's handle or account id")
    .action(async (o: DirOptions & { id: string; with: string }) =>
      withClient(o, async (client) => {
        await client.revokeShare(o.id, o.with);
        if (o.json) return print({ backupId: o.id, revoked: o.with });
        say(`${o.with} can no longer read ${o.id}`);
      }),
    );
}
