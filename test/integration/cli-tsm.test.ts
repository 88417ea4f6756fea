/**
 * Trust-zone containers from the command line, as a carrier, a service manager and a handset run it:
 * real processes, a real server. A bank registers (its keys in a folder keystore), the carrier
 * validates it and issues a token for a zone it personalised straight into a simulated zone folder;
 * the bank derives its sub-key, stores and reads a package through the relay while the zone folder
 * syncs; token-status spends nothing; an unvalidated (then rejected) manager gets no token.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { handsafe } from "../helpers/cli.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

async function ok(args: string[], env: Record<string, string>): Promise<string> {
  const r = await handsafe(args, env);
  expect(r.stderr.replace(/^warning: .*\n/gm, ""), `handsafe ${args.join(" ")}`).toBe("");
  expect(r.code).toBe(0);
  return r.stdout;
}

const match = (re: RegExp, text: string): string => {
  const m = re.exec(text);
  expect(m, `${re} in:\n${text}`).not.toBeNull();
  return m![1]!;
};

describe("handsafe tsm … against a running server", () => {
  let t: TestServer;
  let work: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    t = await startTestServer("sqlite");
    work = mkdtempSync(join(tmpdir(), "handsafe-cli-tsm-"));
    env = {
      HANDSAFE_URL: t.server.url,
      HANDSAFE_PIN: t.server.pin,
      HANDSAFE_ADMIN_TOKEN: t.server.adminToken!,
      HANDSAFE_HANDSET_PASSPHRASE: "a long keystore passphrase",
    };
  }, 30_000);
  afterAll(async () => {
    await t?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it("register → validate → token → sub-key → put/get through the relay and a zone folder", async () => {
    const bankDir = join(work, "bank");
    const shadyDir = join(work, "shady");
    const zoneDir = join(work, "zone");
    const [bankOut, shadyOut, zoneOut] = await Promise.all([
      ok(
        [
          "tsm",
          "register",
          "--dir",
          bankDir,
          "--name",
          "Bank",
          "--identification",
          "BANK-001",
          "--memory",
          "65536",
          "--app",
          `bank-wallet:${"ab".repeat(32)}`,
        ],
        env,
      ),
      ok(["tsm", "register", "--dir", shadyDir, "--name", "Shady", "--identification", "SH-1"], env),
      ok(["tsm", "zone-create", "--user-info", "alice", "--containers", "4", "--zone-dir", zoneDir], env),
    ]);
    const bank = match(/^manager (mgr_[\w-]+) "Bank": pending$/m, bankOut);
    const shady = match(/^manager (mgr_[\w-]+) "Shady": pending$/m, shadyOut);
    const zoneId = match(/^zone (\S+) epoch 1 personalised for "alice"$/m, zoneOut);
    // Nothing secret outside the keystore.
    const config = readFileSync(join(bankDir, "manager.json"), "utf8");
    expect(config).not.toMatch(/hs_tsm_/);
    expect(JSON.parse(config)).toMatchObject({ managerId: bank });

    const refusedCall = ["tsm", "token", "--manager", shady, "--zone", zoneId, "--count", "1"];
    const [listed, refused] = await Promise.all([ok(["tsm", "managers"], env), handsafe(refusedCall, env)]);
    expect(listed).toMatch(new RegExp(`^${bank} +pending +"Bank"`, "m"));
    expect(listed).toMatch(new RegExp(`^${shady} +pending +"Shady"`, "m"));
    // The unvalidated manager gets no token: its code, a non-zero exit, no stack.
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/^error \[tsm\.manager_not_validated\]: /m);
    expect(refused.stderr).not.toMatch(/\n\s+at /);
    const [validated] = await Promise.all([
      ok(["tsm", "validate", bank], env),
      ok(["tsm", "reject", shady, "--reason", "no certification"], env),
    ]);
    expect(validated).toMatch(`manager ${bank}: validated`);
    const [rejected, issued] = await Promise.all([
      handsafe(refusedCall, env),
      ok(
        [
          "tsm",
          "token",
          "--manager",
          bank,
          "--zone",
          zoneId,
          "--count",
          "2",
          "--max-uses",
          "1",
          "--expires",
          "1d",
        ],
        env,
      ),
    ]);
    expect(rejected.code).not.toBe(0);
    expect(rejected.stderr).toMatch(/^error \[tsm\.manager_rejected\]: /m);
    const jti = match(/^token (tok_[\w-]+) for /m, issued);
    expect(issued).toMatch(/containers 0, 1, 1 use, expires /);
    const token = match(/^ {2}token: (\S+)$/m, issued);

    // token-status spends nothing, however often it is asked.
    const bankEnv = ["--dir", bankDir];
    const status = () => ok(["tsm", "token-status", ...bankEnv, jti], env);
    for (const s of await Promise.all([status(), status()])) expect(s).toMatch(/: 1 of 1 uses left/);
    const sub = await ok(["tsm", "subkey", ...bankEnv, "--token", token], env);
    expect(sub).toMatch(new RegExp(`^sub-key for ${jti}: zone ${zoneId} epoch 1, containers 0, 1`, "m"));
    const sim = ["tsm", "zone-sim", "--dir", zoneDir];
    const [after, spent, synced] = await Promise.all([
      status(),
      handsafe(["tsm", "subkey", ...bankEnv, "--token", token], env),
      ok([...sim, "sync"], env),
    ]);
    expect(after).toMatch(/: 0 of 1 uses left/);
    expect(spent.code).not.toBe(0);
    expect(spent.stderr).toMatch(/^error \[token\.exhausted\]/m);
    expect(synced).toMatch(/1 signals applied \(bind\)/);

    const target = ["--zone", zoneId, "--container", "0", "--name", "card"];
    const put = await ok(["tsm", "put", ...bankEnv, ...target, "--text", "PAN 4111 1111"], env);
    const putId = match(/^relay (rly_[\w-]+) queued: put "card" container 0/m, put);
    expect(await ok([...sim, "sync"], env)).toMatch(new RegExp(`${putId} put container 0: done`));
    const get = await ok(["tsm", "get", ...bankEnv, ...target], env);
    const getId = match(/^relay (rly_[\w-]+) queued: get/m, get);
    await ok([...sim, "sync"], env);
    const [read, shown, map] = await Promise.all([
      ok(["tsm", "relay", ...bankEnv, getId], env),
      ok([...sim, "show"], env),
      ok(["tsm", "zone", zoneId], env),
    ]);
    expect(read).toMatch(/^ {2}package: "PAN 4111 1111"$/m);
    // The zone folder keeps only sealed records; the carrier's map shows the occupant and sizes.
    expect(shown).toMatch(new RegExp(`^ +0 +bound +${bank} .* 1 packages`, "m"));
    expect(map).toMatch(new RegExp(`^ +0 +bound +Bank \\(${bank}\\)`, "m"));
    expect(map).toMatch(/^ +2 +free /m);
    expect(map).toMatch(/tsm\.token_issued/);
  }, 120_000);
});
