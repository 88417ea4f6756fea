/** How the CLI finds its server, its admin token and a handset's keystore. */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { HandsafeError } from "../core/errors.ts";
import { FolderKeystore } from "../handset/folder-keystore.ts";
import { Handset, type ServerAddress } from "../handset/handset.ts";
import { type HttpClient, withHeaders } from "../handset/http-client.ts";
import { createNodeHttpClient } from "../handset/node-transport.ts";
import { readAdminToken, readServerInfo } from "../platform/server.ts";

export interface ServerOptions {
  url?: string;
  pin?: string;
  dataDir?: string;
}

/**
 * `--url`/`HANDSAFE_URL` and `--pin`/`HANDSAFE_PIN`; by default the embedded server's own
 * address and pin, which it writes to `<HANDSAFE_DATA_DIR>/server.json` when it starts.
 */
export function resolveServer(options: ServerOptions): ServerAddress {
  const dataDir = resolve(options.dataDir ?? process.env["HANDSAFE_DATA_DIR"] ?? "./data");
  const url = options.url ?? process.env["HANDSAFE_URL"];
  const pin = options.pin ?? process.env["HANDSAFE_PIN"];
  const local = readServerInfo(dataDir);
  if (url) return { url, ...(pin ? { pin } : local && local.url === url ? { pin: local.pin } : {}) };
  if (local) return { url: local.url, pin: pin ?? local.pin };
  throw new HandsafeError(
    "cli.no_server",
    `no server: give --url (or HANDSAFE_URL), or start one with \`handsafe server\` (it writes ${dataDir}/server.json)`,
  );
}

/**
 * A simulated handset (phone, zone, backup handset, manager) pins its server: the address with its
 * pin, or cli.no_pin naming the option that gives one.
 */
export function requirePin(
  server: ServerAddress,
  what: string,
  option = "--pin",
): { url: string; pin: string } {
  if (!server.pin)
    throw new HandsafeError("cli.no_pin", `a ${what} pins its server: give ${option} for ${server.url}`, {
      status: 0,
    });
  return { url: server.url, pin: server.pin };
}

/** `--token`/`HANDSAFE_ADMIN_TOKEN`, else `<HANDSAFE_DATA_DIR>/admin.token` of a local server. */
export function resolveAdminToken(options: { token?: string; dataDir?: string }): string {
  const dataDir = resolve(options.dataDir ?? process.env["HANDSAFE_DATA_DIR"] ?? "./data");
  const token = options.token ?? process.env["HANDSAFE_ADMIN_TOKEN"] ?? readAdminToken(dataDir);
  if (!token)
    throw new HandsafeError(
      "cli.no_admin_token",
      `no admin token: give --token, HANDSAFE_ADMIN_TOKEN, or run where ${dataDir}/admin.token is`,
    );
  return token;
}

export function pinnedClient(server: ServerAddress): HttpClient {
  return createNodeHttpClient({ baseUrl: server.url, ...(server.pin ? { pin: server.pin } : {}) });
}

/** An HTTP client that sends the admin token with every request. */
export function adminClient(server: ServerAddress, token: string): HttpClient {
  return withHeaders(pinnedClient(server), { authorization: `Bearer ${token}` });
}

export async function readPassphrase(options: { passphraseFile?: string }): Promise<string> {
  if (options.passphraseFile) return readFileSync(options.passphraseFile, "utf8").replace(/\r?\n$/, "");
  const env = process.env["HANDSAFE_HANDSET_PASSPHRASE"];
  if (env) return env;
  if (!process.stdin.isTTY)
    throw new HandsafeError(
      "cli.no_passphrase",
      "set HANDSAFE_HANDSET_PASSPHRASE or --passphrase-file for the handset keystore",
    );
  return prompt("Handset keystore passphrase: ", true);
}

export function prompt(question: string, secret = false): Promise<string> {
  return new Promise((done) => {
    const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: true });
    if (secret) {
      const write = (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput;
      (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = (s: string) => {
        if (s.startsWith(question)) write.call(rl, question);
      };
    }
    rl.question(question, (answer) => {
      rl.close();
      if (secret) process.stdout.write("\n");
      done(answer);
    });
  });
}

/** Opens the simulated handset whose keystore is the folder `dir`. */
export async function openHandset(
  options: { dir: string; passphraseFile?: string } & ServerOptions,
  init = false,
): Promise<Handset> {
  const keystore = await FolderKeystore.open(resolve(options.dir), await readPassphrase(options));
  const server = init || options.url ? resolveServer(options) : undefined;
  return Handset.open(keystore, pinnedClient, server);
}
