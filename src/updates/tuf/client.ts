import { fromUtf8, utf8 } from "../../core/codec/bytes.ts";
import { isHandsafeError } from "../../core/errors.ts";
import { tufError } from "./errors.ts";
import {
  checkHashes,
  isExpired,
  type Metadata,
  type MetaFile,
  parseMetadata,
  type RoleName,
  type RootSigned,
  roleKeysChanged,
  type SignedByRole,
  type SnapshotSigned,
  type TargetFile,
  type TargetsSigned,
  type TimestampSigned,
  verifyThreshold,
} from "./metadata.ts";
import { targetFileName } from "./target-verifier.ts";

/**
 * The TUF client workflow (spec §5 "Detailed client workflow") without I/O: each `apply…` step
 * takes the bytes of one file and either advances the trusted state or throws a tuf.* error and
 * leaves it as it was. `refresh` sequences the steps over a `fetch` the caller passes in.
 */

/**
 * Fetches a repository file by name ("3.root.json", "timestamp.json", …). Returns null when the
 * repository does not have it (HTTP 404) and must not return more than `maxLength` bytes; the
 * client checks that bound again.
 */
export type TufFetch = (name: string, maxLength: number) => Promise<Uint8Array | null> | Uint8Array | null;

/** Byte bounds against endless-data attacks (§5.3.3 W, §5.4.1 X, §5.5.1 Y, §5.6.1 Z); tuf-js's defaults. */
export interface TufClientLimits {
  rootMaxLength: number;
  timestampMaxLength: number;
  snapshotMaxLength: number;
  targetsMaxLength: number;
  /** §5.3.3 Y: at most this many root versions per refresh. */
  maxRootRotations: number;
}

export const DEFAULT_TUF_LIMITS: Readonly<TufClientLimits> = {
  rootMaxLength: 512_000,
  timestampMaxLength: 16_384,
  snapshotMaxLength: 2_000_000,
  targetsMaxLength: 5_000_000,
  maxRootRotations: 256,
};

/** The client's trusted metadata as the texts it verified: a record for a keystore. */
export interface TufTrustedState {
  format: "handsafe/tuf-client/v1";
  root: string;
  timestamp?: string;
  snapshot?: string;
  targets?: string;
}

/** What the targets role says about one target, plus the name to download it by. */
export interface TufTargetInfo extends TargetFile {
  path: string;
  fileName: string;
}

export interface FileRequest {
  name: string;
  maxLength: number;
}

interface Trusted<S> {
  metadata: Metadata<S>;
  text: string;
}

function trusted<R extends RoleName>(bytes: Uint8Array, role: R): Trusted<SignedByRole[R]> {
  const metadata = parseMetadata(bytes, role);
  return { metadata, text: fromUtf8(bytes) };
}

function checkFresh(role: string, signed: { expires: string }, now: Date): void {
  if (isExpired(signed, now))
    throw tufError("tuf.expired", `${role} metadata expired at ${signed.expires}`, { role });
}

/** §5.5.1 / §5.6.1: a declared length is exact; hashes, when listed, must match (§5.5.2 / §5.6.2). */
function checkAgainstMeta(bytes: Uint8Array, meta: MetaFile, what: string): void {
  if (meta.length !== undefined && bytes.length !== meta.length)
    throw tufError("tuf.length_mismatch", `${what} is ${bytes.length} bytes, expected ${meta.length}`);
  if (meta.hashes) checkHashes(bytes, meta.hashes, what);
}

export class TufClient {
  #root: Trusted<RootSigned>;
  #timestamp: Trusted<TimestampSigned> | undefined;
  #snapshot: Trusted<SnapshotSigned> | undefined;
  #targets: Trusted<TargetsSigned> | undefined;
  readonly limits: Readonly<TufClientLimits>;

  private constructor(root: Trusted<RootSigned>, limits: Partial<TufClientLimits>) {
    this.#root = root;
    this.limits = { ...DEFAULT_TUF_LIMITS, ...limits };
  }

