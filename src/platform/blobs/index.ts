/** The configured blob store: HANDSAFE_BLOB_STORE (docs/configuration.md). */
import type { Config } from "../config.ts";
import { createFilesystemBlobStore } from "./filesystem.ts";
import { createS3BlobStore } from "./s3.ts";
import type { BlobStore } from "./types.ts";

export function createBlobStore(config: Pick<Config, "blobStore" | "blobDir" | "s3">): BlobStore {
  if (config.blobStore === "s3" && config.s3) {
    const s3 = config.s3;
    return createS3BlobStore({
      region: s3.region,
      bucket: s3.bucket,
      prefix: s3.prefix,
      forcePathStyle: s3.forcePathStyle,
      ...(s3.endpoint !== null ? { endpoint: s3.endpoint } : {}),
      ...(s3.accessKeyId !== null && s3.secretAccessKey !== null
        ? { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey.reveal() }
        : {}),
    });
  }
  return createFilesystemBlobStore(config.blobDir);
}
