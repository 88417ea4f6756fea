import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HeadObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import S3rver from "s3rver";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HandsafeError } from "../../src/core/errors.ts";
import { createBlobStore } from "../../src/platform/blobs/index.ts";
import { createS3BlobStore, type S3BlobStore, type S3BlobStoreOptions } from "../../src/platform/blobs/s3.ts";
import { loadConfig } from "../../src/platform/config.ts";
import { collect, describeBlobStoreContract, failure } from "./contract.ts";

// A real S3 API: s3rver on a free port, its objects in a temp folder, with signature checks on.
const BUCKET = "handsafe-test";
let dir: string;
let server: S3rver;
let options: S3BlobStoreOptions;
const stores: S3BlobStore[] = [];
let run = 0;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "handsafe-s3rver-"));
  server = new S3rver({
    address: "127.0.0.1",
    port: 0,
    silent: true,
    directory: dir,
    configureBuckets: [{ name: BUCKET }],
  });
  const { port } = await server.run();
  options = {
    endpoint: `http://127.0.0.1:${port}`,
    region: "us-east-1",
    bucket: BUCKET,
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    forcePathStyle: true,
  };
});
afterAll(async () => {
  for (const s of stores) s.destroy();
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

function open(extra: Partial<S3BlobStoreOptions> = {}): S3BlobStore {
  const store = createS3BlobStore({ ...options, ...extra });
  stores.push(store);
  return store;
}

function rawClient(): S3Client {
  return new S3Client({
    endpoint: options.endpoint,
    region: options.region,
    forcePathStyle: true,
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
  });
}

// Each test on its own prefix, so tests cannot see each other's objects.
describeBlobStoreContract(
  "s3",
  async () => {
    const prefix = `run-${++run}`;
    return { store: open({ prefix }), reopen: () => open({ prefix }) };
  },
  { keepsBytesOfFailedAppend: true },
);

describe("s3 blob store", () => {
  it("keeps size and SHA-256 on the object itself, under the prefix", async () => {
    const store = open({ prefix: "meta/" });
    const data = Buffer.from("hello");
    const info = await store.put("a/b", data);
    const client = rawClient();
    try {
      const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: "meta/a/b" }));
      expect(head.ContentLength).toBe(5);
      expect(head.Metadata?.sha256).toBe(createHash("sha256").update(data).digest("hex"));
      expect(info.sha256).toBe(head.Metadata?.sha256);
    } finally {
      client.destroy();
    }
  });

  it("keeps an upload's state and pending bytes in the bucket, and removes them on completion", async () => {
    const store = open({ prefix: "state" });
    await store.uploads.begin("u");
    await store.uploads.append("u", 0, Buffer.alloc(1000, 7));
    const client = rawClient();
    const list = async () =>
      ((await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: "state/" }))).Contents ?? [])
        .map((o) => o.Key ?? "")
        .sort();
    try {
      const names = await list();
      expect(names).toHaveLength(2);
      expect(names[0]).toMatch(/^state\/\.uploads\/u\/pending-/);
      expect(names[1]).toBe("state/.uploads/u/state.json");
      await store.uploads.complete("u", "k");
      expect(await list()).toEqual(["state/k"]);
    } finally {
      client.destroy();
    }
  });

  it("turns S3 failures into HandsafeErrors, never raw SDK errors", async () => {
    const store = open({ bucket: "no-such-bucket" });
    expect((await failure(() => store.put("k", Buffer.from("x"))))?.code).toBe("blob.write_failed");
    // (stat and get start with a HEAD: for a missing bucket a bodiless 404, like a missing object.)
    expect((await failure(() => collect(store.get("k"))))?.code).toBe("blob.not_found");
    expect((await failure(() => store.uploads.begin("u")))?.code).toBe("blob.read_failed");
    expect((await failure(() => store.uploads.length("u")))?.code).toBe("blob.read_failed");
    // (s3rver checks access key ids, not v4 signatures.)
    const stranger = open({ accessKeyId: "nobody", secretAccessKey: "secret-of-nobody" });
    const e = await failure(() => stranger.put("k", Buffer.from("x")));
    expect(e?.code).toBe("blob.write_failed");
    expect(e?.message).toContain("InvalidAccessKeyId");
    expect(JSON.stringify(e)).not.toContain("secret-of-nobody");
    expect((await failure(() => stranger.uploads.length("u")))?.code).toBe("blob.read_failed");
  });

  it("is what createBlobStore makes for HANDSAFE_BLOB_STORE=s3", async () => {
    const config = loadConfig({
      HANDSAFE_DATA_DIR: dir,
      HANDSAFE_BLOB_STORE: "S3",
      HANDSAFE_S3_ENDPOINT: options.endpoint,
      HANDSAFE_S3_BUCKET: BUCKET,
      HANDSAFE_S3_PREFIX: "from-config",
      HANDSAFE_S3_ACCESS_KEY_ID: "S3RVER",
      HANDSAFE_S3_SECRET_ACCESS_KEY: "S3RVER",
    });
    expect(config.s3).toMatchObject({ prefix: "from-config/", region: "us-east-1", forcePathStyle: true });
    expect(JSON.parse(JSON.stringify(config)).s3.secretAccessKey).toBe("[redacted]");
    const store = createBlobStore(config);
    await store.put("x", Buffer.from("via config"));
    expect((await collect(open({ prefix: "from-config/" }).get("x"))).toString()).toBe("via config");
    (store as S3BlobStore).destroy();
  });
});

