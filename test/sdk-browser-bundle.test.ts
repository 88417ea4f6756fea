/** The SDK bundles for a browser: no node:* imports, the noble backend chosen, and it runs. */
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type BrowserBundle, buildBrowserBundle, hasNodeImports } from "./helpers/browser-bundle.ts";

type Sdk = typeof import("../src/sdk/browser.ts");

describe("the handset SDK in a browser bundle", () => {
  let bundle: BrowserBundle<Sdk> | undefined;
  afterAll(() => bundle?.remove());

  it("builds for the browser without node:* modules and selects the web crypto backend", async () => {
    bundle = await buildBrowserBundle<Sdk>(
      join(import.meta.dirname, "../src/sdk/browser.ts"),
      "handsafe-sdk",
    );
    expect(hasNodeImports(bundle.code)).toBe(false);
    expect(bundle.code).toMatch(/name:\s*"web"/);
    expect(bundle.module.cryptoBackend.name).toBe("web");
    expect(bundle.module.ACTIVATION_CONTENT_TYPE).toBe("application/vnd.handsafe.activation+json");
  });
});
