/**
 * §6 relayed package commands and the zone's own request signature (docs/protocols/trustzone.md):
 * the command a manager sends through the server, its proof under CK_i, and the RFC 9421 profile
 * of the zone's requests to the server. Pure; re-exported by protocol.ts.
 */

import { fromBase64url } from "../core/codec/base64url.ts";
import { concatBytes, utf8 } from "../core/codec/bytes.ts";
import { canonicalJson } from "../core/codec/canonical-json.ts";
import { constantTimeEqual } from "../core/crypto/ct.ts";
import { hmacSha256 } from "../core/crypto/hash.ts";
import { HandsafeError } from "../core/errors.ts";
import { defineSignatureProfile } from "../core/http-signatures/profile.ts";
import {
  checkKey,
  checkPackageName,
  isPositiveInt,
  LABELS,
  MAX_CONTAINER_INDEX,
  MAX_ZONE_ID_BYTES,
  nonEmptyString,
  ZERO,
} from "./encoding.ts";

/**
 * §7 RFC 9421 profile of the zone's requests to the server: hmac-sha256 under ZRK, keyid = zone id,
 * covering @method and @target-uri (+ content-digest with a body), 300 s window, 16-byte nonce.
 */
export const ZONE_REQUEST_SIGNATURE = defineSignatureProfile({
  label: "tz",
  alg: "hmac-sha256",
  tag: LABELS.zoneRequest,
  requiredComponents: ["@method", "@target-uri"],
  windowSeconds: 300,
  nonceBytes: 16,
});

export type RelayOp = "put" | "get" | "delete" | "list";

export interface RelayCommand {
  op: RelayOp;
  zoneId: string;
  epoch: number;
  container: number;
  /** put / get / delete. */
  name?: string;
  /** put: base64url of the package sealed under CK_i (sealPackage). */
  package?: string;
  /** Unique per command (the zone refuses one it has seen: replay). */
  id: string;
  /** Milliseconds; the zone refuses a command outside ±RELAY_MAX_AGE_MS of its clock. */
  created: number;
}

const RELAY_MEMBERS = new Set(["op", "zoneId", "epoch", "container", "name", "package", "id", "created"]);

function relayInvalid(message: string): HandsafeError {
  return new HandsafeError("zone.relay_invalid", message, { status: 400 });
}

/** Shape of a relayed command, or `zone.relay_invalid`. */
export function parseRelayCommand(value: unknown): RelayCommand {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw relayInvalid("not an object");
  const c = value as Record<string, unknown>;
  for (const k of Object.keys(c)) if (!RELAY_MEMBERS.has(k)) throw relayInvalid(`unexpected member ${k}`);
  if (c.op !== "put" && c.op !== "get" && c.op !== "delete" && c.op !== "list") throw relayInvalid("op");
  if (!nonEmptyString(c.zoneId, MAX_ZONE_ID_BYTES)) throw relayInvalid("zoneId");
  if (!isPositiveInt(c.epoch, MAX_CONTAINER_INDEX)) throw relayInvalid("epoch");
  if (
    typeof c.container !== "number" ||
    !Number.isInteger(c.container) ||
    c.container < 0 ||
    c.container > MAX_CONTAINER_INDEX
  )
    throw relayInvalid("container");
  if (!nonEmptyString(c.id, 128)) throw relayInvalid("id");
  if (!isPositiveInt(c.created)) throw relayInvalid("created");
  const needsName = c.op !== "list";
  if (needsName !== (c.name !== undefined)) throw relayInvalid("name");
  if (needsName) {
    try {
      checkPackageName(c.name as string);
    } catch {
      throw relayInvalid("name");
    }
  }
  if (
    (c.op === "put") !== (c.package !== undefined) ||
    (c.package !== undefined && typeof c.package !== "string")
  )
    throw relayInvalid("package");
  return { ...(c as unknown as RelayCommand) };
}

/** proof = HMAC(CK_i, "…/relay" ‖ 0 ‖ canonical JSON(command)). */
export function relayProof(ck: Uint8Array, command: RelayCommand): Uint8Array {
  checkKey("CK", ck);
  return hmacSha256(ck, concatBytes(utf8(LABELS.relay), ZERO, utf8(canonicalJson(command))));
}

/** Constant-time check of a relay proof (bytes or base64url). */
export function verifyRelayProof(ck: Uint8Array, command: RelayCommand, proof: Uint8Array | string): boolean {
  let bytes: Uint8Array | undefined;
  if (typeof proof === "string") {
    try {
      bytes = fromBase64url(proof, "proof");
    } catch {
      return false;
    }
  } else bytes = proof;
  return bytes instanceof Uint8Array && constantTimeEqual(relayProof(ck, command), bytes);
}
