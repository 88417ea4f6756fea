/**
 * Secure messaging from the command line, as an operator, a sender and a handset user run it: real
 * processes, a real server. A sender made by the admin sends to a number no handset has; two phones
 * in folders register for it (the server's code, their own code), decrypt the message and reply; the
 * sender reads the replies and the receipts. Errors are codes, never stacks.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { handsafe } from "../helpers/cli.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

/** Runs a command that must succeed (its stderr in the failure message otherwise). */
async function ok(args: string[], env: Record<string, string>): Promise<string> {
  const r = await handsafe(args, env);
  expect(r.stderr.replace(/^warning: .*\n/gm, ""), `handsafe ${args.join(" ")}`).toBe("");
  expect(r.code).toBe(0);
  return r.stdout;
}

/** Each test runs the CLI as a user does, a process per command (a dozen or more each). */
const CLI_TEST_MS = 90_000;

describe("handsafe admin sender-…, send and phone … against a running server", {
  timeout: CLI_TEST_MS,
}, () => {
  let t: TestServer;
  let work: string;
  let env: Record<string, string>;
  const number = "+447911123601";

  beforeAll(async () => {
    t = await startTestServer("sqlite", {
      HANDSAFE_MESSAGING_REGISTRATION_RATE_LIMIT: "0",
      HANDSAFE_SMS_PER_NUMBER_PER_HOUR: "0",
    });
    work = mkdtempSync(join(tmpdir(), "handsafe-cli-messaging-"));
    env = {
      HANDSAFE_URL: t.server.url,
      HANDSAFE_PIN: t.server.pin,
      HANDSAFE_ADMIN_TOKEN: t.server.adminToken!,
      HANDSAFE_HANDSET_PASSPHRASE: "a long phone passphrase",
      HANDSAFE_SENDER_KEY: "",
    };
  });
  afterAll(async () => {
    await t?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it("a sender sends; two phones register, decrypt and reply; the sender sees replies and receipts", async () => {
    // The admin makes a sender: its secrets are printed once, with a warning.
    const created = await handsafe(["admin", "sender-create", "--name", "Clinic"], env);
    expect(created.code).toBe(0);
    expect(created.stderr).toMatch(/^warning: the API key and the webhook secret are shown this once/);
    const senderId = /^sender (snd_[\w-]{16}) "Clinic"$/m.exec(created.stdout)?.[1];
    const apiKey = /api key: +(hs_sk_[\w-]{43})$/m.exec(created.stdout)?.[1];
    expect(senderId).toBeDefined();
    expect(apiKey).toBeDefined();
    expect(created.stdout).toMatch(/webhook secret: +[\w-]{43}$/m);
    const sender = { ...env, HANDSAFE_SENDER_KEY: apiKey! };

    // A message to a number with no handset waits for one.
    const sent = await ok(["send", "--to", number, "--text", "Your results are ready"], sender);
    const messageId = /^message (msg_[\w-]{25}): waiting_registration$/m.exec(sent)?.[1];
    expect(messageId).toBeDefined();

    // Two phones for the number: one registers by the code the server texts, one by its own code.
    const phone = join(work, "phone");
    const tablet = join(work, "tablet");
    await Promise.all([
      ok(["phone", "init", "--dir", phone, "--number", "+44 7911 123601"], env),
      ok(["phone", "init", "--dir", tablet, "--number", number], env),
    ]);
    expect(JSON.parse(readFileSync(join(phone, "phone.json"), "utf8"))).toMatchObject({ number });
    const [phoneReg, tabletReg] = await Promise.all([
      ok(["phone", "register", "--dir", phone, "--device-type", "pixel-9", "--server-code"], env),
      ok(["phone", "register", "--dir", tablet, "--device-type", "tablet", "--handset-code"], env),
    ]);
    const phoneId =
      /^registered (mh_[\w-]{16}) for \+447911123601 \(pixel-9\) by the code the server texted$/m.exec(
        phoneReg,
      )?.[1];
    const tabletId =
      /^registered (mh_[\w-]{16}) for \+447911123601 \(tablet\) by the code this phone texted$/m.exec(
        tabletReg,
      )?.[1];
    expect(phoneId).toBeDefined();
    expect(tabletId).toBeDefined();

    // Each decrypts the message: the phone with a read receipt, the tablet acknowledging only.
    const [phoneInbox, tabletInbox] = await Promise.all([
      ok(["phone", "inbox", "--dir", phone, "--read"], env),
      ok(["phone", "inbox", "--dir", tablet], env),
    ]);
    const line = new RegExp(
      `^message ${messageId} from "Clinic" \\(${senderId}\\) at \\S+: "Your results are ready"$`,
      "m",
    );
    expect(phoneInbox).toMatch(line);
    expect(tabletInbox).toMatch(line);

    const replied = await ok(
      ["phone", "reply", "--dir", phone, "--id", messageId!, "--text", "Thank you"],
      env,
    );
    const replyId = /^reply (rpl_[\w-]{16}) to msg_[\w-]{25} sent$/m.exec(replied)?.[1];
    expect(replyId).toBeDefined();

    const [replies, status, alias] = await Promise.all([
      ok(["send", "replies", "--id", messageId!], sender),
      ok(["send", "status", "--id", messageId!], sender),
      ok(["message-status", "--id", messageId!, "--json"], sender),
    ]);
    expect(replies).toMatch(new RegExp(`^reply ${replyId} from ${phoneId} at \\S+: "Thank you"$`, "m"));
    expect(status).toMatch(new RegExp(`^message ${messageId} to \\+447911123601: read$`, "m"));
    expect(status).toMatch(/^ {2}created \S+, expires \S+, delivered \S+, read \S+$/m);
    expect(status).toMatch(
      new RegExp(`^  handset ${phoneId} \\(pixel-9\\): read, delivered \\S+, read \\S+$`, "m"),
    );
    expect(status).toMatch(
      new RegExp(`^  handset ${tabletId} \\(tablet\\): delivered, delivered \\S+$`, "m"),
    );
    expect(status).toMatch(/^ {2}replies: 1$/m);
    const view = JSON.parse(alias) as {
      status: string;
      deliveries: Array<{ handsetId: string; state: string }>;
    };
    expect(view.status).toBe("read");
    expect(view.deliveries.map((d) => [d.handsetId, d.state]).sort()).toEqual(
      [
        [phoneId, "read"],
        [tabletId, "delivered"],
      ].sort(),
    );
  });

  it("errors print a stable code and exit non-zero, never a stack", async () => {
    const created = await ok(["admin", "sender-create", "--name", "Bank", "--json"], env);
    const { id, apiKey } = JSON.parse(created) as { id: string; apiKey: string };
    const sender = { ...env, HANDSAFE_SENDER_KEY: apiKey };
    const [badTo, badPhone, noKey] = await Promise.all([
      handsafe(["send", "--to", "12", "--text", "hi"], sender),
      handsafe(["phone", "init", "--dir", join(work, "bad"), "--number", "not a number"], env),
      handsafe(["send", "--to", number, "--text", "hi"], env),
    ]);
    for (const r of [badTo, badPhone, noKey]) {
      expect(r.code).not.toBe(0);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    expect(badTo.stderr).toMatch(/^error \[phone\.invalid\]: /);
    expect(badPhone.stderr).toMatch(/^error \[phone\.invalid\]: /);
    expect(noKey.stderr).toMatch(/^error \[cli\.no_sender_key\]: /);

    expect(await ok(["admin", "sender-disable", "--id", id], env)).toBe(`sender ${id} disabled\n`);
    const [disabled, listedAfter] = await Promise.all([
      handsafe(["send", "--to", number, "--text", "hi"], sender),
      ok(["admin", "senders"], env),
    ]);
    expect(disabled.code).not.toBe(0);
    expect(disabled.stderr).toMatch(/^error \[auth\.unauthenticated\]: /);
    expect(listedAfter).toMatch(new RegExp(`^${id} {2}disabled "Bank"`, "m"));
  });
});
