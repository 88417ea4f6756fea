/**
 * The Node transport for the handset's HTTP client, with public-key pinning.
 *
 * With a pin the trust decision is the pin alone: the CA chain and host name are not checked (the
 * embedded server's certificate is self-signed), but the SHA-256 of the peer certificate's DER
 * SubjectPublicKeyInfo must equal the pin. The check runs in the agent's `createConnection`, after the TLS
 * handshake and before the socket is handed to the HTTP request — so on a mismatch not one request byte
 * is written. TLS session resumption is off (`maxCachedSessions: 0`) so every connection shows its
 * certificate; kept-alive connections were each checked when made.
 *
 * Without a pin, normal CA validation and host-name checks apply (optionally with a private `ca`).
 */

import { createHash, timingSafeEqual, type X509Certificate } from "node:crypto";
import * as http from "node:http";
import * as https from "node:https";
import { isIP } from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import { fromBase64urlOfLength, toBase64url } from "../core/codec/base64url.ts";
import { HandsafeError, isHandsafeError } from "../core/errors.ts";
import {
  createHttpClient,
  type HttpClient,
  type StreamingHttpTransport,
  type StreamingResponse,
  type TransportRequest,
  type TransportResponse,
  transportError,
} from "./http-client.ts";

export interface NodeTransportOptions {
  /** base64url SHA-256 of the server's DER SubjectPublicKeyInfo (see platform/tls.ts). */
  pin?: string;
  /** PEM CA certificate(s) to trust instead of Node's bundle — only when there is no pin. */
  ca?: string;
  /** Per request, from sending to the end of the response; default 30 s. */
  timeoutMs?: number;
  /** Largest response body accepted; default 16 MiB. */
  maxResponseBytes?: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

/** OpenSSL/Node codes for a certificate that failed CA or host-name validation. */
const UNTRUSTED_CERTIFICATE_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "CERT_REVOKED",
  "CERT_SIGNATURE_FAILURE",
  "INVALID_CA",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** The pin of a certificate: base64url SHA-256 of its DER SubjectPublicKeyInfo. */
export function spkiSha256(cert: X509Certificate): string {
  return toBase64url(spkiDigest(cert));
}

function spkiDigest(cert: X509Certificate): Uint8Array {
  return createHash("sha256")
    .update(cert.publicKey.export({ type: "spki", format: "der" }))
    .digest();
}

/**
 * Refuses every connection whose certificate key is not the pinned one. Only `host`, `port` and
 * `servername` are taken from the request's options: the rest (the HTTP `path` among them) is not for TLS.
 */
class PinnedAgent extends https.Agent {
  readonly #pin: Uint8Array;

  constructor(pin: Uint8Array) {
    super({ keepAlive: true, maxCachedSessions: 0 });
    this.#pin = pin;
  }

  override createConnection(
    options: https.RequestOptions,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    const host = options.host ?? options.hostname ?? "localhost";
    const servername = options.servername || (isIP(host) ? undefined : host);
    const socket = tls.connect({
      host,
      port: Number(options.port ?? 443),
      ...(servername ? { servername } : {}),
      // The pin below is the trust decision; the self-signed chain would fail CA validation.
      rejectUnauthorized: false,
    });
    const fail = (err: Error) => {
      socket.removeListener("secureConnect", onSecure);
      socket.destroy();
      callback?.(err, socket);
    };
    const onSecure = () => {
      socket.removeListener("error", fail);
      const cert = socket.getPeerX509Certificate();
      const actual = cert === undefined ? undefined : spkiDigest(cert);
      if (actual === undefined || actual.length !== this.#pin.length || !timingSafeEqual(actual, this.#pin)) {
        socket.destroy();
        const shown = actual === undefined ? "no certificate" : toBase64url(actual);
        callback?.(
          new HandsafeError(
            "transport.pin_mismatch",
            `the server's key (SHA256:${shown}) is not the pinned one (SHA256:${toBase64url(this.#pin)})`,
            { status: 0 },
          ),
          socket,
        );
        return;
      }
      callback?.(null, socket);
    };
    socket.once("error", fail);
    socket.once("secureConnect", onSecure);
    return undefined;
  }
}

export function createNodeTransport(options: NodeTransportOptions = {}): StreamingHttpTransport {
  const { pin, ca } = options;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  let pinned: PinnedAgent | undefined;
  if (pin !== undefined) {
    if (ca !== undefined)
      throw new HandsafeError("transport.invalid_options", "give a pin or a CA, not both", { status: 0 });
    let digest: Uint8Array;
    try {
      digest = fromBase64urlOfLength(pin, 32, "pin");
    } catch (e) {
      throw new HandsafeError("transport.invalid_pin", "a pin is 32 bytes of unpadded base64url", {
        status: 0,
        cause: e,
      });
    }
    pinned = new PinnedAgent(digest);
  }
  const httpsAgent = pinned ?? new https.Agent({ keepAlive: true, ...(ca === undefined ? {} : { ca }) });
  const httpAgent = new http.Agent({ keepAlive: true });

  function send(req: TransportRequest): Promise<TransportResponse> {
    const url = new URL(req.url);
    if (url.protocol === "http:" && pinned)
      return Promise.reject(
        new HandsafeError("transport.invalid_request", "a pinned client speaks only https", { status: 0 }),
      );
    const lib = url.protocol === "https:" ? https : http;
    const agent = url.protocol === "https:" ? httpsAgent : httpAgent;
    return new Promise<TransportResponse>((resolve, reject) => {
      let settled = false;
      const settle = (err: unknown, res?: TransportResponse) => {
        if (settled) return;
        settled = true;
        if (err === undefined) resolve(res!);
        else reject(mapError(err, req));
      };
      const headers: Record<string, string> = { ...req.headers };
      if (req.body !== undefined) headers["content-length"] = String(req.body.length);
      const request = lib.request(
        url,
        {
          method: req.method,
          headers,
          agent,
          ...(req.signal === undefined ? {} : { signal: req.signal }),
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (chunk: Buffer) => {
            size += chunk.length;
            if (size > maxResponseBytes) {
              const err = new HandsafeError(
                "transport.response_too_large",
                `the response exceeds ${maxResponseBytes} bytes`,
                { status: 0 },
              );
              settle(err);
              // Drops the connection too: it still carries the unread rest of this response.
              res.destroy();
              return;
            }
            chunks.push(chunk);
          });
          res.on("error", (err) => settle(err));
          res.on("end", () => {
            const out: Record<string, string> = {};
            for (const [name, value] of Object.entries(res.headers)) {
              if (value !== undefined) out[name] = Array.isArray(value) ? value.join(", ") : value;
            }
            settle(undefined, {
              status: res.statusCode ?? 0,
              headers: out,
              body: new Uint8Array(Buffer.concat(chunks)),
            });
          });
        },
      );
      request.setTimeout(timeoutMs, () => {
        request.destroy(
          new HandsafeError("transport.timeout", `${req.method} ${req.url} took over ${timeoutMs} ms`, {
            status: 0,
          }),
        );
      });
      request.on("error", (err) => settle(err));
      request.end(req.body === undefined ? undefined : bodyView(req.body));
    });
  }

