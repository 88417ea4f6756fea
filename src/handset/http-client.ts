/**
 * The handset's HTTP client: JSON in, JSON out, server errors back as HandsafeError. It does no I/O of its
 * own — bytes move through an `HttpTransport` — so the same client runs in Node and in the browser:
 *
 * - Node (CLI, simulated handsets): `createNodeTransport({ pin })` from node-transport.ts, which pins the
 *   server's key (SPKI SHA-256) and refuses a mismatching server before any request byte is sent.
 * - Browser (virtual handset page): `createFetchTransport()`. A page cannot see or pin the server's
 *   certificate; the browser's own TLS validation decides whom it talks to (the page is served by that
 *   same server). So a `pin` is refused here rather than silently ignored: pass no pin in the browser.
 *
 * Transport failures carry status 0: transport.unreachable, transport.pin_mismatch, transport.aborted,
 * transport.timeout, transport.untrusted_certificate, transport.response_too_large.
 */

import { fromUtf8, utf8 } from "../core/codec/bytes.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";

export interface TransportRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: Uint8Array;
  signal?: AbortSignal;
}

export interface TransportResponse {
  status: number;
  /** Lowercase names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  body: Uint8Array;
}

export interface HttpTransport {
  /** The SPKI SHA-256 pin this transport enforces on every connection, if any. */
  readonly pin: string | undefined;
  /** Throws HandsafeError with status 0 when no HTTP response came back. */
  send(request: TransportRequest): Promise<TransportResponse>;
  /** Releases kept-alive connections. */
  close(): void;
}

/** A response whose body arrives in pieces (a large binary download). */
export interface StreamingResponse {
  status: number;
  /** Lowercase names. */
  headers: Record<string, string>;
  /** Iterating throws a HandsafeError with status 0 (transport.*) when the connection breaks. */
  body: AsyncIterable<Uint8Array>;
}

/** A transport that can also hand a response over as it arrives. */
export interface StreamingHttpTransport extends HttpTransport {
  stream(request: TransportRequest): Promise<StreamingResponse>;
}

export interface HttpClientOptions {
  /** e.g. "https://127.0.0.1:8443"; a path prefix is allowed ("https://host/handsafe"). */
  baseUrl: string;
  /** base64url SHA-256 of the server's SubjectPublicKeyInfo; needs a transport that enforces it. */
  pin?: string;
  /** Used by the default fetch transport when `transport` is not given. */
  fetchImpl?: typeof fetch;
  transport?: HttpTransport;
}

export interface RequestOptions {
  json?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

export interface HttpResponse<T> {
  status: number;
  headers: Record<string, string>;
  body: T;
}

export interface HttpClient {
  readonly baseUrl: string;
  readonly pin: string | undefined;
  request<T = unknown>(method: string, path: string, options?: RequestOptions): Promise<HttpResponse<T>>;
  get<T = unknown>(path: string, options?: Omit<RequestOptions, "json">): Promise<HttpResponse<T>>;
  post<T = unknown>(
    path: string,
    json?: unknown,
    options?: Omit<RequestOptions, "json">,
  ): Promise<HttpResponse<T>>;
  delete<T = unknown>(path: string, options?: Omit<RequestOptions, "json">): Promise<HttpResponse<T>>;
  /**
   * The response as it arrives (an event stream), when the transport can stream: the Node transport
   * and the fetch transport both can. The status is not checked: the caller reads an error body.
   */
  stream?(method: string, path: string, options?: Omit<RequestOptions, "json">): Promise<StreamingResponse>;
  close(): void;
}

const METHOD = /^[A-Z]+$/;

/** `base` with `headers` on every request (a request's own headers win): e.g. a bearer token. */
export function withHeaders(base: HttpClient, headers: Record<string, string>): HttpClient {
  const client: HttpClient = {
    baseUrl: base.baseUrl,
    pin: base.pin,
    close: () => base.close(),
    request: (method, path, opts = {}) =>
      base.request(method, path, { ...opts, headers: { ...headers, ...opts.headers } }),
    ...(base.stream
      ? {
          stream: (method: string, path: string, opts: Omit<RequestOptions, "json"> = {}) =>
            base.stream!(method, path, { ...opts, headers: { ...headers, ...opts.headers } }),
        }
      : {}),
    get: (path, opts = {}) => client.request("GET", path, opts),
    post: (path, json, opts = {}) => client.request("POST", path, { ...opts, json }),
    delete: (path, opts = {}) => client.request("DELETE", path, opts),
  };
  return client;
}

export function createHttpClient(options: HttpClientOptions): HttpClient {
  const baseUrl = normaliseBaseUrl(options.baseUrl);
  const transport = options.transport ?? createFetchTransport(options.fetchImpl);
  if (options.pin !== undefined && transport.pin !== options.pin)
    throw new HandsafeError(
      "transport.pin_unsupported",
      "a pin needs a transport that enforces it (createNodeTransport({ pin })); fetch cannot pin",
      { status: 0 },
    );

  /** The transport request for a call: one place checks the method and path and builds the headers. */
  function prepare(method: string, path: string, opts: RequestOptions): TransportRequest {
    if (!METHOD.test(method))
      throw new HandsafeError("transport.invalid_request", `bad HTTP method ${method}`);
    const headers: Record<string, string> = { accept: "application/json" };
    let body: Uint8Array | undefined;
    if (opts.json !== undefined) {
      headers["content-type"] = "application/json";
      body = utf8(JSON.stringify(opts.json));
    }
    for (const [k, v] of Object.entries(opts.headers ?? {})) headers[k.toLowerCase()] = v;
    return {
      method,
      url: baseUrl + checkPath(path),
      headers,
      ...(body === undefined ? {} : { body }),
      ...(opts.signal === undefined ? {} : { signal: opts.signal }),
    };
  }

  async function request<T>(
    method: string,
    path: string,
    opts: RequestOptions = {},
  ): Promise<HttpResponse<T>> {
    const response = await transport.send(prepare(method, path, opts));
    const parsed = parseBody(response);
    if (response.status >= 400) throw errorOf(method, path, response.status, parsed);
    return { status: response.status, headers: response.headers, body: parsed as T };
  }

  const streaming = (transport as Partial<StreamingHttpTransport>).stream?.bind(transport);
  return {
    baseUrl,
    pin: transport.pin,
    request,
    ...(streaming
      ? {
          stream: (method: string, path: string, opts: Omit<RequestOptions, "json"> = {}) =>
            streaming(prepare(method, path, opts)),
        }
      : {}),
    get: (path, opts) => request("GET", path, opts),
    post: (path, json, opts) => request("POST", path, { ...opts, json }),
    delete: (path, opts) => request("DELETE", path, opts),
    close: () => transport.close(),
  };
}

/**
 * The browser's transport (also usable on Node for unpinned calls). Redirects are refused: the API never
 * redirects, and following one would send the request somewhere else.
 */
export function createFetchTransport(fetchImpl: typeof fetch = globalThis.fetch): StreamingHttpTransport {
  const call = async (req: TransportRequest): Promise<{ res: Response; headers: Record<string, string> }> => {
    let res: Response;
    try {
      res = await fetchImpl(req.url, {
        method: req.method,
        headers: req.headers,
        redirect: "error",
        // A copy typed over a plain ArrayBuffer, which is what BodyInit accepts.
        ...(req.body === undefined ? {} : { body: new Uint8Array(req.body) }),
        ...(req.signal === undefined ? {} : { signal: req.signal }),
      });
    } catch (e) {
      throw transportError(e, req);
    }
    const headers: Record<string, string> = {};
    res.headers.forEach((value, name) => {
      headers[name.toLowerCase()] = value;
    });
    return { res, headers };
  };
  return {
    pin: undefined,
    async send(req) {
      const { res, headers } = await call(req);
      let body: Uint8Array;
      try {
        body = new Uint8Array(await res.arrayBuffer());
      } catch (e) {
        throw transportError(e, req);
      }
      return { status: res.status, headers, body };
    },
    async stream(req) {
      const { res, headers } = await call(req);
      const reader = res.body?.getReader();
      async function* body(): AsyncGenerator<Uint8Array> {
        if (!reader) return;
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) return;
            yield value;
          }
        } catch (e) {
          throw transportError(e, req);
        } finally {
          reader.cancel().catch(() => {});
        }
      }
      return { status: res.status, headers, body: body() };
    },
    close() {},
  };
}

