/** The CLI as a user runs it: real processes, a real server, a handset keystore in a folder. */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newestSource } from "../../scripts/newest-source.mjs";
import { handsafe } from "../helpers/cli.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

/** Each test runs the CLI as a user does, a process per command (a dozen or more each). */
const CLI_TEST_MS = 90_000;
const ROOT = join(import.meta.dirname, "../..");

describe("the handsafe command (bin/handsafe.js)", { timeout: CLI_TEST_MS }, () => {
  it("runs from a bundle no older than any source, and from the sources through tsx without it", async () => {
    const bundled = await handsafe(["--version"]);
    expect(bundled).toMatchObject({ code: 0, stdout: "0.1.0\n" });
    const bundle = join(ROOT, "dist/cli/handsafe.mjs");
    expect(statSync(bundle).mtimeMs).toBeGreaterThanOrEqual(newestSource(join(ROOT, "src"), /\.ts$/));
    const fromSources = await handsafe(["--version"], { HANDSAFE_CLI_NO_BUNDLE: "1" });
    expect(fromSources).toMatchObject({ code: 0, stdout: "0.1.0\n" });
    // The same errors either way: a stable code, no stack.
    for (const env of [{}, { HANDSAFE_CLI_NO_BUNDLE: "1" }] as Array<Record<string, string>>) {
      const r = await handsafe(["handset", "services"], {
        ...env,
        HANDSAFE_HANDSET_DIR: join(ROOT, "no-such"),
      });
      expect(r.code).not.toBe(0);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });
});

describe("handsafe demo", { timeout: CLI_TEST_MS }, () => {
  it("alone: a throwaway server, two services activated with matching keys, one revoked", async () => {
    const { stdout, stderr, code } = await handsafe(["demo"]);
    expect(code).toBe(0);
    expect(stdout.match(/✓ same/g)).toHaveLength(2);
    expect(stdout).toMatch(/server: mail-\w+\s+revoked/);
    expect(stdout).toMatch(/server: contacts-\w+\s+active/);
    expect(stdout).toMatch(/audit chain verified/);
    // …then the staged update campaign to six simulated handsets, one rolling back.
    expect(stdout).toMatch(/accepted 6, rejected 1/);
    expect(stdout.match(/installed\s+running 1\.1\.0/g)).toHaveLength(5);
    expect(stdout).toMatch(/rolled_back\s+running 1\.0\.0/);
    expect(stdout).toMatch(/campaign completed: 100% done — installed 5 · rolled_back 1/);
    // The progress bar goes to stderr (a plain line per step off a terminal) and reaches 100%.
    expect(stderr).toMatch(/rollout \[#+\] 100\.0%/);
    // …then secure messaging: a number with no handset, both registration variants, a signed reply.
    expect(stdout).toMatch(/status waiting_registration/);
    expect(stdout).toMatch(/phone mh_[\w-]+ decrypts: "Your appointment/);
    expect(stdout).toMatch(/tablet mh_[\w-]+ registered/);
    expect(stdout).toMatch(/tablet decrypts: "Please bring your last ECG/);
    expect(stdout).toMatch(/webhook: a reply to msg_[\w-]+, signature verified/);
    expect(stdout).toMatch(/the clinic reads the reply: "YES"/);
  });
});

describe("handsafe admin and handset against a running server", { timeout: CLI_TEST_MS }, () => {
  let t: TestServer;
  let dir: string;
  let env: Record<string, string>;
  beforeAll(async () => {
    t = await startTestServer("sqlite");
    dir = mkdtempSync(join(tmpdir(), "handsafe-cli-"));
    env = {
      HANDSAFE_URL: t.server.url,
      HANDSAFE_PIN: t.server.pin,
      HANDSAFE_ADMIN_TOKEN: t.server.adminToken!,
      HANDSAFE_HANDSET_PASSPHRASE: "a long test passphrase",
      HANDSAFE_HANDSET_DIR: join(dir, "handset"),
    };
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("sets up, activates on the handset, sees the same fingerprint on both sides, revokes", async () => {
    expect(
      (
        await handsafe(
          ["admin", "user-create", "--email", "cli@example.org", "--password", "cli password 1"],
          env,
        )
      ).code,
    ).toBe(0);
    expect((await handsafe(["admin", "service-create", "--uid", "mail", "--name", "Mail"], env)).code).toBe(
      0,
    );
    const init = await handsafe(["handset", "init"], env);
    expect(init.code).toBe(0);
    const { handsetId } = JSON.parse(init.stdout) as { handsetId: string };
    const act = await handsafe(
      [
        "handset",
        "activate",
        "--service",
        "mail",
        "--email",
        "cli@example.org",
        "--password",
        "cli password 1",
      ],
      env,
    );
    expect(act.stderr).toBe("");
    const fingerprint = /key fingerprint (\S+)/.exec(act.stdout)?.[1];
    expect(fingerprint).toMatch(/^[0-9a-f:]+$/);
    const keys = JSON.parse(
      (await handsafe(["admin", "keys", "--handset", handsetId], env)).stdout,
    ) as Array<{ fingerprint: string }>;
    expect(keys[0]?.fingerprint).toBe(fingerprint);
    const listed = JSON.parse((await handsafe(["handset", "services"], env)).stdout) as {
      services: Array<{ fingerprint: string }>;
    };
    expect(listed.services[0]?.fingerprint).toBe(fingerprint);
    await handsafe(
      [
        "admin",
        "command",
        "--service",
        "mail",
        "--handset",
        handsetId,
        "--name",
        "sync-mail",
        "--arg",
        "folder=inbox",
      ],
      env,
    );
    const commands = JSON.parse(
      (await handsafe(["handset", "commands", "--service", "mail"], env)).stdout,
    ) as {
      accepted: Array<{ name: string; args: Record<string, string> }>;
    };
    expect(commands.accepted).toEqual([
      expect.objectContaining({ name: "sync-mail", args: { folder: "inbox" } }),
    ]);
    expect((await handsafe(["admin", "revoke", "--handset", handsetId, "--service", "mail"], env)).code).toBe(
      0,
    );
    const verify = JSON.parse((await handsafe(["admin", "audit", "--verify"], env)).stdout) as {
      ok: boolean;
    };
    expect(verify.ok).toBe(true);
  });

  it("errors print a stable code and exit non-zero, never a stack", async () => {
    const wrong = await handsafe(["handset", "services"], {
      ...env,
      HANDSAFE_HANDSET_PASSPHRASE: "not the passphrase",
    });
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/^error \[keystore\.wrong_passphrase\]/);
    const bad = await handsafe(["admin", "service-create", "--uid", "Bad UID!", "--name", "x"], env);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/^error \[activation\.invalid_service_uid\]/);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
    const missing = await handsafe(
      ["admin", "package-upload", "--file", join(dir, "no-such.img"), "--version", "1.0.0", "--models", "X"],
      env,
    );
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/^error \[cli\.file_unreadable\]: .*no-such\.img: it does not exist/);
  });
});
