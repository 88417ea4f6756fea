/**
 * Service managers (docs/protocols/trustzone.md §1, §7): registration (pending until the carrier
 * reviews it), the API key (stored as SHA-256, looked up by hash), review of a manager and of its
 * applications, and the manager's own view.
 */
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { isValidHpkePublicKey } from "../core/crypto/hpke.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { hashToken } from "../platform/auth/store.ts";
import { checkWebhookUrl } from "../platform/notify/webhooks.ts";
import {
  AT_REST,
  bad,
  intIn,
  newId,
  notFound,
  type TrustzoneCore,
  text,
  tsmError,
} from "./service-context.ts";
import * as store from "./store.ts";

/** A manager's API key: "hs_tsm_" + base64url of 32 random bytes. */
export const MANAGER_API_KEY = /^hs_tsm_[A-Za-z0-9_-]{43}$/;

export async function registerManager(
  svc: TrustzoneCore,
  input: Record<string, unknown>,
  origin: string,
): Promise<{ managerId: string; apiKey: string; state: "pending"; webhookSecret?: string }> {
  const entry = { actor: origin, action: "tsm.manager_registered" };
  const parsed = await svc.guarded(entry, async () => {
    const apps = input["applications"] ?? [];
    if (!Array.isArray(apps) || apps.length > 32) throw bad("applications is a list of at most 32");
    const applications = apps.map((a: unknown) => {
      const o = (a ?? {}) as Record<string, unknown>;
      const sha = text(o["sha256"], "applications[].sha256", 64);
      if (!/^[0-9a-f]{64}$/.test(sha)) throw bad("applications[].sha256 is 64 lower-case hex digits");
      return { appId: text(o["appId"], "applications[].appId", 100), sha256: sha };
    });
    if (new Set(applications.map((a) => a.appId)).size !== applications.length)
      throw bad("an application is listed twice");
    let key: Uint8Array;
    try {
      key = fromBase64url(text(input["x25519PublicKey"], "x25519PublicKey", 64), "x25519PublicKey");
    } catch {
      throw bad("x25519PublicKey is base64url");
    }
    if (!isValidHpkePublicKey(key)) throw bad("x25519PublicKey is not a valid X25519 public key");
    const certification = input["certification"] ?? {};
    if (
      typeof certification !== "object" ||
      certification === null ||
      JSON.stringify(certification).length > 4096
    )
      throw bad("certification is a JSON object of at most 4 KiB");
    return {
      name: text(input["name"], "name", 200),
      identificationCode: text(input["identificationCode"], "identificationCode", 100),
      memoryBytes: intIn(input["memoryBytes"], "memoryBytes", 0, 1 << 30, 0),
      certification,
      applications,
      key,
      webhookUrl:
        input["webhookUrl"] === undefined
          ? null
          : checkWebhookUrl(text(input["webhookUrl"], "webhookUrl", 4096)).href,
    };
  });
  const id = newId("mgr");
  const apiKey = `hs_tsm_${toBase64url(randomBytes(32))}`;
  const secret = parsed.webhookUrl === null ? undefined : randomBytes(32);
  const now = svc.now();
  try {
    await store.insertManager(svc.db, {
      id,
      name: parsed.name,
      identificationCode: parsed.identificationCode,
      certification: parsed.certification,
      memoryBytes: parsed.memoryBytes,
      applications: parsed.applications,
      x25519PublicKey: parsed.key,
      apiKeyHash: hashToken(apiKey),
      webhookUrl: parsed.webhookUrl,
      sealedWebhookSecret: secret ? svc.platform.keyring.sealAtRest(secret, AT_REST.webhookSecret(id)) : null,
      state: "pending",
      reason: null,
      reviewedBy: null,
      createdAt: now,
      updatedAt: now,
    });
    await svc.audit({
      ...entry,
      subject: `manager:${id}`,
      outcome: "allow",
      details: {
        name: parsed.name,
        applications: parsed.applications.length,
        webhook: secret !== undefined,
      },
    });
    return {
      managerId: id,
      apiKey,
      state: "pending",
      ...(secret ? { webhookSecret: toBase64url(secret) } : {}),
    };
  } finally {
    secret?.fill(0);
  }
}

/** The manager an API key names; `auth.unauthenticated` (401, audited) otherwise. */
export async function authenticateManager(
  svc: TrustzoneCore,
  apiKey: string | undefined,
  origin: string,
): Promise<store.ManagerRow> {
  const manager =
    apiKey !== undefined && MANAGER_API_KEY.test(apiKey)
      ? await store.findManagerByKeyHash(svc.db, hashToken(apiKey))
      : undefined;
  if (!manager)
    return svc.refuse(tsmError("auth.unauthenticated", "a valid service-manager API key is required", 401), {
      actor: origin,
      action: "tsm.manager_auth",
      details: { presented: apiKey !== undefined },
    });
  return manager;
}

export async function reviewManager(
  svc: TrustzoneCore,
  id: string,
  decision: "validated" | "rejected",
  reason: string | null,
  actor: string,
): Promise<{ managerId: string; state: store.ManagerState }> {
  const action = decision === "validated" ? "tsm.manager_validated" : "tsm.manager_rejected";
  const subject = `manager:${id}`;
  const manager = await store.findManager(svc.db, id);
  if (!manager) return svc.refuse(notFound("manager"), { actor, action, subject });
  await store.setManagerState(svc.db, id, decision, reason, actor, svc.now());
  await svc.audit({ actor, action, subject, outcome: "allow", details: { from: manager.state, reason } });
  return { managerId: id, state: decision };
}

export async function reviewApplication(
  svc: TrustzoneCore,
  managerId: string,
  appId: string,
  actor: string,
): Promise<{ appId: string; state: string }> {
  const subject = `manager:${managerId}`;
  const action = "tsm.application_validated";
  if (!(await store.setApplicationState(svc.db, managerId, appId, "validated", svc.now())))
    return svc.refuse(notFound("application"), { actor, action, subject, details: { appId } });
  await svc.audit({ actor, action, subject, outcome: "allow", details: { appId } });
  return { appId, state: "validated" };
}

export async function managerView(svc: TrustzoneCore, id: string): Promise<Record<string, unknown>> {
  const m = await store.findManager(svc.db, id);
  if (!m) throw notFound("manager");
  return viewOf(svc, m);
}

/** Every registered manager with its review state, for the carrier. */
export async function listManagerViews(svc: TrustzoneCore): Promise<Array<Record<string, unknown>>> {
  const views: Array<Record<string, unknown>> = [];
  for (const m of await store.listManagers(svc.db)) views.push(await viewOf(svc, m));
  return views;
}

async function viewOf(svc: TrustzoneCore, m: store.ManagerRow): Promise<Record<string, unknown>> {
  return {
    managerId: m.id,
    name: m.name,
    identificationCode: m.identificationCode,
    certification: m.certification,
    memoryBytes: m.memoryBytes,
    state: m.state,
    reason: m.reason,
    applications: await store.applicationsOf(svc.db, m.id),
    createdAt: m.createdAt,
  };
}
