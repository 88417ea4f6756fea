import { fromHex, fromUtf8, toHex } from "../../core/codec/bytes.ts";
import { sha256, sha512, verify } from "../../core/crypto/index.ts";
import { canonicalBytes } from "./canonical.ts";
import { tufError } from "./errors.ts";

/**
 * TUF 1.0 metadata (spec §4 "Document formats"), exactly as the JSON on the wire. Only what this
 * project signs is accepted: Ed25519 keys, top-level roles, no delegations used. Unknown fields are
 * kept (they are covered by the signature) but never read.
 */

export const TUF_SPEC_VERSION = "1.0.31";
export const ROLE_NAMES = ["root", "targets", "snapshot", "timestamp"] as const;
export type RoleName = (typeof ROLE_NAMES)[number];

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** §4.2 KEY for the "ed25519" key type: `public` is the 32-byte key A as 64 lowercase hex digits. */
export interface TufKey {
  keytype: "ed25519";
  scheme: "ed25519";
  keyval: { public: string };
}

export interface TufSignature {
  keyid: string;
  /** Hex of the 64-byte Ed25519 signature over the canonical JSON of `signed`. */
  sig: string;
}

export interface RoleKeys {
  keyids: string[];
  threshold: number;
}

interface SignedCommon<T extends RoleName> {
  _type: T;
  spec_version: string;
  version: number;
  /** "YYYY-MM-DDTHH:MM:SSZ" (UTC, whole seconds). */
  expires: string;
}

export interface RootSigned extends SignedCommon<"root"> {
  consistent_snapshot: boolean;
  keys: Record<string, TufKey>;
  roles: Record<RoleName, RoleKeys>;
}

export type Hashes = Record<string, string>;

export interface TargetFile {
  length: number;
  hashes: Hashes;
  custom?: { [key: string]: JsonValue };
}

export interface TargetsSigned extends SignedCommon<"targets"> {
  targets: Record<string, TargetFile>;
}

/** §4.4/§4.6 METAFILES entry. */
export interface MetaFile {
  version: number;
  length?: number;
  hashes?: Hashes;
}

export interface SnapshotSigned extends SignedCommon<"snapshot"> {
  meta: Record<string, MetaFile>;
}

export interface TimestampSigned extends SignedCommon<"timestamp"> {
  meta: { "snapshot.json": MetaFile };
}

export interface SignedByRole {
  root: RootSigned;
  targets: TargetsSigned;
  snapshot: SnapshotSigned;
  timestamp: TimestampSigned;
}

export interface Metadata<S> {
  signatures: TufSignature[];
  signed: S;
}

/** Update packages this project publishes carry this in a target's `custom`. */
export interface UpdateTargetCustom {
  models: string[];
  fromVersion?: string;
  toVersion: string;
  kind: "full" | "delta";
  channel: string;
}

// ---------------------------------------------------------------------------------------------
// Keys

/** Wraps a 32-byte Ed25519 public key as a TUF key object. */
export function ed25519TufKey(publicKey: Uint8Array): TufKey {
  if (publicKey.length !== 32) throw tufError("tuf.bad_request", "an Ed25519 public key is 32 bytes");
  return { keytype: "ed25519", scheme: "ed25519", keyval: { public: toHex(publicKey) } };
}

/** §4.2: KEYID is the hex SHA-256 of the canonical JSON of the key object (what tuf-js computes). */
export function keyidOf(key: TufKey): string {
  return toHex(sha256(canonicalBytes(key)));
}

// ---------------------------------------------------------------------------------------------
// Time

const EXPIRES = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$/;

/** The spec's timestamp form, to the second. */
export function formatExpires(date: Date): string {
  return `${date.toISOString().slice(0, 19)}Z`;
}

export function parseExpires(text: string): Date {
  const m = EXPIRES.exec(text);
  const date = m ? new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!)) : null;
  if (!date || Number.isNaN(date.getTime()) || formatExpires(date) !== text)
    throw tufError("tuf.bad_metadata", `expires is not YYYY-MM-DDTHH:MM:SSZ: ${JSON.stringify(text)}`);
  return date;
}

export function isExpired(signed: { expires: string }, now: Date): boolean {
  return parseExpires(signed.expires).getTime() <= now.getTime();
}

// ---------------------------------------------------------------------------------------------
// Strict parsing of untrusted JSON

type Obj = Record<string, unknown>;

function fail(where: string, what: string): never {
  throw tufError("tuf.bad_metadata", `${where}: ${what}`);
}

function obj(value: unknown, where: string): Obj {
  if (typeof value !== "object" || value === null || Array.isArray(value)) fail(where, "must be an object");
  return value as Obj;
}

function str(value: unknown, where: string): string {
  if (typeof value !== "string") fail(where, "must be a string");
  return value;
}

function int(value: unknown, where: string, min: number): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min)
    fail(where, `must be an integer >= ${min}`);
  return value;
}

