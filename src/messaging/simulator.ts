/**
 * A simulated messaging handset for tests, the CLI and the demo: the SDK (MessagingApp) plus a
 * "phone line" on the server's built-in SMS centre (the outbox gateway). Reading texts to the number
 * (GET /v1/sms/outbox) and texting from it (POST /v1/sms/outbox/inbound) both need the admin token —
 * the simulator stands in for a mobile network only the operator runs. A real handset uses its modem.
 *
 *   const phone = new OutboxPhone(admin, "+447911123456");
 *   const handset = new SimulatedMessagingHandset(app, phone);
 *   await handset.registerByServerCode("pixel-9");   // (a): reads the code from the text
 *   await handset.registerByHandsetCode("pixel-9");  // (b): texts "HSREG <code>", then registers
 */
import { HandsafeError } from "../core/errors.ts";
import type { HttpClient } from "../handset/http-client.ts";
import type { MessagingApp } from "./handset.ts";

export interface Text {
  id: string;
  from: string;
  to: string;
  text: string;
  at: number;
}

/** The code in the server's registration text ("Your handsafe code is 12345678. …"), if it is one. */
export function codeOfText(text: string): string | undefined {
  return /^Your handsafe code is ([0-9]{8})\b/.exec(text)?.[1];
}

/** One number's line on the built-in SMS centre. */
export class OutboxPhone {
  #after: string | undefined;

  constructor(
    private readonly admin: HttpClient,
    readonly number: string,
    private readonly options: { pollMs?: number; timeoutMs?: number } = {},
  ) {}

  /** The texts to this number not taken yet, oldest first. */
  async texts(): Promise<Text[]> {
    const out: Text[] = [];
    for (;;) {
      const q = new URLSearchParams({ to: this.number, limit: "100" });
      if (this.#after) q.set("after", this.#after);
      const page = (await this.admin.get<{ texts: Text[] }>(`/v1/sms/outbox?${q}`)).body.texts;
      if (page.length === 0) return out;
      out.push(...page);
      this.#after = page.at(-1)!.id;
    }
  }

  /** Waits for the next text to this number that `match` accepts (others are passed over). */
  async nextText(match: (t: Text) => boolean = () => true): Promise<Text> {
    const deadline = Date.now() + (this.options.timeoutMs ?? 10_000);
    for (;;) {
      const found = (await this.texts()).find(match);
      if (found) return found;
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
}

export class SimulatedMessagingHandset {
  constructor(
    readonly app: MessagingApp,
    readonly phone: OutboxPhone,
  ) {}

  /** Variant (a): start, read the code the server texted, confirm. Returns the handset id. */
  async registerByServerCode(deviceType: string, options: { replaces?: string } = {}): Promise<string> {
    await this.phone.texts(); // what came before is not the code
    await this.app.startRegistration({ phoneNumber: this.phone.number, deviceType, ...options });
    const text = await this.phone.nextText((t) => codeOfText(t.text) !== undefined);
    return this.app.confirmRegistration(codeOfText(text.text)!);
  }

  /**
   * Variant (b): the app's own code, texted from the number, and the same code over HTTPS —
   * `textFirst` chooses the order (the server accepts either). Returns the handset id.
   */
  async registerByHandsetCode(
    deviceType: string,
    options: { textFirst?: boolean; replaces?: string } = {},
  ): Promise<string> {
    const { text, to } = await this.app.prepareHandsetCode();
    const input = {
      phoneNumber: this.phone.number,
      deviceType,
      ...(options.replaces ? { replaces: options.replaces } : {}),
    };
    if (options.textFirst ?? true) {
      await this.phone.send(text, to);
      const answer = await this.app.registerWithHandsetCode(input);
      return answer.state === "confirmed" ? answer.handsetId : this.app.awaitRegistration();
    }
    const answer = await this.app.registerWithHandsetCode(input);
    await this.phone.send(text, to);
    return answer.state === "confirmed" ? answer.handsetId : this.app.awaitRegistration();
  }
}
