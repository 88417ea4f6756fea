/**
 * Interop: tuf-js (an independent TUF client) refreshes against our repository served over HTTP and
 * downloads a target — first as created, then after a root key rotation and a targets key rotation.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Updater } from "tuf-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { utf8 } from "../../src/core/codec/bytes.ts";
import type { TufRepository } from "../../src/updates/tuf/index.ts";
import { FIRMWARE, FIRMWARE_PATH, KEYS, makeRepository } from "./helpers.ts";

const work = mkdtempSync(join(tmpdir(), "handsafe-tuf-"));
const served = join(work, "served");
let server: Server;
let base: string;

/** Writes the repository's files under served/<site>/: metadata under metadata/, targets under targets/. */
function writeRepository(site: string, repo: TufRepository, targets: Map<string, Uint8Array>): void {
  const metadataNames = new Set(repo.files().keys());
  for (const [name, bytes] of repo.files(targets)) {
    const file = join(served, site, metadataNames.has(name) ? "metadata" : "targets", name);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, bytes);
  }
}

/**
 * A tuf-js client over the metadata folder `name`; with `rootJson`, a new one that trusts it.
 * An Updater refreshes once: a later update opens the same folder again, as an app restart would.
 */
function updater(site: string, name: string, rootJson?: Uint8Array): Updater {
  const metadataDir = join(work, name, "metadata");
  const targetDir = join(work, name, "targets");
  mkdirSync(metadataDir, { recursive: true });
  mkdirSync(targetDir, { recursive: true });
  if (rootJson) writeFileSync(join(metadataDir, "root.json"), rootJson);
  return new Updater({
    metadataBaseUrl: `${base}/${site}/metadata`,
    targetBaseUrl: `${base}/${site}/targets`,
    metadataDir,
    targetDir,
  });
}

async function download(client: Updater, path: string): Promise<Uint8Array> {
  await client.refresh();
  const info = await client.getTargetInfo(path);
  expect(info, `tuf-js finds ${path}`).toBeDefined();
  return new Uint8Array(readFileSync(await client.downloadTarget(info!)));
}

beforeAll(async () => {
  server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    if (path.split("/").includes("..")) return void res.writeHead(400).end();
    try {
      const body = readFileSync(join(served, path));
      res
        .writeHead(200, { "content-type": "application/octet-stream", "content-length": body.length })
        .end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  rmSync(work, { recursive: true, force: true });
});

describe("tuf-js verifies our repository", () => {
  it("refreshes and downloads a target in a folder, across root and targets key rotations", async () => {
    const { repo, signers } = await makeRepository(new Date());
    const targets = new Map([[FIRMWARE_PATH, FIRMWARE]]);
    writeRepository("rotations", repo, targets);
    const root1 = repo.files().get("1.root.json")!;

    expect(await download(updater("rotations", "early", root1), FIRMWARE_PATH)).toEqual(FIRMWARE);

    // Root rotation: 2.root.json signed by the old and the new root key.
    await repo.rotateKeys({ root: { add: [KEYS.root2.key], remove: [KEYS.root.keyid] } }, [
      KEYS.root,
      KEYS.root2,
    ]);
    const second = utf8("model-y firmware 2.0");
    targets.set("firmware/model-y/2.0.img", second);
    repo.addTargetBytes("firmware/model-y/2.0.img", second, {
      models: ["model-y"],
      toVersion: "2.0",
      kind: "full",
      channel: "stable",
    });
    await repo.publish(signers);
    writeRepository("rotations", repo, targets);
    expect(await download(updater("rotations", "early"), "firmware/model-y/2.0.img")).toEqual(second);
    expect(JSON.parse(readFileSync(join(work, "early/metadata/root.json"), "utf8")).signed.version).toBe(2);

    // Targets rotation: 3.root.json names a new targets key; targets is re-signed with it.
    await repo.rotateKeys({ targets: { add: [KEYS.targets2.key], remove: [KEYS.targets.keyid] } }, [
      KEYS.root2,
    ]);
    const delta = utf8("delta 1.2.0 -> 1.3.0");
    targets.set("firmware/model-x/1.2.0-1.3.0.delta", delta);
    repo.addTargetBytes("firmware/model-x/1.2.0-1.3.0.delta", delta, {
      models: ["model-x"],
      fromVersion: "1.2.0",
      toVersion: "1.3.0",
      kind: "delta",
      channel: "stable",
    });
    await repo.publish([...signers, KEYS.targets2]);
    writeRepository("rotations", repo, targets);
    expect(repo.root.signed.version).toBe(3);
    expect(await download(updater("rotations", "early"), "firmware/model-x/1.2.0-1.3.0.delta")).toEqual(
      delta,
    );

    // A client that only ever knew 1.root.json walks 2 and 3 and gets everything.
    expect(await download(updater("rotations", "late", root1), FIRMWARE_PATH)).toEqual(FIRMWARE);
    expect(await download(updater("rotations", "late"), "firmware/model-y/2.0.img")).toEqual(second);
  });

  it("tuf-js refuses our repository when a target's bytes are swapped", async () => {
    const { repo } = await makeRepository(new Date());
    const evil = FIRMWARE.slice();
    evil[0] = evil[0]! ^ 1;
    writeRepository("swapped", repo, new Map([[FIRMWARE_PATH, FIRMWARE]]));
    const info = repo.targets.signed.targets[FIRMWARE_PATH]!;
    const name = join(served, "swapped", "targets", "firmware/model-x", `${info.hashes["sha256"]}.1.2.0.img`);
    writeFileSync(name, evil);
    const client = updater("swapped", "client", repo.files().get("1.root.json")!);
    await client.refresh();
    const target = await client.getTargetInfo(FIRMWARE_PATH);
    await expect(client.downloadTarget(target!)).rejects.toThrow();
  });
});
