import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  activate,
  handleActivationResponse,
  listActivated,
  login,
  pinService,
  pullCommands,
  readNotifications,
  revoke,
  serviceFingerprint,
  signInProof,
} from "../../src/activation/handset.ts";
import { ACTIVATION_CONTENT_TYPE } from "../../src/activation/protocol.ts";
import { databaseKinds } from "../helpers/databases.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

describe.each(databaseKinds)("activation end to end on %s", (kind) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(kind);
    await t.admin.post("/v1/admin/users", { email: "ada@example.org", password: "correct horse battery" });
    await t.admin.post("/v1/admin/services", { uid: "mail", name: "Mail" });
    await t.admin.post("/v1/admin/services", { uid: "contacts", name: "Contacts sync" });
  });
  afterAll(async () => t?.close());

  it("activates two services independently; both sides hold the same keys; revoke touches one", async () => {
    const handset = await t.newHandset();
    const session = await login(handset, { email: "ada@example.org", password: "correct horse battery" });
    const mail = await activate(handset, session, "mail");
    const contacts = await activate(handset, session, "contacts");
    expect(mail.fingerprint).not.toEqual(contacts.fingerprint);
    const { body: serverKeys } = await t.admin.get<
      Array<{ serviceUid: string; fingerprint: string; state: string }>
    >(`/v1/handsets/${handset.id}/keys`);
    expect(
      serverKeys
        .filter((k) => k.state === "active")
        .map((k) => [k.serviceUid, k.fingerprint])
        .sort(),
    ).toEqual(
      [
        ["contacts", contacts.fingerprint],
        ["mail", mail.fingerprint],
      ].sort(),
    );
    await revoke(handset, session, "mail");
    expect((await listActivated(handset)).map((s) => s.serviceUid)).toEqual(["contacts"]);
    expect(await serviceFingerprint(handset, "contacts")).toBe(contacts.fingerprint);

    await t.admin.post(`/v1/admin/services/contacts/commands`, {
      handsetId: handset.id,
      name: "sync-contacts",
      args: { full: true },
    });
    const pulled = await pullCommands(handset, "contacts");
    expect(pulled.accepted.map((c) => c.name)).toEqual(["sync-contacts"]);
    expect((await pullCommands(handset, "contacts")).accepted).toEqual([]);
  });
});

