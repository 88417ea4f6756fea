import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer as createHttpServer } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { isHandsafeError } from "../../src/core/errors.ts";
import { createFetchTransport, createHttpClient } from "../../src/handset/http-client.ts";
import { createNodeHttpClient, createNodeTransport } from "../../src/handset/node-transport.ts";
import {
  createSelfSignedCertificate,
  ensureServerCertificate,
  type ServerCertificate,
} from "../../src/platform/tls.ts";
import { until } from "../helpers/wait.ts";

let dataDir: string;
let cert: ServerCertificate;
let server: Server;
let baseUrl: string;
/** What the server saw: TCP connections and HTTP requests. */
const seen = { connections: 0, requests: [] as string[] };

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "handsafe-http-"));
  cert = await ensureServerCertificate(dataDir);
  server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    seen.requests.push(`${req.method} ${req.url}`);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const reply = (status: number, body: unknown) => {
        res.writeHead(status, { "content-type": "application/json; charset=utf-8", "x-handsafe": "1" });
        res.end(JSON.stringify(body));
      };
      if (req.url === "/v1/hello") return reply(200, { hello: "handset" });
      if (req.url === "/v1/echo")
        return reply(201, { method: req.method, got: JSON.parse(Buffer.concat(chunks).toString("utf8")) });
      if (req.url === "/v1/gone") {
        res.writeHead(204);
        return res.end();
      }
      if (req.url === "/v1/locked")
        return reply(409, { error: { code: "otp.locked", message: "too many attempts" } });
      if (req.url === "/v1/teapot") {
        res.writeHead(500, { "content-type": "text/plain" });
        return res.end("boom");
      }
      if (req.url === "/v1/slow") return; // never answers
      reply(404, { error: { code: "route.not_found", message: "no such route" } });
    });
  });
  server.on("connection", () => seen.connections++);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  baseUrl = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  server.close();
  await rm(dataDir, { recursive: true, force: true });
});

beforeEach(() => {
  seen.connections = 0;
  seen.requests = [];
});

async function caught(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error("expected a rejection");
    },
    (e: unknown) => e,
  );
}

async function expectCode(promise: Promise<unknown>, code: string, status?: number): Promise<void> {
  const e = await caught(promise);
  expect(isHandsafeError(e, code), `expected ${code}, got ${String(e)}`).toBe(true);
  if (status !== undefined) expect((e as { status: number }).status).toBe(status);
}

describe("a handset talking to its pinned server", () => {
  it("GETs and POSTs JSON with the right pin, over one kept-alive connection", async () => {
    const client = createNodeHttpClient({ baseUrl, pin: cert.spkiSha256 });
    try {
      const hello = await client.get<{ hello: string }>("/v1/hello");
      expect(hello.status).toBe(200);
      expect(hello.body).toEqual({ hello: "handset" });
      expect(hello.headers["x-handsafe"]).toBe("1");
      const echo = await client.post<{ method: string; got: unknown }>("/v1/echo", { n: 1, s: "é" });
      expect(echo).toMatchObject({ status: 201, body: { method: "POST", got: { n: 1, s: "é" } } });
      const gone = await client.delete("/v1/gone");
      expect(gone).toMatchObject({ status: 204, body: undefined });
      expect(seen.requests).toEqual(["GET /v1/hello", "POST /v1/echo", "DELETE /v1/gone"]);
      expect(seen.connections).toBe(1);
    } finally {
      client.close();
    }
  });

  it("turns an error body into that HandsafeError, with the HTTP status", async () => {
    const client = createNodeHttpClient({ baseUrl, pin: cert.spkiSha256 });
    try {
      const e = await caught(client.post("/v1/locked", { otp: "123456" }));
      expect(isHandsafeError(e, "otp.locked")).toBe(true);
      expect((e as Error).message).toBe("too many attempts");
      expect((e as { status: number }).status).toBe(409);
      await expectCode(client.get("/v1/nowhere"), "route.not_found", 404);
      await expectCode(client.get("/v1/teapot"), "transport.http_error", 500);
    } finally {
      client.close();
    }
  });
});

describe("a man in the middle with another key", () => {
  it("is refused with transport.pin_mismatch before any request byte is sent", async () => {
    const other = await createSelfSignedCertificate();
    const client = createNodeHttpClient({ baseUrl, pin: other.spkiSha256 });
    try {
      await expectCode(client.post("/v1/echo", { secret: "do not leak" }), "transport.pin_mismatch", 0);
      // The client reached the server (the refusal is the pin, not the network)…
      await until(() => seen.connections >= 1);
      await new Promise((r) => setTimeout(r, 50));
      // …yet not one request came through.
      expect(seen.requests).toEqual([]);
    } finally {
      client.close();
    }
  });

  it("is refused by a client without a pin: the self-signed certificate is not CA-trusted", async () => {
    const client = createNodeHttpClient({ baseUrl });
    try {
      await expectCode(client.get("/v1/hello"), "transport.untrusted_certificate", 0);
      expect(seen.requests).toEqual([]);
    } finally {
      client.close();
    }
  });

  it("without a pin, a CA the client trusts (and the host name) decide", async () => {
    const viaCa = createNodeHttpClient({
      baseUrl: baseUrl.replace("127.0.0.1", "localhost"),
      ca: cert.certPem,
    });
    try {
      expect((await viaCa.get("/v1/hello")).body).toEqual({ hello: "handset" });
    } finally {
      viaCa.close();
    }
    const otherCa = createNodeHttpClient({ baseUrl, ca: (await createSelfSignedCertificate()).certPem });
    try {
      await expectCode(otherCa.get("/v1/hello"), "transport.untrusted_certificate");
    } finally {
      otherCa.close();
    }
  });
});

