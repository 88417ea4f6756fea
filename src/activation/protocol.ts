/**
 * Activation protocol core — no I/O. The server route and the handset SDK are thin shells over
 * these functions. The spec is docs/protocols/activation.md; every label here is listed there.
 *
 *   handset                                     server (service UID endpoint)
 *   login (email, password, handset id)   ──►   session
 *   request grant (service UID)           ──►   secret ← CSPRNG(32); grant signed by the service key
 *   verify grant against the pinned key
 *   CPace initiator: Ya                   ──►   CPace responder: Yb, ISK, confirmB
 *   check confirmB; confirmA              ──►   check confirmA; store service key (sealed at rest)
 */

import { fromBase64url, fromBase64urlOfLength, toBase64url } from "../core/codec/base64url.ts";
import { concatBytes, lengthPrefixed, utf8 } from "../core/codec/bytes.ts";
import { canonicalJson } from "../core/codec/canonical-json.ts";
import { constantTimeEqual } from "../core/crypto/ct.ts";
import { sign, verify } from "../core/crypto/ed25519.ts";
import { hmacSha256, sha256 } from "../core/crypto/hash.ts";
import { hkdfSha256 } from "../core/crypto/hkdf.ts";
import { HandsafeError } from "../core/errors.ts";

export const ACTIVATION_CONTENT_TYPE = "application/vnd.handsafe.activation+json";

/** Every domain-separation label of the protocol (docs/protocols/activation.md §Labels). */
export const LABELS = {
  grantSignature: "handsafe/v1/activation/grant",
  prs: "handsafe/v1/activation/prs",
  channel: "handsafe/v1/activation/channel",
  confirmInitiator: "handsafe/v1/activation/confirm/initiator",
  confirmResponder: "handsafe/v1/activation/confirm/responder",
  confirmTranscript: "handsafe/v1/activation/confirm",
  serviceKey: "handsafe/v1/activation/service-key",
  keyFingerprint: "handsafe/v1/activation/key-fingerprint",
  serviceKeyId: "handsafe/v1/activation/service-key-id",
  commandMacKey: "handsafe/v1/activation/command-mac",
  commandMac: "handsafe/v1/activation/command",
  pullAuthKey: "handsafe/v1/activation/pull-auth",
  loginProof: "handsafe/v1/activation/login",
} as const;

export const SECRET_BYTES = 32;
export const ACTIVATION_ID_BYTES = 16;
export const SERVICE_KEY_BYTES = 32;

// ---------------------------------------------------------------------------------------------
// The grant: what the service signs and the handset checks before any key exchange starts.

export interface ActivationGrant {
  v: 1;
  /** 16 random bytes, base64url; also the CPace session id (sid). */
  activationId: string;
  serviceUid: string;
  handsetId: string;
  /** The one-time activation secret, 32 random bytes, base64url. Never shown to the user. */
  secret: string;
  /** The service UID endpoint: where the key exchange runs. A path on the same server. */
  exchangeUrl: string;
  /** Epoch milliseconds. */
  expiresAt: number;
}

export interface SignedGrant {
  grant: ActivationGrant;
  /** Which service signing key signed it (see serviceKeyId). */
  keyId: string;
  signature: string;
}

function grantMessage(grant: ActivationGrant): Uint8Array {
  return concatBytes(utf8(LABELS.grantSignature), new Uint8Array([0]), utf8(canonicalJson(grant)));
}

/** The id of a service's Ed25519 public key: what a handset pins next to the key itself. */
export function serviceKeyId(publicKey: Uint8Array): string {
  return `svk_${toBase64url(sha256(concatBytes(utf8(LABELS.serviceKeyId), publicKey))).slice(0, 22)}`;
}

export function exchangePath(serviceUid: string): string {
  return `/v1/activation/exchange/${encodeURIComponent(serviceUid)}`;
}

export function signGrant(
  grant: ActivationGrant,
  serviceSigningSeed: Uint8Array,
  keyId: string,
): SignedGrant {
  return { grant, keyId, signature: toBase64url(sign(serviceSigningSeed, grantMessage(grant))) };
}

export interface PinnedServiceKey {
  serviceUid: string;
  keyId: string;
  publicKey: Uint8Array;
}

/**
 * The handset's first check: a grant is only acted on when the pinned key of the very service
 * it names signed it, it is addressed to this handset, and it has not expired. Anything else is
 * refused before a single key-exchange message is sent.
 */
