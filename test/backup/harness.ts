/**
 * A real handsafe server for the backup server tests, on the database kind asked for, with a clock
 * the test moves, and accounts that sign their requests by hand (RFC 9421, Ed25519, keyid = account
 * id) over raw HTTPS — so a test can send any bytes, any header, a replay, or cut a body midway.
 */
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import type { Kysely } from "kysely";
import { encodeEnvelope, envelopeSigningInput } from "../../src/backup/envelope.ts";
import {
  accountIdOf,
  agePayloadSize,
  type BackupEnvelope,
  backupUri,
  type EnvelopeItem,
  newBackupId,
} from "../../src/backup/protocol.ts";
import { REQUEST_SIGNATURE, UPLOAD_SIGNATURE } from "../../src/backup/signatures.ts";
import type { BackupTables } from "../../src/backup/store.ts";
import { generateIdentity, identityToRecipient } from "../../src/core/age/keys.ts";
import { toBase64url } from "../../src/core/codec/base64url.ts";
import { generateSigningKey, sign } from "../../src/core/crypto/ed25519.ts";
import {
  ed25519SigningKey,
  type SignatureProfile,
  signRequest,
} from "../../src/core/http-signatures/index.ts";
import type { RunningServer } from "../../src/platform/server.ts";
import type { DatabaseKind } from "../helpers/databases.ts";
import { type Clock, movableClock, startTestServer } from "../helpers/server.ts";

export type { Clock };

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** The parsed JSON body. */
  json<T = Record<string, unknown>>(): T;
  /** The `error.code` of an error answer. */
  code: string | undefined;
}

export interface SendOptions {
  headers?: Record<string, string>;
  json?: unknown;
  body?: Uint8Array;
  /** Write this many body bytes, then destroy the socket (an interrupted upload). */
  cutAfter?: number;
}

export interface TestAccount {
  id: string;
  seed: Uint8Array;
  signingKey: Uint8Array;
  recipient: string;
  /** The signature headers of a request (REQUEST_SIGNATURE unless told). */
  sign(
    method: string,
    path: string,
    options?: {
      headers?: Record<string, string>;
      body?: Uint8Array;
      profile?: SignatureProfile;
      keyId?: string;
    },
  ): Record<string, string>;
  /** A signed request. */
  send(method: string, path: string, options?: SendOptions): Promise<RawResponse>;
  /** A signed PATCH of an upload chunk (UPLOAD_SIGNATURE). */
  patch(
    path: string,
    offset: number,
    chunk: Uint8Array,
    options?: { cutAfter?: number },
  ): Promise<RawResponse>;
  /** Upload → PATCH → complete; the blob's {uri, size, sha256}. */
  uploadBlob(bytes: Uint8Array): Promise<{ uri: string; size: number; sha256: string }>;
  /** Signs and PUTs an envelope. */
  putEnvelope(env: BackupEnvelope, options?: { xml?: Uint8Array; signature?: string }): Promise<RawResponse>;
}

export interface BackupHarness {
  server: RunningServer;
  db: Kysely<BackupTables>;
  clock: Clock;
  url: string;
  /** An unsigned request. */
  raw(method: string, path: string, options?: SendOptions): Promise<RawResponse>;
  /** Fresh keys, registered unless `register: false`. */
  account(options?: { handle?: string; register?: boolean }): Promise<TestAccount>;
  close(): Promise<void>;
}

export const sha256Hex = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** A blob item's payload for `plaintext` bytes: random bytes of the age payload's size. */
export function blobPayload(plaintext: number): Uint8Array {
  return new Uint8Array(randomBytes(agePayloadSize(plaintext)));
}

/** A well-formed item the server cannot read anyway: random header and name bytes. */
export function fakeItem(
  command: EnvelopeItem["command"],
  payload: { inline: number } | { blob: { uri: string; size: number; sha256: string }; plaintext: number },
): EnvelopeItem {
  const id = `it_${toBase64url(randomBytes(18))}`;
  const common = {
    command,
    id,
    kind: "files" as const,
    hash: new Uint8Array(randomBytes(32)),
    name: new Uint8Array(randomBytes(40)),
    header: new Uint8Array(randomBytes(200)),
  };
  if ("inline" in payload)
    return {
      ...common,
      size: payload.inline,
      payload: { inline: new Uint8Array(randomBytes(agePayloadSize(payload.inline))) },
    };
  return {
    ...common,
    size: payload.plaintext,
    payload: {
      blob: {
        uri: payload.blob.uri,
        size: payload.blob.size,
        sha256: new Uint8Array(Buffer.from(payload.blob.sha256, "hex")),
      },
    },
  };
}

export function envelopeOf(
  owner: TestAccount,
  items: EnvelopeItem[],
  more: Partial<BackupEnvelope> = {},
): BackupEnvelope {
  const backupId = more.backupId ?? newBackupId();
  return {
    backupId,
    kind: "backup",
    createdAt: Date.now(),
    source: { handset: "handset:test", account: owner.id },
    target: backupUri(backupId),
    recipients: [owner.recipient],
    sharedWith: [],
    items,
    deleted: [],
    ...more,
  };
}

