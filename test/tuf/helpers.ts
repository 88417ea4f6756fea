/** Shared test fixtures: fixed keys, a small repository, an in-memory "network" and an attacker's pen. */
import { fromUtf8, toHex, utf8 } from "../../src/core/codec/bytes.ts";
import { sign } from "../../src/core/crypto/index.ts";
import { canonicalBytes } from "../../src/updates/tuf/canonical.ts";
import {
  type Metadata,
  type RoleName,
  type Signer,
  seedSigner,
  TufClient,
  type TufFetch,
  TufRepository,
} from "../../src/updates/tuf/index.ts";

export const T0 = new Date("2030-01-01T00:00:00Z");
export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;
export const at = (ms: number) => new Date(T0.getTime() + ms);

/** Deterministic seeds: seed(n) is 32 bytes of n, so each test's keys are stable and distinct. */
export function seed(n: number): Uint8Array {
  return new Uint8Array(32).fill(n);
}

export const KEYS = {
  root: seedSigner(seed(1)),
  targets: seedSigner(seed(2)),
  snapshot: seedSigner(seed(3)),
  timestamp: seedSigner(seed(4)),
  root2: seedSigner(seed(11)),
  targets2: seedSigner(seed(12)),
  timestamp2: seedSigner(seed(14)),
  targetsB: seedSigner(seed(22)),
  attacker: seedSigner(seed(99)),
};

export const FIRMWARE_PATH = "firmware/model-x/1.2.0.img";
export const FIRMWARE = utf8("firmware image 1.2.0 for model-x ".repeat(100));
export const FIRMWARE_CUSTOM = {
  models: ["model-x"],
  fromVersion: "1.1.0",
  toVersion: "1.2.0",
  kind: "full",
  channel: "stable",
};

export async function makeRepository(
  now: Date = T0,
  overrides: Partial<Record<RoleName, { keys: Signer[]; threshold: number }>> = {},
): Promise<{ repo: TufRepository; signers: Signer[] }> {
  const roles = {
    root: { keys: [KEYS.root], threshold: 1 },
    targets: { keys: [KEYS.targets], threshold: 1 },
    snapshot: { keys: [KEYS.snapshot], threshold: 1 },
    timestamp: { keys: [KEYS.timestamp], threshold: 1 },
    ...overrides,
  };
  const signers = Object.values(roles).flatMap((r) => r.keys);
  const repo = await TufRepository.create({
    roles: {
      root: { keys: roles.root.keys.map(keyOf), threshold: roles.root.threshold },
      targets: { keys: roles.targets.keys.map(keyOf), threshold: roles.targets.threshold },
      snapshot: { keys: roles.snapshot.keys.map(keyOf), threshold: roles.snapshot.threshold },
      timestamp: { keys: roles.timestamp.keys.map(keyOf), threshold: roles.timestamp.threshold },
    },
    signers,
    now,
  });
  repo.addTargetBytes(FIRMWARE_PATH, FIRMWARE, FIRMWARE_CUSTOM);
  await repo.publish(signers, now);
  return { repo, signers };
}

function keyOf(signer: Signer) {
  return (signer as ReturnType<typeof seedSigner>).key;
}

/** A repository "on the network": a fetch over its files, with files swapped or withheld. */
export function network(files: Map<string, Uint8Array>, overrides: Record<string, Uint8Array | null> = {}) {
  const requested: string[] = [];
  const fetch: TufFetch = async (name) => {
    requested.push(name);
    if (Object.hasOwn(overrides, name)) return overrides[name]!;
    return files.get(name) ?? null;
  };
  return { fetch, requested };
}

export function clientFor(files: Map<string, Uint8Array>): TufClient {
  return TufClient.fromTrustedRoot(files.get("1.root.json")!);
}

/**
 * The attacker's pen: decode a metadata file, change `signed`, and sign it with the given seeds
 * (a stolen key, or one that was never trusted). No seeds: keep the old signatures as they are.
 */
export function forge(
  bytes: Uint8Array,
  change: (signed: Record<string, unknown>) => void,
  seeds?: Uint8Array[],
): Uint8Array {
  const doc = JSON.parse(fromUtf8(bytes)) as Metadata<Record<string, unknown>>;
  change(doc.signed);
  if (seeds) {
    const message = canonicalBytes(doc.signed);
    doc.signatures = seeds.map((s) => ({ keyid: seedSigner(s).keyid, sig: toHex(sign(s, message)) }));
  }
  return canonicalBytes(doc);
}

export function withSignatures(bytes: Uint8Array, change: (sigs: { keyid: string; sig: string }[]) => void) {
  const doc = JSON.parse(fromUtf8(bytes)) as Metadata<unknown>;
  change(doc.signatures);
  return canonicalBytes(doc);
}

export async function refused(promise: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (e) {
    return (e as { code?: string }).code ?? `not a HandsafeError: ${String(e)}`;
  }
  return "accepted";
}
