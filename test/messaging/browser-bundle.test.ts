/**
 * The messaging SDK in a browser bundle: no node:* module in its import graph, the noble crypto
 * backend chosen — and that bundle registers a handset and opens a message from our real server
 * (over a transport handed in from outside, as a page would hand in fetch).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "vite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNodeTransport } from "../../src/handset/node-transport.ts";
import { type MessagingHarness, startMessagingServer } from "./harness.ts";

type Bundle = typeof import("./browser-entry.ts");

describe("the messaging SDK in a browser bundle", () => {
  const out = mkdtempSync(join(tmpdir(), "handsafe-msg-sdk-"));
  let t: MessagingHarness;
  let sdk: Bundle;
  beforeAll(async () => {
    await build({
      configFile: false,
      logLevel: "silent",
      root: join(import.meta.dirname, "../.."),
      resolve: { conditions: ["browser", "module", "import", "default"] },
      build: {
        outDir: out,
        emptyOutDir: true,
        minify: false,
        lib: {
          entry: join(import.meta.dirname, "browser-entry.ts"),
          formats: ["es"],
          fileName: "messaging-sdk",
        },
        rollupOptions: { external: [] },
      },
    });
    sdk = (await import(join(out, "messaging-sdk.js"))) as Bundle;
    t = await startMessagingServer("sqlite");
  }, 120_000);
  afterAll(async () => {
    await t?.close();
    rmSync(out, { recursive: true, force: true });
  });

  it("has no node:* import and runs on the web backend", () => {
    const code = readFileSync(join(out, "messaging-sdk.js"), "utf8");
    expect(code).not.toMatch(/from\s+["']node:/);
    expect(code).not.toMatch(/require\(["']node:/);
    expect(sdk.cryptoBackend.name).toBe("web");
  });

  it("registers by either variant and opens a message sealed by the server", async () => {
    const transport = createNodeTransport({ pin: t.server.pin });
    try {
      const http = sdk.createHttpClient({ baseUrl: t.server.url, pin: t.server.pin, transport });
      const number = "+447911123477";
      const app = await sdk.MessagingApp.open({
        http,
        keystore: new sdk.MemoryKeystore(),
        clock: () => t.clock.ms,
      });
      const handset = new sdk.SimulatedMessagingHandset(app, new sdk.OutboxLine(t.admin, number));
      await handset.registerByHandsetCode("browser", { textFirst: false });
      const clinic = await t.sender("Clinic");
      const { body } = await clinic.http.post<{ id: string }>("/v1/messages", {
        to: number,
        body: { type: "text", text: "from the bundle" },
      });
      const { messages } = await app.pull();
      expect(messages.map((m) => [m.id, m.body])).toEqual([
        [body.id, { type: "text", text: "from the bundle" }],
      ]);
      await app.read(body.id);
      await handset.registerByServerCode("browser");
      expect(await app.fetchInbox()).toEqual([]);
    } finally {
      transport.close();
    }
  });
});
