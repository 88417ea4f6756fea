import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  activate,
  listActivated,
  login,
  pullCommands,
  revoke,
  serviceFingerprint,
} from "../../src/activation/handset.ts";
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
