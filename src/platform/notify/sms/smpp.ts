/**
 * The SMPP gateway: an ESME bound as a transceiver to a real SMSC (SMPP 3.4).
 *
 * - One bind_transceiver session carries both directions: submit_sm out, deliver_sm in.
 * - Long texts: UDH concatenation (text.ts), not the message_payload TLV — every SMSC and handset
 *   handles concatenated parts, while message_payload support in submit_sm is optional (§5.3.2.32).
 * - Liveness: enquire_link every `enquireLinkMs`; no answer within `responseTimeoutMs` drops the
 *   connection. A lost connection reconnects with exponential backoff (with jitter) and binds again.
 * - deliver_sm: delivery receipts (esm_class message type 0x04/0x08/0x10/0x20) are acknowledged and
 *   reported through onEvent only (we do not request them: registered_delivery = 0); texts are
 *   reassembled when concatenated, handed to the inbound handler, and acknowledged with ESME_ROK
 *   after it resolved — or with ESME_RX_T_APPN (temporary) when it failed or none is registered,
 *   so the SMSC delivers again later.
 */
import smpp, { type PDU, type Session } from "smpp";
import { HandsafeError } from "../../../core/errors.ts";
import { normalisePhoneNumber } from "./phone.ts";
import { newSmsId } from "./store.ts";
import { checkSmsText, findConcatInfo, segmentForSmpp } from "./text.ts";
import type { InboundHandler, SmsGateway } from "./types.ts";

// SMPP 3.4 §5.2.5 / §5.2.6: international numbers in the E.164 plan, digits without "+".
const TON_INTERNATIONAL = 0x01;
const NPI_ISDN = 0x01;
const ESM_MESSAGE_TYPE_MASK = 0x3c;
const ESME_ROK = 0x00;
const ESME_RINVSRCADR = 0x0a;
const ESME_RX_T_APPN = 0x64;
const ESME_RTHROTTLED = 0x58;
/** Unfinished concatenated texts are forgotten after this long. */
const REASSEMBLY_TTL_MS = 10 * 60 * 1000;

export type SmppEvent =
  | { type: "bound" }
  | { type: "bind_refused"; status: string }
  | { type: "disconnected"; reason: string; retryInMs: number }
  | { type: "receipt"; text: string }
  | { type: "inbound_refused"; reason: string };

export interface SmppGatewayOptions {
  /** smpp://host:port (port 2775 when omitted). */
  url: string;
  systemId: string;
  password: string;
  /** The service's own number (E.164): source_addr of what we send. */
  serviceNumber: string;
  clock?: () => number;
  systemType?: string;
  enquireLinkMs?: number;
  /** How long we wait for any response PDU (bind, submit, enquire_link). */
  responseTimeoutMs?: number;
  /** How long send() waits for a bound session before giving up with sms.unavailable. */
  bindWaitMs?: number;
  backoff?: { initialMs: number; maxMs: number };
  /** Connection and delivery events, for logs and metrics. */
  onEvent?: (event: SmppEvent) => void;
}

export interface SmppGateway extends SmsGateway {
  readonly kind: "smpp";
  readonly bound: boolean;
  /** Resolves once bound; rejects with sms.unavailable (the SMSC's refusal, or the last error). */
  waitUntilBound(timeoutMs?: number): Promise<void>;
}

interface Waiter {
  resolve(): void;
  reject(e: HandsafeError): void;
}

