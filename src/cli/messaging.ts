/**
 * Secure messaging from the command line (docs/protocols/messaging.md), thin shells over the admin and
 * sender APIs and the SDK:
 *
 *   handsafe admin sender-create --name N [--webhook-url U]   id, API key, webhook secret (shown once)
 *   handsafe admin senders / admin sender-disable --id S
 *   handsafe send --to NUMBER (--text T | --file F --media-type M) [--expires S] [--reply-webhook U]
 *                 [--idempotency-key K] [--api-key K]        the sender's key, or HANDSAFE_SENDER_KEY
 *   handsafe send status --id M  (or handsafe message-status --id M) / send replies --id M
 *   handsafe phone init --dir D --number N                   a simulated messaging handset in a folder
 *   handsafe phone register --dir D --device-type T (--server-code | --handset-code)
 *   handsafe phone inbox --dir D [--all] [--read] / phone reply --dir D --id M --text T
 *
 * A phone's keys live in its encrypted keystore (FolderKeystore, passphrase as for `handsafe handset …`);
 * its line is the server's built-in SMS centre, read and written with the admin token (OutboxLine), so
 * `phone register` needs one. No command prints a message key; `sender-create` prints the sender's
 * secrets once, as the server returns them once.
 */
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { HandsafeError } from "../core/errors.ts";
import { FolderKeystore } from "../handset/folder-keystore.ts";
import type { HttpClient } from "../handset/http-client.ts";
import { OutboxLine } from "../handset/outbox-line.ts";
import { MessagingApp, type OpenedMessage } from "../messaging/handset.ts";
import type { MessageBody } from "../messaging/protocol.ts";
import { type MessageStatus, MessagingSender, type Reply } from "../messaging/sender-client.ts";
import { SimulatedMessagingHandset } from "../messaging/simulator.ts";
import { normalisePhoneNumber } from "../platform/notify/sms/phone.ts";
import { type AdminOptions, adminCommand, print, withAdmin, withServer } from "./admin-command.ts";
import {
  adminClient,
  pinnedClient,
  readPassphrase,
  requirePin,
  resolveAdminToken,
  resolveServer,
  type ServerOptions,
} from "./connect.ts";
import { readInputFile } from "./devices.ts";

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.[0-9]{3}Z$/, "Z");

function invalidArgument(message: string): HandsafeError {
  return new HandsafeError("cli.invalid_argument", message, { status: 0 });
}

/** A message body as one line: the text quoted, an attachment by type and size. */
function describeBody(body: MessageBody): string {
  if (body.type === "text") return JSON.stringify(body.text);
  return `attachment ${body.mediaType}, ${fromBase64url(body.data, "data").length} bytes`;
}

// --- senders (admin) ----------------------------------------------------------------------------------

interface SenderInfo {
  id: string;
  name: string;
  webhookUrl: string | null;
  createdAt: number;
  disabledAt: number | null;
}

function registerSenderAdminCommands(program: Command): void {
  const admin = adminCommand(program);

  withServer(
    admin
      .command("sender-create")
      .description("create a messaging sender: prints its id, API key and webhook secret, shown once"),
  )
    .requiredOption("--name <name>", "the name recipients see (1–64 characters)")
    .option("--webhook-url <url>", "where replies and receipts go (https, or http to loopback)")
    .option("--json", "print the answer as JSON")
    .action(async (o: AdminOptions & { name: string; webhookUrl?: string; json?: boolean }) =>
      withAdmin(o, async (c) => {
        const created = (
          await c.post<SenderInfo & { apiKey: string; webhookSecret: string }>("/v1/admin/senders", {
            name: o.name,
            ...(o.webhookUrl === undefined ? {} : { webhookUrl: o.webhookUrl }),
          })
        ).body;
        if (o.json) print(created);
        else {
          say(`sender ${created.id} ${JSON.stringify(created.name)}`);
          say(`  api key:        ${created.apiKey}`);
          say(`  webhook secret: ${created.webhookSecret}`);
          say(`  webhook url:    ${created.webhookUrl ?? "none"}`);
        }
        process.stderr.write(
          "warning: the API key and the webhook secret are shown this once (the server keeps only a hash " +
            "and a sealed copy); store them now. `handsafe send` reads the key from HANDSAFE_SENDER_KEY or --api-key\n",
        );
      }),
    );

  withServer(admin.command("senders").description("list messaging senders (never their keys)"))
    .option("--json", "print the senders as JSON")
    .action(async (o: AdminOptions & { json?: boolean }) =>
      withAdmin(o, async (c) => {
        const { senders } = (await c.get<{ senders: SenderInfo[] }>("/v1/admin/senders")).body;
        if (o.json) return print(senders);
        if (senders.length === 0) return say("no senders");
        for (const s of senders)
          say(
            `${s.id}  ${s.disabledAt === null ? "active  " : "disabled"} ${JSON.stringify(s.name)}  ` +
              `created ${iso(s.createdAt)}  webhook ${s.webhookUrl ?? "none"}`,
          );
      }),
    );

  withServer(
    admin.command("sender-disable").description("disable a sender: its API key stops working at once"),
  )
    .requiredOption("--id <id>", "sender id (snd_…)")
    .action(async (o: AdminOptions & { id: string }) =>
      withAdmin(o, async (c) => {
        await c.delete(`/v1/admin/senders/${encodeURIComponent(o.id)}`);
        say(`sender ${o.id} disabled`);
      }),
    );
}

