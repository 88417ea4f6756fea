/** The TUF code runs in a browser bundle: no node:* modules, web crypto backend, same answers. */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "vite";
import { afterAll, describe, expect, it } from "vitest";
import { at, FIRMWARE, FIRMWARE_PATH, HOUR, makeRepository, network } from "./helpers.ts";

describe("TUF in a browser bundle", () => {
  const out = mkdtempSync(join(tmpdir(), "handsafe-tuf-bundle-"));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it("bundles canonical JSON and the client for the browser, and verifies a repository", async () => {
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
          entry: join(import.meta.dirname, "../../src/updates/tuf/index.ts"),
          formats: ["es"],
          fileName: "tuf",
        },
        rollupOptions: { external: [] },
      },
    });
    const code = readFileSync(join(out, "tuf.js"), "utf8");
    expect(code).not.toMatch(/from\s+["']node:/);
    expect(code).not.toMatch(/require\(["']node:/);
    expect(code).toMatch(/name:\s*"web"/);
    const tuf = (await import(join(out, "tuf.js"))) as typeof import("../../src/updates/tuf/index.ts");
    const { repo } = await makeRepository();
    const files = repo.files();
    const client = tuf.TufClient.fromTrustedRoot(files.get("1.root.json")!);
    await client.refresh(network(files).fetch, { now: at(HOUR) });
    const info = client.getTargetInfo(FIRMWARE_PATH);
    tuf.verifyTarget(info, FIRMWARE);
    const v = tuf.createTargetVerifier(info);
    v.update(FIRMWARE);
    v.finish();
  });
});
