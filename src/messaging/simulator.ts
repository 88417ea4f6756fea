/**
 * A simulated messaging handset for tests, the CLI and the demo: the SDK (MessagingApp) plus a
 * "phone line" on the server's built-in SMS centre (the outbox gateway). Reading texts to the number
 * (GET /v1/sms/outbox) and texting from it (POST /v1/sms/outbox/inbound) both need the admin token —
 * the simulator stands in for a mobile network only the operator runs. A real handset uses its modem.
 *
 *   const phone = new OutboxLine(admin, "+447911123456");   // handset/outbox-line.ts
 *   const handset = new SimulatedMessagingHandset(app, phone);
 *   await handset.registerByServerCode("pixel-9");   // (a): reads the code from the text
 *   await handset.registerByHandsetCode("pixel-9");  // (b): texts "HSREG <code>", then registers
 */
import type { OutboxLine } from "../handset/outbox-line.ts";
import type { MessagingApp } from "./handset.ts";

/** The code in the server's registration text ("Your handsafe code is 12345678. …"), if it is one. */
export function codeOfText(text: string): string | undefined {
  return /^Your handsafe code is ([0-9]{8})\b/.exec(text)?.[1];
}

export class SimulatedMessagingHandset {
  constructor(
    readonly app: MessagingApp,
    readonly phone: OutboxLine,
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
