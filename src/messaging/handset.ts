/**
 * The handset side of secure messaging (the SDK). Isomorphic: no node:* imports — it runs in the
 * CLI's simulated handsets and in the browser's virtual handset alike, over any HttpClient (pinned in
 * Node, fetch in a browser).
 *
 *   const app = await MessagingApp.open({ http, keystore });
 *   // (a) the server texts a code:
 *   await app.startRegistration({ phoneNumber, deviceType: "pixel-9" });
 *   await app.confirmRegistration(codeFromTheText);
 *   // (b) the app texts its own code from the number:
 *   const { to, text, code } = await app.prepareHandsetCode();  // the caller's modem sends `text` to `to`
 *   await app.registerWithHandsetCode({ phoneNumber, deviceType, code });
 *   await app.awaitRegistration();
 *   const { messages } = await app.pull();                      // opened and checked
 *   await app.ack(messages[0].id); await app.read(…); await app.reply(…, { type: "text", text: "ok" });
 *
 * Keys come from the CSPRNG and live in the keystore only (`messaging/<handset id>/x25519`, `…/ed25519`);
 * a registration's new encryption key waits as `…/x25519.next` until the server confirmed it.
 */
import { fromBase64url, toBase64url } from "../core/codec/base64url.ts";
import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { generateSigningKey, signingPublicKey } from "../core/crypto/ed25519.ts";
import { generateHpkeKeyPair, hpkeRecipientKey } from "../core/crypto/hpke.ts";
import { generateNumericCode } from "../core/crypto/otp.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import { ed25519SigningKey, signRequest } from "../core/http-signatures/index.ts";
import type { HttpClient, HttpResponse } from "../handset/http-client.ts";
import type { Keystore } from "../handset/keystore.ts";
import { SseSubscriber } from "../handset/sse-subscriber.ts";
import {
  CODE_DIGITS,
  handsetCodeText,
  type MessageBody,
  type MessagePlaintext,
  messagingHandsetId,
  openForHandset,
  parseMessageBody,
  REQUEST_SIGNATURE,
  type RegistrationState,
} from "./protocol.ts";
import {
  EVENT_MESSAGE,
  EVENT_READY,
  EVENTS_CONTENT_TYPE,
  INBOX_EVENTS_PATH,
  parseMessageEvent,
  parseReadyEvent,
} from "./push-protocol.ts";

const CURRENT = "messaging/current";
const entry = (handsetId: string, what: "x25519" | "x25519.next" | "ed25519" | "profile") =>
  `messaging/${handsetId}/${what}`;

export interface ServiceInfo {
  serviceNumber: string;
  handsetCodePrefix: string;
  codeDigits: number;
  codeTtlSeconds: number;
  hpke: { kem: number; kdf: number; aead: number; info: string };
  signatureTag: string;
}

interface Profile {
  phoneNumber: string;
  deviceType: string;
  /** confirmed once the server said so; pending while a registration runs. */
  state: "pending" | "confirmed";
  registrationId?: string;
}

export interface RegistrationAnswer {
  registrationId: string;
  state: RegistrationState;
  handsetId: string;
  expiresAt: number;
}

/** A message as the inbox hands it over, still sealed. */
export interface SealedMessage {
  id: string;
  senderId: string;
  senderName: string;
  state: string;
  enc: string;
  ciphertext: string;
  createdAt: number;
  expiresAt: number;
}

export interface OpenedMessage extends MessagePlaintext {
  /** This handset's delivery state when it was pulled (pending, delivered, read). */
  state: string;
}

export interface MessagingAppOptions {
  http: HttpClient;
  keystore: Keystore;
  /** The clock signatures are dated by (tests move it); Date.now otherwise. */
  clock?: () => number;
}

export class MessagingApp {
  #handsetId: string | undefined;
  #profile: Profile | undefined;
  #pendingCode: string | undefined;

  private constructor(private readonly options: MessagingAppOptions) {}

