/** The TUF code runs in a browser bundle: no node:* modules, web crypto backend, same answers. */
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type BrowserBundle, buildBrowserBundle, hasNodeImports } from "../helpers/browser-bundle.ts";
import { at, FIRMWARE, FIRMWARE_PATH, HOUR, makeRepository, network } from "./helpers.ts";

type Tuf = typeof import("../../src/updates/tuf/index.ts");

describe("TUF in a browser bundle", () => {
  let bundle: BrowserBundle<Tuf> | undefined;
  afterAll(() => bundle?.remove());

  it("bundles canonical JSON and the client for the browser, and verifies a repository", async () => {
    bundle = await buildBrowserBundle<Tuf>(
      join(import.meta.dirname, "../../src/updates/tuf/index.ts"),
      "tuf",
    );
    expect(hasNodeImports(bundle.code)).toBe(false);
    expect(bundle.code).toMatch(/name:\s*"web"/);
    const tuf = bundle.module;
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
