/**
 * Provisioning and a managed handset from the command line, as an operator and a device maker run
 * them: real processes, a real server. A batch with one bad row, a device made from its key file,
 * a dynamic key by SMS, a package and a campaign, the device updating into its other slot.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { handsafe } from "../helpers/cli.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

/** A Luhn-valid IMEI. */
function imei(): string {
  const digits = Array.from(randomBytes(14), (b) => b % 10);
  let sum = 0;
  for (let i = 0; i < 14; i++) {
    let d = digits[13 - i]!;
    if (i % 2 === 0) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return `${digits.join("")}${(10 - (sum % 10)) % 10}`;
}

const msisdn = () => `+49151${Array.from(randomBytes(8), (b) => b % 10).join("")}`;

describe("handsafe admin devices-… and handset device … against a running server", () => {
  let t: TestServer;
  let work: string;
  let env: Record<string, string>;
  const model = `HS-CLI-${randomBytes(3).toString("hex").toUpperCase()}`;
  const numbers = [msisdn(), msisdn()];
  let deviceId: string;
  let keyDir: string;
  let deviceDir: string;

  beforeAll(async () => {
    t = await startTestServer("sqlite");
    work = mkdtempSync(join(tmpdir(), "handsafe-cli-devices-"));
    keyDir = join(work, "keys");
    deviceDir = join(work, "device");
    env = {
      HANDSAFE_URL: t.server.url,
      HANDSAFE_PIN: t.server.pin,
      HANDSAFE_ADMIN_TOKEN: t.server.adminToken!,
      HANDSAFE_HANDSET_PASSPHRASE: "a long device passphrase",
    };
  });
  afterAll(async () => {
    await t?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it("imports a CSV batch: key files 0600 for the good rows, the bad row reported with its line", async () => {
    const csv = join(work, "batch.csv");
    writeFileSync(
      csv,
      [
        "model,hardware_id,firmware_version,msisdn",
        `${model},${imei()},1.0.0,${numbers[0]}`,
        `${model},not-an-imei,1.0.0,`,
        `${model},${imei()},1.0.0,${numbers[1]}`,
        "",
      ].join("\n"),
    );
    const res = await handsafe(["admin", "devices-import", "--file", csv, "--key-dir", keyDir], env);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/accepted 2, rejected 1/);
    expect(res.stdout).toMatch(/line 3 rejected: provisioning\.invalid_hardware_id/);
    expect(res.stderr).toMatch(/^warning: 1 row\(s\) rejected, listed with their lines; 2 imported$/m);
    const files = readdirSync(keyDir).sort();
    expect(files).toHaveLength(2);
    expect(statSync(keyDir).mode & 0o777).toBe(0o700);
    for (const f of files) {
      expect(f).toMatch(/^dev_[A-Za-z0-9_-]{16}\.json$/);
      expect(statSync(join(keyDir, f)).mode & 0o777).toBe(0o600);
    }
    // The key file of the device whose number is numbers[0], the first row.
    const listed = JSON.parse(
      (await handsafe(["admin", "devices", "--model", model, "--json"], env)).stdout,
    ) as Array<{
      id: string;
      msisdn: string;
    }>;
    expect(listed).toHaveLength(2);
    deviceId = listed.find((d) => d.msisdn === numbers[0])!.id;
    expect(files).toContain(`${deviceId}.json`);
  });

  it("makes a device from its key file: the key is only inside the encrypted keystore", async () => {
    const keyFile = join(keyDir, `${deviceId}.json`);
    const [init, missing] = await Promise.all([
      handsafe(["device", "init", "--dir", deviceDir, "--key-file", keyFile, "--msisdn", numbers[0]!], env),
      handsafe(
        [
          "device",
          "init",
          "--dir",
          join(work, "other"),
          "--key-file",
          join(work, "nope.json"),
          "--msisdn",
          numbers[1]!,
        ],
        env,
      ),
    ]);
    expect(init.stderr).toBe("");
    expect(init.code).toBe(0);
    expect(init.stdout).toMatch(new RegExp(`device ${deviceId} \\(${model}\\)`));
    expect(init.stdout).toMatch(/slot a: 1\.0\.0, 65536 bytes \(generated\)/);
    // A missing key file: a stable code, non-zero, no stack trace.
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/^error \[cli\.file_not_found\]/);
    expect(missing.stderr).not.toMatch(/\n\s+at /);

    const { staticKey } = JSON.parse(readFileSync(keyFile, "utf8")) as { staticKey: string };
    const config = JSON.parse(readFileSync(join(deviceDir, "device.json"), "utf8")) as Record<
      string,
      unknown
    >;
    expect(config).toMatchObject({ deviceId, model, msisdn: numbers[0], server: { url: t.server.url } });
    const everything = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
        e.isDirectory() ? everything(join(dir, e.name)) : [join(dir, e.name)],
      );
    for (const f of everything(deviceDir)) {
      const bytes = readFileSync(f);
      expect(bytes.includes(staticKey), f).toBe(false);
      expect(bytes.includes(Buffer.from(staticKey, "base64url")), f).toBe(false);
    }
  });

  it("an issued dynamic key arrives by SMS and is stored; the same text is not read twice", async () => {
    const issued = await handsafe(
      ["admin", "dynamic-key", "--device", deviceId, "--max-uses", "50", "--ttl", "3600"],
      env,
    );
    expect(issued.code).toBe(0);
    const keyId = /issued (dk_\S+) to/.exec(issued.stdout)?.[1];
    expect(keyId).toBeDefined();
    const texts = await handsafe(["device", "texts", "--dir", deviceDir], env);
    expect(texts.code).toBe(0);
    expect(texts.stdout).toMatch(new RegExp(`management key stored \\(${keyId}, notification 1\\)`));
    expect(texts.stdout).not.toMatch(/HSM1/);
    const again = await handsafe(["device", "texts", "--dir", deviceDir], env);
    expect(again.stdout).toBe("no new texts\n");
  });

  it("a campaign to the device: `device update` installs into slot b; status and campaign-status agree", async () => {
    const image = join(work, "firmware-1.1.0.img");
    writeFileSync(image, Buffer.concat([Buffer.from("FIRMWARE 1.1.0\n"), randomBytes(200_000)]));
    const upload = await handsafe(
      ["admin", "package-upload", "--file", image, "--version", "1.1.0", "--models", model],
      env,
    );
    expect(upload.code).toBe(0);
    const pkg = JSON.parse(upload.stdout) as { id: string };
    const created = await handsafe(
      [
        "admin",
        "campaign-create",
        "--name",
        "cli 1.1.0",
        "--package",
        pkg.id,
        "--devices",
        deviceId,
        "--stages",
        "100",
      ],
      env,
    );
    expect(created.code).toBe(0);
    const campaignId = (JSON.parse(created.stdout) as { id: string }).id;
    expect((await handsafe(["admin", "campaign-start", "--id", campaignId], env)).code).toBe(0);

    const update = await handsafe(["device", "update", "--dir", deviceDir], env);
    expect(update.stderr).toMatch(/update \[#+\] 100\.0%\s+installed/);
    expect(update.stdout).toMatch(/management key stored/);
    expect(update.stdout).toMatch(new RegExp(`installed 1\\.1\\.0 in slot b \\(campaign ${campaignId}\\)`));
    expect(update.code).toBe(0);

    const [status, campaign, device] = await Promise.all([
      handsafe(["device", "status", "--dir", deviceDir, "--json"], env),
      handsafe(["admin", "campaign-status", "--id", campaignId], env),
      handsafe(["admin", "device", "--device", deviceId, "--json"], env),
    ]);
    const s = JSON.parse(status.stdout) as {
      deviceId: string;
      activeSlot: string;
      slots: Record<string, { version: string }>;
      dynamicKey: { keyId: string; usesLeft: number; expiresAt: number };
    };
    expect(s).toMatchObject({
      deviceId,
      activeSlot: "b",
      slots: { a: { version: "1.0.0" }, b: { version: "1.1.0" } },
    });
    expect(status.stdout).not.toMatch(/"key"|staticKey/);
    const registry = JSON.parse(device.stdout) as {
      dynamicKeys: Array<{ keyId: string; state: string; uses: number; maxUses: number }>;
    };
    const active = registry.dynamicKeys.find((k) => k.state === "active")!;
    expect(s.dynamicKey.keyId).toBe(active.keyId);
    expect(s.dynamicKey.usesLeft).toBe(active.maxUses - active.uses);
    expect(campaign.code).toBe(0);
    expect(campaign.stdout).toMatch(/completed/);
    expect(campaign.stdout).toMatch(/100% done of 1 devices/);
  });
});