// --- sending ------------------------------------------------------------------------------------------

type SenderOptions = ServerOptions & { apiKey?: string; json?: boolean };

function withSender(cmd: Command): Command {
  return cmd
    .option("--api-key <key>", "the sender's API key (default: HANDSAFE_SENDER_KEY)")
    .option("--url <url>", "server URL (default: HANDSAFE_URL or the local server's data/server.json)")
    .option("--pin <pin>", "server SPKI SHA-256 pin (default: HANDSAFE_PIN or the local server's)")
    .option("--data-dir <dir>", "the local server's data folder (default: HANDSAFE_DATA_DIR or ./data)")
    .option("--json", "print the answer as JSON");
}

async function withMessagingSender<T>(
  o: SenderOptions,
  fn: (sender: MessagingSender) => Promise<T>,
): Promise<T> {
  const key = o.apiKey ?? process.env["HANDSAFE_SENDER_KEY"];
  if (!key)
    throw new HandsafeError(
      "cli.no_sender_key",
      "no sender API key: give --api-key or HANDSAFE_SENDER_KEY (from `handsafe admin sender-create`)",
      { status: 0 },
    );
  const http = pinnedClient(resolveServer(o));
  try {
    return await fn(new MessagingSender(http, key));
  } finally {
    http.close();
  }
}

function messageBody(o: { text?: string; file?: string; mediaType?: string }): MessageBody {
  if ((o.text === undefined) === (o.file === undefined))
    throw invalidArgument("give either --text or --file (with --media-type)");
  if (o.text !== undefined) {
    if (o.mediaType !== undefined) throw invalidArgument("--media-type goes with --file, not --text");
    return { type: "text", text: o.text };
  }
  if (o.mediaType === undefined) throw invalidArgument("--file wants --media-type, e.g. application/pdf");
  return {
    type: "attachment",
    mediaType: o.mediaType,
    data: toBase64url(readInputFile(o.file!, "the attachment")),
  };
}

/** A whole number from an option (its range is the server's to check), else cli.invalid_argument. */
function wholeNumber(value: string, name: string): number {
  if (!/^[0-9]{1,10}$/.test(value.trim()))
    throw invalidArgument(`${name} wants a whole number, got ${value}`);
  return Number(value.trim());
}

function printStatus(s: MessageStatus): void {
  say(`message ${s.id} to ${s.to}: ${s.status}`);
  say(
    `  created ${iso(s.createdAt)}, expires ${iso(s.expiresAt)}` +
      `${s.deliveredAt === null ? "" : `, delivered ${iso(s.deliveredAt)}`}` +
      `${s.readAt === null ? "" : `, read ${iso(s.readAt)}`}`,
  );
  if (s.deliveries.length === 0) say("  no handset yet");
  for (const d of s.deliveries)
    say(
      `  handset ${d.handsetId} (${d.deviceType}): ${d.state}` +
        `${d.deliveredAt === undefined ? "" : `, delivered ${iso(d.deliveredAt)}`}` +
        `${d.readAt === undefined ? "" : `, read ${iso(d.readAt)}`}`,
    );
  say(`  replies: ${s.replies}`);
}

