/**
 * A simulated handset's phone line on the server's built-in SMS centre (the outbox gateway): the
 * texts to one number, read in order through `GET /v1/sms/outbox`, and texts from it through
 * `POST /v1/sms/outbox/inbound`. Both need the admin token — the simulator stands in for a mobile
 * network only the operator runs; a real handset has a modem. Used by the simulated managed device
 * (cli/simulated-device.ts) and the simulated messaging handset (messaging/simulator.ts).
 *
 * `cursor` is the id of the last text taken; a handset that keeps it across runs passes it back as
 * `after` and is not handed the same texts again.
 */
import { HandsafeError } from "../core/errors.ts";
import type { HttpClient } from "./http-client.ts";

export interface Text {
  id: string;
  from: string;
  to: string;
  text: string;
  at: number;
}

export interface OutboxLineOptions {
  pollMs?: number;
  /** How long nextText waits (default 10 s). */
  timeoutMs?: number;
  /** Start after this text id. */
  after?: string;
}

export class OutboxLine {
  #after: string | undefined;

  constructor(
    private readonly admin: HttpClient,
    readonly number: string,
    private readonly options: OutboxLineOptions = {},
  ) {
    this.#after = options.after;
  }

  /** The id of the last text taken, or undefined before the first. */
  get cursor(): string | undefined {
    return this.#after;
  }

  /** Starts after the texts already there (a handset switched on now has not seen them). */
  async skipExisting(): Promise<void> {
    await this.texts();
  }

  /** Every text to this number not taken yet (possibly none), oldest first. */
  async texts(): Promise<Text[]> {
    const out: Text[] = [];
    for (;;) {
      const page = await this.#page(100);
      if (page.length === 0) return out;
      out.push(...page);
      this.#after = page.at(-1)!.id;
    }
  }

  /**
   * Waits for the next text that `match` accepts, taking texts one at a time: the ones before it
   * are passed over, the ones after it stay for the next call.
   */
  async nextText(match: (t: Text) => boolean = () => true): Promise<Text> {
    const deadline = Date.now() + (this.options.timeoutMs ?? 10_000);
    for (;;) {
      const [t] = await this.#page(1);
      if (t) {
        this.#after = t.id;
        if (match(t)) return t;
        continue;
      }
      if (Date.now() > deadline)
        throw new HandsafeError("device.no_text", `no text arrived for ${this.number}`, { status: 0 });
      await new Promise((r) => setTimeout(r, this.options.pollMs ?? 50));
    }
  }

  /** This number texts the service (or `to`). */
  async send(text: string, to?: string): Promise<Text> {
    return (
      await this.admin.post<Text>("/v1/sms/outbox/inbound", {
        from: this.number,
        text,
        ...(to === undefined ? {} : { to }),
      })
    ).body;
  }

  async #page(limit: number): Promise<Text[]> {
    const q = new URLSearchParams({ to: this.number, limit: String(limit) });
    if (this.#after) q.set("after", this.#after);
    return (await this.admin.get<{ texts: Text[] }>(`/v1/sms/outbox?${q}`)).body.texts;
  }
}
