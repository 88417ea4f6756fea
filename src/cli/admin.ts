/** `handsafe admin …`: the operator's side, over the admin API with the admin token. */
import type { Command } from "commander";
import { HandsafeError } from "../core/errors.ts";
import { type AdminOptions, print, withAdmin, withServer } from "./admin-command.ts";

function parseArgs(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const i = p.indexOf("=");
    if (i <= 0) throw new HandsafeError("cli.invalid_argument", `--arg wants key=value, got ${p}`);
    out[p.slice(0, i)] = p.slice(i + 1);
  }
  return out;
}

export function registerAdminCommands(program: Command): void {
  const admin = program
    .command("admin")
    .description("administer a handsafe server (users, services, activations, audit)");

  withServer(admin.command("user-create").description("create a user account"))
    .requiredOption("--email <email>")
    .requiredOption("--password <password>")
    .option("--role <role>", "user or admin", "user")
    .action(async (o: AdminOptions & { email: string; password: string; role: string }) =>
      withAdmin(o, async (c) =>
        print((await c.post("/v1/admin/users", { email: o.email, password: o.password, role: o.role })).body),
      ),
    );

  withServer(
    admin
      .command("service-create")
      .description("create an activation-capable service with its own signing key"),
  )
    .requiredOption("--uid <uid>", "service UID, e.g. mail")
    .requiredOption("--name <name>")
    .action(async (o: AdminOptions & { uid: string; name: string }) =>
      withAdmin(o, async (c) =>
        print((await c.post("/v1/admin/services", { uid: o.uid, name: o.name })).body),
      ),
    );

  withServer(admin.command("services").description("list services and their public keys")).action(
    async (o: AdminOptions) => withAdmin(o, async (c) => print((await c.get("/v1/services")).body)),
  );

  withServer(
    admin
      .command("activate")
      .description("activate a service on behalf of a user (pending until the handset runs)"),
  )
    .requiredOption("--email <email>")
    .requiredOption("--handset <id>")
    .requiredOption("--service <uid>")
    .action(async (o: AdminOptions & { email: string; handset: string; service: string }) =>
      withAdmin(o, async (c) =>
        print(
          (
            await c.post("/v1/admin/activations", {
              email: o.email,
              handsetId: o.handset,
              serviceUid: o.service,
            })
          ).body,
        ),
      ),
    );

  withServer(
    admin.command("pregenerate").description("pre-generate activation secrets for a user and service"),
  )
    .requiredOption("--email <email>")
    .requiredOption("--service <uid>")
    .option("--count <n>", "how many", "5")
    .action(async (o: AdminOptions & { email: string; service: string; count: string }) =>
      withAdmin(o, async (c) =>
        print(
          (
            await c.post("/v1/admin/secret-pool", {
              email: o.email,
              serviceUid: o.service,
              count: Number(o.count),
            })
          ).body,
        ),
      ),
    );

  withServer(
    admin
      .command("command")
      .description("send a command to an activated handset (authenticated by the per-service key)"),
  )
    .requiredOption("--service <uid>")
    .requiredOption("--handset <id>")
    .requiredOption("--name <name>", "e.g. sync-contacts")
    .option("--arg <key=value...>", "command arguments", [])
    .action(async (o: AdminOptions & { service: string; handset: string; name: string; arg: string[] }) =>
      withAdmin(o, async (c) =>
        print(
          (
            await c.post(`/v1/admin/services/${encodeURIComponent(o.service)}/commands`, {
              handsetId: o.handset,
              name: o.name,
              args: parseArgs(o.arg),
            })
          ).body,
        ),
      ),
    );

  withServer(admin.command("keys").description("the services a handset holds keys for (fingerprints only)"))
    .requiredOption("--handset <id>")
    .action(async (o: AdminOptions & { handset: string }) =>
      withAdmin(o, async (c) =>
        print((await c.get(`/v1/handsets/${encodeURIComponent(o.handset)}/keys`)).body),
      ),
    );

  withServer(admin.command("revoke").description("revoke one service's key on one handset"))
    .requiredOption("--handset <id>")
    .requiredOption("--service <uid>")
    .action(async (o: AdminOptions & { handset: string; service: string }) =>
      withAdmin(o, async (c) => {
        await c.delete(`/v1/handsets/${encodeURIComponent(o.handset)}/keys/${encodeURIComponent(o.service)}`);
        print({ revoked: o.service, handsetId: o.handset });
      }),
    );

  withServer(admin.command("audit").description("read the audit log, or verify its hash chain"))
    .option("--verify", "verify the hash chain instead of listing")
    .option("--after <seq>", "list records after this sequence number", "0")
    .option("--limit <n>", "how many records", "50")
    .action(async (o: AdminOptions & { verify?: boolean; after: string; limit: string }) =>
      withAdmin(o, async (c) =>
        print(
          o.verify
            ? (await c.get("/v1/admin/audit/verify")).body
            : (await c.get(`/v1/admin/audit?after=${Number(o.after)}&limit=${Number(o.limit)}`)).body,
        ),
      ),
    );
}
