/**
 * `handsafe handset …`: a simulated handset whose keystore is a folder (encrypted with a
 * passphrase from HANDSAFE_HANDSET_PASSPHRASE, --passphrase-file or a prompt).
 */
import type { Command } from "commander";
import { activate, listActivated, login, pinService, pullCommands, revoke } from "../activation/handset.ts";
import { openHandset, prompt, type ServerOptions } from "./connect.ts";

type HandsetOptions = ServerOptions & { dir: string; passphraseFile?: string };

function withHandset(cmd: Command): Command {
  return cmd
    .option(
      "--dir <dir>",
      "the handset's keystore folder",
      process.env["HANDSAFE_HANDSET_DIR"] ?? "./handset",
    )
    .option(
      "--passphrase-file <file>",
      "file holding the keystore passphrase (default: HANDSAFE_HANDSET_PASSPHRASE or a prompt)",
    )
    .option("--url <url>", "server URL (only needed once, at init)")
    .option("--pin <pin>", "server SPKI SHA-256 pin")
    .option("--data-dir <dir>", "a local server's data folder, to find its URL and pin");
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

async function credentials(o: {
  email?: string;
  password?: string;
}): Promise<{ email: string; password: string }> {
  const email = o.email ?? process.env["HANDSAFE_EMAIL"] ?? (await prompt("Email: "));
  const password = o.password ?? process.env["HANDSAFE_PASSWORD"] ?? (await prompt("Password: ", true));
  return { email, password };
}

export function registerHandsetCommands(program: Command): void {
  const handset = program.command("handset").description("a simulated handset (its keystore is a folder)");

  withHandset(handset.command("init").description("create the handset's identity and pin its server")).action(
    async (o: HandsetOptions) => {
      const h = await openHandset(o, true);
      print({ handsetId: h.id, server: h.server.url, pin: h.server.pin ?? null });
      h.close();
    },
  );

  withHandset(
    handset
      .command("activate")
      .description("sign in and activate one or more services (no secret is ever shown)"),
  )
    .option("--email <email>")
    .option("--password <password>")
    .option("--service <uid...>", "service UIDs (default: those an admin set up on your behalf)")
    .action(async (o: HandsetOptions & { email?: string; password?: string; service?: string[] }) => {
      const h = await openHandset(o);
      try {
        const session = await login(h, await credentials(o));
        const uids = o.service ?? session.pendingServices;
        if (uids.length === 0)
          process.stdout.write("nothing to activate: name --service, or have an admin set one up\n");
        for (const uid of uids) {
          const s = await activate(h, session, uid);
          process.stdout.write(`activated ${s.serviceUid}  key fingerprint ${s.fingerprint}\n`);
        }
      } finally {
        h.close();
      }
    });

  withHandset(
    handset
      .command("pin-service")
      .description("pin a service's signing key (checked against --key-id when given)"),
  )
    .requiredOption("--service <uid>")
    .option("--key-id <id>")
    .action(async (o: HandsetOptions & { service: string; keyId?: string }) => {
      const h = await openHandset(o);
      try {
        const p = await pinService(h, o.service, o.keyId ? { keyId: o.keyId } : undefined);
        print({ serviceUid: p.serviceUid, keyId: p.keyId });
      } finally {
        h.close();
      }
    });

  withHandset(handset.command("services").description("the services this handset holds keys for")).action(
    async (o: HandsetOptions) => {
      const h = await openHandset(o);
      print({ handsetId: h.id, services: await listActivated(h) });
      h.close();
    },
  );

  withHandset(handset.command("revoke").description("revoke one service (others untouched)"))
    .requiredOption("--service <uid>")
    .option("--email <email>")
    .option("--password <password>")
    .action(async (o: HandsetOptions & { service: string; email?: string; password?: string }) => {
      const h = await openHandset(o);
      try {
        await revoke(h, await login(h, await credentials(o)), o.service);
        print({ revoked: o.service });
      } finally {
        h.close();
      }
    });

  withHandset(handset.command("commands").description("pull and verify the commands a service sent"))
    .requiredOption("--service <uid>")
    .action(async (o: HandsetOptions & { service: string }) => {
      const h = await openHandset(o);
      try {
        print(await pullCommands(h, o.service));
      } finally {
        h.close();
      }
    });
}