  /**
   * §5.2: starts from a root shipped out of band (e.g. 1.root.json in the firmware). Its own
   * threshold is checked as a guard against a wrong file; its expiry is not (§5.2).
   */
  static fromTrustedRoot(rootBytes: Uint8Array, limits: Partial<TufClientLimits> = {}): TufClient {
    const root = trusted(rootBytes, "root");
    const { keys, roles } = root.metadata.signed;
    verifyThreshold(root.metadata, keys, roles.root, "root");
    return new TufClient(root, limits);
  }

  /** Restores a client from its keystore record; every file is re-verified against the root. */
  static fromState(state: TufTrustedState, limits: Partial<TufClientLimits> = {}): TufClient {
    if (state?.format !== "handsafe/tuf-client/v1") throw tufError("tuf.bad_state", "not a TUF client state");
    try {
      const client = TufClient.fromTrustedRoot(utf8(state.root), limits);
      const { keys, roles } = client.#root.metadata.signed;
      const load = <R extends "timestamp" | "snapshot" | "targets">(text: string | undefined, role: R) => {
        if (text === undefined) return undefined;
        const t = trusted(utf8(text), role);
        verifyThreshold(t.metadata, keys, roles[role], role);
        return t;
      };
      client.#timestamp = load(state.timestamp, "timestamp");
      client.#snapshot = load(state.snapshot, "snapshot");
      client.#targets = load(state.targets, "targets");
      return client;
    } catch (cause) {
      if (isHandsafeError(cause)) throw tufError("tuf.bad_state", `stored TUF state refused: ${cause.code}`);
      throw cause;
    }
  }