function printReplies(messageId: string, replies: Reply[]): void {
  if (replies.length === 0) say(`no replies to ${messageId}`);
  for (const r of replies) say(`reply ${r.id} from ${r.handsetId} at ${iso(r.at)}: ${describeBody(r.body)}`);
}

function registerSendCommands(program: Command): void {
  const send = withSender(
    program
      .command("send")
      .description("send a secure message to a phone number as a sender (subcommands: status, replies)"),
  )
    .option("--to <number>", "the recipient's phone number (E.164, or any form with a +)")
    .option("--text <text>", "a text message (1–4096 UTF-8 bytes)")
    .option("--file <file>", "send this file as an attachment (≤ 64 KiB) instead")
    .option("--media-type <type>", "the attachment's media type, e.g. application/pdf")
    .option("--expires <seconds>", "how long the message waits for a handset (60–2592000; default 7 days)")
    .option("--reply-webhook <url>", "where this message's replies and receipts go")
    .option("--idempotency-key <key>", "the same key again answers the first message, sends no second")
    .action(
      async (
        o: SenderOptions & {
          to?: string;
          text?: string;
          file?: string;
          mediaType?: string;
          expires?: string;
          replyWebhook?: string;
          idempotencyKey?: string;
        },
      ) => {
        if (o.to === undefined)
          throw invalidArgument("send wants --to NUMBER (or a subcommand: status, replies)");
        const body = messageBody(o);
        await withMessagingSender(o, async (sender) => {
          const sent = await sender.send(o.to!, body, {
            ...(o.expires === undefined ? {} : { expiresInSeconds: wholeNumber(o.expires, "--expires") }),
            ...(o.replyWebhook === undefined ? {} : { replyWebhook: o.replyWebhook }),
            ...(o.idempotencyKey === undefined ? {} : { idempotencyKey: o.idempotencyKey }),
          });
          if (o.json) return print(sent);
          say(
            `message ${sent.id}: ${sent.status}${sent.duplicate ? " (idempotent replay: no new message)" : ""}`,
          );
        });
      },
    );

  const statusAction = async (o: SenderOptions & { id: string }) =>
    withMessagingSender(o, async (sender) => {
      const s = await sender.status(o.id);
      return o.json ? print(s) : printStatus(s);
    });
  const statusHelp = "a message's status, with each handset's delivery and read receipt";
  withSender(send.command("status").description(statusHelp))
    .requiredOption("--id <id>", "message id (msg_…)")
    .action(statusAction);
  withSender(program.command("message-status").description(`${statusHelp} (= send status)`))
    .requiredOption("--id <id>", "message id (msg_…)")
    .action(statusAction);

  withSender(send.command("replies").description("the replies to a message still within retention"))
    .requiredOption("--id <id>", "message id (msg_…)")
    .action(async (o: SenderOptions & { id: string }) =>
      withMessagingSender(o, async (sender) => {
        const replies = await sender.replies(o.id);
        return o.json ? print(replies) : printReplies(o.id, replies);
      }),
    );
}

// --- a simulated messaging handset in a folder ----------------------------------------------------------

const PHONE_FORMAT = "handsafe-simulated-phone";
const PHONE_FILE = "phone.json";
const KEYSTORE_DIR = "keystore";

/** phone.json: the number and the pinned server; nothing secret (keys are in keystore/). */
interface PhoneConfig {
  format: typeof PHONE_FORMAT;
  version: 1;
  number: string;
  server: { url: string; pin: string };
  createdAt: string;
}

type PhoneOptions = {
  dir: string;
  passphraseFile?: string;
  token?: string;
  dataDir?: string;
  json?: boolean;
};

function withPhone(cmd: Command): Command {
  return cmd
    .option("--dir <dir>", "the phone's folder", process.env["HANDSAFE_PHONE_DIR"] ?? "./phone")
    .option(
      "--passphrase-file <file>",
      "file holding the keystore passphrase (default: HANDSAFE_HANDSET_PASSPHRASE or a prompt)",
    )
    .option("--data-dir <dir>", "a local server's data folder (its server.json, admin.token)")
    .option("--json", "print the answer as JSON");
}

function phoneConfigError(dir: string, why: string): HandsafeError {
  return new HandsafeError("cli.phone_config_invalid", `${join(dir, PHONE_FILE)}: ${why}`, { status: 0 });
}

