/** The SDK bundles for a browser: no node:* imports, the noble backend chosen, and it runs. */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "vite";
import { afterAll, describe, expect, it } from "vitest";

describe("the handset SDK in a browser bundle", () => {
  const out = mkdtempSync(join(tmpdir(), "handsafe-sdk-"));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it("builds for the browser without node:* modules and selects the web crypto backend", async () => {
    await build({
      configFile: false,
      logLevel: "silent",
      root: join(import.meta.dirname, ".."),
      resolve: { conditions: ["browser", "module", "import", "default"] },
      build: {
        outDir: out,
        emptyOutDir: true,
        minify: false,
        lib: {
          entry: join(import.meta.dirname, "../src/sdk/browser.ts"),
          formats: ["es"],
          fileName: "handsafe-sdk",
        },
        rollupOptions: { external: [] },
      },
    });
    const code = readFileSync(join(out, "handsafe-sdk.js"), "utf8");
    expect(code).not.toMatch(/from\s+["']node:/);
    expect(code).not.toMatch(/require\(["']node:/);
    expect(code).toMatch(/name:\s*"web"/);
    const sdk = (await import(join(out, "handsafe-sdk.js"))) as typeof import("../src/sdk/browser.ts");
    expect(sdk.cryptoBackend.name).toBe("web");
    expect(sdk.ACTIVATION_CONTENT_TYPE).toBe("application/vnd.handsafe.activation+json");
  });
});
