import { fromUtf8, toHex, utf8 } from "../../core/codec/bytes.ts";
import { sha256 } from "../../core/crypto/index.ts";
import { canonicalBytes } from "./canonical.ts";
import { tufError } from "./errors.ts";
import {
  formatExpires,
  type JsonValue,
  type Metadata,
  parseMetadata,
  parseMetadataObject,
  ROLE_NAMES,
  type RoleName,
  type RootSigned,
  roleKeysChanged,
  type SnapshotSigned,
  serializeMetadata,
  type TargetFile,
  type TargetsSigned,
  type TimestampSigned,
  TUF_SPEC_VERSION,
  verifyThreshold,
} from "./metadata.ts";
import {
  applyRoleChanges,
  badRequest,
  type PendingRoot,
  pendingRoot,
  type RoleChange,
  type RoleSetup,
  rootRoles,
} from "./root-roles.ts";
import { type Signer, signForRole } from "./signing.ts";
import { checkTargetPath, targetFileName } from "./target-verifier.ts";

export type { PendingRoot, RoleChange, RoleSetup };

/**
 * A TUF repository as a pure model: it holds the signed metadata, changes it on request and hands
 * back the files to serve; storing and serving them is the caller's job. Consistent snapshots are
 * always on (spec §7): every file name carries its version or hash, so files are write-once.
 */

export type OnlineRole = "targets" | "snapshot" | "timestamp";

/** Lifetimes in seconds. */
export type Expiries = Record<RoleName, number>;

const DAY = 86_400;
/** root 1 year, targets 3 months, snapshot 1 week, timestamp 1 day. */
export const DEFAULT_EXPIRIES: Readonly<Expiries> = {
  root: 365 * DAY,
  targets: 90 * DAY,
  snapshot: 7 * DAY,
  timestamp: DAY,
};

/** Everything needed to rebuild the model (e.g. one database row); no private keys. */
export interface TufRepositoryRecord {
  format: "handsafe/tuf-repository/v1";
  roots: string[];
  targets: string;
  snapshot: string;
  timestamp: string;
  expiries: Expiries;
  /** Target changes not yet published, and which roles need signing. */
  pending: { targets: Record<string, TargetFile>; dirty: OnlineRole[] };
}

function copy<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

function expiresAfter(now: Date, seconds: number): string {
  return formatExpires(new Date(Math.floor(now.getTime() / 1000) * 1000 + seconds * 1000));
}

export class TufRepository {
  #roots: Metadata<RootSigned>[];
  #targets: Metadata<TargetsSigned>;
  #snapshot: Metadata<SnapshotSigned>;
  #timestamp: Metadata<TimestampSigned>;
  #working: Record<string, TargetFile>;
  #dirty: Set<OnlineRole>;
  #expiries: Expiries;

  private constructor(state: {
    roots: Metadata<RootSigned>[];
    targets: Metadata<TargetsSigned>;
    snapshot: Metadata<SnapshotSigned>;
    timestamp: Metadata<TimestampSigned>;
    working: Record<string, TargetFile>;
    dirty: OnlineRole[];
    expiries: Expiries;
  }) {
    this.#roots = state.roots;
    this.#targets = state.targets;
    this.#snapshot = state.snapshot;
    this.#timestamp = state.timestamp;
    this.#working = state.working;
    this.#dirty = new Set(state.dirty);
    this.#expiries = state.expiries;
  }

  // --- creation -------------------------------------------------------------------------------

  /** Version 1 of root, unsigned: for a root key that never leaves its offline machine. */
  static prepareInitialRoot(
    roles: Record<RoleName, RoleSetup>,
    options: { now?: Date; expiries?: Partial<Expiries> } = {},
  ): PendingRoot {
    const expiries = { ...DEFAULT_EXPIRIES, ...options.expiries };
    return pendingRoot({
      _type: "root",
      spec_version: TUF_SPEC_VERSION,
      version: 1,
      expires: expiresAfter(options.now ?? new Date(), expiries.root),
      consistent_snapshot: true,
      ...rootRoles(roles),
    });
  }

