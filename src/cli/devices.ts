/**
 * `handsafe admin devices-…`: provisioning over the admin API (docs/protocols/management.md):
 *
 *   handsafe admin devices-import --file batch.csv --key-dir keys/   one key file per accepted row
 *   handsafe admin devices [--model M]                               the registry
 *   handsafe admin device --device dev_…                             one device and its dynamic keys
 *   handsafe admin dynamic-key --device dev_… [--max-uses N] [--ttl S] [--profile P]
 *
 * The server returns a batch's key files once, so the import checks its key folder before it posts
 * and writes each file with mode 0600, never over an existing one. No command prints a key.
 */
import {
  accessSync,
  closeSync,
  constants,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  writeSync,
} from "node:fs";
import { extname, join, resolve } from "node:path";
import type { Command } from "commander";
import { fromUtf8 } from "../core/codec/bytes.ts";
import { HandsafeError } from "../core/errors.ts";
import type { ServerAddress } from "../handset/handset.ts";
import { createNodeTransport } from "../handset/node-transport.ts";
import type { DeviceKeyFile } from "../management/protocol.ts";
import type { BatchImportResult, DeviceInfo, DynamicKeyInfo } from "../management/server.ts";
import { resolveAdminToken, resolveServer } from "./connect.ts";
import { type AdminOptions, adminCommand, print, withAdmin, withServer } from "./admin-command.ts";

// The admin API's shapes, as the server defines them (type-only: nothing of the server is loaded).
export type { DeviceInfo, DynamicKeyInfo } from "../management/server.ts";
type BatchResult = BatchImportResult;

const DEVICE_ID = /^dev_[A-Za-z0-9_-]{16}$/;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.[0-9]{3}Z$/, "Z");

/** A file the user named, read whole; a missing one is `cli.file_not_found`, not a stack trace. */
export function readInputFile(path: string, what: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT")
      throw new HandsafeError("cli.file_not_found", `${what} ${path} does not exist`, { status: 0 });
    if (code === "EISDIR")
      throw new HandsafeError("cli.file_not_found", `${what} ${path} is a folder, not a file`, { status: 0 });
    throw new HandsafeError("cli.file_unreadable", `cannot read ${what} ${path}: ${code ?? String(e)}`, {
      status: 0,
      cause: e,
    });
  }
}

/** A whole number in [min, max] from an option, else `cli.invalid_argument`. */
export function integerOption(value: string, name: string, min: number, max: number): number {
  const n = /^[0-9]{1,10}$/.test(value.trim()) ? Number(value.trim()) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new HandsafeError(
      "cli.invalid_argument",
      `${name} wants a whole number ${min}–${max}, got ${value}`,
    );
  return n;
}

function checkDeviceId(id: string): string {
  if (!DEVICE_ID.test(id))
    throw new HandsafeError(
      "cli.invalid_argument",
      `--device wants a device id (dev_ and 16 characters), got ${id}`,
    );
  return id;
}

/** --format, else the file's extension. */
function batchFormat(file: string, format: string | undefined): "csv" | "json" {
  const f = (format ?? extname(file).slice(1)).toLowerCase();
  if (f === "csv" || f === "json") return f;
  throw new HandsafeError(
    "cli.invalid_argument",
    format === undefined
      ? `cannot tell the format of ${file} from its name: give --format csv or --format json`
      : `--format wants csv or json, got ${format}`,
  );
}

/**
 * The folder the key files go to: created 0700, or an existing folder we can write to. Checked
 * before the batch is posted — the key files come back once.
 */
function prepareKeyDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new HandsafeError(
      "cli.key_dir_unusable",
      `cannot create the key folder ${dir}: ${(e as Error).message}`,
      {
        status: 0,
      },
    );
  }
  const info = statSync(dir);
  if (!info.isDirectory())
    throw new HandsafeError("cli.key_dir_unusable", `${dir} is not a folder`, { status: 0 });
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw new HandsafeError("cli.key_dir_unusable", `cannot write to the key folder ${dir}`, { status: 0 });
  }
  if (process.platform !== "win32" && (info.mode & 0o077) !== 0)
    process.stderr.write(
      `warning: ${dir} is readable by others (mode ${(info.mode & 0o777).toString(8)}); the key files are 0600\n`,
    );
}

