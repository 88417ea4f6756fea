/**
 * The handset's side of a trust zone on the network (docs/protocols/trustzone.md §5, §7): a
 * SecureZone's requests signed RFC 9421 hmac-sha256 under ZRK — the HMAC computed inside the zone —
 * the pull → apply → report loop for signals and relayed commands, handset-placement redeem, and
 * the acknowledged factory reset. Used by the CLI's zone simulator, the demo, the bench and tests.
 */
import { toBase64url } from "../core/codec/base64url.ts";
import { utf8 } from "../core/codec/bytes.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import { contentDigest, requestViewOfUrl, signatureBase } from "../core/http-signatures/index.ts";
import { base64Encode, type Parameters } from "../core/http-signatures/structured-fields.ts";
import type { HttpClient } from "../handset/http-client.ts";
import type { SecureZone } from "../handset/secure-zone.ts";
import { type RelayCommand, ZONE_REQUEST_SIGNATURE, type ZoneSignal } from "./protocol.ts";

export interface ZoneSyncReport {
  applied: ZoneSignal["type"][];
  /** Codes of signals the zone refused (reported to the server). */
  rejected: string[];
  /** Relayed commands answered: ok, or the zone's refusal code. */
  relay: Array<{ id: string; op: string; container: number; ok: boolean; code?: string }>;
  locked: number[];
}

/**
 * The handset's side of a zone on the network: its requests signed RFC 9421 hmac-sha256 under ZRK
 * (the HMAC is computed inside the zone), the pull-apply-report loop, handset-placement redeem.
 */
export class ZoneLink {
  constructor(
    readonly zone: SecureZone,
    readonly http: HttpClient,
  ) {}

  get zoneId(): string {
    const id = this.zone.zoneId;
    if (id === undefined)
      throw new HandsafeError("zone.not_personalised", "the zone is not personalised", { status: 0 });
    return id;
  }

  signatureHeaders(method: string, path: string, json?: unknown): Record<string, string> {
    const body = json === undefined ? undefined : utf8(JSON.stringify(json));
    const added: Record<string, string> = body ? { "content-digest": contentDigest(body) } : {};
    const components = [...ZONE_REQUEST_SIGNATURE.requiredComponents, ...(body ? ["content-digest"] : [])];
    const view = requestViewOfUrl(method, this.http.baseUrl + path, added);
    const params: Parameters = [
      ["created", Math.floor(Date.now() / 1000)],
      ["keyid", this.zoneId],
      ["nonce", toBase64url(randomBytes(16))],
      ["alg", ZONE_REQUEST_SIGNATURE.alg],
      ["tag", ZONE_REQUEST_SIGNATURE.tag],
    ];
    const { base, signatureParams } = signatureBase(view, components, params);
    const mac = this.zone.signRequest(utf8(base));
    const label = ZONE_REQUEST_SIGNATURE.label;
    return {
      ...added,
      "signature-input": `${label}=${signatureParams}`,
      signature: `${label}=:${base64Encode(mac)}:`,
    };
  }

  async signed<T>(method: string, path: string, json?: unknown): Promise<T> {
    const headers = this.signatureHeaders(method, path, json);
    return (await this.http.request<T>(method, path, { ...(json === undefined ? {} : { json }), headers }))
      .body;
  }

  /** One round: every signal applied in order (a refused one reported), every command answered. */
  async sync(): Promise<ZoneSyncReport> {
    const inbox = await this.signed<{
      signals: Array<{ signal: ZoneSignal; mac: string }>;
      relay: Array<{ id: string; command: RelayCommand; proof: string }>;
    }>("GET", "/v1/tsm/zone/signals");
    const report: ZoneSyncReport = { applied: [], rejected: [], relay: [], locked: [] };
    const rejected: Array<{ seq: number; code: string }> = [];
    for (const { signal, mac } of inbox.signals) {
      try {
        report.applied.push((await this.zone.applySignal(signal, mac)).type);
      } catch (e) {
        if (!isHandsafeError(e)) throw e;
        rejected.push({ seq: signal.seq, code: e.code });
        report.rejected.push(e.code);
      }
    }
    const answers: Array<{ id: string; ok: boolean; result?: Record<string, unknown>; code?: string }> = [];
    for (const { id, command, proof } of inbox.relay) {
      const seen = { id, op: String(command.op), container: Number(command.container) };
      try {
        const r = await this.zone.relay(command, proof);
        answers.push({
          id,
          ok: true,
          result: {
            op: r.op,
            ...(r.package === undefined ? {} : { package: toBase64url(r.package) }),
            ...(r.deleted === undefined ? {} : { deleted: r.deleted }),
            ...(r.names === undefined ? {} : { names: r.names }),
            ...(r.op === "put" ? { bytes: this.zone.masterView()[command.container]?.bytes ?? 0 } : {}),
          },
        });
        report.relay.push({ ...seen, ok: true });
      } catch (e) {
        if (!isHandsafeError(e)) throw e;
        answers.push({ id, ok: false, code: e.code });
        report.relay.push({ ...seen, ok: false, code: e.code });
      }
    }
    report.locked = this.zone
      .masterView()
      .filter((c) => c.state === "locked")
      .map((c) => c.index);
    await this.signed("POST", "/v1/tsm/zone/reports", {
      applied: this.zone.lastSeq,
      ...(rejected.length ? { rejected } : {}),
      ...(answers.length ? { relay: answers } : {}),
      ...(report.locked.length ? { locked: report.locked } : {}),
    });
    return report;
  }

  /** Handset placement: the zone counts the use of a token it derived a sub-key from. */
  redeem(jti: string, token: string): Promise<{ usesLeft: number; containers: number[] }> {
    return this.signed("POST", `/v1/tsm/tokens/${encodeURIComponent(jti)}/redeem`, { token });
  }

  /** A factory reset the carrier ordered: acknowledged with the keys the zone still has, then wiped. */
  async factoryReset(): Promise<number> {
    const epoch = (this.zone.epoch ?? 0) + 1;
    await this.signed("POST", "/v1/tsm/zone/reports", { reset: { epoch } });
    await this.zone.factoryReset();
    return epoch;
  }
}