  /** A new repository whose root signers are at hand (tests, demos, an HSM-held root). */
  static async create(options: {
    roles: Record<RoleName, RoleSetup>;
    signers: readonly Signer[];
    now?: Date;
    expiries?: Partial<Expiries>;
  }): Promise<TufRepository> {
    const { metadata } = TufRepository.prepareInitialRoot(options.roles, options);
    const { keys, roles } = metadata.signed;
    const root = await signForRole(metadata, keys, roles.root, options.signers, "root");
    return TufRepository.fromSignedRoot(root, options);
  }

  /** A new repository from a signed 1.root.json; the online roles are signed with `signers`. */
  static async fromSignedRoot(
    root: Metadata<RootSigned>,
    options: { signers: readonly Signer[]; now?: Date; expiries?: Partial<Expiries> },
  ): Promise<TufRepository> {
    const checked = parseMetadataObject(copy(root), "root");
    if (checked.signed.version !== 1)
      throw tufError("tuf.version_mismatch", "the first root must be version 1");
    verifyThreshold(checked, checked.signed.keys, checked.signed.roles.root, "root");
    const placeholder = <S>(signed: S): Metadata<S> => ({ signatures: [], signed });
    const now = options.now ?? new Date();
    const repo = new TufRepository({
      roots: [checked],
      // Version 0 placeholders: publish() makes them version 1.
      targets: placeholder({ ...common("targets", 0, now, 0), targets: {} }),
      snapshot: placeholder({ ...common("snapshot", 0, now, 0), meta: { "targets.json": { version: 1 } } }),
      timestamp: placeholder({
        ...common("timestamp", 0, now, 0),
        meta: { "snapshot.json": { version: 1 } },
      }),
      working: {},
      dirty: ["targets", "snapshot", "timestamp"],
      expiries: { ...DEFAULT_EXPIRIES, ...options.expiries },
    });
    await repo.publish(options.signers, now);
    return repo;
  }

  static fromRecord(record: TufRepositoryRecord): TufRepository {
    if (record?.format !== "handsafe/tuf-repository/v1") badRequest("not a handsafe TUF repository record");
    const parse = <R extends RoleName>(text: string, role: R) => parseMetadata(utf8(text), role);
    return new TufRepository({
      roots: record.roots.map((r) => parse(r, "root")),
      targets: parse(record.targets, "targets"),
      snapshot: parse(record.snapshot, "snapshot"),
      timestamp: parse(record.timestamp, "timestamp"),
      working: copy(record.pending.targets),
      dirty: record.pending.dirty,
      expiries: { ...DEFAULT_EXPIRIES, ...record.expiries },
    });
  }