export function verifyGrant(
  input: unknown,
  pinned: PinnedServiceKey,
  expect: { handsetId: string; now: number },
): ActivationGrant {
  const signed = parseSignedGrant(input);
  const { grant } = signed;
  if (grant.serviceUid !== pinned.serviceUid)
    throw new HandsafeError(
      "activation.wrong_service",
      "the grant names another service than the pinned one",
    );
  if (signed.keyId !== pinned.keyId)
    throw new HandsafeError("activation.bad_signature", "the grant is not signed by the pinned service key");
  let signature: Uint8Array;
  try {
    signature = fromBase64url(signed.signature, "signature");
  } catch {
    signature = new Uint8Array(0);
  }
  if (signature.length !== 64 || !verify(pinned.publicKey, grantMessage(grant), signature))
    throw new HandsafeError("activation.bad_signature", "the grant's signature does not verify");
  if (grant.handsetId !== expect.handsetId)
    throw new HandsafeError("activation.wrong_handset", "the grant is addressed to another handset");
  if (grant.expiresAt <= expect.now)
    throw new HandsafeError("activation.secret_expired", "the activation secret has expired");
  if (grant.exchangeUrl !== exchangePath(grant.serviceUid))
    throw new HandsafeError("activation.bad_grant", "the grant's exchange address is not the service's own");
  return grant;
}