describe("HANDSAFE_BLOB_STORE and HANDSAFE_S3_* settings", () => {
  const base = { HANDSAFE_DATA_DIR: "/tmp/handsafe-config-test" };
  const s3 = { ...base, HANDSAFE_BLOB_STORE: "s3", HANDSAFE_S3_BUCKET: "b" };
  function invalid(env: Record<string, string>): HandsafeError | undefined {
    try {
      loadConfig(env);
      return undefined;
    } catch (e) {
      if (e instanceof HandsafeError) return e;
      throw e;
    }
  }

  it("defaults to the filesystem, ignoring the S3 variables", () => {
    const config = loadConfig({ ...base, HANDSAFE_S3_ENDPOINT: "not a url" });
    expect(config.blobStore).toBe("filesystem");
    expect(config.s3).toBeNull();
  });

  it("reads the bucket settings, with defaults", () => {
    expect(loadConfig(s3).s3).toEqual({
      endpoint: null,
      region: "us-east-1",
      bucket: "b",
      prefix: "",
      accessKeyId: null,
      secretAccessKey: null,
      forcePathStyle: false,
    });
    const config = loadConfig({
      ...s3,
      HANDSAFE_S3_ENDPOINT: "https://minio.example.com:9000/",
      HANDSAFE_S3_REGION: "eu-west-3",
      HANDSAFE_S3_PREFIX: "prod/handsafe/",
      HANDSAFE_S3_FORCE_PATH_STYLE: "FALSE",
    });
    expect(config.s3).toMatchObject({
      endpoint: "https://minio.example.com:9000",
      region: "eu-west-3",
      prefix: "prod/handsafe/",
      forcePathStyle: false,
    });
  });

  it.each([
    [{ HANDSAFE_BLOB_STORE: "gcs" }, "HANDSAFE_BLOB_STORE"],
    [{ HANDSAFE_S3_BUCKET: "" }, "HANDSAFE_S3_BUCKET is required"],
    [{ HANDSAFE_S3_BUCKET: "a bucket" }, "HANDSAFE_S3_BUCKET"],
    [{ HANDSAFE_S3_ENDPOINT: "minio:9000" }, "HANDSAFE_S3_ENDPOINT"],
    [{ HANDSAFE_S3_ENDPOINT: "ftp://minio" }, "HANDSAFE_S3_ENDPOINT"],
    [{ HANDSAFE_S3_REGION: "eu west" }, "HANDSAFE_S3_REGION"],
    [{ HANDSAFE_S3_PREFIX: "../up" }, "HANDSAFE_S3_PREFIX"],
    [{ HANDSAFE_S3_PREFIX: "/abs" }, "HANDSAFE_S3_PREFIX"],
    [{ HANDSAFE_S3_FORCE_PATH_STYLE: "maybe" }, "HANDSAFE_S3_FORCE_PATH_STYLE"],
    [{ HANDSAFE_S3_ACCESS_KEY_ID: "AKIA" }, "HANDSAFE_S3_SECRET_ACCESS_KEY is not set"],
  ])("refuses %j", (env, message) => {
    const e = invalid({ ...s3, ...env });
    expect(e?.code).toBe("config.invalid");
    expect(e?.message).toContain(message);
  });

  it("never echoes a secret: not the secret key, not credentials in the endpoint", () => {
    const e = invalid({ ...s3, HANDSAFE_S3_ENDPOINT: "https://key:hunter2@minio.example.com" });
    expect(e?.code).toBe("config.invalid");
    expect(e?.message).not.toContain("hunter2");
    const e2 = invalid({ ...s3, HANDSAFE_S3_SECRET_ACCESS_KEY: "hunter2" });
    expect(e2?.message).not.toContain("hunter2");
    const config = loadConfig({
      ...s3,
      HANDSAFE_S3_ACCESS_KEY_ID: "AKIA",
      HANDSAFE_S3_SECRET_ACCESS_KEY: "hunter2",
    });
    expect(JSON.stringify(config)).not.toContain("hunter2");
    expect(String(config.s3?.secretAccessKey)).toBe("[redacted]");
    expect(config.s3?.secretAccessKey?.reveal()).toBe("hunter2");
  });
});
