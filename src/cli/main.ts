/**
 * `handsafe …` — the command line. Each command is a thin shell over the SDK or the admin API;
 * errors print their stable code and exit non-zero, never a stack trace.
 */
import { Command } from "commander";
import { isHandsafeError } from "../core/errors.ts";
import { registerAdminCommands } from "./admin.ts";
import { registerBackupCommands } from "./backup.ts";
import { registerCampaignCommands } from "./campaigns.ts";
import { runDemo } from "./demo.ts";
import { registerDeviceCommands } from "./device.ts";
import { registerDeviceAdminCommands } from "./devices.ts";
import { registerHandsetCommands } from "./handset.ts";
import { registerMessagingCommands } from "./messaging.ts";
import { runServer } from "./server.ts";
import { registerTsmCommands } from "./tsm.ts";
import { registerUpdateCommands } from "./updates.ts";

const program = new Command();
program
  .name("handsafe")
  .description("Secures what passes between mobile handsets and the servers that manage them.")
  .version("0.1.0")
  // The root's --version only before a command: `admin package-upload --version 1.2.0` and
  // `device init --version 1.0.0` mean the firmware's version, not the CLI's.
  .enablePositionalOptions()
  .showHelpAfterError();

program
  .command("server")
  .description(
    "run the handsafe HTTPS server (configured by HANDSAFE_* variables; see docs/configuration.md)",
  )
  .action(async () => runServer());

program
  .command("demo")
  .description(
    "every capability end to end, narrated: activation (two services on a simulated handset, one revoked), a staged update campaign to a batch of simulated handsets, secure messages to a number that registers on demand",
  )
  .option("--url <url>", "a running server (default: a throwaway embedded server of its own)")
  .option("--pin <pin>", "the server's SPKI SHA-256 pin (base64url)")
  .option(
    "--token <token>",
    "admin token of that server (default: HANDSAFE_ADMIN_TOKEN or <data dir>/admin.token)",
  )
  .option("--only <part>", "run one part: activation, updates, messaging, trustzone or backup")
  .option("--devices <n>", "handsets in the update demo's batch", "6")
  .action(async (options: { url?: string; pin?: string; token?: string; only?: string; devices: string }) =>
    runDemo(options),
  );

registerAdminCommands(program);
registerHandsetCommands(program);
registerUpdateCommands(program);
registerCampaignCommands(program);
registerDeviceAdminCommands(program);
registerDeviceCommands(program);
registerMessagingCommands(program);
registerTsmCommands(program);
registerBackupCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (isHandsafeError(e)) {
    process.stderr.write(`error [${e.code}]: ${e.message}\n`);
  } else {
    process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
    if (process.env["HANDSAFE_DEBUG"]) console.error(e);
  }
  process.exitCode = 1;
}
