import { fromUtf8, toHex } from "../../core/codec/bytes.ts";
import { sign, signingPublicKey } from "../../core/crypto/index.ts";
import { tufError } from "./errors.ts";
import {
  ed25519TufKey,
  keyidOf,
  type Metadata,
  type RoleKeys,
  signedBytes,
  type TufKey,
  type TufSignature,
  verifyKeySignature,
} from "./metadata.ts";

/**
 * Whoever holds a private key: an in-memory seed (online roles), an HSM, or nothing at all for the
 * offline root (then use prepareRootUpdate → signOffline elsewhere → addSignature).
 * `sign` returns the 64-byte Ed25519 signature of exactly the bytes given.
 */
export interface Signer {
  readonly keyid: string;
  sign(message: Uint8Array): Uint8Array | Promise<Uint8Array>;
}

/** A signer over a 32-byte Ed25519 seed kept in memory; `key` is its TUF public key. */
export function seedSigner(seed: Uint8Array): Signer & { readonly key: TufKey } {
  const key = ed25519TufKey(signingPublicKey(seed));
  const seedCopy = seed.slice();
  return {
    keyid: keyidOf(key),
    key,
    sign: (message) => sign(seedCopy, message),
    // A signer may end up in a log line: never show the seed.
    toJSON: () => ({ keyid: keyidOf(key) }),
  } as Signer & { readonly key: TufKey };
}

/**
 * Signs `metadata.signed` with every signer whose key belongs to the role, checks each signature
 * against the role's key (a signer with a wrong keyid is caught here, not by the handsets), and
 * requires the threshold. Returns new metadata; signatures already present from other keys stay.
 */
export async function signForRole<S>(
  metadata: Metadata<S>,
  keys: Record<string, TufKey>,
  roleKeys: RoleKeys,
  signers: readonly Signer[],
  role: string,
): Promise<Metadata<S>> {
  const message = signedBytes(metadata);
  let out = metadata;
  for (const signer of signers) {
    const key = keys[signer.keyid];
    if (!key || !roleKeys.keyids.includes(signer.keyid)) continue;
    const sig = toHex(await signer.sign(message));
    if (!verifyKeySignature(key, message, sig))
      throw tufError("tuf.bad_signature", `${role}: signer ${signer.keyid} produced an invalid signature`);
    out = addSignature(out, signer.keyid, sig);
  }
  const have = out.signatures.filter(
    (s) => roleKeys.keyids.includes(s.keyid) && verifyKeySignature(keys[s.keyid]!, message, s.sig),
  ).length;
  if (have < roleKeys.threshold)
    throw tufError(
      "tuf.threshold_not_met",
      `${role}: ${have} signature(s), threshold ${roleKeys.threshold}`,
      {
        role,
        valid: have,
        threshold: roleKeys.threshold,
      },
    );
  return out;
}

/** Adds (or replaces) the signature of `keyid`. Pure: checks the form, not the key — commit does that. */
export function addSignature<S>(metadata: Metadata<S>, keyid: string, sig: Uint8Array | string): Metadata<S> {
  const hex = typeof sig === "string" ? sig : toHex(sig);
  if (!/^[0-9a-f]{128}$/.test(hex)) throw tufError("tuf.bad_request", "an Ed25519 signature is 64 bytes");
  if (!/^[0-9a-f]{64}$/.test(keyid)) throw tufError("tuf.bad_request", "a keyid is 64 hex digits");
  return {
    signatures: [...metadata.signatures.filter((s) => s.keyid !== keyid), { keyid, sig: hex }],
    signed: metadata.signed,
  };
}

/**
 * What the offline machine runs: takes the metadata document (as produced by prepareRootUpdate,
 * JSON text or bytes) and the root key's 32-byte seed, and returns the signature to carry back.
 * It signs whatever `signed` holds: the operator must read it first (`describe` in the CLI).
 */
export function signOffline(metadataJson: string | Uint8Array, seed: Uint8Array): TufSignature {
  const text = typeof metadataJson === "string" ? metadataJson : fromUtf8(metadataJson);
  let doc: Metadata<unknown>;
  try {
    doc = JSON.parse(text) as Metadata<unknown>;
  } catch {
    throw tufError("tuf.bad_metadata", "the metadata to sign is not JSON");
  }
  if (typeof doc !== "object" || doc === null || typeof doc.signed !== "object" || doc.signed === null)
    throw tufError("tuf.bad_metadata", "the metadata to sign has no `signed` object");
  const key = ed25519TufKey(signingPublicKey(seed));
  return { keyid: keyidOf(key), sig: toHex(sign(seed, signedBytes(doc))) };
}