/** Maps a failure below HTTP to its HandsafeError (status 0); HandsafeErrors pass through. */
export function transportError(e: unknown, req: { method: string; url: string }): HandsafeError {
  if (isHandsafeError(e)) return e;
  const where = `${req.method} ${req.url}`;
  if (e instanceof Error && (e.name === "AbortError" || e.name === "TimeoutError"))
    return new HandsafeError("transport.aborted", `${where} was aborted`, { status: 0, cause: e });
  const detail = e instanceof Error ? e.message : String(e);
  return new HandsafeError("transport.unreachable", `${where} failed: ${detail}`, { status: 0, cause: e });
}

function normaliseBaseUrl(baseUrl: string): string {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new HandsafeError("transport.invalid_base_url", `not a URL: ${baseUrl}`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:")
    throw new HandsafeError("transport.invalid_base_url", `not an http(s) URL: ${baseUrl}`);
  if (url.search !== "" || url.hash !== "" || url.username !== "" || url.password !== "")
    throw new HandsafeError(
      "transport.invalid_base_url",
      "the base URL takes no query, fragment or credentials",
    );
  return url.href.replace(/\/+$/, "");
}

/** Paths are relative to the base URL: "/v1/…", never another origin ("//host", "https://…"). */
function checkPath(path: string): string {
  if (!path.startsWith("/") || path.startsWith("//") || path.includes("\\") || /[\s#]/.test(path))
    throw new HandsafeError("transport.invalid_request", `path must start with a single "/": ${path}`);
  return path;
}

function parseBody(res: TransportResponse): unknown {
  if (res.body.length === 0) return undefined;
  const type = res.headers["content-type"] ?? "";
  let text: string;
  try {
    text = fromUtf8(res.body);
  } catch {
    return res.body;
  }
  if (!/^application\/(?:[\w.+-]+\+)?json\b/i.test(type)) return text;
  try {
    return JSON.parse(text);
  } catch (e) {
    if (res.status >= 400) return text;
    throw new HandsafeError("transport.bad_response", "the server sent malformed JSON", {
      status: 0,
      cause: e,
    });
  }
}

/** `{"error":{"code","message"}}` becomes that HandsafeError; anything else a generic transport.http_error. */
function errorOf(method: string, path: string, status: number, body: unknown): HandsafeError {
  if (typeof body === "object" && body !== null && "error" in body) {
    const error = (body as { error: unknown }).error;
    if (typeof error === "object" && error !== null) {
      const { code, message, details } = error as { code?: unknown; message?: unknown; details?: unknown };
      if (typeof code === "string" && code !== "")
        return new HandsafeError(code, typeof message === "string" ? message : `HTTP ${status}`, {
          status,
          ...(typeof details === "object" && details !== null
            ? { details: details as Record<string, unknown> }
            : {}),
        });
    }
  }
  return new HandsafeError("transport.http_error", `${method} ${path} answered HTTP ${status}`, { status });
}
