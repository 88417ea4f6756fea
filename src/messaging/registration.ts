/**
 * Registration: a handset proves a phone number over two channels and registers its two public
 * keys for it (docs/protocols/messaging.md §Registration).
 *
 *   (a) server_otp:  HTTPS start → the server texts an 8-digit code to the number → HTTPS confirm
 *   (b) handset_otp: the app texts "HSREG <its code>" from the number (the SMS network names the
 *                    sender) and posts the same code over HTTPS; either may come first
 *
 * Codes are drawn from the CSPRNG, stored as HMAC under a server key (codeMac), compared in
 * constant time, MAX_CODE_TRIES per registration, with a TTL and per-number quotas. On success
 * enrolment.ts makes the handset active and seals the number's waiting messages to its key.
 */
import { constantTimeEqual } from "../core/crypto/ct.ts";
import { codeMac, codesEqual, generateNumericCode } from "../core/crypto/otp.ts";
import { randomBytes } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import type { AuditEntry, Platform } from "../platform/context.ts";
import { normalisePhoneNumber } from "../platform/notify/sms/phone.ts";
import type { InboundSms } from "../platform/notify/sms/types.ts";
import {
  AT_REST,
  CODE_DIGITS,
  CODE_PATTERN,
  checkCodeSlotOpen,
  checkDisplayName,
  checkEncryptionKey,
  codeAttemptOutcome,
  codeContext,
  decodePublicKey,
  HANDSET_ID,
  MAX_CODE_TRIES,
  MAX_DEVICE_TYPE_LENGTH,
  MAX_HANDSETS_PER_NUMBER,
  tooManyHandsets,
  maskNumber,
  messagingHandsetId,
  newInboundCodeId,
  newRegistrationId,
  parseHandsetCodeText,
  QUOTA_WINDOW_MS,
  QUOTAS,
  REGISTRATION_VARIANTS,
  type RegistrationState,
  type RegistrationVariant,
  registrationErrors,
  serverCodeText,
} from "./protocol.ts";
import { Enrolment } from "./enrolment.ts";
import * as regs from "./registration-store.ts";
import type { MessagingService } from "./server.ts";
import * as store from "./store.ts";

export interface RegistrationInput {
  variant: unknown;
  phoneNumber: unknown;
  deviceType: unknown;
  encryptionKey: unknown;
  authKey: unknown;
  /** handset_otp: the app's own code, the one it texted. */
  code?: unknown;
  /** A handset of the same number this registration takes the place of. */
  replaces?: unknown;
}

export interface RegistrationAnswer {
  registrationId: string;
  state: RegistrationState;
  /** The handset id this registration creates (derived from the number and the auth key). */
  handsetId: string;
  expiresAt: number;
}

export interface RegistrationView extends RegistrationAnswer {
  variant: RegistrationVariant;
  phoneNumber: string;
  authKey: Uint8Array;
}

interface CheckedInput {
  variant: RegistrationVariant;
  phoneNumber: string;
  deviceType: string;
  encryptionKey: Uint8Array;
  authKey: Uint8Array;
  handsetId: string;
  replaces: string | null;
}

export class RegistrationService {
  #otpKey: Promise<Uint8Array> | undefined;
  private readonly enrolment: Enrolment;

  constructor(
    private readonly platform: Platform,
    private readonly messaging: MessagingService,
    private readonly codeTtlSeconds: number,
  ) {
    this.enrolment = new Enrolment(platform, messaging);
  }

  private get db(): store.Db {
    return this.messaging.db;
  }

  private now(): number {
    return this.platform.clock();
  }

  private refuse(error: HandsafeError, entry: Omit<AuditEntry, "outcome">): Promise<never> {
    return this.messaging.refuse(error, entry);
  }