/** Strict shape check of an untrusted signed grant (from the network or a browser plug-in). */
export function parseSignedGrant(input: unknown): SignedGrant {
  const bad = (why: string) =>
    new HandsafeError("activation.bad_grant", `malformed activation grant: ${why}`);
  if (!isRecord(input)) throw bad("not an object");
  const { grant, keyId, signature } = input;
  if (typeof keyId !== "string" || typeof signature !== "string")
    throw bad("keyId and signature are required");
  if (!isRecord(grant)) throw bad("grant is not an object");
  const g = grant;
  if (g.v !== 1) throw bad("unknown version");
  for (const f of ["activationId", "serviceUid", "handsetId", "secret", "exchangeUrl"] as const)
    if (typeof g[f] !== "string" || (g[f] as string).length === 0 || (g[f] as string).length > 200)
      throw bad(`${f} must be a non-empty string`);
  if (typeof g.expiresAt !== "number" || !Number.isSafeInteger(g.expiresAt)) throw bad("expiresAt");
  const keys = Object.keys(g).sort().join(",");
  if (keys !== "activationId,exchangeUrl,expiresAt,handsetId,secret,serviceUid,v")
    throw bad("unexpected fields");
  try {
    fromBase64urlOfLength(g.activationId as string, ACTIVATION_ID_BYTES, "activationId");
    fromBase64urlOfLength(g.secret as string, SECRET_BYTES, "secret");
  } catch (e) {
    throw bad((e as Error).message);
  }
  return { grant: g as unknown as ActivationGrant, keyId, signature };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

// ---------------------------------------------------------------------------------------------
// Sign-in: the password says who the user is; a signature by the handset's identity key says
// which handset — so a password and a public key alone cannot take a handset's identity.

/** A proof is accepted this long either side of the server's clock. */
export const LOGIN_PROOF_WINDOW_MS = 5 * 60 * 1000;

export function loginProofMessage(input: {
  email: string;
  identityKey: string;
  timestamp: number;
}): Uint8Array {
  return concatBytes(
    utf8(LABELS.loginProof),
    new Uint8Array([0]),
    utf8(
      canonicalJson({
        email: input.email.trim().toLowerCase(),
        identityKey: input.identityKey,
        timestamp: input.timestamp,
      }),
    ),
  );
}

export function verifyLoginProof(
  input: { email: string; identityKey: Uint8Array; timestamp: number; proof: Uint8Array },
  now: number,
): void {
  if (!Number.isSafeInteger(input.timestamp) || Math.abs(now - input.timestamp) > LOGIN_PROOF_WINDOW_MS)
    throw new HandsafeError("auth.stale_proof", "the handset's sign-in proof is too old or from the future", {
      status: 401,
    });
  const message = loginProofMessage({
    email: input.email,
    identityKey: toBase64url(input.identityKey),
    timestamp: input.timestamp,
  });
  if (input.proof.length !== 64 || !verify(input.identityKey, message, input.proof))
    throw new HandsafeError("auth.bad_proof", "the sign-in is not signed by the handset's identity key", {
      status: 401,
    });
}

// ---------------------------------------------------------------------------------------------
// CPace inputs and the keys that come out of it.

/**
 * The password-related string of CPace. HKDF of the secret, so that what the server keeps
 * (sealed at rest) for the exchange is a one-way function of the secret, never the secret.
 */
export function derivePrs(secret: Uint8Array): Uint8Array {
  return hkdfSha256(secret, new Uint8Array(0), LABELS.prs, 32);
}

/** CPace's channel identifier: binds the exchange to this service and this handset. */
export function channelIdentifier(serviceUid: string, handsetId: string): Uint8Array {
  return lengthPrefixed(utf8(LABELS.channel), utf8(serviceUid), utf8(handsetId));
}

export interface CPaceParameters {
  prs: Uint8Array;
  ci: Uint8Array;
  sid: Uint8Array;
  /** Initiator (handset) associated data. */
  adA: Uint8Array;
  /** Responder (service) associated data. */
  adB: Uint8Array;
}

export function cpaceParameters(
  prs: Uint8Array,
  activationId: string,
  serviceUid: string,
  handsetId: string,
): CPaceParameters {
  return {
    prs,
    ci: channelIdentifier(serviceUid, handsetId),
    sid: fromBase64urlOfLength(activationId, ACTIVATION_ID_BYTES, "activationId"),
    adA: utf8(handsetId),
    adB: utf8(serviceUid),
  };
}

export interface SessionKeys {
  confirmInitiator: Uint8Array;
  confirmResponder: Uint8Array;
  serviceKey: Uint8Array;
}

/** From CPace's ISK, three independent keys (HKDF with the sid as salt, one label each). */
export function deriveSessionKeys(isk: Uint8Array, sid: Uint8Array): SessionKeys {
  return {
    confirmInitiator: hkdfSha256(isk, sid, LABELS.confirmInitiator, 32),
    confirmResponder: hkdfSha256(isk, sid, LABELS.confirmResponder, 32),
    serviceKey: hkdfSha256(isk, sid, LABELS.serviceKey, SERVICE_KEY_BYTES),
  };
}

/** Explicit key confirmation: a MAC of the whole exchange under each side's own confirm key. */
export function confirmationTag(key: Uint8Array, ya: Uint8Array, yb: Uint8Array): Uint8Array {
  return hmacSha256(key, lengthPrefixed(utf8(LABELS.confirmTranscript), ya, yb));
}

export function checkConfirmation(expected: Uint8Array, received: Uint8Array): void {
  if (!constantTimeEqual(expected, received))
    throw new HandsafeError(
      "activation.confirmation_failed",
      "key confirmation failed: the two sides do not share the same secret",
      { status: 403 },
    );
}

/** A short, safe-to-show fingerprint of a key, so a person can compare both sides. */
export function keyFingerprint(key: Uint8Array): string {
  const digest = sha256(concatBytes(utf8(LABELS.keyFingerprint), key));
  const hex = Array.from(digest.subarray(0, 10), (b) => b.toString(16).padStart(2, "0")).join("");
  return hex.match(/.{4}/g)!.join(":");
}

// ---------------------------------------------------------------------------------------------
// The server's activation record: an explicit state machine.

export type ActivationState = "pending" | "issued" | "exchanging" | "active" | "failed" | "expired";

export interface ActivationRecordView {
  state: ActivationState;
  expiresAt: number;
}

/** May a key exchange start on this record now? Returns the error to answer with, or nothing. */
export function checkExchangeStart(record: ActivationRecordView | undefined, now: number): void {
  if (!record) throw new HandsafeError("activation.unknown", "no such activation", { status: 404 });
  switch (record.state) {
    case "issued":
      if (record.expiresAt <= now)
        throw new HandsafeError("activation.secret_expired", "the activation secret has expired", {
          status: 410,
        });
      return;
    case "exchanging":
      throw new HandsafeError(
        "activation.exchange_in_progress",
        "a key exchange for this activation secret is already running",
        { status: 409 },
      );
    case "pending":
      throw new HandsafeError("activation.bad_state", "this activation has no secret yet", { status: 409 });
    case "expired":
      throw new HandsafeError("activation.secret_expired", "the activation secret has expired", {
        status: 410,
      });
    default:
      throw new HandsafeError("activation.secret_used", "the activation secret was already used", {
        status: 410,
      });
  }
}

/** May the handset's confirmation be accepted on this record now? */
export function checkExchangeConfirm(record: ActivationRecordView | undefined, now: number): void {
  if (!record) throw new HandsafeError("activation.unknown", "no such activation", { status: 404 });
  if (record.state === "issued" || record.state === "pending")
    throw new HandsafeError("activation.bad_state", "confirmation before the key exchange started", {
      status: 409,
    });
  if (record.state !== "exchanging")
    throw new HandsafeError("activation.secret_used", "the activation secret was already used", {
      status: 410,
    });
  if (record.expiresAt <= now)
    throw new HandsafeError("activation.secret_expired", "the key exchange took too long", { status: 410 });
}

// ---------------------------------------------------------------------------------------------
// Commands a service sends to an activated handset, authenticated with the per-service key.

export type CommandArgs = Record<string, string | number | boolean>;

export interface ServiceCommand {
  v: 1;
  commandId: string;
  serviceUid: string;
  handsetId: string;
  name: string;
  args: CommandArgs;
  /** Strictly increasing per (service, handset): the handset refuses anything not newer. */
  seq: number;
  issuedAt: number;
}

export interface SealedCommand {
  command: ServiceCommand;
  mac: string;
}

function commandMacKey(serviceKey: Uint8Array): Uint8Array {
  return hkdfSha256(serviceKey, new Uint8Array(0), LABELS.commandMacKey, 32);
}

function commandMac(serviceKey: Uint8Array, command: ServiceCommand): Uint8Array {
  return hmacSha256(
    commandMacKey(serviceKey),
    concatBytes(utf8(LABELS.commandMac), new Uint8Array([0]), utf8(canonicalJson(command))),
  );
}

export function sealCommand(serviceKey: Uint8Array, command: ServiceCommand): SealedCommand {
  return { command, mac: toBase64url(commandMac(serviceKey, command)) };
}

/**
 * The handset's check of a command: right MAC under the key it shares with that service,
 * addressed to it, and newer than the last one it accepted (no replay, no reordering).
 */
export function openCommand(
  serviceKey: Uint8Array,
  sealed: SealedCommand,
  expect: { serviceUid: string; handsetId: string; lastSeq: number },
): ServiceCommand {
  const { command } = sealed;
  if (!isRecord(command) || typeof sealed.mac !== "string")
    throw new HandsafeError("command.malformed", "malformed command");
  const mac = fromBase64url(sealed.mac, "mac");
  if (!constantTimeEqual(commandMac(serviceKey, command), mac))
    throw new HandsafeError("command.bad_mac", "the command is not authenticated by the service key", {
      status: 403,
    });
  if (command.serviceUid !== expect.serviceUid || command.handsetId !== expect.handsetId)
    throw new HandsafeError("command.misaddressed", "the command is addressed elsewhere", { status: 403 });
  if (!Number.isSafeInteger(command.seq) || command.seq <= expect.lastSeq)
    throw new HandsafeError("command.replayed", "the command is a replay or arrived out of order", {
      status: 409,
    });
  return command;
}

// ---------------------------------------------------------------------------------------------
// The handset proves, when it pulls its commands, that it holds the service key.

/** A pull proof is accepted this long either side of the server's clock. */
export const PULL_WINDOW_MS = 5 * 60 * 1000;

export interface PullRequest {
  serviceUid: string;
  handsetId: string;
  afterSeq: number;
  timestamp: number;
}

export function pullProof(serviceKey: Uint8Array, request: PullRequest): Uint8Array {
  const key = hkdfSha256(serviceKey, new Uint8Array(0), LABELS.pullAuthKey, 32);
  return hmacSha256(
    key,
    lengthPrefixed(
      utf8(request.serviceUid),
      utf8(request.handsetId),
      utf8(String(request.afterSeq)),
      utf8(String(request.timestamp)),
    ),
  );
}

/**
 * A replayed proof only lists the same MAC-protected commands again (the handset drops those it
 * has seen by seq), so a time window is enough here; it is not a licence to act.
 */
export function verifyPullAuth(
  serviceKey: Uint8Array,
  request: PullRequest & { proof: Uint8Array; now: number },
): void {
  if (Math.abs(request.now - request.timestamp) > PULL_WINDOW_MS)
    throw new HandsafeError("command.stale_proof", "the pull proof is too old or from the future", {
      status: 401,
    });
  if (!constantTimeEqual(pullProof(serviceKey, request), request.proof))
    throw new HandsafeError("command.bad_proof", "the pull proof does not verify", { status: 401 });
}
