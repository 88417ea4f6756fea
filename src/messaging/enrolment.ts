/**
 * The end of a registration: the handset made active for its number (≤ 10 per number, one
 * registration of a number at a time) and every message of the number that still has its envelope
 * sealed to its key. Plaintext exists only in memory here, between opening an envelope and sealing it.
 */
import { constantTimeEqual } from "../core/crypto/ct.ts";
import { HandsafeError } from "../core/errors.ts";
import type { Platform } from "../platform/context.ts";
import {
  AT_REST,
  MAX_HANDSETS_PER_NUMBER,
  maskNumber,
  registrationErrors,
  sealForHandset,
  tooManyHandsets,
} from "./protocol.ts";
import * as regs from "./registration-store.ts";
import type { MessagingService } from "./server.ts";
import * as store from "./store.ts";

export class Enrolment {
  constructor(
    private readonly platform: Platform,
    private readonly messaging: MessagingService,
  ) {}

  private get db(): store.Db {
    return this.messaging.db;
  }

  private now(): number {
    return this.platform.clock();
  }

  private refuse(error: HandsafeError, entry: Parameters<MessagingService["refuse"]>[1]): Promise<never> {
    return this.messaging.refuse(error, entry);
  }

  /**
   * Confirms the registration and makes its handset active, in one transaction holding the number's
   * row (so the ≤ 10 handsets check holds under concurrency); then seals every message of the number
   * that still has its envelope to the new key. Audited as messaging.registration_confirmed.
   */
  async complete(reg: regs.RegistrationRow, actor: string): Promise<void> {
    const now = this.now();
    const subject = `registration:${reg.id}`;
    let previous: store.HandsetRow | undefined;
    try {
      previous = await this.db.transaction().execute(async (trx) => {
        await regs.lockNumber(trx, reg.phoneNumber, now);
        if (!(await regs.moveRegistration(trx, reg.id, "confirmed", now))) throw registrationErrors.used();
        const active = await store.activeHandsetsOf(trx, reg.phoneNumber);
        if (
          active.filter((h) => h.id !== reg.handsetId && h.id !== reg.replaces).length >=
          MAX_HANDSETS_PER_NUMBER
        )
          throw tooManyHandsets();
        const before = await store.findHandset(trx, reg.handsetId);
        await store.upsertHandset(trx, {
          id: reg.handsetId,
          phoneNumber: reg.phoneNumber,
          deviceType: reg.deviceType,
          encryptionKey: reg.encryptionKey,
          authKey: reg.authKey,
          state: "active",
          replacedBy: null,
          createdAt: now,
          updatedAt: now,
        });
        if (reg.replaces !== null) await store.markHandsetReplaced(trx, reg.replaces, reg.handsetId, now);
        return before;
      });
    } catch (e) {
      if (e instanceof HandsafeError)
        return this.refuse(e, { actor, action: "messaging.registration_confirmed", subject });
      throw e;
    }
    const sealed = await this.sealWaiting(reg, previous);
    await this.platform.audit({
      actor,
      action: "messaging.registration_confirmed",
      subject,
      outcome: "allow",
      details: {
        handsetId: reg.handsetId,
        variant: reg.variant,
        number: maskNumber(reg.phoneNumber),
        reRegistration: previous !== undefined,
        replaces: reg.replaces,
        ...sealed,
      },
    });
  }

  /**
   * Every message of the number that still has its envelope and has not expired is opened in memory
   * and sealed to the (new) key; nothing of the plaintext is written. A pending delivery of this
   * handset (or of the one it replaces) that cannot be sealed again — its envelope is gone — is
   * `lost_on_reregistration`.
   */
  private async sealWaiting(
    reg: regs.RegistrationRow,
    previous: store.HandsetRow | undefined,
  ): Promise<{ sealed: number; resealed: number; lost: number }> {
    const now = this.now();
    const handset = { id: reg.handsetId, encryptionKey: reg.encryptionKey };
    const keyChanged =
      previous !== undefined && !constantTimeEqual(previous.encryptionKey, reg.encryptionKey);
    const waiting = await store.messagesWithEnvelope(this.db, reg.phoneNumber, now);
    const withEnvelope = new Set(waiting.map((m) => m.id));
    let sealed = 0;
    let resealed = 0;
    let lost = 0;
    for (const m of waiting) {
      const existing = await store.findDelivery(this.db, m.id, handset.id);
      if (existing && !(existing.state === "pending" && keyChanged)) continue;
      const plaintext = this.platform.keyring.openAtRest(m.sealedEnvelope!, AT_REST.message(m.id));
      try {
        if (existing) {
          const { enc, ciphertext } = sealForHandset(plaintext, m.id, handset);
          if (
            await store.resealDelivery(
              this.db,
              { messageId: m.id, handsetId: handset.id, enc, ciphertext },
              now,
            )
          ) {
            resealed++;
            this.messaging.push?.notify([handset.id], m.id);
          }
        } else {
          sealed += await this.messaging.sealTo(m.id, plaintext, [handset]);
          await store.transitionMessage(this.db, m.id, "sealed", now);
        }
      } finally {
        plaintext.fill(0);
      }
    }
    // Pending deliveries under a key that is gone: sealed again above when the envelope was there
    // (a replaced handset's copy is then `replaced`), otherwise lost.
    const retire = async (handsetId: string, resealedState: "replaced" | undefined) => {
      for (const d of await store.deliveriesOfHandset(this.db, handsetId, ["pending"])) {
        const reachable = withEnvelope.has(d.messageId);
        if (reachable && resealedState === undefined) continue;
        const to = reachable ? resealedState! : "lost_on_reregistration";
        if ((await store.moveDelivery(this.db, d, ["pending"], to, now, true)) && !reachable) lost++;
      }
    };
    if (keyChanged) await retire(handset.id, undefined);
    if (reg.replaces !== null) await retire(reg.replaces, "replaced");
    return { sealed, resealed, lost };
  }
}
