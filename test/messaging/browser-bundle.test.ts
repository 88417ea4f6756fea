import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNodeTransport } from "../../src/handset/node-transport.ts";
import { type BrowserBundle, buildBrowserBundle, hasNodeImports } from "../helpers/browser-bundle.ts";
import { type MessagingHarness, startMessagingServer } from "./harness.ts";

type Bundle = typeof import("./browser-entry.ts");

describe("the messaging SDK in a browser bundle", () => {
  let bundle: BrowserBundle<Bundle> | undefined;
  let t: MessagingHarness;
  let sdk: Bundle;
  beforeAll(async () => {
    bundle = await buildBrowserBundle<Bundle>(join(import.meta.dirname, "browser-entry.ts"), "messaging-sdk");
    sdk = bundle.module;
    t = await startMessagingServer("sqlite");
  }, 120_000);
  afterAll(async () => {
    await t?.close();
    bundle?.remove();
  });

  it("has no node:* import and runs on the web backend", () => {
    const code = bundle!.code;
    expect(hasNodeImports(code)).toBe(false);
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
