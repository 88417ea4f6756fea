/**
 * The SMPP gateway against the smpp package's own server as a real local SMSC over TCP.
 */

import type { AddressInfo } from "node:net";
import smpp, { type PDU, type Session } from "smpp";
import { afterEach, describe, expect, it } from "vitest";
import { isHandsafeError } from "../../src/core/errors.ts";
import { createSmppGateway, type SmppEvent } from "../../src/platform/notify/sms/smpp.ts";
import type { InboundSms } from "../../src/platform/notify/sms/types.ts";
import { until } from "../helpers/wait.ts";

const SERVICE = "+447911123456";
const HANDSET = "+33612345678";

interface Smsc {
  port: number;
  submits: PDU[];
  sessions: Session[];
  enquireLinks: number;
  /** deliver_sm to the bound ESME; resolves with the deliver_sm_resp. */
  deliver(params: Record<string, unknown>): Promise<PDU>;
  stop(): Promise<void>;
}

function startSmsc(options: { port?: number; password?: string; submitStatus?: number } = {}): Promise<Smsc> {
  const submits: PDU[] = [];
  const sessions: Session[] = [];
  const state = { enquireLinks: 0 };
  let nextId = 1;
  const server = smpp.createServer({}, (session) => {
    sessions.push(session);
    session.on("error", () => {});
    session.on("bind_transceiver", (pdu: PDU) => {
      const ok = pdu.system_id === "handsafe" && pdu.password === (options.password ?? "secret");
      session.send(pdu.response(ok ? {} : { command_status: smpp.errors["ESME_RINVPASWD"] }));
    });
    session.on("submit_sm", (pdu: PDU) => {
      submits.push(pdu);
      const status = options.submitStatus ?? 0;
      session.send(pdu.response(status ? { command_status: status } : { message_id: `msg-${nextId++}` }));
    });
    session.on("enquire_link", (pdu: PDU) => {
      state.enquireLinks++;
      session.send(pdu.response());
    });
    session.on("unbind", (pdu: PDU) => {
      session.send(pdu.response());
      session.close();
    });
  });
  return new Promise((resolve) => {
    server.listen(options.port ?? 0, "127.0.0.1", () => {
      resolve({
        port: (server.address() as AddressInfo).port,
        submits,
        sessions,
        get enquireLinks() {
          return state.enquireLinks;
        },
        deliver: (params) =>
          new Promise((res, rej) => {
            const s = sessions.at(-1);
            if (!s) return rej(new Error("no ESME connected"));
            s.deliver_sm(params, res);
          }),
        stop: () =>
          new Promise((res) => {
            for (const s of sessions) s.destroy();
            server.close(() => res());
          }),
      });
    });
  });
}

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function gatewayFor(
  smsc: { port: number },
  overrides: Partial<Parameters<typeof createSmppGateway>[0]> = {},
) {
  const events: SmppEvent[] = [];
  const gateway = createSmppGateway({
    url: `smpp://127.0.0.1:${smsc.port}`,
    systemId: "handsafe",
    password: "secret",
    serviceNumber: SERVICE,
    backoff: { initialMs: 50, maxMs: 200 },
    responseTimeoutMs: 2000,
    onEvent: (e) => events.push(e),
    ...overrides,
  });
  cleanup.push(() => gateway.close());
  return { gateway, events };
}

function reassemble(pdus: PDU[]): string {
  return pdus.map((p) => p.short_message.message as string).join("");
}

