/**
 * Update packages (docs/protocols/updates.md §Packages): an image for some models, stored once,
 * encrypted with its own random content key (content.ts STREAM format), the ciphertext published
 * as a TUF target at "packages/<id>.hspkg". The content key is sealed at rest under
 * "updates/content-key/<id>" and only leaves the server wrapped for one device.
 *
 * Upload keeps memory bounded: the body streams into a plaintext temp blob (hashed and counted as
 * it goes), is stream-encrypted from there into the package blob, and the temp blob is deleted
 * whatever happens — plaintext never stays on disk.
 */
import type { Kysely } from "kysely";
import { concatBytes, toHex } from "../core/codec/bytes.ts";
import { sha256 } from "../core/crypto/index.ts";
import { randomToken } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import type { BlobStore } from "../platform/blobs/types.ts";
import type { Platform } from "../platform/context.ts";
import { ContentDecryptor, encryptContent, generateContentKey } from "./content.ts";
import { createImageDelta, MAX_DELTA_IMAGE_BYTES } from "./delta.ts";
import type { TufRepositoryService } from "./repository-service.ts";
import * as store from "./store.ts";
import { targetFileName } from "./tuf/index.ts";
import { checkVersionRange, compareVersions, parseVersion, type VersionRange } from "./version.ts";

export const PACKAGE_ID = /^pkg_[A-Za-z0-9_-]{16}$/;
const MODEL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const CHANNEL = /^[a-z][a-z0-9-]{0,31}$/;
const MAX_MODELS = 100;

/** A package as the API shows it (never its key). */
export interface UpdatePackage {
  id: string;
  version: string;
  kind: "full" | "delta";
  fromVersion?: string;
  /** Delta only: the full package the delta starts from. */
  fromPackageId?: string;
  models: string[];
  versionRange?: VersionRange;
  channel: string;
  plaintextLength: number;
  plaintextSha256: string;
  /** The image the handset ends with: for a full package, the plaintext; for a delta, the new image. */
  imageLength: number;
  imageSha256: string;
  encryptedLength: number;
  encryptedSha256: string;
  tufPath: string;
  /** The consistent-snapshot name the ciphertext is downloaded by (under /v1/updates/content/). */
  fileName: string;
  createdAt: number;
}

export interface UploadRequest {
  version: string;
  models: string[];
  channel?: string;
  versionRange?: VersionRange;
}

export function tufPathOf(packageId: string): string {
  return `packages/${packageId}.hspkg`;
}

export function contentKeyAad(packageId: string): string {
  return `updates/content-key/${packageId}`;
}

function newPackageId(): string {
  return `pkg_${randomToken(12)}`;
}

function toApi(p: store.PackageRow): UpdatePackage {
  return {
    id: p.id,
    version: p.version,
    kind: p.kind,
    ...(p.fromVersion !== null ? { fromVersion: p.fromVersion } : {}),
    ...(p.fromPackageId !== null ? { fromPackageId: p.fromPackageId } : {}),
    models: p.models,
    ...(p.versionRange !== null ? { versionRange: p.versionRange } : {}),
    channel: p.channel,
    plaintextLength: p.plaintextLength,
    plaintextSha256: p.plaintextSha256,
    imageLength: p.imageLength,
    imageSha256: p.imageSha256,
    encryptedLength: p.encryptedLength,
    encryptedSha256: p.encryptedSha256,
    tufPath: p.tufPath,
    fileName: p.fileName,
    createdAt: p.createdAt,
  };
}

/** Checks an upload's description before a byte of the body is read. */
export function checkUploadRequest(request: UploadRequest): Required<Omit<UploadRequest, "versionRange">> & {
  versionRange: VersionRange | null;
} {
  parseVersion(request.version);
  const models = [...new Set(request.models.map((m) => m.trim()).filter((m) => m !== ""))];
  if (models.length === 0 || models.length > MAX_MODELS || models.some((m) => !MODEL.test(m)))
    throw new HandsafeError(
      "updates.invalid_models",
      `models must be 1–${MAX_MODELS} names of [A-Za-z0-9._-] (up to 64 characters each)`,
      { status: 400 },
    );
  const channel = request.channel ?? "stable";
  if (!CHANNEL.test(channel))
    throw new HandsafeError(
      "updates.invalid_channel",
      `channel ${JSON.stringify(channel.slice(0, 40))} is not [a-z][a-z0-9-]*`,
      {
        status: 400,
      },
    );
  const range = request.versionRange ? checkVersionRange(request.versionRange) : undefined;
  return {
    version: request.version,
    models: models.sort(),
    channel,
    versionRange: range && (range.min !== undefined || range.max !== undefined) ? range : null,
  };
}