  /** Opens the app state in the keystore (a registered handset, a registration in progress, or none). */
  static async open(options: MessagingAppOptions): Promise<MessagingApp> {
    const app = new MessagingApp(options);
    const current = await options.keystore.get(CURRENT);
    if (current) {
      app.#handsetId = fromUtf8(current);
      const profile = await options.keystore.get(entry(app.#handsetId, "profile"));
      app.#profile = profile ? (JSON.parse(fromUtf8(profile)) as Profile) : undefined;
    }
    return app;
  }

  /** This app's handset id (derived from its number and auth key), once a registration started. */
  get handsetId(): string | undefined {
    return this.#handsetId;
  }

  get phoneNumber(): string | undefined {
    return this.#profile?.phoneNumber;
  }

  get registered(): boolean {
    return this.#profile?.state === "confirmed";
  }

  async service(): Promise<ServiceInfo> {
    return (await this.options.http.get<ServiceInfo>("/v1/messaging/service")).body;
  }

  // --- registration ---------------------------------------------------------------------------------

  /**
   * Keys for a registration of `phoneNumber`: the same auth key (so the same handset id) when this
   * app is already registered for that number, else a fresh one; always a fresh encryption key,
   * kept aside until the server confirms it.
   */
  private async prepareKeys(
    phoneNumber: string,
    deviceType: string,
  ): Promise<{
    handsetId: string;
    encryptionKey: string;
    authKey: string;
  }> {
    const ks = this.options.keystore;
    let seed: Uint8Array | undefined;
    let authPublic: Uint8Array | undefined;
    if (this.#handsetId && this.#profile?.phoneNumber === phoneNumber) {
      seed = await ks.get(entry(this.#handsetId, "ed25519"));
      if (seed) authPublic = signingPublicKey(seed);
    }
    if (!seed || !authPublic) {
      const pair = generateSigningKey();
      seed = pair.seed;
      authPublic = pair.publicKey;
    }
    const handsetId = messagingHandsetId(phoneNumber, authPublic);
    const encryption = generateHpkeKeyPair();
    await ks.put(entry(handsetId, "ed25519"), seed);
    await ks.put(entry(handsetId, "x25519.next"), encryption.privateKey);
    seed.fill(0);
    encryption.privateKey.fill(0);
    const wasConfirmed = this.#handsetId === handsetId && this.#profile?.state === "confirmed";
    await this.saveProfile(handsetId, {
      phoneNumber,
      deviceType,
      state: wasConfirmed ? "confirmed" : "pending",
    });
    return { handsetId, encryptionKey: toBase64url(encryption.publicKey), authKey: toBase64url(authPublic) };
  }

  private async saveProfile(handsetId: string, profile: Profile): Promise<void> {
    await this.options.keystore.put(entry(handsetId, "profile"), utf8(JSON.stringify(profile)));
    await this.options.keystore.put(CURRENT, utf8(handsetId));
    this.#handsetId = handsetId;
    this.#profile = profile;
  }

  /** The server confirmed the registration: the new encryption key becomes the key. */
  private async promoteKeys(registrationId: string): Promise<void> {
    const id = this.#handsetId!;
    const ks = this.options.keystore;
    const next = await ks.get(entry(id, "x25519.next"));
    if (next) {
      await ks.put(entry(id, "x25519"), next);
      await ks.delete(entry(id, "x25519.next"));
      next.fill(0);
    }
    await this.saveProfile(id, { ...this.#profile!, state: "confirmed", registrationId });
  }

  /** Variant (a): the server texts a code to the number. */
  async startRegistration(input: {
    phoneNumber: string;
    deviceType: string;
    replaces?: string;
  }): Promise<RegistrationAnswer> {
    const keys = await this.prepareKeys(input.phoneNumber, input.deviceType);
    const res = await this.options.http.post<RegistrationAnswer>("/v1/messaging/registrations", {
      variant: "server_otp",
      phoneNumber: input.phoneNumber,
      deviceType: input.deviceType,
      encryptionKey: keys.encryptionKey,
      authKey: keys.authKey,
      ...(input.replaces ? { replaces: input.replaces } : {}),
    });
    await this.rememberRegistration(res.body);
    return res.body;
  }

  private async rememberRegistration(answer: RegistrationAnswer): Promise<void> {
    // The server normalised the number (E.164): keep its form, the one messages are addressed to.
    if (answer.handsetId !== this.#handsetId)
      throw new HandsafeError("messaging.mismatch", "the server derived another handset id", { status: 0 });
    if (answer.state === "confirmed") await this.promoteKeys(answer.registrationId);
    else
      await this.saveProfile(this.#handsetId, { ...this.#profile!, registrationId: answer.registrationId });
  }

  /** Variant (a), second half: the code from the text. */
  async confirmRegistration(code: string, registrationId = this.#profile?.registrationId): Promise<string> {
    if (!registrationId || !this.#profile)
      throw new HandsafeError("messaging.no_registration", "no registration in progress", { status: 0 });
    const res = await this.options.http.post<RegistrationAnswer>(
      `/v1/messaging/registrations/${registrationId}/confirm`,
      { phoneNumber: this.#profile.phoneNumber, code },
    );
    await this.promoteKeys(res.body.registrationId);
    return res.body.handsetId;
  }

  /**
   * Variant (b), first half: this app's own code, and the text to send from the number to the
   * service number. The caller's SMS modem sends it (in the simulator, the built-in SMS centre).
   */
  async prepareHandsetCode(): Promise<{ code: string; text: string; to: string }> {
    const info = await this.service();
    this.#pendingCode = generateNumericCode(CODE_DIGITS);
    return { code: this.#pendingCode, text: handsetCodeText(this.#pendingCode), to: info.serviceNumber };
  }

  /**
   * Variant (b), second half: the same code over HTTPS. Confirmed at once when the text already
   * arrived, else pending until it does (awaitRegistration).
   */
  async registerWithHandsetCode(input: {
    phoneNumber: string;
    deviceType: string;
    code?: string;
    replaces?: string;
  }): Promise<RegistrationAnswer> {
    const code = input.code ?? this.#pendingCode;
    if (!code)
      throw new HandsafeError("messaging.no_registration", "call prepareHandsetCode first", { status: 0 });
    const keys = await this.prepareKeys(input.phoneNumber, input.deviceType);
    const res = await this.options.http.post<RegistrationAnswer>("/v1/messaging/registrations", {
      variant: "handset_otp",
      phoneNumber: input.phoneNumber,
      deviceType: input.deviceType,
      encryptionKey: keys.encryptionKey,
      authKey: keys.authKey,
      code,
      ...(input.replaces ? { replaces: input.replaces } : {}),
    });
    this.#pendingCode = undefined;
    await this.rememberRegistration(res.body);
    return res.body;
  }

  /** The registration's state, asked with a request signed by the auth key it registers. */
  async registrationStatus(registrationId = this.#profile?.registrationId): Promise<RegistrationAnswer> {
    if (!registrationId)
      throw new HandsafeError("messaging.no_registration", "no registration in progress", { status: 0 });
    const res = await this.signed<RegistrationAnswer>("GET", `/v1/messaging/registrations/${registrationId}`);
    if (res.body.state === "confirmed" && this.#profile?.state !== "confirmed")
      await this.promoteKeys(res.body.registrationId);
    return res.body;
  }

  /** Polls until the registration is confirmed (returns the handset id) or ends otherwise (throws). */
  async awaitRegistration(options: { timeoutMs?: number; pollMs?: number } = {}): Promise<string> {
    const deadline = Date.now() + (options.timeoutMs ?? 30_000);
    for (;;) {
      const status = await this.registrationStatus();
      if (status.state === "confirmed") return status.handsetId;
      if (status.state !== "pending")
        throw new HandsafeError(
          `messaging.registration_${status.state}`,
          `the registration is ${status.state}`,
          {
            status: 0,
          },
        );
      if (Date.now() > deadline)
        throw new HandsafeError(
          "messaging.registration_timeout",
          "the registration was not confirmed in time",
          {
            status: 0,
          },
        );
      await new Promise((r) => setTimeout(r, options.pollMs ?? 100));
    }
  }

  // --- the inbox ------------------------------------------------------------------------------------

  /** The sealed messages waiting for this handset (with `all`, every one it still holds). */
  async fetchInbox(options: { all?: boolean } = {}): Promise<SealedMessage[]> {
    const res = await this.signed<{ messages: SealedMessage[] }>(
      "GET",
      `/v1/messaging/inbox${options.all ? "?all=1" : ""}`,
    );
    return res.body.messages;
  }

  /**
   * Opens one message with this handset's private key and checks it is the message asked for,
   * addressed to this number: `hpke.open_failed` (tampered, moved, another key) or
   * `messaging.mismatch` otherwise.
   */
  async open(item: SealedMessage): Promise<OpenedMessage> {
    const id = this.requireRegistered();
    const sealed = {
      messageId: item.id,
      handsetId: id,
      enc: fromBase64url(item.enc, "enc"),
      ciphertext: fromBase64url(item.ciphertext, "ciphertext"),
    };
    const keys = [
      await this.options.keystore.get(entry(id, "x25519")),
      await this.options.keystore.get(entry(id, "x25519.next")),
    ];
    let failure: unknown;
    try {
      for (const key of keys) {
        if (!key) continue;
        try {
          const recipient = hpkeRecipientKey(key);
          return { ...openForHandset(recipient, sealed, this.#profile!.phoneNumber), state: item.state };
        } catch (e) {
          if (!isHandsafeError(e, "hpke.open_failed")) throw e;
          failure = e;
        }
      }
    } finally {
      for (const key of keys) key?.fill(0);
    }
    throw (
      failure ?? new HandsafeError("hpke.open_failed", "HPKE ciphertext could not be opened", { status: 0 })
    );
  }

  /** fetchInbox + open each; a message that does not open is listed in `refused` with its code. */
  async pull(options: { all?: boolean } = {}): Promise<{
    messages: OpenedMessage[];
    refused: Array<{ id: string; code: string }>;
  }> {
    const messages: OpenedMessage[] = [];
    const refused: Array<{ id: string; code: string }> = [];
    for (const item of await this.fetchInbox(options)) {
      try {
        messages.push(await this.open(item));
      } catch (e) {
        if (!(e instanceof HandsafeError)) throw e;
        refused.push({ id: item.id, code: e.code });
      }
    }
    return { messages, refused };
  }

  async ack(messageId: string): Promise<void> {
    await this.signed("POST", `/v1/messaging/inbox/${messageId}/ack`);
  }

  async read(messageId: string): Promise<void> {
    await this.signed("POST", `/v1/messaging/inbox/${messageId}/read`);
  }

  async delete(messageId: string): Promise<void> {
    await this.signed("DELETE", `/v1/messaging/inbox/${messageId}`);
  }

  async reply(messageId: string, body: MessageBody): Promise<{ id: string }> {
    const res = await this.signed<{ id: string }>("POST", `/v1/messaging/inbox/${messageId}/reply`, {
      body: parseMessageBody(body),
    });
    return res.body;
  }

  // --- signed requests ------------------------------------------------------------------------------

  private requireRegistered(): string {
    if (!this.#handsetId || !this.#profile)
      throw new HandsafeError("messaging.not_registered", "this app has not registered a number", {
        status: 0,
      });
    return this.#handsetId;
  }

  /**
   * A request signed per REQUEST_SIGNATURE with the auth key. The body bytes signed are the ones the
   * client sends: UTF-8 of JSON.stringify(json), as createHttpClient encodes it.
   */
  async signed<T = unknown>(method: string, path: string, json?: unknown): Promise<HttpResponse<T>> {
    const headers = await this.signatureHeaders(method, path, json);
    return this.options.http.request<T>(method, path, { headers, ...(json === undefined ? {} : { json }) });
  }

  private async signatureHeaders(
    method: string,
    path: string,
    json?: unknown,
  ): Promise<Record<string, string>> {
    const id = this.requireRegistered();
    const seed = await this.options.keystore.get(entry(id, "ed25519"));
    if (!seed)
      throw new HandsafeError("messaging.no_keys", "this handset's auth key is missing", { status: 0 });
    try {
      return signRequest(
        REQUEST_SIGNATURE,
        ed25519SigningKey(seed),
        {
          method,
          url: this.options.http.baseUrl + path,
          ...(json === undefined ? {} : { body: utf8(JSON.stringify(json)) }),
        },
        { keyId: id, created: Math.floor((this.options.clock ?? Date.now)() / 1000) },
      );
    } finally {
      seed.fill(0);
    }
  }

  /**
   * Holds this handset's push stream open (docs/protocols/messaging.md §Push) and calls
   * `onMessage` with each message id the server announces — and once with none each time the
   * stream (re)connects, so that the caller pulls what arrived while it was away. Reconnects after
   * a break with doubling delays (1 s up to 30 s). A refusal that retrying cannot cure (a 4xx but
   * 408 and 429: a key replaced, a clock off by more than the signature window) stops it: `onEvent`
   * gets `stopped`, and `connected()` rejects if it had not connected yet. The loop is the one
   * management's push subscriber runs (handset/sse-subscriber.ts).
   * Needs a registered app and an HttpClient that can stream (the Node transport, or fetch).
   */
  subscribe(options: {
    onMessage: (messageId: string | undefined) => void;
    onEvent?: (
      event:
        | { kind: "connected" }
        | { kind: "disconnected"; error: HandsafeError; retryInMs: number }
        | { kind: "stopped"; error: HandsafeError },
    ) => void;
  }): { connected(): Promise<void>; close(): Promise<void> } {
    this.requireRegistered();
    const http = this.options.http;
    if (!http.stream)
      throw new HandsafeError("transport.invalid_options", "the push stream needs a streaming transport", {
        status: 0,
      });
    const onEvent = options.onEvent;
    const streamEnded = () =>
      new HandsafeError("transport.unreachable", "the push stream ended", { status: 0 });
    const stream = new SseSubscriber({
      open: async (signal) =>
        http.stream!("GET", INBOX_EVENTS_PATH, {
          headers: {
            ...(await this.signatureHeaders("GET", INBOX_EVENTS_PATH)),
            accept: EVENTS_CONTENT_TYPE,
          },
          signal,
        }),
      contentType: EVENTS_CONTENT_TYPE,
      codes: {
        malformed: "messaging.push_malformed",
        refused: "messaging.push_refused",
        closed: "messaging.push_closed",
      },
      describe: `GET ${INBOX_EVENTS_PATH}`,
      ready: (event) => {
        const r = event.event === EVENT_READY ? parseReadyEvent(event.data) : undefined;
        if (!r || r.handsetId !== this.#handsetId)
          throw new HandsafeError("messaging.push_malformed", "the stream did not start with ready", {
            status: 0,
          });
        // Silence past 3 keep-alive periods is a dead stream (a half-open connection): reopen it.
        return { keepAliveMs: r.keepAliveMs };
      },
      event: (event) => {
        if (event.event !== EVENT_MESSAGE) return;
        const id = parseMessageEvent(event.data);
        if (id) options.onMessage(id);
      },
      // Pull what arrived while the stream was away.
      opened: () => options.onMessage(undefined),
      ...(onEvent
        ? {
            // This API has always named why a stream went away, a clean end included.
            onEvent: (e) =>
              onEvent(e.kind === "disconnected" ? { ...e, error: e.error ?? streamEnded() } : e),
          }
        : {}),
      minRetryMs: 1000,
      maxRetryMs: 30_000,
      jitter: [0.75, 1.25],
    }).start();
    // Handled here too: a caller that never asks for connected() gets no unhandled rejection.
    const connectedOnce = stream.connected();
    connectedOnce.catch(() => {});
    return { connected: () => connectedOnce, close: () => stream.close() };
  }
}