async function readPhoneConfig(dir: string): Promise<PhoneConfig> {
  let text: string;
  try {
    text = await readFile(join(dir, PHONE_FILE), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    throw new HandsafeError("cli.no_phone", `${dir} holds no phone: run \`handsafe phone init\` first`, {
      status: 0,
    });
  }
  let v: Partial<PhoneConfig> | null;
  try {
    v = JSON.parse(text) as Partial<PhoneConfig> | null;
  } catch {
    throw phoneConfigError(dir, "not JSON");
  }
  if (typeof v !== "object" || v === null || v.format !== PHONE_FORMAT)
    throw phoneConfigError(dir, "not a phone");
  if (v.version !== 1)
    throw phoneConfigError(dir, `version ${JSON.stringify(v.version)}; this build reads 1`);
  if (typeof v.number !== "string" || typeof v.server?.url !== "string" || typeof v.server.pin !== "string")
    throw phoneConfigError(dir, "bad number or server");
  return {
    format: PHONE_FORMAT,
    version: 1,
    number: v.number,
    server: { url: v.server.url, pin: v.server.pin },
    createdAt: typeof v.createdAt === "string" ? v.createdAt : "",
  };
}

/** The phone in `dir` on the network for one command: its app over a pinned client, closed afterwards. */
async function withPhoneApp<T>(
  o: PhoneOptions,
  fn: (app: MessagingApp, config: PhoneConfig, http: HttpClient) => Promise<T>,
): Promise<T> {
  const dir = resolve(o.dir);
  const config = await readPhoneConfig(dir);
  const keystore = await FolderKeystore.open(join(dir, KEYSTORE_DIR), await readPassphrase(o));
  const http = pinnedClient(config.server);
  try {
    return await fn(await MessagingApp.open({ http, keystore }), config, http);
  } finally {
    http.close();
  }
}

function requireRegistered(app: MessagingApp, config: PhoneConfig): void {
  if (!app.registered || app.phoneNumber !== config.number)
    throw new HandsafeError(
      "messaging.not_registered",
      `this phone has not registered ${config.number}: run \`handsafe phone register\` first`,
      { status: 0 },
    );
}

function describeMessage(m: OpenedMessage): string {
  return `message ${m.id} from ${JSON.stringify(m.senderName)} (${m.senderId}) at ${iso(m.createdAt)}: ${describeBody(m.body)}`;
}

function registerPhoneCommands(program: Command): void {
  const phone = program
    .command("phone")
    .description("a simulated messaging handset kept in a folder (its line is the built-in SMS centre)");

  withPhone(phone.command("init").description("make a phone for a number: an empty keystore and its server"))
    .requiredOption("--number <number>", "its phone number (E.164, or any form with a +)")
    .option("--url <url>", "server URL (default: HANDSAFE_URL or the local server's data/server.json)")
    .option("--pin <pin>", "server SPKI SHA-256 pin (default: HANDSAFE_PIN or the local server's)")
    .action(async (o: PhoneOptions & ServerOptions & { number: string }) => {
      const number = normalisePhoneNumber(o.number);
      const server = requirePin(resolveServer(o), "simulated phone");
      const dir = resolve(o.dir);
      const existing = await readdir(dir).catch((e: NodeJS.ErrnoException) => {
        if (e.code === "ENOENT") return [];
        if (e.code === "ENOTDIR") return [dir];
        throw e;
      });
      if (existing.length > 0)
        throw new HandsafeError(
          "cli.phone_folder_not_empty",
          `${dir} is not an empty folder: a phone needs a new one (delete this to start over)`,
          { status: 0 },
        );
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await FolderKeystore.open(join(dir, KEYSTORE_DIR), await readPassphrase(o));
      const config: PhoneConfig = {
        format: PHONE_FORMAT,
        version: 1,
        number,
        server: { url: server.url, pin: server.pin },
        createdAt: new Date().toISOString(),
      };
      await writeFile(join(dir, PHONE_FILE), `${JSON.stringify(config, null, 2)}\n`, {
        flag: "wx",
        mode: 0o644,
      });
      if (o.json) return print({ dir, number, server: server.url });
      say(`phone ${number} in ${dir}; server ${server.url}, pinned`);
    });

  withPhone(
    phone
      .command("register")
      .description(
        "register this phone's keys for its number, by a code the server texts (--server-code) or one it texts itself (--handset-code); needs the admin token (the SMS centre)",
      ),
  )
    .requiredOption("--device-type <type>", "what the handset is, e.g. pixel-9 (1–40 characters)")
    .option("--server-code", "variant (a): the server texts a code; the phone reads it and confirms")
    .option("--handset-code", "variant (b): the phone texts HSREG <its code> to the service number")
    .option("--replaces <handsetId>", "an active handset of the number this one replaces")
    .option(
      "--token <token>",
      "admin token for the SMS centre (default: HANDSAFE_ADMIN_TOKEN or <data dir>/admin.token)",
    )
    .action(
      async (
        o: PhoneOptions & {
          deviceType: string;
          serverCode?: boolean;
          handsetCode?: boolean;
          replaces?: string;
        },
      ) => {
        if (Boolean(o.serverCode) === Boolean(o.handsetCode))
          throw invalidArgument("give either --server-code or --handset-code");
        const token = resolveAdminToken(o);
        await withPhoneApp(o, async (app, config) => {
          const admin = adminClient(config.server, token);
          try {
            const handset = new SimulatedMessagingHandset(app, new OutboxLine(admin, config.number));
            const options = o.replaces === undefined ? {} : { replaces: o.replaces };
            const handsetId = o.serverCode
              ? await handset.registerByServerCode(o.deviceType, options)
              : await handset.registerByHandsetCode(o.deviceType, options);
            const variant = o.serverCode ? "server_otp" : "handset_otp";
            if (o.json) return print({ handsetId, number: config.number, deviceType: o.deviceType, variant });
            say(
              `registered ${handsetId} for ${config.number} (${o.deviceType}) by ${
                o.serverCode ? "the code the server texted" : "the code this phone texted"
              }`,
            );
          } finally {
            admin.close();
          }
        });
      },
    );

  withPhone(
    phone
      .command("inbox")
      .description("pull the messages sealed to this phone, decrypt and print them, acknowledge them"),
  )
    .option("--all", "also the messages acknowledged before and still held")
    .option("--read", "send read receipts as well")
    .option("--save-dir <dir>", "write attachments there, as <message id>")
    .action(async (o: PhoneOptions & { all?: boolean; read?: boolean; saveDir?: string }) =>
      withPhoneApp(o, async (app, config) => {
        requireRegistered(app, config);
        const { messages, refused } = await app.pull(o.all ? { all: true } : {});
        const saved: Record<string, string> = {};
        for (const m of messages) {
          if (m.state === "pending") await app.ack(m.id);
          if (o.read && m.state !== "read") await app.read(m.id);
          if (o.saveDir && m.body.type === "attachment") {
            const dir = resolve(o.saveDir);
            await mkdir(dir, { recursive: true, mode: 0o700 });
            saved[m.id] = join(dir, m.id);
            await writeFile(saved[m.id]!, fromBase64url(m.body.data, "data"), {
              flag: "wx",
              mode: 0o600,
            }).catch((e: NodeJS.ErrnoException) => {
              if (e.code !== "EEXIST") throw e;
              throw new HandsafeError(
                "cli.file_exists",
                `${saved[m.id]} exists already; nothing was replaced`,
                {
                  status: 0,
                },
              );
            });
          }
        }
        if (o.json) return print({ messages, refused, saved });
        if (messages.length === 0 && refused.length === 0) say("no messages");
        for (const m of messages) {
          say(describeMessage(m));
          if (saved[m.id]) say(`  saved to ${saved[m.id]}`);
        }
        for (const r of refused) say(`message ${r.id} refused: ${r.code} (it does not open for this phone)`);
      }),
    );

  withPhone(phone.command("reply").description("reply to a message (its sender reads it with its API key)"))
    .requiredOption("--id <id>", "message id (msg_…)")
    .requiredOption("--text <text>", "the reply")
    .action(async (o: PhoneOptions & { id: string; text: string }) =>
      withPhoneApp(o, async (app, config) => {
        requireRegistered(app, config);
        const reply = await app.reply(o.id, { type: "text", text: o.text });
        if (o.json) return print(reply);
        say(`reply ${reply.id} to ${o.id} sent`);
      }),
    );
}

export function registerMessagingCommands(program: Command): void {
  registerSenderAdminCommands(program);
  registerSendCommands(program);
  registerPhoneCommands(program);
}