const HEX64 = /^[0-9a-f]{64}$/;
const HEX128 = /^[0-9a-f]{128}$/;
const HASH_LENGTHS: Record<string, RegExp> = { sha256: HEX64, sha512: HEX128 };

function parseHashes(value: unknown, where: string): Hashes {
  const o = obj(value, where);
  const names = Object.keys(o);
  if (names.length === 0) fail(where, "must name at least one hash");
  for (const name of names) {
    const digest = str(o[name], `${where}.${name}`);
    const form = HASH_LENGTHS[name] ?? /^[0-9a-f]+$/;
    if (!form.test(digest)) fail(`${where}.${name}`, "is not a lowercase hex digest of the right length");
  }
  return o as Hashes;
}

function parseKey(value: unknown, where: string): TufKey {
  const o = obj(value, where);
  if (o["keytype"] !== "ed25519" || o["scheme"] !== "ed25519") fail(where, "only ed25519/ed25519 keys");
  const pub = str(obj(o["keyval"], `${where}.keyval`)["public"], `${where}.keyval.public`);
  if (!HEX64.test(pub)) fail(`${where}.keyval.public`, "must be 64 lowercase hex digits");
  return o as unknown as TufKey;
}

function parseRoleKeys(value: unknown, where: string, keys: Record<string, TufKey>): RoleKeys {
  const o = obj(value, where);
  if (!Array.isArray(o["keyids"])) fail(`${where}.keyids`, "must be an array");
  const keyids = (o["keyids"] as unknown[]).map((k, i) => str(k, `${where}.keyids[${i}]`));
  if (new Set(keyids).size !== keyids.length) fail(`${where}.keyids`, "has duplicates");
  for (const id of keyids) if (!keys[id]) fail(`${where}.keyids`, `names unknown key ${id}`);
  const threshold = int(o["threshold"], `${where}.threshold`, 1);
  return { keyids, threshold };
}

function parseCommon<T extends RoleName>(o: Obj, type: T): void {
  if (o["_type"] !== type) fail("signed._type", `must be "${type}"`);
  const spec = str(o["spec_version"], "signed.spec_version");
  // §4.2: a client accepts metadata of the same major version.
  if (!/^1\.\d+(\.\d+)?$/.test(spec)) fail("signed.spec_version", `unsupported ${JSON.stringify(spec)}`);
  int(o["version"], "signed.version", 1);
  parseExpires(str(o["expires"], "signed.expires"));
}

function parseMetaFile(value: unknown, where: string): MetaFile {
  const o = obj(value, where);
  int(o["version"], `${where}.version`, 1);
  if (o["length"] !== undefined) int(o["length"], `${where}.length`, 0);
  if (o["hashes"] !== undefined) parseHashes(o["hashes"], `${where}.hashes`);
  return o as unknown as MetaFile;
}

const SIGNED_PARSERS: { [R in RoleName]: (o: Obj) => void } = {
  root(o) {
    if (typeof o["consistent_snapshot"] !== "boolean") fail("signed.consistent_snapshot", "must be boolean");
    const keys = obj(o["keys"], "signed.keys");
    for (const [id, key] of Object.entries(keys)) {
      parseKey(key, `signed.keys.${id}`);
      // A keyid that is not the key's own hash could make one key count twice.
      if (keyidOf(key as TufKey) !== id) fail(`signed.keys.${id}`, "keyid is not the key's sha256");
    }
    const roles = obj(o["roles"], "signed.roles");
    for (const role of ROLE_NAMES)
      parseRoleKeys(roles[role], `signed.roles.${role}`, keys as Record<string, TufKey>);
  },
  targets(o) {
    const targets = obj(o["targets"], "signed.targets");
    for (const [path, value] of Object.entries(targets)) {
      const where = `signed.targets[${JSON.stringify(path)}]`;
      const t = obj(value, where);
      int(t["length"], `${where}.length`, 0);
      const hashes = parseHashes(t["hashes"], `${where}.hashes`);
      if (!hashes["sha256"]) fail(`${where}.hashes`, "must include sha256");
      if (t["custom"] !== undefined) obj(t["custom"], `${where}.custom`);
    }
    if (o["delegations"] !== undefined) fail("signed.delegations", "delegated targets are not supported");
  },
  snapshot(o) {
    const meta = obj(o["meta"], "signed.meta");
    for (const [name, value] of Object.entries(meta)) parseMetaFile(value, `signed.meta[${name}]`);
    if (!meta["targets.json"]) fail("signed.meta", 'must list "targets.json"');
  },
  timestamp(o) {
    const meta = obj(o["meta"], "signed.meta");
    parseMetaFile(meta["snapshot.json"], 'signed.meta["snapshot.json"]');
  },
};