describe.each(databaseKinds)("activation flows on %s", (kind) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(kind);
    for (const email of ["bo@example.org", "cy@example.org", "di@example.org", "ed@example.org"])
      await t.admin.post("/v1/admin/users", { email, password: "correct horse battery" });
    await t.admin.post("/v1/admin/services", { uid: "pim", name: "PIM sync" });
  });
  afterAll(async () => t?.close());

  it("browser flow: the sign-in page answers the activation content type; the plug-in handler finishes", async () => {
    const handset = await t.newHandset();
    await pinService(handset, "pim");
    const page = await fetchText(t, "GET", "/v1/activation/signin?service=pim");
    expect(page.type).toMatch(/^text\/html/);
    expect(page.body).toContain('action="/v1/activation/signin"');
    const proof = await signInProof(handset, "bo@example.org");
    const form = new URLSearchParams({
      email: "bo@example.org",
      password: "correct horse battery",
      identityKey: proof.identityKey,
      proof: proof.proof,
      timestamp: String(proof.timestamp),
      serviceUid: "pim",
    });
    const answer = await fetchText(
      t,
      "POST",
      "/v1/activation/signin",
      form.toString(),
      "application/x-www-form-urlencoded",
    );
    expect(answer.status).toBe(200);
    expect(answer.type.split(";")[0]).toBe(ACTIVATION_CONTENT_TYPE);
    const done = await handleActivationResponse(handset, answer.type, answer.body);
    const { body } = await t.admin.get<Array<{ fingerprint: string; state: string }>>(
      `/v1/handsets/${handset.id}/keys`,
    );
    expect(body.find((k) => k.state === "active")?.fingerprint).toBe(done.fingerprint);
  });

  it("on-behalf flow: pending until the handset's client next runs, told through its inbox", async () => {
    const handset = await t.newHandset();
    await login(handset, { email: "cy@example.org", password: "correct horse battery" }); // enrols the handset
    const { body: pending } = await t.admin.post<{ state: string }>("/v1/admin/activations", {
      email: "cy@example.org",
      handsetId: handset.id,
      serviceUid: "pim",
    });
    expect(pending.state).toBe("pending");
    const session = await login(handset, { email: "cy@example.org", password: "correct horse battery" });
    expect(session.pendingServices).toEqual(["pim"]);
    const inbox = await readNotifications(handset, session);
    expect(inbox.map((n) => [n.kind, n.body["serviceUid"]])).toEqual([["activation.pending", "pim"]]);
    expect(await readNotifications(handset, session)).toEqual([]);
    await activate(handset, session, "pim");
    expect(
      (await login(handset, { email: "cy@example.org", password: "correct horse battery" })).pendingServices,
    ).toEqual([]);
  });

  it("pre-generated secrets are used once each, then fresh ones", async () => {
    const handset = await t.newHandset();
    const { body } = await t.admin.post<{ pooled: number }>("/v1/admin/secret-pool", {
      email: "di@example.org",
      serviceUid: "pim",
      count: 2,
    });
    expect(body.pooled).toBe(2);
    const session = await login(handset, { email: "di@example.org", password: "correct horse battery" });
    const fingerprints = new Set<string>();
    for (let i = 0; i < 3; i++) fingerprints.add((await activate(handset, session, "pim")).fingerprint);
    expect(fingerprints.size).toBe(3);
    const { body: audit } = await t.admin.get<{
      records: Array<{ action: string; details: { origin?: string } }>;
    }>("/v1/admin/audit?limit=1000");
    const origins = audit.records
      .filter((r) => r.action === "activation.grant_issued")
      .map((r) => r.details.origin);
    expect(origins.slice(-3)).toEqual(["pool", "pool", "login"]);
  });

  it("revoke then re-activate: a new key, the old one stays revoked", async () => {
    const handset = await t.newHandset();
    const session = await login(handset, { email: "ed@example.org", password: "correct horse battery" });
    const first = await activate(handset, session, "pim");
    await revoke(handset, session, "pim");
    const second = await activate(handset, session, "pim");
    expect(second.fingerprint).not.toBe(first.fingerprint);
    const { body } = await t.admin.get<Array<{ fingerprint: string; state: string }>>(
      `/v1/handsets/${handset.id}/keys`,
    );
    expect(body.map((k) => [k.fingerprint, k.state])).toEqual([
      [first.fingerprint, "revoked"],
      [second.fingerprint, "active"],
    ]);
  });

  it("operators get /healthz, /readyz, /metrics, /openapi.json and /docs", async () => {
    expect((await fetchText(t, "GET", "/healthz")).status).toBe(200);
    expect((await fetchText(t, "GET", "/readyz")).body).toContain("ready");
    const metrics = await fetchText(t, "GET", "/metrics");
    expect(metrics.body).toMatch(
      /handsafe_http_requests_total\{method="GET",route="\/healthz",status="200"\} \d+/,
    );
    expect(metrics.body).toContain("handsafe_security_events_total");
    const openapi = JSON.parse((await fetchText(t, "GET", "/openapi.json")).body) as {
      openapi: string;
      paths: Record<string, unknown>;
    };
    expect(openapi.openapi).toBe("3.1.0");
    expect(Object.keys(openapi.paths)).toEqual(
      expect.arrayContaining(["/v1/activation/login", "/v1/activation/exchange/{serviceUid}/start"]),
    );
    const docs = await fetchText(t, "GET", "/docs/");
    expect(docs.status).toBe(200);
    expect(docs.body).toMatch(/swagger/i);
    const missing = await fetchText(t, "GET", "/nope");
    expect(JSON.parse(missing.body).error.code).toBe("route.not_found");
  });
});

async function fetchText(
  t: TestServer,
  method: string,
  path: string,
  body?: string,
  type?: string,
): Promise<{ status: number; type: string; body: string }> {
  const { request } = await import("node:https");
  return new Promise((resolve, reject) => {
    const req = request(
      `${t.server.url}${path}`,
      { method, rejectUnauthorized: false, headers: type ? { "content-type": type } : {} },
      (res) => {
        let data = "";
        res.on("data", (c: Buffer) => {
          data += c.toString();
        });
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            type: String(res.headers["content-type"] ?? ""),
            body: data,
          }),
        );
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}
