/**
 * The handset side of activation (the SDK). Keystore entries, per service UID:
 *   activation/<uid>/pin    the service's pinned signing key {keyId, publicKey}
 *   activation/<uid>/key    the 32-byte per-service key agreed by CPace
 *   activation/<uid>/meta   {fingerprint, activatedAt, lastSeq}
 */
import { fromBase64url, fromBase64urlOfLength, toBase64url } from "../core/codec/base64url.ts";
import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { cpaceFinish, cpaceInitiate } from "../core/crypto/cpace.ts";
import { HandsafeError } from "../core/errors.ts";
import type { Handset } from "../handset/handset.ts";
import {
  ACTIVATION_CONTENT_TYPE,
  type ActivationGrant,
  checkConfirmation,
  confirmationTag,
  cpaceParameters,
  derivePrs,
  deriveSessionKeys,
  keyFingerprint,
  loginProofMessage,
  openCommand,
  type PinnedServiceKey,
  pullProof,
  type SealedCommand,
  type ServiceCommand,
  serviceKeyId,
  verifyGrant,
} from "./protocol.ts";

export interface Session {
  token: string;
  expiresAt: number;
  handsetId: string;
  /** Services an admin set up on this user's behalf, waiting for this handset to finish them. */
  pendingServices: string[];
}

export interface ActivatedService {
  serviceUid: string;
  fingerprint: string;
  activatedAt: number;
}

export interface ServiceMeta {
  fingerprint: string;
  activatedAt: number;
  lastSeq: number;
}

const entry = (uid: string, what: "pin" | "key" | "meta") => `activation/${uid}/${what}`;

async function getJson<T>(handset: Handset, name: string): Promise<T | undefined> {
  const raw = await handset.keystore.get(name);
  return raw ? (JSON.parse(fromUtf8(raw)) as T) : undefined;
}

async function putJson(handset: Handset, name: string, value: unknown): Promise<void> {
  await handset.keystore.put(name, utf8(JSON.stringify(value)));
}

/**
 * Pins a service's signing key. Without `expected`, the key is fetched over the pinned TLS
 * channel (trust on first use of this service, within the trust of the server's certificate);
 * with `expected` (keyId or base64url key from an out-of-band source) a mismatch is refused.
 */
export async function pinService(
  handset: Handset,
  serviceUid: string,
  expected?: { keyId?: string; publicKey?: string },
): Promise<PinnedServiceKey> {
  const { body } = await handset.http.get<{ uid: string; keyId: string; publicKey: string }>(
    `/v1/services/${encodeURIComponent(serviceUid)}`,
  );
  const publicKey = fromBase64urlOfLength(body.publicKey, 32, "publicKey");
  const keyId = serviceKeyId(publicKey);
  if (body.uid !== serviceUid || keyId !== body.keyId)
    throw new HandsafeError(
      "activation.bad_service_key",
      "the server's answer about the service is inconsistent",
    );
  if (
    (expected?.keyId && expected.keyId !== keyId) ||
    (expected?.publicKey && expected.publicKey !== body.publicKey)
  )
    throw new HandsafeError("activation.bad_service_key", "the service key is not the expected one");
  const pinned = { serviceUid, keyId, publicKey };
  await putJson(handset, entry(serviceUid, "pin"), { serviceUid, keyId, publicKey: body.publicKey });
  return pinned;
}

export async function pinnedServiceKey(
  handset: Handset,
  serviceUid: string,
): Promise<PinnedServiceKey | undefined> {
  const p = await getJson<{ serviceUid: string; keyId: string; publicKey: string }>(
    handset,
    entry(serviceUid, "pin"),
  );
  return p ? { serviceUid: p.serviceUid, keyId: p.keyId, publicKey: fromBase64url(p.publicKey) } : undefined;
}

/** The sign-in fields that prove this handset holds its identity key (also for the browser form). */
export async function signInProof(
  handset: Handset,
  email: string,
  timestamp = Date.now(),
): Promise<{ identityKey: string; proof: string; timestamp: number }> {
  const identityKey = toBase64url(handset.identityKey);
  const proof = await handset.signWithIdentity(loginProofMessage({ email, identityKey, timestamp }));
  return { identityKey, proof: toBase64url(proof), timestamp };
}

export async function login(
  handset: Handset,
  credentials: { email: string; password: string },
): Promise<Session> {
  const { body } = await handset.http.post<Session>("/v1/activation/login", {
    email: credentials.email,
    password: credentials.password,
    ...(await signInProof(handset, credentials.email)),
  });
  if (body.handsetId !== handset.id)
    throw new HandsafeError("activation.wrong_handset", "the server registered another handset id");
  return body;
}