export interface PackageServiceDeps {
  blobs: BlobStore;
  repository: TufRepositoryService;
  /** True when the fleet knows this model (a device of it is registered). */
  knownModel(model: string): Promise<boolean>;
}

export class PackageService {
  private readonly db: Kysely<store.UpdatesTables>;

  constructor(
    private readonly platform: Platform,
    private readonly deps: PackageServiceDeps,
  ) {
    this.db = platform.db;
  }

  async getPackage(id: string): Promise<UpdatePackage> {
    return toApi(await this.requirePackage(id));
  }

  async listPackages(): Promise<UpdatePackage[]> {
    return (await store.listPackages(this.db)).map(toApi);
  }

  /** The package's content key, opened from its seal. The caller wipes it after use. */
  async contentKeyOf(packageId: string): Promise<Uint8Array> {
    const p = await this.requirePackage(packageId);
    return this.platform.keyring.openAtRest(p.sealedContentKey, contentKeyAad(p.id));
  }

  /** The package whose ciphertext is published under this consistent-snapshot file name. */
  async byFileName(fileName: string): Promise<store.PackageRow | undefined> {
    return store.findPackageByFileName(this.db, fileName);
  }

  /** Refuses models the fleet does not know: a package for them would reach no one. */
  async checkModels(models: readonly string[]): Promise<void> {
    const unknown: string[] = [];
    for (const m of models) if (!(await this.deps.knownModel(m))) unknown.push(m);
    if (unknown.length > 0)
      throw new HandsafeError(
        "updates.unknown_model",
        `no registered device has model ${unknown.join(", ")}`,
        {
          status: 422,
          details: { models: unknown },
        },
      );
  }

  /**
   * Stores a full image: body → plaintext temp blob (counted, hashed) → encrypted package blob →
   * TUF target → published. `body` is read once; more than `maxBytes` stops it with 413.
   */
  async upload(
    request: UploadRequest,
    body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    options: { maxBytes: number; actor: string },
  ): Promise<UpdatePackage> {
    const checked = checkUploadRequest(request);
    await this.checkModels(checked.models);
    const id = newPackageId();
    const temp = `updates/tmp/${id}.${randomToken(6)}.plain`;
    const { blobs } = this.deps;
    try {
      const plain = await blobs.put(temp, limited(body, options.maxBytes));
      if (plain.size === 0)
        throw new HandsafeError("updates.empty_package", "the package image is empty", { status: 400 });
      const row = await this.storeEncrypted(
        {
          id,
          version: checked.version,
          kind: "full",
          fromVersion: null,
          fromPackageId: null,
          basePackageId: null,
          models: checked.models,
          versionRange: checked.versionRange,
          channel: checked.channel,
          plaintextLength: plain.size,
          plaintextSha256: plain.sha256,
          imageLength: plain.size,
          imageSha256: plain.sha256,
          createdBy: options.actor,
        },
        blobs.get(temp),
      );
      return toApi(row);
    } finally {
      await blobs.delete(temp).catch(() => {});
    }
  }

  /**
   * A delta package from `fromId`'s image to `toId`'s image (both full packages, from older to
   * newer): for the models both serve, applicable to exactly the old version.
   */
  async createDelta(toId: string, fromId: string, actor: string): Promise<UpdatePackage> {
    const to = await this.requirePackage(toId);
    const from = await this.requirePackage(fromId);
    if (to.kind !== "full" || from.kind !== "full")
      throw new HandsafeError("updates.invalid_delta", "a delta is made between two full packages", {
        status: 400,
      });
    if (compareVersions(from.version, to.version) >= 0)
      throw new HandsafeError(
        "updates.invalid_delta",
        `a delta goes from an older version to a newer one (${from.version} → ${to.version})`,
        { status: 400 },
      );
    const models = to.models.filter((m) => from.models.includes(m));
    if (models.length === 0)
      throw new HandsafeError("updates.invalid_delta", "the two packages serve no model in common", {
        status: 400,
      });
    for (const p of [to, from])
      if (p.plaintextLength > MAX_DELTA_IMAGE_BYTES)
        throw new HandsafeError(
          "updates.delta_too_large",
          `package ${p.id} is ${p.plaintextLength} bytes; deltas are made for images up to ${MAX_DELTA_IMAGE_BYTES}`,
          { status: 413 },
        );
    const delta = createImageDelta(await this.readImage(from), await this.readImage(to));
    const row = await this.storeEncrypted(
      {
        id: newPackageId(),
        version: to.version,
        kind: "delta",
        fromVersion: from.version,
        fromPackageId: from.id,
        basePackageId: to.id,
        models,
        versionRange: { min: from.version, max: from.version },
        channel: to.channel,
        plaintextLength: delta.length,
        plaintextSha256: toHex(sha256(delta)),
        imageLength: to.imageLength,
        imageSha256: to.imageSha256,
        createdBy: actor,
      },
      [delta],
    );
    return toApi(row);
  }

