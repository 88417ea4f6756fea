import { utf8 } from "../../core/codec/bytes.ts";
import { tufError } from "./errors.ts";
import {
  keyidOf,
  type Metadata,
  ROLE_NAMES,
  type RoleKeys,
  type RoleName,
  type RootSigned,
  type TufKey,
} from "./metadata.ts";

/** Building the `keys` and `roles` of a root: from a setup (version 1) or by changes (N+1). */

export interface RoleSetup {
  keys: TufKey[];
  threshold: number;
}

export interface RoleChange {
  add?: TufKey[];
  /** keyids to take out of the role (revocation). */
  remove?: string[];
  threshold?: number;
}

/** A root version waiting for signatures: `bytes` is the JSON document to carry to the signers. */
export interface PendingRoot {
  metadata: Metadata<RootSigned>;
  bytes: Uint8Array;
}

export function badRequest(message: string): never {
  throw tufError("tuf.bad_request", message);
}

function normaliseKey(key: TufKey): TufKey {
  if (key?.keytype !== "ed25519" || key.scheme !== "ed25519" || !/^[0-9a-f]{64}$/.test(key.keyval?.public))
    badRequest("keys must be ed25519/ed25519 with a 64-hex public key");
  return { keytype: "ed25519", scheme: "ed25519", keyval: { public: key.keyval.public } };
}

function checkThreshold(role: string, keyCount: number, threshold: number): void {
  if (!Number.isSafeInteger(threshold) || threshold < 1 || threshold > keyCount)
    badRequest(`${role}: threshold ${threshold} must be between 1 and its ${keyCount} key(s)`);
}

export function pendingRoot(signed: RootSigned): PendingRoot {
  const metadata: Metadata<RootSigned> = { signatures: [], signed };
  // Pretty JSON: a person reads this on the offline machine before signing.
  return { metadata, bytes: utf8(`${JSON.stringify(metadata, null, 2)}\n`) };
}

export function rootRoles(roles: Record<RoleName, RoleSetup>): Pick<RootSigned, "keys" | "roles"> {
  const keys: Record<string, TufKey> = {};
  const out = {} as Record<RoleName, RoleKeys>;
  for (const role of ROLE_NAMES) {
    const setup = roles[role];
    if (!setup || !Array.isArray(setup.keys)) badRequest(`role ${role} needs keys`);
    const keyids: string[] = [];
    for (const key of setup.keys) {
      const k = normaliseKey(key);
      const id = keyidOf(k);
      keys[id] = k;
      if (!keyids.includes(id)) keyids.push(id);
    }
    checkThreshold(role, keyids.length, setup.threshold);
    out[role] = { keyids, threshold: setup.threshold };
  }
  return { keys, roles: out };
}

/** Root N+1's keys and roles: `changes` applied to `current`, keys no role uses dropped. */
export function applyRoleChanges(
  current: RootSigned,
  changes: Partial<Record<RoleName, RoleChange>>,
): Pick<RootSigned, "keys" | "roles"> {
  const keys: Record<string, TufKey> = JSON.parse(JSON.stringify(current.keys));
  const roles: Record<RoleName, RoleKeys> = JSON.parse(JSON.stringify(current.roles));
  for (const [role, change] of Object.entries(changes) as [RoleName, RoleChange][]) {
    if (!ROLE_NAMES.includes(role)) badRequest(`unknown role ${role}`);
    const target = roles[role];
    for (const id of change.remove ?? []) {
      if (!target.keyids.includes(id)) badRequest(`${role} has no key ${id}`);
      target.keyids = target.keyids.filter((k) => k !== id);
    }
    for (const key of change.add ?? []) {
      const k = normaliseKey(key);
      const id = keyidOf(k);
      keys[id] = k;
      if (!target.keyids.includes(id)) target.keyids.push(id);
    }
    target.threshold = change.threshold ?? target.threshold;
    checkThreshold(role, target.keyids.length, target.threshold);
  }
  const used = new Set(ROLE_NAMES.flatMap((r) => roles[r].keyids));
  for (const id of Object.keys(keys)) if (!used.has(id)) delete keys[id];
  return { keys, roles };
}