export function createSmppGateway(options: SmppGatewayOptions): SmppGateway {
  const target = parseSmppUrl(options.url);
  if (options.systemId.length < 1 || options.systemId.length > 15 || options.password.length > 8)
    // SMPP 3.4 §4.1.1: system_id is at most 16 octets and password 9, both with the NUL.
    throw new HandsafeError("config.invalid", "SMPP system id must be 1–15 characters, password ≤ 8", {
      status: 500,
    });
  const serviceNumber = normalisePhoneNumber(options.serviceNumber);
  const clock = options.clock ?? Date.now;
  const enquireLinkMs = options.enquireLinkMs ?? 30_000;
  const responseTimeoutMs = options.responseTimeoutMs ?? 10_000;
  const bindWaitMs = options.bindWaitMs ?? 5_000;
  const backoff = options.backoff ?? { initialMs: 500, maxMs: 30_000 };
  const emit = (event: SmppEvent) => options.onEvent?.(event);
  const where = `${target.host}:${target.port}`;

  let session: Session | undefined;
  let bound = false;
  let closed = false;
  let attempt = 0;
  let lastError: HandsafeError | undefined;
  let bindRefused = false;
  let handler: InboundHandler | undefined;
  let reference = Math.floor(Math.random() * 256);
  let reconnectTimer: NodeJS.Timeout | undefined;
  const sessionTimers = new Set<NodeJS.Timeout>();
  const waiters = new Set<Waiter>();
  const inFlight = new Set<(e: HandsafeError) => void>();
  const partial = new Map<string, { parts: Map<number, string>; total: number; firstAt: number }>();

  function connect(): void {
    if (closed) return;
    const s = smpp.connect({ host: target.host, port: target.port });
    session = s;
    after(s, responseTimeoutMs, () => {
      if (!bound) drop(s, unavailable(`no bind_transceiver_resp from the SMSC at ${where}`));
    });
    s.on("connect", () => {
      const params = {
        system_id: options.systemId,
        password: options.password,
        system_type: options.systemType ?? "",
        interface_version: 0x34,
      };
      s.bind_transceiver(params, (resp) => {
        if (session !== s) return;
        if (resp.command_status === ESME_ROK) {
          bound = true;
          bindRefused = false;
          lastError = undefined;
          attempt = 0;
          startEnquireLink(s);
          for (const w of waiters) w.resolve();
          waiters.clear();
          emit({ type: "bound" });
          return;
        }
        const status = statusName(resp.command_status);
        bindRefused = true;
        lastError = unavailable(
          `the SMSC at ${where} refused bind_transceiver for system id ${JSON.stringify(options.systemId)}: ${status}`,
          { smppStatus: status },
        );
        for (const w of waiters) w.reject(lastError);
        waiters.clear();
        emit({ type: "bind_refused", status });
        s.destroy();
      });
    });
    s.on("error", (e: Error) => drop(s, unavailable(`SMSC connection to ${where} failed: ${e.message}`)));
    s.on("close", () => onClosed(s));
    s.on("enquire_link", (pdu: PDU) => s.send(pdu.response()));
    s.on("unbind", (pdu: PDU) => {
      s.send(pdu.response());
      drop(s, unavailable(`the SMSC at ${where} unbound`));
    });
    s.on("deliver_sm", (pdu: PDU) => {
      void onDeliver(pdu).then(
        (status) => s.send(pdu.response({ command_status: status })),
        () => s.send(pdu.response({ command_status: ESME_RX_T_APPN })),
      );
    });
  }

  /** Ends `s` for `why` (kept as lastError unless a bind refusal says more). */
  function drop(s: Session, why: HandsafeError): void {
    if (session === s && !bindRefused) lastError = why;
    s.destroy();
  }

  function onClosed(s: Session): void {
    if (session !== s) return;
    session = undefined;
    bound = false;
    for (const t of sessionTimers) clearTimeout(t);
    sessionTimers.clear();
    const lost = unavailable(`connection to the SMSC at ${where} lost before its answer`);
    for (const fail of inFlight) fail(lost);
    inFlight.clear();
    if (closed) return;
    const base = Math.min(backoff.maxMs, backoff.initialMs * 2 ** attempt);
    const retryInMs = Math.round(base / 2 + (Math.random() * base) / 2);
    attempt = Math.min(attempt + 1, 30);
    emit({ type: "disconnected", reason: lastError?.message ?? "closed", retryInMs });
    reconnectTimer = setTimeout(connect, retryInMs);
  }

  function after(s: Session, ms: number, work: () => void): NodeJS.Timeout {
    const t = setTimeout(() => {
      sessionTimers.delete(t);
      if (session === s) work();
    }, ms);
    sessionTimers.add(t);
    return t;
  }

  function startEnquireLink(s: Session): void {
    const tick = () => {
      const deadline = after(s, responseTimeoutMs, () =>
        drop(s, unavailable(`no enquire_link_resp from the SMSC at ${where}`)),
      );
      s.enquire_link({}, () => {
        clearTimeout(deadline);
        sessionTimers.delete(deadline);
      });
      after(s, enquireLinkMs, tick);
    };
    after(s, enquireLinkMs, tick);
  }

  function waitUntilBound(timeoutMs = bindWaitMs): Promise<void> {
    if (bound) return Promise.resolve();
    if (closed) return Promise.reject(unavailable("the SMPP gateway is closed"));
    if (bindRefused && lastError) return Promise.reject(lastError);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(unavailable(`not bound to the SMSC at ${where}: ${lastError?.message ?? "still connecting"}`));
      }, timeoutMs);
      const waiter: Waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      waiters.add(waiter);
    });
  }

  function request(s: Session, command: "submit_sm", params: Record<string, unknown>): Promise<PDU> {
    return new Promise((resolve, reject) => {
      const fail = (e: HandsafeError) => {
        clearTimeout(timer);
        inFlight.delete(fail);
        reject(e);
      };
      const timer = setTimeout(
        () => fail(unavailable(`no ${command}_resp from the SMSC at ${where}`)),
        responseTimeoutMs,
      );
      inFlight.add(fail);
      const written = s[command](params, (resp) => {
        clearTimeout(timer);
        inFlight.delete(fail);
        resolve(resp);
      });
      if (!written) fail(unavailable(`the connection to the SMSC at ${where} is not writable`));
    });
  }

  /** Handles one deliver_sm; resolves to the command_status to answer with. */
  async function onDeliver(pdu: PDU): Promise<number> {
    const messageType = (pdu.esm_class ?? 0) & ESM_MESSAGE_TYPE_MASK;
    const message = pickMessage(pdu);
    if (messageType !== 0) {
      emit({ type: "receipt", text: typeof message?.message === "string" ? message.message : "" });
      return ESME_ROK;
    }
    if (!message || typeof message.message !== "string") {
      emit({ type: "inbound_refused", reason: `unsupported data_coding ${pdu.data_coding}` });
      return ESME_ROK; // accepted and dropped: a retry would not make it readable
    }
    let from: string;
    try {
      from = fromSmppAddress(String(pdu.source_addr ?? ""));
    } catch {
      emit({ type: "inbound_refused", reason: `invalid source_addr ${JSON.stringify(pdu.source_addr)}` });
      return ESME_RINVSRCADR;
    }
    let to = serviceNumber;
    try {
      to = fromSmppAddress(String(pdu.destination_addr ?? ""));
    } catch {}

    let text = message.message;
    const concat = findConcatInfo((message.udh ?? []).map((b) => new Uint8Array(b)));
    let key: string | undefined;
    if (concat && concat.total > 1) {
      const now = clock();
      for (const [k, v] of partial) if (v.firstAt < now - REASSEMBLY_TTL_MS) partial.delete(k);
      key = `${from}|${concat.reference}|${concat.total}`;
      const entry = partial.get(key) ?? {
        parts: new Map<number, string>(),
        total: concat.total,
        firstAt: now,
      };
      entry.parts.set(concat.sequence, text);
      partial.set(key, entry);
      if (entry.parts.size < entry.total) return ESME_ROK;
      text = [...entry.parts.entries()]
        .sort(([a], [b]) => a - b)
        .map(([, part]) => part)
        .join("");
    }
    if (!handler) {
      emit({ type: "inbound_refused", reason: "no inbound handler registered" });
      return ESME_RX_T_APPN;
    }
    // The parts are forgotten only once the handler took the text: if it fails, the SMSC
    // delivers the last part again and the text is whole again.
    await handler({ id: newSmsId(clock()), from, to, text, at: clock() });
    if (key) partial.delete(key);
    return ESME_ROK;
  }

  connect();

  return {
    kind: "smpp",
    get bound() {
      return bound;
    },
    waitUntilBound,
    async send(to, text) {
      checkSmsText(text);
      const destination = normalisePhoneNumber(to);
      const segments = segmentForSmpp(text, reference);
      reference = (reference + 1) & 0xff;
      await waitUntilBound();
      const s = session;
      if (!s) throw unavailable(`not bound to the SMSC at ${where}`);
      const ids: string[] = [];
      for (const part of segments.parts) {
        const resp = await request(s, "submit_sm", {
          source_addr_ton: TON_INTERNATIONAL,
          source_addr_npi: NPI_ISDN,
          source_addr: serviceNumber.slice(1),
          dest_addr_ton: TON_INTERNATIONAL,
          dest_addr_npi: NPI_ISDN,
          destination_addr: destination.slice(1),
          esm_class: segments.esmClass,
          data_coding: segments.dataCoding,
          registered_delivery: 0,
          short_message: Buffer.from(part),
        });
        if (resp.command_status !== ESME_ROK) {
          const status = statusName(resp.command_status);
          const details = { smppStatus: status, partsAccepted: ids.length, parts: segments.parts.length };
          if (resp.command_status === ESME_RTHROTTLED)
            throw unavailable(`the SMSC at ${where} is throttling us (${status})`, details);
          throw new HandsafeError("sms.send_failed", `the SMSC at ${where} refused submit_sm: ${status}`, {
            status: 502,
            details,
          });
        }
        ids.push(String(resp.message_id ?? ""));
      }
      // The first part's SMSC message id names the text.
      return { id: ids[0] ?? "" };
    },
    onInbound(h) {
      handler = h;
    },
    async close() {
      closed = true;
      clearTimeout(reconnectTimer);
      const gone = unavailable("the SMPP gateway is closed");
      for (const w of waiters) w.reject(gone);
      waiters.clear();
      const s = session;
      if (!s) return;
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => s.destroy(), 1000);
        s.once("close", () => {
          clearTimeout(force);
          resolve();
        });
        if (!bound || !s.unbind({}, () => s.close())) s.destroy();
      });
    },
  };
}