/** Login → grant → verify → CPace → confirm: one service, end to end. */
export async function activate(
  handset: Handset,
  session: Session,
  serviceUid: string,
): Promise<ActivatedService> {
  const pinned = (await pinnedServiceKey(handset, serviceUid)) ?? (await pinService(handset, serviceUid));
  const { body } = await handset.http.post<unknown>(
    "/v1/activation/grants",
    { serviceUid },
    { headers: { authorization: `Bearer ${session.token}` } },
  );
  const grant = verifyGrant(body, pinned, { handsetId: handset.id, now: Date.now() });
  return runKeyExchange(handset, grant);
}

/**
 * The content handler a browser plug-in calls with a response of type
 * application/vnd.handsafe.activation+json: verifies the signature against the pinned key of the
 * service the grant names, then runs the key exchange. Anything signed by another key is refused
 * before a single key-exchange message leaves the handset.
 */
export async function handleActivationResponse(
  handset: Handset,
  contentType: string,
  body: string | Uint8Array,
): Promise<ActivatedService> {
  if (contentType.split(";")[0]!.trim().toLowerCase() !== ACTIVATION_CONTENT_TYPE)
    throw new HandsafeError("activation.bad_content_type", `expected ${ACTIVATION_CONTENT_TYPE}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof body === "string" ? body : fromUtf8(body));
  } catch {
    throw new HandsafeError("activation.bad_grant", "the activation response is not JSON");
  }
  const uid = (parsed as { grant?: { serviceUid?: unknown } })?.grant?.serviceUid;
  if (typeof uid !== "string") throw new HandsafeError("activation.bad_grant", "the grant names no service");
  const pinned = await pinnedServiceKey(handset, uid);
  if (!pinned)
    throw new HandsafeError(
      "activation.unpinned_service",
      `no pinned key for service ${uid}: add the service first`,
    );
  const grant = verifyGrant(parsed, pinned, { handsetId: handset.id, now: Date.now() });
  return runKeyExchange(handset, grant);
}

async function runKeyExchange(handset: Handset, grant: ActivationGrant): Promise<ActivatedService> {
  const secret = fromBase64url(grant.secret, "secret");
  const params = cpaceParameters(derivePrs(secret), grant.activationId, grant.serviceUid, grant.handsetId);
  secret.fill(0);
  const { state, message: ya } = cpaceInitiate({
    prs: params.prs,
    ci: params.ci,
    sid: params.sid,
    ad: params.adA,
  });
  const started = await handset.http.post<{ yb: string; confirm: string }>(`${grant.exchangeUrl}/start`, {
    activationId: grant.activationId,
    ya: toBase64url(ya),
  });
  const yb = fromBase64urlOfLength(started.body.yb, 32, "yb");
  const isk = cpaceFinish(state, yb, params.adB);
  const keys = deriveSessionKeys(isk, params.sid);
  // The service proves first; a wrong proof means a wrong secret or an impostor: stop here.
  checkConfirmation(
    confirmationTag(keys.confirmResponder, ya, yb),
    fromBase64urlOfLength(started.body.confirm, 32, "confirm"),
  );
  const confirmed = await handset.http.post<{ fingerprint: string }>(`${grant.exchangeUrl}/confirm`, {
    activationId: grant.activationId,
    confirm: toBase64url(confirmationTag(keys.confirmInitiator, ya, yb)),
  });
  const fingerprint = keyFingerprint(keys.serviceKey);
  if (confirmed.body.fingerprint !== fingerprint)
    throw new HandsafeError("activation.confirmation_failed", "the service stored a different key");
  await handset.keystore.put(entry(grant.serviceUid, "key"), keys.serviceKey);
  const meta: ServiceMeta = { fingerprint, activatedAt: Date.now(), lastSeq: 0 };
  await putJson(handset, entry(grant.serviceUid, "meta"), meta);
  keys.serviceKey.fill(0);
  return { serviceUid: grant.serviceUid, fingerprint, activatedAt: meta.activatedAt };
}

export async function listActivated(handset: Handset): Promise<ActivatedService[]> {
  const names = await handset.keystore.list("activation/");
  const out: ActivatedService[] = [];
  for (const name of names) {
    const m = /^activation\/(.+)\/meta$/.exec(name);
    if (!m) continue;
    const meta = await getJson<ServiceMeta>(handset, name);
    if (meta && (await handset.keystore.get(entry(m[1]!, "key"))))
      out.push({ serviceUid: m[1]!, fingerprint: meta.fingerprint, activatedAt: meta.activatedAt });
  }
  return out.sort((a, b) => a.serviceUid.localeCompare(b.serviceUid));
}

/** Revokes on the server, then forgets the key here. Other services are untouched. */
export async function revoke(handset: Handset, session: Session, serviceUid: string): Promise<void> {
  await handset.http.delete(`/v1/handsets/${handset.id}/keys/${encodeURIComponent(serviceUid)}`, {
    headers: { authorization: `Bearer ${session.token}` },
  });
  await handset.keystore.delete(entry(serviceUid, "key"));
  await handset.keystore.delete(entry(serviceUid, "meta"));
}

/**
 * Pulls the service's commands and returns the ones that verify under the per-service key, in
 * order; a tampered, misaddressed or replayed command is refused (reported in `refused`).
 */
export async function pullCommands(
  handset: Handset,
  serviceUid: string,
  now = Date.now(),
): Promise<{ accepted: ServiceCommand[]; refused: Array<{ code: string; commandId?: string }> }> {
  const key = await handset.keystore.get(entry(serviceUid, "key"));
  const meta = await getJson<ServiceMeta>(handset, entry(serviceUid, "meta"));
  if (!key || !meta)
    throw new HandsafeError("activation.not_active", `${serviceUid} is not activated on this handset`);
  const commands = await fetchSealedCommands(handset, serviceUid, key, meta.lastSeq, now);
  const result = acceptCommands(key, commands, { serviceUid, handsetId: handset.id, meta });
  await putJson(handset, entry(serviceUid, "meta"), result.meta);
  key.fill(0);
  return { accepted: result.accepted, refused: result.refused };
}

/** The commands as they came over the wire, after `afterSeq` — not yet verified. */
export async function fetchSealedCommands(
  handset: Handset,
  serviceUid: string,
  key: Uint8Array,
  afterSeq: number,
  now = Date.now(),
): Promise<SealedCommand[]> {
  const proof = pullProof(key, { serviceUid, handsetId: handset.id, afterSeq, timestamp: now });
  const query = new URLSearchParams({
    handsetId: handset.id,
    after: String(afterSeq),
    ts: String(now),
    proof: toBase64url(proof),
  });
  const { body } = await handset.http.get<{ commands: SealedCommand[] }>(
    `/v1/activation/commands/${encodeURIComponent(serviceUid)}?${query}`,
  );
  return body.commands;
}

/** Verifies a batch of commands in order, advancing the replay counter only past good ones. */
export function acceptCommands(
  key: Uint8Array,
  commands: SealedCommand[],
  ctx: { serviceUid: string; handsetId: string; meta: ServiceMeta },
): { accepted: ServiceCommand[]; refused: Array<{ code: string; commandId?: string }>; meta: ServiceMeta } {
  const accepted: ServiceCommand[] = [];
  const refused: Array<{ code: string; commandId?: string }> = [];
  let lastSeq = ctx.meta.lastSeq;
  for (const sealed of commands) {
    try {
      const c = openCommand(key, sealed, { serviceUid: ctx.serviceUid, handsetId: ctx.handsetId, lastSeq });
      accepted.push(c);
      lastSeq = c.seq;
    } catch (e) {
      const commandId = (sealed as { command?: { commandId?: unknown } })?.command?.commandId;
      refused.push({
        code: e instanceof HandsafeError ? e.code : "command.malformed",
        ...(typeof commandId === "string" ? { commandId } : {}),
      });
    }
  }
  return { accepted, refused, meta: { ...ctx.meta, lastSeq } };
}

/** The per-service key's fingerprint as this handset holds it (never the key). */
export async function serviceFingerprint(handset: Handset, serviceUid: string): Promise<string | undefined> {
  return (await getJson<ServiceMeta>(handset, entry(serviceUid, "meta")))?.fingerprint;
}

/** Unread notifications from the server's inbox for this handset (reading marks them read). */
export async function readNotifications(
  handset: Handset,
  session: Session,
): Promise<Array<{ id: string; kind: string; body: Record<string, unknown>; createdAt: number }>> {
  const { body } = await handset.http.get<{
    notifications: Array<{ id: string; kind: string; body: Record<string, unknown>; createdAt: number }>;
  }>(`/v1/handsets/${handset.id}/notifications`, { headers: { authorization: `Bearer ${session.token}` } });
  return body.notifications;
}