  /**
   * The same trust rules and agents as `send`, with the body handed over as it arrives (downloads
   * of any size: no maxResponseBytes). `timeoutMs` is the longest silence on the socket.
   */
  function stream(req: TransportRequest): Promise<StreamingResponse> {
    const url = new URL(req.url);
    if (url.protocol === "http:" && pinned)
      return Promise.reject(
        new HandsafeError("transport.invalid_request", "a pinned client speaks only https", { status: 0 }),
      );
    const lib = url.protocol === "https:" ? https : http;
    const agent = url.protocol === "https:" ? httpsAgent : httpAgent;
    return new Promise<StreamingResponse>((resolve, reject) => {
      const headers: Record<string, string> = { ...req.headers };
      if (req.body !== undefined) headers["content-length"] = String(req.body.length);
      const request = lib.request(
        url,
        { method: req.method, headers, agent, ...(req.signal === undefined ? {} : { signal: req.signal }) },
        (res) => {
          const out: Record<string, string> = {};
          for (const [name, value] of Object.entries(res.headers))
            if (value !== undefined) out[name] = Array.isArray(value) ? value.join(", ") : value;
          resolve({
            status: res.statusCode ?? 0,
            headers: out,
            body: (async function* () {
              try {
                // A view, not a copy: a stream never reuses a chunk it has emitted.
                for await (const chunk of res) {
                  const b = chunk as Buffer;
                  yield new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
                }
              } catch (e) {
                throw mapError(e, req);
              } finally {
                // A reader that stops early must not leave the rest of the body on a kept-alive socket.
                if (!res.complete) res.destroy();
              }
              // The socket closed before the announced length: the body was cut.
              if (!res.complete)
                throw new HandsafeError("transport.unreachable", `${req.method} ${req.url}: body cut short`, {
                  status: 0,
                });
            })(),
          });
        },
      );
      request.setTimeout(timeoutMs, () => {
        request.destroy(
          new HandsafeError("transport.timeout", `${req.method} ${req.url} was silent for ${timeoutMs} ms`, {
            status: 0,
          }),
        );
      });
      request.on("error", (err) => reject(mapError(err, req)));
      request.end(req.body === undefined ? undefined : bodyView(req.body));
    });
  }

  return {
    pin,
    send,
    stream,
    close() {
      httpsAgent.destroy();
      httpAgent.destroy();
    },
  };
}

/** The usual way to make a Node handset's client: a pinning transport and the client on top. */
export function createNodeHttpClient(options: { baseUrl: string } & NodeTransportOptions): HttpClient {
  const { baseUrl, ...transportOptions } = options;
  return createHttpClient({
    baseUrl,
    ...(options.pin === undefined ? {} : { pin: options.pin }),
    transport: createNodeTransport(transportOptions),
  });
}

/**
 * The request body as a Buffer over the same memory (Buffer.from(u8) would copy it: 8 MiB per upload
 * PATCH). The caller must not change the bytes before the request settles; once the server answered
 * it has read them (or refused them, and the rest is discarded), and a request that failed is destroyed.
 */
function bodyView(body: Uint8Array): Buffer {
  return Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

function mapError(err: unknown, req: TransportRequest): HandsafeError {
  if (isHandsafeError(err)) return err;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" && UNTRUSTED_CERTIFICATE_CODES.has(code))
    return new HandsafeError(
      "transport.untrusted_certificate",
      `${req.method} ${req.url}: the server's certificate is not trusted (${code})`,
      { status: 0, cause: err },
    );
  return transportError(err, req);
}