  /** A full package's image, decrypted into memory and checked against its recorded hash. */
  private async readImage(p: store.PackageRow): Promise<Uint8Array> {
    const key = this.platform.keyring.openAtRest(p.sealedContentKey, contentKeyAad(p.id));
    try {
      const decryptor = new ContentDecryptor(key);
      const parts: Uint8Array[] = [];
      for await (const chunk of this.deps.blobs.get(p.blobKey)) parts.push(...decryptor.update(chunk));
      parts.push(decryptor.finish());
      const image = concatBytes(...parts);
      if (toHex(sha256(image)) !== p.plaintextSha256)
        throw new HandsafeError("updates.package_corrupt", `package ${p.id} does not match its hash`, {
          status: 500,
        });
      return image;
    } finally {
      key.fill(0);
    }
  }

  /** Encrypts `plaintext` under a fresh content key into the package blob, publishes, records. */
  private async storeEncrypted(
    p: Omit<
      store.PackageRow,
      | "encryptedLength"
      | "encryptedSha256"
      | "tufPath"
      | "fileName"
      | "blobKey"
      | "sealedContentKey"
      | "createdAt"
    >,
    plaintext: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  ): Promise<store.PackageRow> {
    const { blobs, repository } = this.deps;
    const key = generateContentKey();
    const blobKey = `updates/packages/${p.id}.hspkg`;
    let info: Awaited<ReturnType<BlobStore["put"]>>;
    try {
      info = await blobs.put(blobKey, encryptContent(key, plaintext, p.plaintextLength));
    } catch (e) {
      key.fill(0);
      throw e;
    }
    const tufPath = tufPathOf(p.id);
    const row: store.PackageRow = {
      ...p,
      encryptedLength: info.size,
      encryptedSha256: info.sha256,
      tufPath,
      fileName: targetFileName(tufPath, info.sha256),
      blobKey,
      sealedContentKey: this.platform.keyring.sealAtRest(key, contentKeyAad(p.id)),
      createdAt: this.platform.clock(),
    };
    key.fill(0);
    try {
      await store.insertPackage(this.db, row);
      await repository.addTarget(tufPath, {
        length: info.size,
        hashes: { sha256: info.sha256 },
        custom: targetCustom(row),
      });
    } catch (e) {
      await store.deletePackage(this.db, row.id).catch(() => {});
      await blobs.delete(blobKey).catch(() => {});
      throw e;
    }
    return row;
  }

  private async requirePackage(id: string): Promise<store.PackageRow> {
    const p = PACKAGE_ID.test(id) ? await store.findPackage(this.db, id) : undefined;
    if (!p) throw new HandsafeError("updates.unknown_package", `no package ${id}`, { status: 404 });
    return p;
  }
}

/**
 * The TUF target's `custom` (contract §Packages): what the handset checks before it downloads.
 * `toVersion` repeats `version` for parseUpdateCustom; integers only (canonical JSON).
 */
export function targetCustom(p: store.PackageRow): {
  [key: string]: string | number | string[] | { [k: string]: string };
} {
  return {
    packageId: p.id,
    version: p.version,
    toVersion: p.version,
    kind: p.kind,
    ...(p.fromVersion !== null ? { fromVersion: p.fromVersion } : {}),
    models: p.models,
    channel: p.channel,
    ...(p.versionRange !== null ? { versionRange: { ...p.versionRange } as { [k: string]: string } } : {}),
    imageSha256: p.imageSha256,
    imageLength: p.imageLength,
  };
}

/** Passes the body through, refusing it once it exceeds `max` bytes. */
async function* limited(
  body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  max: number,
): AsyncGenerator<Uint8Array> {
  let seen = 0;
  for await (const chunk of body) {
    seen += chunk.length;
    if (seen > max)
      throw new HandsafeError("updates.package_too_large", `the package is larger than ${max} bytes`, {
        status: 413,
      });
    yield chunk;
  }
}