function parseSmppUrl(url: string): { host: string; port: number } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new HandsafeError("config.invalid", `SMPP URL ${JSON.stringify(url)} is not a URL`, {
      status: 500,
    });
  }
  if (u.protocol !== "smpp:" || !u.hostname || u.username || u.password || (u.pathname && u.pathname !== "/"))
    throw new HandsafeError(
      "config.invalid",
      `SMPP URL must look like smpp://host:port, got ${JSON.stringify(url)}`,
      {
        status: 500,
      },
    );
  return { host: u.hostname.replace(/^\[(.*)\]$/, "$1"), port: u.port ? Number(u.port) : 2775 };
}

/** SMPP addresses carry digits; we read them as international numbers (TON 1) into E.164. */
function fromSmppAddress(address: string): string {
  const trimmed = address.trim();
  return normalisePhoneNumber(trimmed.startsWith("+") ? trimmed : `+${trimmed}`);
}

function pickMessage(pdu: PDU): { message: string | Buffer; udh?: Buffer[] } | undefined {
  const short = pdu.short_message as { message: string | Buffer; udh?: Buffer[] } | undefined;
  if (short && short.message.length > 0) return short;
  const payload = pdu.message_payload as { message: string | Buffer; udh?: Buffer[] } | undefined;
  return payload ?? short;
}

const STATUS_NAMES = new Map(Object.entries(smpp.errors).map(([name, code]) => [code, name] as const));

function statusName(status: number): string {
  return STATUS_NAMES.get(status) ?? `0x${status.toString(16).padStart(8, "0")}`;
}

function unavailable(message: string, details?: Record<string, unknown>): HandsafeError {
  return new HandsafeError("sms.unavailable", message, { status: 503, ...(details ? { details } : {}) });
}
