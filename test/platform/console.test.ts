/**
 * How the server serves the web console's build (src/platform/http/console.ts), on a folder made
 * here: the pages with their CSP, the assets by exact name only, 503 `console.not_built` without
 * a build (and the API unaffected); and the audit listing's `latest` page the console reads.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CONSOLE_CSP } from "../../src/platform/http/console.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

async function get(t: TestServer, path: string) {
  const res = await t
    .anonymous()
    .request("GET", path)
    .catch((e: unknown) => e as { status: number; code: string });
  return res as { status: number; headers?: Record<string, string>; body?: unknown; code?: string };
}

describe("the console's files", () => {
  let dir: string;
  let built: TestServer;
  let unbuilt: TestServer;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "handsafe-console-files-"));
    mkdirSync(join(dir, "assets"));
    writeFileSync(join(dir, "console.html"), "<!doctype html><title>console</title>");
    writeFileSync(join(dir, "handset.html"), "<!doctype html><title>handset</title>");
    writeFileSync(join(dir, "assets", "console-AbC123.js"), "export {};");
    writeFileSync(join(dir, "assets", "notes.txt"), "not a kind the console serves");
    built = await startTestServer("sqlite", { HANDSAFE_CONSOLE_DIR: dir });
    unbuilt = await startTestServer("sqlite", { HANDSAFE_CONSOLE_DIR: join(dir, "missing") });
  }, 60_000);
  afterAll(async () => {
    await built?.close();
    await unbuilt?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves both pages with the CSP that allows only this origin's own scripts", async () => {
    for (const [path, title] of [
      ["/console", "console"],
      ["/console/", "console"],
      ["/handset", "handset"],
    ] as const) {
      const res = await built.anonymous().request<string>("GET", path);
      expect(res.status).toBe(200);
      expect(res.headers["content-type"]).toBe("text/html; charset=utf-8");
      expect(res.headers["content-security-policy"]).toBe(CONSOLE_CSP);
      expect(res.headers["x-content-type-options"]).toBe("nosniff");
      expect(String(res.body)).toContain(`<title>${title}</title>`);
    }
    expect(CONSOLE_CSP).toMatch(/script-src 'self';/);
    expect(CONSOLE_CSP).not.toMatch(/unsafe-inline|unsafe-eval/);
  });

  it("serves an asset by its exact name, as immutable; nothing else of the folder", async () => {
    const res = await built.anonymous().request("GET", "/console/assets/console-AbC123.js");
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(res.headers["cache-control"]).toContain("immutable");
    for (const path of [
      "/console/assets/notes.txt",
      "/console/assets/missing.js",
      "/console/assets/..%2Fconsole.html",
      "/console/assets/%2e%2e%2f%2e%2e%2fpackage.json",
    ]) {
      const refused = await get(built, path);
      expect(refused, path).toMatchObject({ status: 404 });
    }
  });

  it("answers 503 console.not_built without a build, and the API still serves", async () => {
    for (const path of ["/console", "/handset", "/console/assets/console-AbC123.js"]) {
      const refused = await get(unbuilt, path);
      expect(refused, path).toMatchObject({ status: 503, code: "console.not_built" });
    }
    const health = await unbuilt.anonymous().request("GET", "/healthz");
    expect(health.status).toBe(200);
  });

  it("lists the latest audit records in order, for the console's first screen", async () => {
    const all = (await built.admin.get<{ records: Array<{ seq: number }> }>("/v1/admin/audit?limit=1000"))
      .body.records;
    expect(all.length).toBeGreaterThan(2);
    const latest = (
      await built.admin.get<{ records: Array<{ seq: number }> }>("/v1/admin/audit?latest=true&limit=2")
    ).body.records;
    expect(latest.map((r) => r.seq)).toEqual(all.slice(-2).map((r) => r.seq));
    const first = (await built.admin.get<{ records: Array<{ seq: number }> }>("/v1/admin/audit?limit=2")).body
      .records;
    expect(first.map((r) => r.seq)).toEqual(all.slice(0, 2).map((r) => r.seq));
    // The page before a seq: the newest records older than it, still in order.
    const last = all.at(-1)!.seq;
    const before = (
      await built.admin.get<{ records: Array<{ seq: number }> }>(
        `/v1/admin/audit?latest=true&limit=2&before=${last}`,
      )
    ).body.records;
    expect(before.map((r) => r.seq)).toEqual([last - 2, last - 1]);
    const refused = await built.admin.get("/v1/admin/audit?before=0").catch((e: unknown) => e);
    expect(refused).toMatchObject({ status: 400 });
  });
});