/** Checks an already-decoded document (the `signed` object is kept as is, for its signature). */
export function parseMetadataObject<R extends RoleName>(value: unknown, role: R): Metadata<SignedByRole[R]> {
  const o = obj(value, "metadata");
  if (!Array.isArray(o["signatures"])) fail("signatures", "must be an array");
  const signatures = (o["signatures"] as unknown[]).map((s, i) => {
    const so = obj(s, `signatures[${i}]`);
    return { keyid: str(so["keyid"], `signatures[${i}].keyid`), sig: str(so["sig"], `signatures[${i}].sig`) };
  });
  const signed = obj(o["signed"], "signed");
  parseCommon(signed, role);
  SIGNED_PARSERS[role](signed);
  return { signatures, signed: signed as unknown as SignedByRole[R] };
}

/** Strict parser for metadata bytes from the network or a store: UTF-8, JSON, then shape. */
export function parseMetadata<R extends RoleName>(bytes: Uint8Array, role: R): Metadata<SignedByRole[R]> {
  let value: unknown;
  try {
    value = JSON.parse(fromUtf8(bytes));
  } catch {
    throw tufError("tuf.bad_metadata", `${role} metadata is not UTF-8 JSON`);
  }
  return parseMetadataObject(value, role);
}

/** The bytes we publish: canonical JSON of the whole document (deterministic, so hashes are stable). */
export function serializeMetadata(metadata: Metadata<unknown>): Uint8Array {
  return canonicalBytes(metadata);
}

// ---------------------------------------------------------------------------------------------
// Signatures

/** The bytes every signature covers (§4.2): canonical JSON of `signed`. */
export function signedBytes(metadata: Metadata<unknown>): Uint8Array {
  return canonicalBytes(metadata.signed);
}

export function verifyKeySignature(key: TufKey, message: Uint8Array, sigHex: string): boolean {
  if (!HEX128.test(sigHex)) return false;
  return verify(fromHex(key.keyval.public), message, fromHex(sigHex));
}

/**
 * §5.3.4 / §5.4.2: `metadata` must carry valid signatures from at least `threshold` distinct keys
 * of `roleKeys`. Signatures by other keys are ignored; one key counts once.
 */
export function verifyThreshold(
  metadata: Metadata<unknown>,
  keys: Record<string, TufKey>,
  roleKeys: RoleKeys,
  role: string,
): void {
  const message = signedBytes(metadata);
  const valid = new Set<string>();
  let badFromAuthorisedKey = false;
  for (const { keyid, sig } of metadata.signatures) {
    const key = keys[keyid];
    if (!key || !roleKeys.keyids.includes(keyid) || valid.has(keyid)) continue;
    if (verifyKeySignature(key, message, sig)) valid.add(keyid);
    else badFromAuthorisedKey = true;
  }
  if (valid.size >= roleKeys.threshold) return;
  const details = { role, valid: valid.size, threshold: roleKeys.threshold };
  if (badFromAuthorisedKey)
    throw tufError("tuf.bad_signature", `${role}: a signature by an authorised key does not verify`, details);
  throw tufError(
    "tuf.threshold_not_met",
    `${role}: ${valid.size} valid signature(s), threshold ${roleKeys.threshold}`,
    details,
  );
}

/** True when a role's keys or threshold differ between two roots (fast-forward recovery, §5.3.11). */
export function roleKeysChanged(a: RootSigned, b: RootSigned, role: RoleName): boolean {
  const x = a.roles[role];
  const y = b.roles[role];
  return x.threshold !== y.threshold || [...x.keyids].sort().join() !== [...y.keyids].sort().join();
}

/** Hex digest comparison for metadata and target hashes; unknown algorithms are skipped. */
export function checkHashes(bytes: Uint8Array, hashes: Hashes, what: string): void {
  let checked = 0;
  for (const [name, expected] of Object.entries(hashes)) {
    const digest = name === "sha256" ? sha256(bytes) : name === "sha512" ? sha512(bytes) : null;
    if (!digest) continue;
    checked++;
    if (toHex(digest) !== expected) throw tufError("tuf.hash_mismatch", `${what}: ${name} does not match`);
  }
  if (checked === 0) throw tufError("tuf.bad_metadata", `${what}: no supported hash algorithm`);
}

/** Reads a target's `custom` as this project's update description; tuf.bad_metadata if it is not one. */
export function parseUpdateCustom(custom: unknown): UpdateTargetCustom {
  const o = obj(custom, "custom");
  if (!Array.isArray(o["models"]) || o["models"].some((m) => typeof m !== "string"))
    fail("custom.models", "must be an array of strings");
  str(o["toVersion"], "custom.toVersion");
  if (o["fromVersion"] !== undefined) str(o["fromVersion"], "custom.fromVersion");
  if (o["kind"] !== "full" && o["kind"] !== "delta") fail("custom.kind", 'must be "full" or "delta"');
  if (o["kind"] === "delta" && o["fromVersion"] === undefined) fail("custom.fromVersion", "a delta needs it");
  str(o["channel"], "custom.channel");
  return o as unknown as UpdateTargetCustom;
}