/** Writes one key file, mode 0600, refusing to replace an existing file. */
function writeKeyFile(path: string, keyFile: DeviceKeyFile): void {
  const fd = openSync(path, "wx", 0o600);
  try {
    writeSync(fd, `${JSON.stringify(keyFile, null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Not every platform can flush a folder; each file is flushed already.
  }
}

/**
 * POST /v1/admin/devices/batches with the file's bytes as they are (the server's parser is the
 * check, and its line numbers are the file's). The admin client only sends JSON, so this uses the
 * pinned transport directly.
 */
async function postBatch(
  server: ServerAddress,
  token: string,
  body: Uint8Array,
  format: "csv" | "json",
): Promise<BatchResult> {
  const transport = createNodeTransport(server.pin ? { pin: server.pin } : {});
  try {
    const res = await transport.send({
      method: "POST",
      url: `${server.url.replace(/\/+$/, "")}/v1/admin/devices/batches`,
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": format === "csv" ? "text/csv" : "application/json",
        accept: "application/json",
      },
      body,
    });
    let parsed: unknown;
    try {
      parsed = JSON.parse(fromUtf8(res.body));
    } catch {
      parsed = undefined;
    }
    if (res.status >= 400 || parsed === undefined) {
      const err = (parsed as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
      throw new HandsafeError(
        typeof err?.code === "string" ? err.code : "transport.http_error",
        typeof err?.message === "string" ? err.message : `the batch import answered HTTP ${res.status}`,
        { status: res.status },
      );
    }
    return parsed as BatchResult;
  } finally {
    transport.close();
  }
}

function describeKey(k: DynamicKeyInfo): string {
  const profile = typeof k.policy["profile"] === "string" ? k.policy["profile"] : "-";
  return `${k.keyId}  ${k.state.padEnd(10)} uses ${`${k.uses}/${k.maxUses}`.padEnd(9)} expires ${iso(k.expiresAt)}  profile ${profile}`;
}

export function registerDeviceAdminCommands(program: Command): void {
  const admin = adminCommand(program);

  withServer(
    admin
      .command("devices-import")
      .description(
        "import a manufacturer batch (CSV or JSON) and write one key file per accepted device; a bad row rejects only itself. Exits 1 when no row was accepted",
      ),
  )
    .requiredOption("--file <path>", "the batch: CSV with a header line, or a JSON array")
    .requiredOption(
      "--key-dir <dir>",
      "where the key files go, as <deviceId>.json (created 0700; files 0600)",
    )
    .option("--format <format>", "csv or json (default: from the file's extension)")
    .option("--json", "print the result as JSON (rows and key file paths; never the keys)")
    .action(async (o: AdminOptions & { file: string; keyDir: string; format?: string; json?: boolean }) => {
      const format = batchFormat(o.file, o.format);
      const body = readInputFile(o.file, "the batch file");
      const keyDir = resolve(o.keyDir);
      prepareKeyDir(keyDir);
      const result = await postBatch(resolveServer(o), resolveAdminToken(o), body, format);

      const written: Array<{ deviceId: string; file: string }> = [];
      const notWritten: string[] = [];
      for (const keyFile of result.keyFiles) {
        const file = join(keyDir, `${keyFile.deviceId}.json`);
        try {
          writeKeyFile(file, keyFile);
          written.push({ deviceId: keyFile.deviceId, file });
        } catch (e) {
          // Carry on with the others: each file is the only copy of its key.
          notWritten.push(`${keyFile.deviceId} (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
        }
      }
      syncDir(keyDir);
      const rejected = result.rows.filter((r) => r.status === "rejected");

      if (o.json) {
        print({
          batchId: result.batchId,
          accepted: result.accepted,
          rejected: result.rejected,
          rows: result.rows,
          keyFiles: written,
        });
      } else {
        say(`batch ${result.batchId}: accepted ${result.accepted}, rejected ${result.rejected}`);
        for (const r of rejected) say(`  line ${r.line} rejected: ${r.code} (${r.message})`);
        for (const w of written) say(`  key file ${w.file}`);
      }
      if (rejected.length > 0 && result.accepted > 0)
        process.stderr.write(
          `warning: ${rejected.length} row(s) rejected, listed with their lines; ${result.accepted} imported\n`,
        );
      if (notWritten.length > 0)
        throw new HandsafeError(
          "cli.key_file_not_written",
          `no key file written for ${notWritten.join(", ")}: the server returns a key once, so ` +
            "these devices have no usable key file; import their rows again after removing them",
          { status: 0 },
        );
      if (result.accepted === 0)
        throw new HandsafeError("cli.batch_rejected", `no row was accepted (${result.rejected} rejected)`, {
          status: 0,
        });
    });

  withServer(admin.command("devices").description("list registered devices (never their keys)"))
    .option("--model <model>", "only this model")
    .option("--after <id>", "start after this device id (the next page)")
    .option("--limit <n>", "how many (1–1000)", "100")
    .option("--json", "print the devices as JSON")
    .action(async (o: AdminOptions & { model?: string; after?: string; limit: string; json?: boolean }) =>
      withAdmin(o, async (c) => {
        const limit = integerOption(o.limit, "--limit", 1, 1000);
        const q = new URLSearchParams({ limit: String(limit) });
        if (o.model) q.set("model", o.model);
        if (o.after) q.set("after", checkDeviceId(o.after));
        const { devices } = (await c.get<{ devices: DeviceInfo[] }>(`/v1/admin/devices?${q}`)).body;
        if (o.json) return print(devices);
        if (devices.length === 0) return say("no devices");
        for (const d of devices)
          say(
            `${d.id}  ${d.model.padEnd(12)} ${d.firmwareVersion.padEnd(8)} ${(d.msisdn ?? "-").padEnd(16)} ${d.hardwareIdKind} ${d.hardwareId}`,
          );
        if (devices.length === limit) say(`more: --after ${devices.at(-1)!.id}`);
      }),
    );

  withServer(admin.command("device").description("one device and its dynamic keys (state, uses, expiry)"))
    .requiredOption("--device <id>", "device id (dev_…)")
    .option("--json", "print as JSON")
    .action(async (o: AdminOptions & { device: string; json?: boolean }) =>
      withAdmin(o, async (c) => {
        const path = `/v1/admin/devices/${encodeURIComponent(checkDeviceId(o.device))}`;
        const device = (await c.get<DeviceInfo>(path)).body;
        const { keys } = (await c.get<{ keys: DynamicKeyInfo[] }>(`${path}/dynamic-keys`)).body;
        if (o.json) return print({ device, dynamicKeys: keys });
        say(`${device.id}  model ${device.model}, firmware ${device.firmwareVersion}`);
        say(`  hardware ${device.hardwareIdKind} ${device.hardwareId}, msisdn ${device.msisdn ?? "none"}`);
        say(`  owner ${device.owner ?? "none"}, key source ${device.keySource}, batch ${device.batchId}`);
        say(
          `  registered ${iso(device.createdAt)}${device.handsetId ? `, handset ${device.handsetId}` : ""}`,
        );
        say(keys.length === 0 ? "  no dynamic keys yet" : "  dynamic keys:");
        for (const k of keys) say(`    ${describeKey(k)}`);
      }),
    );

  withServer(
    admin
      .command("dynamic-key")
      .description("issue a dynamic key to a device and send it by SMS (supersedes its active key)"),
  )
    .requiredOption("--device <id>", "device id (dev_…)")
    .option("--max-uses <n>", "signed requests the key allows (1–1000000; server default 10)")
    .option("--ttl <seconds>", "lifetime in seconds (60–2592000; server default 86400)")
    .option("--profile <name>", "policy profile recorded with the key, e.g. update")
    .option("--json", "print the answer as JSON")
    .action(
      async (
        o: AdminOptions & {
          device: string;
          maxUses?: string;
          ttl?: string;
          profile?: string;
          json?: boolean;
        },
      ) => {
        const body = {
          ...(o.profile === undefined ? {} : { profile: o.profile }),
          ...(o.maxUses === undefined
            ? {}
            : { maxUses: integerOption(o.maxUses, "--max-uses", 1, 1_000_000) }),
          ...(o.ttl === undefined ? {} : { ttlSeconds: integerOption(o.ttl, "--ttl", 60, 30 * 86_400) }),
        };
        const path = `/v1/admin/devices/${encodeURIComponent(checkDeviceId(o.device))}/dynamic-keys`;
        await withAdmin(o, async (c) => {
          const issued = (
            await c.post<{
              keyId: string;
              deviceId: string;
              counter: number;
              expiresAt: number;
              maxUses: number;
              messageId: string;
            }>(path, body)
          ).body;
          if (o.json) return print(issued);
          say(
            `issued ${issued.keyId} to ${issued.deviceId}: ${issued.maxUses} uses, expires ${iso(issued.expiresAt)}, ` +
              `notification ${issued.counter} sent by SMS (${issued.messageId})`,
          );
        });
      },
    );
}
