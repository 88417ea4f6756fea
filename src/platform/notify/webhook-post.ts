/**
 * One POST of a webhook call: node:https (node:http only to this machine, for tests and local
 * receivers), certificate checked (against the system CAs, or the `ca` a test gives), no redirects
 * followed, one deadline for the whole exchange, and at most 64 KiB of the answer read — the body
 * is never looked at, only the status matters.
 */
import http from "node:http";
import https from "node:https";
import { HandsafeError } from "../../core/errors.ts";

export const WEBHOOK_TIMEOUT_MS = 10_000;
export const WEBHOOK_MAX_RESPONSE_BYTES = 64 * 1024;
export const MAX_WEBHOOK_URL_LENGTH = 2048;

const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]"]);

/**
 * A URL a webhook may go to: https://, or http:// to 127.0.0.1 / localhost / [::1] only; no user
 * or password (they would sit in the database and the logs in clear), no fragment.
 * webhook.invalid_url (400) otherwise.
 */
export function checkWebhookUrl(url: string): URL {
  const bad = (why: string) =>
    new HandsafeError("webhook.invalid_url", `webhook URL ${why}`, { status: 400 });
  if (typeof url !== "string" || url.length > MAX_WEBHOOK_URL_LENGTH)
    throw bad("is not a URL of ≤ 2048 characters");
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw bad("is not a URL");
  }
  if (u.protocol !== "https:" && !(u.protocol === "http:" && LOOPBACK_HOSTS.has(u.hostname)))
    throw bad("must be https:// (http:// only to 127.0.0.1 or localhost)");
  if (u.username !== "" || u.password !== "") throw bad("must not carry a user or password");
  if (u.hash !== "" || url.includes("#")) throw bad("must not carry a fragment");
  return u;
}

export interface PostOptions {
  timeoutMs: number;
  maxResponseBytes: number;
  /** Extra trusted certificates (PEM): a test receiver's self-signed certificate. */
  ca?: string | readonly string[];
  signal?: AbortSignal;
}

/** The receiver's HTTP status; rejects on a network failure, a TLS failure, the deadline or an abort. */
export function postWebhook(
  url: URL,
  headers: Record<string, string>,
  body: Uint8Array,
  options: PostOptions,
): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    const requestOptions: https.RequestOptions = {
      method: "POST",
      headers: { ...headers, "content-length": String(body.length) },
      agent: false,
      rejectUnauthorized: true,
      ...(options.ca !== undefined
        ? { ca: typeof options.ca === "string" ? options.ca : [...options.ca] }
        : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    };
    const req =
      url.protocol === "https:" ? https.request(url, requestOptions) : http.request(url, requestOptions);
    let settled = false;
    /** Known once the answer's head arrived: from then on the call has its outcome. */
    let status: number | undefined;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      if (status !== undefined) resolve({ status });
      else reject(err ?? new Error("the connection closed without an answer"));
    };
    const deadline = setTimeout(() => {
      const err = Object.assign(new Error(`no answer within ${options.timeoutMs} ms`), { code: "ETIMEDOUT" });
      finish(err);
      req.destroy(err);
    }, options.timeoutMs);
    req.on("error", (err) => finish(err));
    req.on("close", () => finish());
    req.on("response", (res) => {
      status = res.statusCode ?? 0;
      let read = 0;
      res.on("data", (chunk: Buffer) => {
        read += chunk.length;
        // Enough: the status is all we wanted; the rest is not read.
        if (read > options.maxResponseBytes) res.destroy();
      });
      res.on("end", () => {
        finish();
        res.destroy();
      });
      res.on("error", () => finish());
      res.on("close", () => finish());
    });
    req.end(body);
  });
}
