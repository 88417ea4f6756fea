/**
 * The SDK's signed HTTP (docs/protocols/backup.md §5): every request RFC 9421-signed with the
 * identity module's account key (keyid = the account id) under REQUEST_SIGNATURE, an upload PATCH
 * under UPLOAD_SIGNATURE; an error answer becomes the HandsafeError it names.
 */
import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { HandsafeError } from "../core/errors.ts";
import { type SignatureProfile, signRequest } from "../core/http-signatures/index.ts";
import {
  createHttpClient,
  type StreamingHttpTransport,
  type StreamingResponse,
  type TransportResponse,
} from "../handset/http-client.ts";
import type { UnlockedIdentity } from "../handset/identity-module.ts";
import { REQUEST_SIGNATURE, UPLOAD_SIGNATURE } from "./signatures.ts";

export function backupError(
  code: string,
  message: string,
  status: number,
  details?: Record<string, unknown>,
): HandsafeError {
  return new HandsafeError(code, message, { status, ...(details ? { details } : {}) });
}

export interface SendOptions {
  json?: unknown;
  body?: Uint8Array;
  headers?: Record<string, string>;
  profile?: SignatureProfile;
}

export class SignedBackupHttp {
  readonly baseUrl: string;
  readonly #transport: StreamingHttpTransport;
  readonly #id: UnlockedIdentity;
  readonly #clock: () => number;

  constructor(options: {
    baseUrl: string;
    transport: StreamingHttpTransport;
    identity: UnlockedIdentity;
    clock: () => number;
  }) {
    // createHttpClient normalises the base URL (a trailing slash, a path prefix) as every SDK does.
    this.baseUrl = createHttpClient({ baseUrl: options.baseUrl, transport: options.transport }).baseUrl;
    this.#transport = options.transport;
    this.#id = options.identity;
    this.#clock = options.clock;
  }

  /** The signature headers of one request; `body` is digested unless the profile leaves it out. */
  sign(
    profile: SignatureProfile,
    method: string,
    path: string,
    headers: Record<string, string>,
    body: Uint8Array | undefined,
  ): Record<string, string> {
    return signRequest(
      profile,
      this.#id.httpSigningKey(),
      { method, url: this.baseUrl + path, headers, ...(body === undefined ? {} : { body }) },
      { keyId: this.#id.accountId, created: Math.floor(this.#clock() / 1000) },
    );
  }

  async send(method: string, path: string, options: SendOptions = {}): Promise<TransportResponse> {
    const headers: Record<string, string> = { accept: "application/json", ...options.headers };
    let body = options.body;
    if (options.json !== undefined) {
      headers["content-type"] = "application/json";
      body = utf8(JSON.stringify(options.json));
    }
    const profile = options.profile ?? REQUEST_SIGNATURE;
    // The upload profile covers content-length instead of a digest: the body streams unread.
    const signed = this.sign(profile, method, path, headers, profile === UPLOAD_SIGNATURE ? undefined : body);
    const response = await this.#transport.send({
      method,
      url: this.baseUrl + path,
      headers: { ...headers, ...signed },
      ...(body === undefined ? {} : { body }),
    });
    if (response.status >= 400) throw errorOfResponse(method, path, response);
    return response;
  }

  async json<T>(method: string, path: string, json?: unknown): Promise<T> {
    const res = await this.send(method, path, json === undefined ? {} : { json });
    if (res.body.length === 0) return undefined as T;
    return JSON.parse(fromUtf8(res.body)) as T;
  }

  /** A signed GET whose body streams (a blob); the caller reads the status. */
  stream(path: string): Promise<StreamingResponse> {
    const headers = this.sign(REQUEST_SIGNATURE, "GET", path, {}, undefined);
    return this.#transport.stream({ method: "GET", url: this.baseUrl + path, headers });
  }
}

/** `{"error":{code,message,details}}` as that HandsafeError, else transport.http_error. */
export function errorOfResponse(method: string, path: string, res: TransportResponse): HandsafeError {
  try {
    const parsed = JSON.parse(fromUtf8(res.body)) as {
      error?: { code?: unknown; message?: unknown; details?: unknown };
    };
    const code = parsed.error?.code;
    if (typeof code === "string" && code !== "")
      return new HandsafeError(
        code,
        typeof parsed.error?.message === "string" ? parsed.error.message : `HTTP ${res.status}`,
        {
          status: res.status,
          ...(typeof parsed.error?.details === "object" && parsed.error.details !== null
            ? { details: parsed.error.details as Record<string, unknown> }
            : {}),
        },
      );
  } catch {
    // not JSON
  }
  return new HandsafeError("transport.http_error", `${method} ${path} answered HTTP ${res.status}`, {
    status: res.status,
  });
}