export async function startBackupServer(
  kind: DatabaseKind,
  env: Record<string, string> = {},
): Promise<BackupHarness> {
  const clock = movableClock();
  const t = await startTestServer(kind, env, { clock: () => clock.ms });
  const { server } = t;
  const config = server.platform.config;
  const ca = readFileSync(config.tls.certPath, "utf8");
  const base = new URL(server.url);

  function send(method: string, path: string, options: SendOptions = {}): Promise<RawResponse> {
    const body =
      options.json !== undefined
        ? Buffer.from(JSON.stringify(options.json))
        : options.body && Buffer.from(options.body);
    const headers: Record<string, string> = { ...options.headers };
    if (options.json !== undefined) headers["content-type"] ??= "application/json";
    if (body !== undefined) headers["content-length"] ??= String(body.length);
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host: base.hostname,
          port: base.port,
          method,
          path,
          headers,
          ca,
          agent: false,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("error", reject);
          res.on("end", () => {
            const buf = Buffer.concat(chunks);
            const json = <T>() => JSON.parse(buf.toString("utf8")) as T;
            let code: string | undefined;
            try {
              code = (json<{ error?: { code?: string } }>().error?.code as string | undefined) ?? undefined;
            } catch {
              code = undefined;
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: buf, json, code });
          });
        },
      );
      req.on("error", reject);
      if (body === undefined) {
        req.end();
      } else if (options.cutAfter !== undefined) {
        req.write(body.subarray(0, options.cutAfter), () => {
          // Let the bytes reach the server, then drop the connection mid-body.
          setTimeout(() => {
            req.destroy();
            resolve({
              status: 0,
              headers: {},
              body: Buffer.alloc(0),
              json: () => ({}) as never,
              code: "cut",
            });
          }, 150);
        });
      } else {
        req.end(body);
      }
    });
  }

  function accountOf(seed: Uint8Array, signingKey: Uint8Array, recipient: string): TestAccount {
    const id = accountIdOf(signingKey);
    const a: TestAccount = {
      id,
      seed,
      signingKey,
      recipient,
      sign(method, path, options = {}) {
        return signRequest(
          options.profile ?? REQUEST_SIGNATURE,
          ed25519SigningKey(seed),
          {
            method,
            url: `${server.url}${path}`,
            headers: options.headers ?? {},
            ...(options.body ? { body: options.body } : {}),
          },
          { keyId: options.keyId ?? id, created: Math.floor(clock.ms / 1000) },
        );
      },
      send(method, path, options = {}) {
        const body =
          options.json !== undefined
            ? new Uint8Array(Buffer.from(JSON.stringify(options.json)))
            : options.body;
        const headers = { ...options.headers };
        const signed = a.sign(method, path, { headers, ...(body ? { body } : {}) });
        return send(method, path, {
          ...options,
          ...(body ? { body } : {}),
          json: undefined,
          headers: {
            ...(options.json !== undefined ? { "content-type": "application/json" } : {}),
            ...headers,
            ...signed,
          },
        });
      },
      patch(path, offset, chunk, options = {}) {
        const headers = {
          "content-type": "application/offset+octet-stream",
          "upload-offset": String(offset),
          "content-length": String(chunk.length),
        };
        const signed = a.sign("PATCH", path, { headers, profile: UPLOAD_SIGNATURE });
        return send("PATCH", path, {
          body: chunk,
          headers: { ...headers, ...signed },
          ...(options.cutAfter !== undefined ? { cutAfter: options.cutAfter } : {}),
        });
      },
      async uploadBlob(bytes) {
        const begun = await a.send("POST", "/v1/backup/uploads", {
          json: { size: bytes.length, sha256: sha256Hex(bytes) },
        });
        if (begun.status !== 201) throw new Error(`upload begin: ${begun.status} ${begun.body}`);
        const { uri } = begun.json<{ uri: string }>();
        const patched = await a.patch(uri, 0, bytes);
        if (patched.status !== 204) throw new Error(`upload patch: ${patched.status} ${patched.body}`);
        const done = await a.send("POST", `${uri}/complete`);
        if (done.status !== 200) throw new Error(`upload complete: ${done.status} ${done.body}`);
        return done.json<{ uri: string; size: number; sha256: string }>();
      },
      putEnvelope(env, options = {}) {
        const xml = options.xml ?? encodeEnvelope(env);
        const signature = options.signature ?? toBase64url(sign(seed, envelopeSigningInput(xml)));
        return a.send("PUT", backupUri(env.backupId), {
          body: xml,
          headers: { "content-type": "application/vnd.syncml+xml", "envelope-signature": signature },
        });
      },
    };
    return a;
  }

  return {
    server,
    db: server.platform.db as Kysely<BackupTables>,
    clock,
    url: server.url,
    raw: send,
    async account(options = {}) {
      const { seed, publicKey } = generateSigningKey();
      const recipient = identityToRecipient(generateIdentity());
      const a = accountOf(seed, publicKey, recipient);
      if (options.register !== false) {
        const res = await a.send("POST", "/v1/backup/accounts", {
          json: {
            signingKey: toBase64url(publicKey),
            recipient,
            ...(options.handle ? { handle: options.handle } : {}),
          },
        });
        if (res.status !== 201) throw new Error(`account: ${res.status} ${res.body}`);
      }
      return a;
    },
    close: () => t.close(),
  };
}
