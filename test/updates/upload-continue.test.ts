/**
 * Uploads wait for the server's go-ahead (Expect: 100-continue, RFC 9110 §10.1.1): a refused upload
 * is refused before its body travels, with the server's own code — not a broken pipe halfway.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { uploadPackage } from "../../src/cli/updates.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

describe("package uploads and 100-continue", () => {
  let t: TestServer;
  const dir = mkdtempSync(join(tmpdir(), "handsafe-continue-"));
  const big = join(dir, "big.img");
  beforeAll(async () => {
    t = await startTestServer("sqlite");
    writeFileSync(big, new Uint8Array(8 << 20).fill(7));
    await t.admin.post("/v1/admin/devices/batches", [
      { model: "HS-CONT", hardware_id: "A1B2C3D4", firmware_version: "1.0.0" },
    ]);
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("an 8 MiB upload for an unknown model answers updates.unknown_model", async () => {
    const server = { url: t.server.url, pin: t.server.pin };
    await expect(
      uploadPackage(server, t.server.adminToken!, big, { version: "1.0.0", models: ["NO-SUCH"] }),
    ).rejects.toMatchObject({ code: "updates.unknown_model", status: 422 });
  });

  it("an accepted upload streams after the go-ahead", async () => {
    const sent: number[] = [];
    const pkg = await uploadPackage(
      { url: t.server.url, pin: t.server.pin },
      t.server.adminToken!,
      big,
      { version: "1.0.0", models: ["HS-CONT"] },
      (n) => sent.push(n),
    );
    expect(pkg.plaintextLength).toBe(8 << 20);
    expect(sent.at(-1)).toBe(8 << 20);
  });

  it("a client that does not ask for 100-continue is served as before", async () => {
    const url = new URL(`${t.server.url}/v1/admin/updates/packages?version=1.0.1&models=HS-CONT`);
    const body = new Uint8Array(70_000).fill(9);
    const status = await new Promise<number>((resolve, reject) => {
      const req = https.request(
        url,
        {
          method: "POST",
          rejectUnauthorized: false,
          headers: {
            authorization: `Bearer ${t.server.adminToken}`,
            "content-type": "application/octet-stream",
            "content-length": String(body.length),
          },
        },
        (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        },
      );
      req.on("error", reject);
      req.end(Buffer.from(body));
    });
    expect(status).toBe(201);
  });
});