describe("SMPP gateway against a local SMSC", () => {
  it("submit_sm reaches the SMSC with the right source, destination and text", async () => {
    const smsc = await startSmsc();
    cleanup.push(smsc.stop);
    const { gateway } = await gatewayFor(smsc);
    const { id } = await gateway.send(HANDSET, "Your code is 123456");
    expect(id).toBe("msg-1");
    expect(smsc.submits).toHaveLength(1);
    const pdu = smsc.submits[0]!;
    expect(pdu.source_addr).toBe("447911123456");
    expect(pdu.source_addr_ton).toBe(1);
    expect(pdu.destination_addr).toBe("33612345678");
    expect(pdu.dest_addr_ton).toBe(1);
    expect(pdu.data_coding).toBe(0);
    expect(pdu.short_message.message).toBe("Your code is 123456");
  });

  it("a long text goes as UDH-concatenated parts that reassemble to the text", async () => {
    const smsc = await startSmsc();
    cleanup.push(smsc.stop);
    const { gateway } = await gatewayFor(smsc);
    const text = "Ünïcode ✓ ".repeat(20); // 200 UCS-2 characters → 3 parts of ≤ 67
    await gateway.send(HANDSET, text);
    expect(smsc.submits).toHaveLength(3);
    for (const [i, pdu] of smsc.submits.entries()) {
      expect(pdu.data_coding).toBe(8);
      expect(pdu.esm_class & 0x40).toBe(0x40);
      const udh = pdu.short_message.udh[0] as Buffer;
      expect([...udh]).toEqual([0x00, 0x03, udh[2], 3, i + 1]);
    }
    expect(reassemble(smsc.submits)).toBe(text);
  });

  it("a deliver_sm from the SMSC reaches the inbound handler and is acknowledged", async () => {
    const smsc = await startSmsc();
    cleanup.push(smsc.stop);
    const { gateway } = await gatewayFor(smsc);
    const received: InboundSms[] = [];
    gateway.onInbound(async (sms) => {
      received.push(sms);
    });
    await gateway.waitUntilBound();
    const resp = await smsc.deliver({
      source_addr_ton: 1,
      source_addr_npi: 1,
      source_addr: "33612345678",
      dest_addr_ton: 1,
      destination_addr: "447911123456",
      short_message: "STOP",
    });
    expect(resp.command).toBe("deliver_sm_resp");
    expect(resp.command_status).toBe(0);
    expect(received).toHaveLength(1);
    expect(received[0]).toMatchObject({ from: HANDSET, to: SERVICE, text: "STOP" });
  });

  it("reassembles a concatenated inbound text before handing it over", async () => {
    const smsc = await startSmsc();
    cleanup.push(smsc.stop);
    const { gateway } = await gatewayFor(smsc);
    const received: InboundSms[] = [];
    gateway.onInbound(async (sms) => {
      received.push(sms);
    });
    await gateway.waitUntilBound();
    const part = (seq: number, message: string) =>
      smsc.deliver({
        source_addr_ton: 1,
        source_addr: "33612345678",
        destination_addr: "447911123456",
        short_message: { udh: Buffer.from([0x05, 0x00, 0x03, 0x2a, 2, seq]), message },
      });
    expect((await part(2, "world")).command_status).toBe(0);
    expect(received).toHaveLength(0);
    expect((await part(1, "hello ")).command_status).toBe(0);
    expect(received.map((r) => r.text)).toEqual(["hello world"]);
  });

  it("asks the SMSC to retry (ESME_RX_T_APPN) when the handler fails, and ignores delivery receipts", async () => {
    const smsc = await startSmsc();
    cleanup.push(smsc.stop);
    const { gateway, events } = await gatewayFor(smsc);
    let calls = 0;
    gateway.onInbound(async () => {
      calls++;
      throw new Error("database down");
    });
    await gateway.waitUntilBound();
    const failed = await smsc.deliver({
      source_addr: "33612345678",
      destination_addr: "447911123456",
      short_message: "hi",
    });
    expect(failed.command_status).toBe(smpp.errors["ESME_RX_T_APPN"]);
    const receipt = await smsc.deliver({
      source_addr: "33612345678",
      destination_addr: "447911123456",
      esm_class: 0x04,
      short_message: "id:msg-1 sub:001 dlvrd:001 stat:DELIVRD",
    });
    expect(receipt.command_status).toBe(0);
    expect(calls).toBe(1);
    expect(events.some((e) => e.type === "receipt")).toBe(true);
  });

  it("a refused submit_sm is sms.send_failed naming the SMPP status", async () => {
    const smsc = await startSmsc({ submitStatus: smpp.errors["ESME_RINVDSTADR"] });
    cleanup.push(smsc.stop);
    const { gateway } = await gatewayFor(smsc);
    const e = await gateway.send(HANDSET, "hi").catch((x: unknown) => x);
    expect(isHandsafeError(e, "sms.send_failed")).toBe(true);
    expect((e as Error).message).toContain("ESME_RINVDSTADR");
  });

  it("a bind failure (wrong password) gives a clear sms.unavailable error", async () => {
    const smsc = await startSmsc({ password: "other" });
    cleanup.push(smsc.stop);
    const { gateway, events } = await gatewayFor(smsc);
    const e = await gateway.send(HANDSET, "hi").catch((x: unknown) => x);
    expect(isHandsafeError(e, "sms.unavailable")).toBe(true);
    expect((e as Error).message).toMatch(/refused bind_transceiver .*ESME_RINVPASWD/);
    expect(events).toContainEqual({ type: "bind_refused", status: "ESME_RINVPASWD" });
    // It keeps failing fast, without waiting for a bind that will not come.
    const started = Date.now();
    await expect(gateway.send(HANDSET, "again")).rejects.toMatchObject({ code: "sms.unavailable" });
    expect(Date.now() - started).toBeLessThan(1000);
    expect(smsc.submits).toHaveLength(0);
  });

  it("an SMSC that is not there is sms.unavailable after the bind wait", async () => {
    const smsc = await startSmsc();
    await smsc.stop();
    const { gateway } = await gatewayFor(smsc, { bindWaitMs: 300 });
    await expect(gateway.send(HANDSET, "hi")).rejects.toMatchObject({ code: "sms.unavailable" });
  });

  it("reconnects with backoff when the SMSC goes away and comes back", async () => {
    const first = await startSmsc();
    const { gateway, events } = await gatewayFor(first, { bindWaitMs: 300 });
    await gateway.send(HANDSET, "one");
    await first.stop();
    await until(() => !gateway.bound, 5000);
    await expect(gateway.send(HANDSET, "lost")).rejects.toMatchObject({ code: "sms.unavailable" });
    const second = await startSmsc({ port: first.port });
    cleanup.push(second.stop);
    await gateway.waitUntilBound(5000);
    await gateway.send(HANDSET, "two");
    expect(second.submits.map((p) => p.short_message.message)).toEqual(["two"]);
    expect(events.filter((e) => e.type === "bound")).toHaveLength(2);
    expect(events.some((e) => e.type === "disconnected")).toBe(true);
  });

  it("keeps the link alive with enquire_link", async () => {
    const smsc = await startSmsc();
    cleanup.push(smsc.stop);
    const { gateway } = await gatewayFor(smsc, { enquireLinkMs: 50 });
    await gateway.waitUntilBound();
    await until(() => smsc.enquireLinks >= 2, 5000);
    expect(gateway.bound).toBe(true);
  });

  it("unbinds on close", async () => {
    const smsc = await startSmsc();
    cleanup.push(smsc.stop);
    let unbound = false;
    const { gateway } = await gatewayFor(smsc);
    await gateway.waitUntilBound();
    smsc.sessions[0]!.on("unbind", () => {
      unbound = true;
    });
    await gateway.close();
    expect(unbound).toBe(true);
    await expect(gateway.send(HANDSET, "late")).rejects.toMatchObject({ code: "sms.unavailable" });
  });
});