describe("a network that fails", () => {
  it("an unreachable server → transport.unreachable, status 0", async () => {
    const closed = createHttpServer();
    closed.listen(0, "127.0.0.1");
    await once(closed, "listening");
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    await once(closed, "close");
    for (const pin of [cert.spkiSha256, undefined]) {
      const client = createNodeHttpClient({ baseUrl: `https://127.0.0.1:${port}`, ...(pin ? { pin } : {}) });
      try {
        await expectCode(client.get("/v1/hello"), "transport.unreachable", 0);
      } finally {
        client.close();
      }
    }
  });

  it("a server that never answers → transport.timeout; an abort → transport.aborted", async () => {
    const client = createNodeHttpClient({ baseUrl, pin: cert.spkiSha256, timeoutMs: 200 });
    try {
      await expectCode(client.get("/v1/slow"), "transport.timeout", 0);
      await expectCode(client.get("/v1/slow", { signal: AbortSignal.timeout(100) }), "transport.aborted", 0);
    } finally {
      client.close();
    }
  });

  it("an oversized response → transport.response_too_large", async () => {
    const client = createNodeHttpClient({ baseUrl, pin: cert.spkiSha256, maxResponseBytes: 10 });
    try {
      await expectCode(client.get("/v1/hello"), "transport.response_too_large");
    } finally {
      client.close();
    }
  });
});

describe("misuse of the client", () => {
  it("a pin cannot be given to a transport that does not enforce it (fetch, browsers)", () => {
    expect(() => createHttpClient({ baseUrl, pin: cert.spkiSha256 })).toThrow(
      expect.objectContaining({ code: "transport.pin_unsupported" }),
    );
    expect(() =>
      createHttpClient({
        baseUrl,
        pin: cert.spkiSha256,
        transport: createNodeTransport({ pin: "A".repeat(43) }),
      }),
    ).toThrow(expect.objectContaining({ code: "transport.pin_unsupported" }));
  });

  it("a malformed pin is refused", () => {
    expect(() => createNodeTransport({ pin: "not-a-pin" })).toThrow(
      expect.objectContaining({ code: "transport.invalid_pin" }),
    );
  });

  it("paths cannot point at another origin", async () => {
    const client = createNodeHttpClient({ baseUrl, pin: cert.spkiSha256 });
    try {
      for (const path of ["//evil.example/v1", "https://evil.example/v1", "v1/hello", "/a b"])
        await expectCode(client.get(path), "transport.invalid_request");
      expect(seen.connections).toBe(0);
    } finally {
      client.close();
    }
  });

  it("keeps a base URL's path prefix", async () => {
    const calls: string[] = [];
    const fetchImpl = (async (url: string) => {
      calls.push(url);
      return new Response("{}", { headers: { "content-type": "application/json" } });
    }) as unknown as typeof fetch;
    const client = createHttpClient({ baseUrl: "https://h.example/handsafe/", fetchImpl });
    await client.get("/v1/x");
    expect(calls).toEqual(["https://h.example/handsafe/v1/x"]);
  });
});

describe("the fetch transport (browser)", () => {
  it("maps error bodies and network failures the same way", async () => {
    const fetchImpl = (async (url: string, init: RequestInit) => {
      if (url.endsWith("/down")) throw new TypeError("fetch failed");
      if (url.endsWith("/locked"))
        return new Response(JSON.stringify({ error: { code: "otp.locked", message: "locked" } }), {
          status: 409,
          headers: { "content-type": "application/json" },
        });
      return new Response(JSON.stringify({ method: init.method, body: init.body ? "yes" : "no" }), {
        headers: { "content-type": "application/json" },
      });
    }) as unknown as typeof fetch;
    const client = createHttpClient({
      baseUrl: "https://h.example",
      transport: createFetchTransport(fetchImpl),
    });
    expect((await client.post("/v1/ok", { a: 1 })).body).toEqual({ method: "POST", body: "yes" });
    await expectCode(client.get("/v1/locked"), "otp.locked", 409);
    await expectCode(client.get("/v1/down"), "transport.unreachable", 0);
  });

  it("works against a real server with the global fetch", async () => {
    const plain = createHttpServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"ok":true}');
    });
    plain.listen(0, "127.0.0.1");
    await once(plain, "listening");
    try {
      const client = createHttpClient({
        baseUrl: `http://127.0.0.1:${(plain.address() as AddressInfo).port}`,
      });
      expect((await client.get("/v1/x")).body).toEqual({ ok: true });
    } finally {
      plain.closeAllConnections();
      plain.close();
    }
  });
});