  get state(): TufTrustedState {
    return {
      format: "handsafe/tuf-client/v1",
      root: this.#root.text,
      ...(this.#timestamp ? { timestamp: this.#timestamp.text } : {}),
      ...(this.#snapshot ? { snapshot: this.#snapshot.text } : {}),
      ...(this.#targets ? { targets: this.#targets.text } : {}),
    };
  }

  get root(): RootSigned {
    return this.#root.metadata.signed;
  }

  // --- §5.3 root ------------------------------------------------------------------------------

  /** The next root to ask for: N+1.root.json. */
  nextRoot(): FileRequest {
    return {
      name: `${this.#root.metadata.signed.version + 1}.root.json`,
      maxLength: this.limits.rootMaxLength,
    };
  }

  /**
   * §5.3.4–5.3.7, 5.3.11. "unchanged" when the file holds the trusted version itself (§5.3.5: stop
   * updating root, no error).
   */
  applyRoot(bytes: Uint8Array): "updated" | "unchanged" {
    const current = this.#root.metadata.signed;
    const next = trusted(bytes, "root");
    const signed = next.metadata.signed;
    verifyThreshold(next.metadata, current.keys, current.roles.root, "root (trusted keys)");
    verifyThreshold(next.metadata, signed.keys, signed.roles.root, "root (new keys)");
    if (signed.version < current.version)
      throw tufError("tuf.rollback", `root version ${signed.version} < trusted ${current.version}`);
    if (signed.version === current.version) return "unchanged";
    if (signed.version !== current.version + 1)
      throw tufError(
        "tuf.version_mismatch",
        `expected root version ${current.version + 1}, got ${signed.version}`,
      );
    // §5.3.11: after a key rotation, forget what the old keys signed (fast-forward recovery).
    if (roleKeysChanged(current, signed, "timestamp") || roleKeysChanged(current, signed, "snapshot"))
      this.#timestamp = undefined;
    if (roleKeysChanged(current, signed, "snapshot")) this.#snapshot = undefined;
    if (roleKeysChanged(current, signed, "targets")) this.#targets = undefined;
    this.#root = next;
    return "updated";
  }

  /** §5.3.10: the final root must not have expired. */
  checkRoot(now: Date): void {
    checkFresh("root", this.#root.metadata.signed, now);
  }

  // --- §5.4 timestamp -------------------------------------------------------------------------

  nextTimestamp(): FileRequest {
    return { name: "timestamp.json", maxLength: this.limits.timestampMaxLength };
  }

  /** §5.4.2–5.4.4. "unchanged" when it is the trusted version again (§5.4.3.1: not an error). */
  applyTimestamp(bytes: Uint8Array, now: Date): "updated" | "unchanged" {
    const { keys, roles } = this.#root.metadata.signed;
    const next = trusted(bytes, "timestamp");
    verifyThreshold(next.metadata, keys, roles.timestamp, "timestamp");
    const signed = next.metadata.signed;
    const old = this.#timestamp?.metadata.signed;
    if (old) {
      if (signed.version < old.version)
        throw tufError("tuf.rollback", `timestamp version ${signed.version} < trusted ${old.version}`);
      if (signed.version === old.version) {
        checkFresh("timestamp", old, now);
        return "unchanged";
      }
      const [was, is] = [old.meta["snapshot.json"].version, signed.meta["snapshot.json"].version];
      if (is < was) throw tufError("tuf.rollback", `snapshot version ${is} < trusted ${was} (timestamp)`);
    }
    checkFresh("timestamp", signed, now);
    this.#timestamp = next;
    return "updated";
  }

  // --- §5.5 snapshot --------------------------------------------------------------------------

  /** The snapshot the trusted timestamp names, or null when it is already trusted (and fresh). */
  nextSnapshot(now: Date): FileRequest | null {
    const meta = this.#snapshotMeta();
    const have = this.#snapshot?.metadata.signed;
    if (have && have.version === meta.version) {
      checkFresh("snapshot", have, now);
      return null;
    }
    const name = this.#root.metadata.signed.consistent_snapshot
      ? `${meta.version}.snapshot.json`
      : "snapshot.json";
    return { name, maxLength: meta.length ?? this.limits.snapshotMaxLength };
  }

  /** §5.5.2–5.5.6. */
  applySnapshot(bytes: Uint8Array, now: Date): void {
    const meta = this.#snapshotMeta();
    checkAgainstMeta(bytes, meta, "snapshot");
    const { keys, roles } = this.#root.metadata.signed;
    const next = trusted(bytes, "snapshot");
    verifyThreshold(next.metadata, keys, roles.snapshot, "snapshot");
    const signed = next.metadata.signed;
    if (signed.version !== meta.version)
      throw tufError(
        "tuf.version_mismatch",
        `snapshot is version ${signed.version}, timestamp names ${meta.version}`,
      );
    for (const [name, was] of Object.entries(this.#snapshot?.metadata.signed.meta ?? {})) {
      const is = signed.meta[name];
      if (!is) throw tufError("tuf.rollback", `snapshot dropped ${name}`);
      if (is.version < was.version)
        throw tufError("tuf.rollback", `${name} version ${is.version} < trusted ${was.version} (snapshot)`);
    }
    checkFresh("snapshot", signed, now);
    this.#snapshot = next;
  }

  // --- §5.6 targets ---------------------------------------------------------------------------

  /** The targets file the trusted snapshot names, or null when it is already trusted (and fresh). */
  nextTargets(now: Date): FileRequest | null {
    const meta = this.#targetsMeta();
    const have = this.#targets?.metadata.signed;
    if (have && have.version === meta.version) {
      checkFresh("targets", have, now);
      return null;
    }
    const name = this.#root.metadata.signed.consistent_snapshot
      ? `${meta.version}.targets.json`
      : "targets.json";
    return { name, maxLength: meta.length ?? this.limits.targetsMaxLength };
  }

  /** §5.6.2–5.6.5. */
  applyTargets(bytes: Uint8Array, now: Date): void {
    const meta = this.#targetsMeta();
    checkAgainstMeta(bytes, meta, "targets");
    const { keys, roles } = this.#root.metadata.signed;
    const next = trusted(bytes, "targets");
    verifyThreshold(next.metadata, keys, roles.targets, "targets");
    const signed = next.metadata.signed;
    if (signed.version !== meta.version)
      throw tufError(
        "tuf.version_mismatch",
        `targets is version ${signed.version}, snapshot names ${meta.version}`,
      );
    checkFresh("targets", signed, now);
    this.#targets = next;
  }

  // --- the whole cycle ------------------------------------------------------------------------

  /**
   * One update cycle at the fixed start time `now` (§5.1). `persist` is called with the new state
   * after every step that changed it (§5.3.8, 5.4.5, 5.5.7, 5.6.6); on error, the state keeps every
   * step that succeeded.
   */
  async refresh(
    fetch: TufFetch,
    options: { now?: Date; persist?: (state: TufTrustedState) => void | Promise<void> } = {},
  ): Promise<void> {
    const now = options.now ?? new Date();
    const persist = async () => {
      await options.persist?.(this.state);
    };
    const download = async (request: FileRequest, required: boolean) => {
      const bytes = await fetch(request.name, request.maxLength);
      if (bytes === null || bytes === undefined) {
        if (required) throw tufError("tuf.not_found", `the repository has no ${request.name}`);
        return null;
      }
      if (bytes.length > request.maxLength)
        throw tufError("tuf.length_mismatch", `${request.name} exceeds ${request.maxLength} bytes`);
      return bytes;
    };

    for (let i = 0; i < this.limits.maxRootRotations; i++) {
      const bytes = await download(this.nextRoot(), false);
      if (!bytes || this.applyRoot(bytes) === "unchanged") break;
      await persist();
    }
    this.checkRoot(now);

    const timestamp = await download(this.nextTimestamp(), true);
    if (this.applyTimestamp(timestamp!, now) === "updated") await persist();

    const snapshotRequest = this.nextSnapshot(now);
    if (snapshotRequest) {
      this.applySnapshot((await download(snapshotRequest, true))!, now);
      await persist();
    }

    const targetsRequest = this.nextTargets(now);
    if (targetsRequest) {
      this.applyTargets((await download(targetsRequest, true))!, now);
      await persist();
    }
  }

  // --- §5.7 targets lookup --------------------------------------------------------------------

  /** §5.7.1–5.7.2: the trusted metadata of `path`; tuf.unknown_target when it lists none. */
  getTargetInfo(path: string): TufTargetInfo {
    const targets = this.#targets?.metadata.signed.targets;
    if (!targets) throw tufError("tuf.bad_state", "no trusted targets metadata: refresh first");
    if (!Object.hasOwn(targets, path)) throw tufError("tuf.unknown_target", `no target ${path}`, { path });
    const file = targets[path]!;
    const fileName = this.#root.metadata.signed.consistent_snapshot
      ? targetFileName(path, file.hashes["sha256"]!)
      : path;
    return {
      path,
      fileName,
      length: file.length,
      hashes: { ...file.hashes },
      ...(file.custom ? { custom: structuredClone(file.custom) } : {}),
    };
  }

  /** Every trusted target path (e.g. to choose the update for this model and version). */
  listTargets(): string[] {
    const targets = this.#targets?.metadata.signed.targets;
    if (!targets) throw tufError("tuf.bad_state", "no trusted targets metadata: refresh first");
    return Object.keys(targets);
  }

  #snapshotMeta(): MetaFile {
    const timestamp = this.#timestamp?.metadata.signed;
    if (!timestamp) throw tufError("tuf.bad_state", "no trusted timestamp");
    return timestamp.meta["snapshot.json"];
  }

  #targetsMeta(): MetaFile {
    const snapshot = this.#snapshot?.metadata.signed;
    if (!snapshot) throw tufError("tuf.bad_state", "no trusted snapshot");
    return snapshot.meta["targets.json"]!;
  }
}