  toRecord(): TufRepositoryRecord {
    const text = (m: Metadata<unknown>) => fromUtf8(serializeMetadata(m));
    return {
      format: "handsafe/tuf-repository/v1",
      roots: this.#roots.map(text),
      targets: text(this.#targets),
      snapshot: text(this.#snapshot),
      timestamp: text(this.#timestamp),
      expiries: { ...this.#expiries },
      pending: { targets: copy(this.#working), dirty: [...this.#dirty] },
    };
  }

  // --- reading --------------------------------------------------------------------------------

  get root(): Metadata<RootSigned> {
    return copy(this.#roots[this.#roots.length - 1]!);
  }
  get targets(): Metadata<TargetsSigned> {
    return copy(this.#targets);
  }
  get snapshot(): Metadata<SnapshotSigned> {
    return copy(this.#snapshot);
  }
  get timestamp(): Metadata<TimestampSigned> {
    return copy(this.#timestamp);
  }
  /** Roles with changes that publish() has not signed yet. */
  get unpublished(): OnlineRole[] {
    return [...this.#dirty];
  }

  // --- targets --------------------------------------------------------------------------------

  addTarget(path: string, file: TargetFile): void {
    checkTargetPath(path);
    if (!Number.isSafeInteger(file?.length) || file.length < 0)
      badRequest("target length must be an integer");
    const digest = file.hashes?.["sha256"];
    if (typeof digest !== "string" || !/^[0-9a-f]{64}$/.test(digest)) badRequest("target needs a sha256");
    const entry: TargetFile = { length: file.length, hashes: { sha256: digest } };
    if (file.custom !== undefined) {
      if (typeof file.custom !== "object" || file.custom === null || Array.isArray(file.custom))
        badRequest("custom must be an object");
      try {
        canonicalBytes(file.custom);
      } catch {
        badRequest("custom must be plain JSON with integer numbers only (canonical JSON)");
      }
      entry.custom = copy(file.custom);
    }
    this.#working[path] = entry;
    this.#markDirty("targets");
  }

  /** Adds a target from its bytes; returns the name to store the bytes under. */
  addTargetBytes(
    path: string,
    bytes: Uint8Array,
    custom?: { [key: string]: JsonValue },
  ): { file: TargetFile; fileName: string } {
    const digest = toHex(sha256(bytes));
    this.addTarget(path, { length: bytes.length, hashes: { sha256: digest }, ...(custom ? { custom } : {}) });
    return { file: copy(this.#working[path]!), fileName: targetFileName(path, digest) };
  }

  removeTarget(path: string): void {
    if (!Object.hasOwn(this.#working, path)) throw tufError("tuf.unknown_target", `no target ${path}`);
    delete this.#working[path];
    this.#markDirty("targets");
  }

  // --- online roles ---------------------------------------------------------------------------

  /** Lifetime in seconds used the next time `role` is signed. */
  setExpiry(role: RoleName, seconds: number): void {
    if (!ROLE_NAMES.includes(role) || !Number.isSafeInteger(seconds) || seconds < 1)
      badRequest("an expiry is a whole number of seconds >= 1");
    this.#expiries[role] = seconds;
  }

  /** Marks a role for a new version at the next publish() (e.g. the daily timestamp). */
  bump(role: OnlineRole): void {
    this.#markDirty(role);
  }

  /**
   * Signs a new version of every role with pending changes, in the order targets → snapshot →
   * timestamp, with those of `signers` that the current root names for each role. All or nothing.
   */
  async publish(signers: readonly Signer[], now: Date = new Date()): Promise<void> {
    const root = this.#roots[this.#roots.length - 1]!.signed;
    const dirty = new Set(this.#dirty);
    const sign = <S>(signed: S, role: OnlineRole) =>
      signForRole({ signatures: [], signed }, root.keys, root.roles[role], signers, role);
    let targets = this.#targets;
    let snapshot = this.#snapshot;
    let timestamp = this.#timestamp;
    if (dirty.has("targets")) {
      const version = targets.signed.version + 1;
      targets = await sign<TargetsSigned>(
        { ...common("targets", version, now, this.#expiries.targets), targets: copy(this.#working) },
        "targets",
      );
      dirty.add("snapshot");
    }
    if (dirty.has("snapshot")) {
      const version = snapshot.signed.version + 1;
      const meta = { "targets.json": { version: targets.signed.version } };
      snapshot = await sign<SnapshotSigned>(
        { ...common("snapshot", version, now, this.#expiries.snapshot), meta },
        "snapshot",
      );
      dirty.add("timestamp");
    }
    if (dirty.has("timestamp")) {
      const version = timestamp.signed.version + 1;
      const bytes = serializeMetadata(snapshot);
      // Length and hash of the snapshot file: the client bounds the download and detects mix-and-match.
      const info = {
        version: snapshot.signed.version,
        length: bytes.length,
        hashes: { sha256: toHex(sha256(bytes)) },
      };
      timestamp = await sign<TimestampSigned>(
        { ...common("timestamp", version, now, this.#expiries.timestamp), meta: { "snapshot.json": info } },
        "timestamp",
      );
    }
    this.#targets = targets;
    this.#snapshot = snapshot;
    this.#timestamp = timestamp;
    this.#dirty.clear();
  }

  /** bump("timestamp") + publish(): what a daily job runs. */
  async refreshTimestamp(signers: readonly Signer[], now: Date = new Date()): Promise<void> {
    this.bump("timestamp");
    await this.publish(signers, now);
  }

  // --- root and keys --------------------------------------------------------------------------

  /**
   * Root version N+1 with `changes` applied, unsigned (spec §6.1 "Key management and migration").
   * It must then be signed by a threshold of the root keys of version N AND of version N+1.
   */
  prepareRootUpdate(
    changes: Partial<Record<RoleName, RoleChange>> = {},
    now: Date = new Date(),
  ): PendingRoot {
    const current = this.#roots[this.#roots.length - 1]!.signed;
    return pendingRoot({
      _type: "root",
      spec_version: TUF_SPEC_VERSION,
      version: current.version + 1,
      expires: expiresAfter(now, this.#expiries.root),
      consistent_snapshot: current.consistent_snapshot,
      ...applyRoleChanges(current, changes),
    });
  }

  /**
   * Accepts a signed root N+1: checked exactly as a client will (§5.3.4), by the threshold of the
   * old root keys and of the new ones. Online roles whose keys changed are re-signed at publish().
   */
  commitRootUpdate(metadata: Metadata<RootSigned>): void {
    const current = this.#roots[this.#roots.length - 1]!.signed;
    const next = parseMetadataObject(copy(metadata), "root");
    if (next.signed.version !== current.version + 1)
      throw tufError("tuf.version_mismatch", `root must be version ${current.version + 1}`);
    verifyThreshold(next, current.keys, current.roles.root, "root (trusted keys)");
    verifyThreshold(next, next.signed.keys, next.signed.roles.root, "root (new keys)");
    for (const role of ["targets", "snapshot", "timestamp"] as const)
      if (roleKeysChanged(current, next.signed, role)) this.#markDirty(role);
    this.#roots.push(next);
  }

  /**
   * Convenience when the root signers are at hand: prepare, sign with old and new root keys,
   * commit. Afterwards call publish() with the (new) online signers.
   */
  async rotateKeys(
    changes: Partial<Record<RoleName, RoleChange>>,
    rootSigners: readonly Signer[],
    now: Date = new Date(),
  ): Promise<void> {
    const current = this.#roots[this.#roots.length - 1]!.signed;
    const { metadata } = this.prepareRootUpdate(changes, now);
    const byOld = await signForRole(
      metadata,
      current.keys,
      current.roles.root,
      rootSigners,
      "root (trusted keys)",
    );
    const both = await signForRole(
      byOld,
      metadata.signed.keys,
      metadata.signed.roles.root,
      rootSigners,
      "root",
    );
    this.commitRootUpdate(both);
  }

  /** Takes `keyid` out of every role that lists it (a new root version, signed as rotateKeys). */
  async revokeKey(keyid: string, rootSigners: readonly Signer[], now: Date = new Date()): Promise<void> {
    const roles = this.#roots[this.#roots.length - 1]!.signed.roles;
    const changes: Partial<Record<RoleName, RoleChange>> = {};
    for (const role of ROLE_NAMES)
      if (roles[role].keyids.includes(keyid)) changes[role] = { remove: [keyid] };
    if (Object.keys(changes).length === 0) badRequest(`no role uses key ${keyid}`);
    await this.rotateKeys(changes, rootSigners, now);
  }

  // --- output ---------------------------------------------------------------------------------

  /**
   * The files to serve, name → bytes: every N.root.json, the current N.targets.json and
   * N.snapshot.json, timestamp.json, and for each target given in `targetBytes` (path → bytes)
   * its consistent name "<dir>/<sha256>.<basename>". Older versioned files may stay served.
   */
  files(targetBytes?: ReadonlyMap<string, Uint8Array>): Map<string, Uint8Array> {
    if (this.#dirty.size > 0)
      badRequest(`unpublished changes to ${[...this.#dirty].join(", ")}: call publish() first`);
    const out = new Map<string, Uint8Array>();
    for (const root of this.#roots) out.set(`${root.signed.version}.root.json`, serializeMetadata(root));
    out.set(`${this.#targets.signed.version}.targets.json`, serializeMetadata(this.#targets));
    out.set(`${this.#snapshot.signed.version}.snapshot.json`, serializeMetadata(this.#snapshot));
    out.set("timestamp.json", serializeMetadata(this.#timestamp));
    for (const [path, bytes] of targetBytes ?? []) {
      const file = this.#targets.signed.targets[path];
      if (!file) throw tufError("tuf.unknown_target", `no published target ${path}`);
      const digest = toHex(sha256(bytes));
      if (bytes.length !== file.length || digest !== file.hashes["sha256"])
        badRequest(`the bytes given for ${path} are not the published target`);
      out.set(targetFileName(path, digest), bytes);
    }
    return out;
  }

  #markDirty(role: OnlineRole): void {
    this.#dirty.add(role);
    if (role === "targets") this.#dirty.add("snapshot");
    if (role !== "timestamp") this.#dirty.add("timestamp");
  }
}

function common<T extends OnlineRole>(type: T, version: number, now: Date, seconds: number) {
  return { _type: type, spec_version: TUF_SPEC_VERSION, version, expires: expiresAfter(now, seconds) };
}