  /** K_otp: 32 CSPRNG bytes made once per deployment, sealed at rest in server_keys; every node shares it. */
  private otpKey(): Promise<Uint8Array> {
    this.#otpKey ??= (async () => {
      let sealed = await regs.findServerKey(this.db, regs.OTP_KEY_KID);
      if (!sealed) {
        const fresh = randomBytes(32);
        sealed = await regs.insertServerKeyOnce(
          this.db,
          regs.OTP_KEY_KID,
          "messaging/otp-mac",
          this.platform.keyring.sealAtRest(fresh, AT_REST.otpKey),
          this.now(),
        );
        fresh.fill(0);
      }
      return this.platform.keyring.openAtRest(sealed, AT_REST.otpKey);
    })().catch((e: unknown) => {
      this.#otpKey = undefined;
      throw e;
    });
    return this.#otpKey;
  }

  private async mac(scope: string, code: string): Promise<Uint8Array> {
    return codeMac(await this.otpKey(), codeContext(scope), code);
  }

  // --- start ----------------------------------------------------------------------------------------

  /**
   * Starts a registration. server_otp: 201 pending, a code texted to the number. handset_otp: the
   * code the app texted is looked for among the texts that came from the number — found, the
   * registration is confirmed at once; not yet, it waits (pending) for the text.
   */
  async start(input: RegistrationInput, origin: string): Promise<RegistrationAnswer> {
    const action = "messaging.registration_started";
    let checked: CheckedInput;
    try {
      checked = await this.check(input);
    } catch (e) {
      if (e instanceof HandsafeError) return this.refuse(e, { actor: origin, action });
      throw e;
    }
    const { phoneNumber, handsetId } = checked;
    const subject = `number:${maskNumber(phoneNumber)}`;
    const now = this.now();
    if (!(await regs.takeQuota(this.db, phoneNumber, "registrations", QUOTAS.registrations, now)))
      return this.refuse(tooMany(`at most ${QUOTAS.registrations} registrations per number per hour`), {
        actor: origin,
        action,
        subject,
        details: { quota: "registrations" },
      });

    const id = newRegistrationId();
    const expiresAt = now + this.codeTtlSeconds * 1000;
    const row = (codeMacBytes: Uint8Array): regs.RegistrationRow => ({
      id,
      variant: checked.variant,
      phoneNumber,
      deviceType: checked.deviceType,
      encryptionKey: checked.encryptionKey,
      authKey: checked.authKey,
      handsetId,
      replaces: checked.replaces,
      codeMac: codeMacBytes,
      tries: 0,
      state: "pending",
      smsId: null,
      createdAt: now,
      expiresAt,
      confirmedAt: null,
    });
    const answer = (state: RegistrationState): RegistrationAnswer => ({
      registrationId: id,
      state,
      handsetId,
      expiresAt,
    });

    if (checked.variant === "server_otp") {
      if (!(await regs.takeQuota(this.db, phoneNumber, "codes", QUOTAS.codesTexted, now)))
        return this.refuse(tooMany(`at most ${QUOTAS.codesTexted} codes texted per number per hour`), {
          actor: origin,
          action,
          subject,
          details: { quota: "codes" },
        });
      const code = generateNumericCode(CODE_DIGITS);
      await regs.insertRegistration(this.db, row(await this.mac(id, code)));
      try {
        const sent = await this.messaging.deps.sms.send(
          phoneNumber,
          serverCodeText(code, this.codeTtlSeconds),
        );
        await regs.setRegistrationSms(this.db, id, sent.id);
      } catch (e) {
        await regs.moveRegistration(this.db, id, "expired", this.now());
        const error =
          e instanceof HandsafeError
            ? e
            : new HandsafeError("messaging.code_not_sent", "the code could not be texted", { status: 502 });
        await this.platform.audit({
          actor: origin,
          action,
          subject,
          outcome: "error",
          details: { registrationId: id, code: error.code },
        });
        throw error;
      }
      await this.platform.audit({
        actor: origin,
        action,
        subject,
        outcome: "allow",
        details: { registrationId: id, variant: "server_otp", handsetId },
      });
      return answer("pending");
    }

    // handset_otp
    const code = input.code;
    if (typeof code !== "string" || !CODE_PATTERN.test(code))
      return this.refuse(
        new HandsafeError("messaging.invalid_code", `code is ${CODE_DIGITS} digits`, { status: 400 }),
        { actor: origin, action, subject },
      );
    const mac = await this.mac(phoneNumber, code);
    const match = await this.findInboundCode(phoneNumber, mac, now);
    if (match) {
      try {
        checkCodeSlotOpen(match, now);
      } catch (e) {
        if (e instanceof HandsafeError)
          return this.refuse(e, { actor: origin, action, subject, details: { variant: "handset_otp" } });
        throw e;
      }
      if (!(await regs.useInboundCode(this.db, match.id, now)))
        return this.refuse(registrationErrors.used(), { actor: origin, action, subject });
      await regs.insertRegistration(this.db, row(mac));
      await this.platform.audit({
        actor: origin,
        action,
        subject,
        outcome: "allow",
        details: { registrationId: id, variant: "handset_otp", handsetId, textFirst: true },
      });
      const reg = (await regs.findRegistration(this.db, id))!;
      await this.enrolment.complete(reg, origin);
      return answer("confirmed");
    }
    // No text with this code from this number (yet): a guess costs a try on the codes that did come.
    await regs.countMissOnInboundCodes(this.db, phoneNumber, now);
    await regs.insertRegistration(this.db, row(mac));
    await this.platform.audit({
      actor: origin,
      action,
      subject,
      outcome: "allow",
      details: { registrationId: id, variant: "handset_otp", handsetId, textFirst: false },
    });
    return answer("pending");
  }

  private async check(input: RegistrationInput): Promise<CheckedInput> {
    if (!(REGISTRATION_VARIANTS as readonly unknown[]).includes(input.variant))
      throw new HandsafeError("messaging.invalid_variant", 'variant is "server_otp" or "handset_otp"', {
        status: 400,
      });
    if (typeof input.phoneNumber !== "string")
      throw new HandsafeError("phone.invalid", "phoneNumber must be a string", { status: 400 });
    const phoneNumber = normalisePhoneNumber(input.phoneNumber);
    const deviceType = checkDisplayName(
      input.deviceType,
      MAX_DEVICE_TYPE_LENGTH,
      "messaging.invalid_device_type",
      "deviceType",
    );
    const encryptionKey = decodePublicKey(input.encryptionKey, "encryptionKey");
    checkEncryptionKey(encryptionKey);
    const authKey = decodePublicKey(input.authKey, "authKey");
    const handsetId = messagingHandsetId(phoneNumber, authKey);
    let replaces: string | null = null;
    if (input.replaces !== undefined) {
      const other =
        typeof input.replaces === "string" && HANDSET_ID.test(input.replaces)
          ? await store.findHandset(this.db, input.replaces)
          : undefined;
      if (!other || other.phoneNumber !== phoneNumber || other.state !== "active" || other.id === handsetId)
        throw new HandsafeError(
          "messaging.unknown_handset",
          "replaces names no other active handset of this number",
          {
            status: 404,
          },
        );
      replaces = other.id;
    }
    const active = await store.activeHandsetsOf(this.db, phoneNumber);
    if (active.filter((h) => h.id !== handsetId && h.id !== replaces).length >= MAX_HANDSETS_PER_NUMBER)
      throw tooManyHandsets();
    const variant = input.variant as RegistrationVariant;
    return { variant, phoneNumber, deviceType, encryptionKey, authKey, handsetId, replaces };
  }

  /** The inbound code (of the last hour, any state) whose MAC equals `mac`; every one is compared. */
  private async findInboundCode(number: string, mac: Uint8Array, now: number) {
    let found: regs.InboundCodeRow | undefined;
    for (const c of await regs.recentInboundCodes(this.db, number, now - QUOTA_WINDOW_MS))
      if (codesEqual(c.codeMac, mac) && found === undefined) found = c;
    return found;
  }

  // --- confirm (server_otp) -------------------------------------------------------------------------

  /**
   * The code the server texted, typed into the app: the number must be the one it was sent to,
   * one try is counted before the comparison (compare-and-set), the fifth wrong one locks.
   */
  async confirm(
    registrationId: string,
    input: { phoneNumber: unknown; code: unknown },
    origin: string,
  ): Promise<RegistrationAnswer> {
    const action = "messaging.registration_confirm";
    const subject = `registration:${registrationId}`;
    const reg = await regs.findRegistration(this.db, registrationId);
    if (reg?.variant !== "server_otp")
      return this.refuse(unknownRegistration(), { actor: origin, action, subject });
    const now = this.now();
    try {
      checkCodeSlotOpen(reg, now);
    } catch (e) {
      if (e instanceof HandsafeError) {
        if (e.code === "messaging.code_expired") await regs.moveRegistration(this.db, reg.id, "expired", now);
        return this.refuse(e, { actor: origin, action, subject });
      }
      throw e;
    }
    let claimed: string;
    try {
      if (typeof input.phoneNumber !== "string")
        throw new HandsafeError("phone.invalid", "phoneNumber must be a string", { status: 400 });
      claimed = normalisePhoneNumber(input.phoneNumber);
    } catch (e) {
      if (e instanceof HandsafeError) return this.refuse(e, { actor: origin, action, subject });
      throw e;
    }
    const tries = await regs.claimRegistrationTry(this.db, reg.id, now);
    if (tries === undefined) {
      const current = (await regs.findRegistration(this.db, reg.id))!;
      let error = registrationErrors.locked();
      try {
        checkCodeSlotOpen(current, now);
      } catch (e) {
        if (e instanceof HandsafeError) error = e;
      }
      return this.refuse(error, { actor: origin, action, subject });
    }
    const code = input.code;
    const wellFormed = typeof code === "string" && CODE_PATTERN.test(code);
    // Both compared whatever the number: the answer for another number is a wrong code like any other.
    const macMatches = wellFormed && constantTimeEqual(await this.mac(reg.id, code), reg.codeMac);
    const outcome = codeAttemptOutcome(tries, macMatches && claimed === reg.phoneNumber);
    if (outcome.state === "confirmed") {
      await this.enrolment.complete(reg, origin);
      return {
        registrationId: reg.id,
        state: "confirmed",
        handsetId: reg.handsetId,
        expiresAt: reg.expiresAt,
      };
    }
    if (outcome.state === "locked") {
      await regs.moveRegistration(this.db, reg.id, "locked", this.now());
      await this.platform.audit({
        actor: origin,
        action: "messaging.registration_locked",
        subject,
        outcome: "deny",
        details: { number: maskNumber(reg.phoneNumber) },
      });
    }
    return this.refuse(outcome.error!, {
      actor: origin,
      action,
      subject,
      details: { triesLeft: Math.max(0, MAX_CODE_TRIES - tries), otherNumber: claimed !== reg.phoneNumber },
    });
  }

  /** A registration's state, for the app that holds its auth key (the route checked the signature). */
  async view(registrationId: string): Promise<RegistrationView | undefined> {
    const reg = await regs.findRegistration(this.db, registrationId);
    if (!reg) return undefined;
    const state: RegistrationState =
      reg.state === "pending" && reg.expiresAt <= this.now() ? "expired" : reg.state;
    return {
      registrationId: reg.id,
      variant: reg.variant,
      state,
      handsetId: reg.handsetId,
      expiresAt: reg.expiresAt,
      phoneNumber: reg.phoneNumber,
      authKey: reg.authKey,
    };
  }

  // --- inbound texts (handset_otp) ------------------------------------------------------------------

  /**
   * The SMS path's inbound handler for "HSREG <code>" texts: false for any other text (another
   * capability may want it). The number is the one the SMS network gives (`from`); the code is kept
   * as its MAC for the TTL, and a pending registration of that number with the same code is
   * confirmed at once.
   */
  async handleInboundSms(sms: InboundSms): Promise<boolean> {
    const code = parseHandsetCodeText(sms.text);
    if (code === undefined) return false;
    let number: string;
    try {
      number = normalisePhoneNumber(sms.from);
    } catch {
      return true;
    }
    const actor = `sms:${maskNumber(number)}`;
    const subject = `number:${maskNumber(number)}`;
    const now = this.now();
    if (!(await regs.takeQuota(this.db, number, "inbound", QUOTAS.inboundCodes, now))) {
      await this.platform.audit({
        actor,
        action: "messaging.inbound_code",
        subject,
        outcome: "deny",
        details: { code: "messaging.too_many_registrations", smsId: sms.id },
      });
      return true;
    }
    const mac = await this.mac(number, code);
    const inbound: regs.InboundCodeRow = {
      id: newInboundCodeId(),
      phoneNumber: number,
      codeMac: mac,
      tries: 0,
      state: "live",
      smsId: sms.id,
      receivedAt: now,
      expiresAt: now + this.codeTtlSeconds * 1000,
    };
    await regs.insertInboundCode(this.db, inbound);
    let match: regs.RegistrationRow | undefined;
    for (const reg of await regs.pendingHandsetCodeRegistrations(this.db, number, now))
      if (codesEqual(reg.codeMac, mac) && match === undefined) match = reg;
    await this.platform.audit({
      actor,
      action: "messaging.inbound_code",
      subject,
      outcome: "info",
      details: { smsId: sms.id, matched: match?.id ?? null },
    });
    if (match && (await regs.useInboundCode(this.db, inbound.id, now))) {
      try {
        await this.enrolment.complete(match, actor);
      } catch (e) {
        // The text is taken either way; the app sees the registration's state (e.g. too many handsets).
        if (!(e instanceof HandsafeError)) throw e;
      }
    }
    return true;
  }
}

function tooMany(message: string): HandsafeError {
  return new HandsafeError("messaging.too_many_registrations", message, { status: 429 });
}

function unknownRegistration(): HandsafeError {
  return new HandsafeError("messaging.unknown_registration", "no such registration", { status: 404 });
}
