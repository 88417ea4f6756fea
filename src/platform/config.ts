import { resolve } from "node:path";
import { inspect } from "node:util";
import { fromBase64url } from "../core/codec/base64url.ts";
import { HandsafeError } from "../core/errors.ts";
import { parseDatabaseUrl, redactDatabaseUrl } from "./db/url.ts";
import { loadSmsConfig, type SmsConfig } from "./notify/sms/index.ts";

/**
 * The server's settings, read once from the environment at start. Every variable is listed in
 * docs/configuration.md; an empty value counts as unset. A bad value stops the server with
 * HandsafeError("config.invalid") naming the variable, the value and what is allowed.
 */

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const SQLITE_SYNC_MODES = ["NORMAL", "FULL"] as const;
export type SqliteSync = (typeof SQLITE_SYNC_MODES)[number];
export const SQLITE_CHECKPOINT_MODES = ["worker", "inline"] as const;
export type SqliteCheckpoints = (typeof SQLITE_CHECKPOINT_MODES)[number];

export const BLOB_STORES = ["filesystem", "s3"] as const;
export type BlobStoreKind = (typeof BLOB_STORES)[number];

/** A secret text (a cloud secret key) that never shows up in logs, JSON or `util.inspect`. */
export class RedactedText {
  readonly #text: string;

  constructor(text: string) {
    this.#text = text;
    Object.freeze(this);
  }

  reveal(): string {
    return this.#text;
  }

  toJSON(): string {
    return "[redacted]";
  }

  toString(): string {
    return "[redacted]";
  }

  [inspect.custom](): string {
    return "RedactedText([redacted])";
  }
}

/** HANDSAFE_BLOB_STORE=s3: the bucket (docs/configuration.md, HANDSAFE_S3_*). */
export interface S3BlobConfig {
  /** Unset: AWS S3 itself, in `region`. */
  readonly endpoint: string | null;
  readonly region: string;
  readonly bucket: string;
  /** Prepended to object names; "" or ending in "/". */
  readonly prefix: string;
  /** Both or neither; neither: the AWS SDK's default credential chain. */
  readonly accessKeyId: string | null;
  readonly secretAccessKey: RedactedText | null;
  readonly forcePathStyle: boolean;
}

/** A 32-byte key that never shows up in logs, JSON or `util.inspect`. */
export class RedactedKey {
  readonly #bytes: Uint8Array;

  constructor(bytes: Uint8Array) {
    this.#bytes = Uint8Array.from(bytes);
    Object.freeze(this);
  }

  /** A copy of the key bytes, for the keyring and nothing else. */
  reveal(): Uint8Array {
    return Uint8Array.from(this.#bytes);
  }

  toJSON(): string {
    return "[redacted]";
  }

  toString(): string {
    return "[redacted]";
  }

  [inspect.custom](): string {
    return "RedactedKey([redacted])";
  }
}

export interface Config {
  /** Absolute path of the data folder (SQLite file, master key, self-signed certificate). */
  readonly dataDir: string;
  readonly host: string;
  /** 0 means: let the OS pick a port. */
  readonly port: number;
  /**
   * The URL handsets reach the server at, without a trailing slash. `null` only when no
   * HANDSAFE_PUBLIC_URL is set and port is 0: the server derives it from the bound port
   * (`defaultPublicUrl(boundPort)`).
   */
  readonly publicUrl: string | null;
  /** Validated: sqlite:<path>, sqlite::memory:, postgres://… or postgresql://… */
  readonly databaseUrl: string;
  readonly databaseDialect: "sqlite" | "postgres";
  readonly logLevel: LogLevel;
  /** Largest accepted request body, in bytes. */
  readonly bodyLimit: number;
  /** Requests per minute per client IP; 0 turns rate limiting off. */
  readonly rateLimitPerMinute: number;
  /** Largest update package an admin may upload, bytes. */
  readonly maxPackageBytes: number;
  /** Key-exchange requests (unauthenticated) per minute per client address; 0 = off. */
  readonly exchangeRateLimitPerMinute: number;
  readonly tls: {
    readonly certPath: string;
    readonly keyPath: string;
    /** True when the paths are the defaults in the data folder, generated on first start. */
    readonly selfSigned: boolean;
  };
  /** HANDSAFE_MASTER_KEY, when set; otherwise the keyring uses `<dataDir>/master.key`. */
  readonly masterKey: RedactedKey | null;
  /** HANDSAFE_MASTER_KEY_PREVIOUS: retired keys still accepted for opening (rotation). */
  readonly previousMasterKeys: readonly RedactedKey[];
  readonly activationSecretTtlSeconds: number;
  readonly sqliteSync: SqliteSync;
  /** HANDSAFE_SQLITE_CHECKPOINTS: WAL checkpoints on a worker thread (default) or inside commits. */
  readonly sqliteCheckpoints: SqliteCheckpoints;
  /** The SMS path (docs/protocols/sms.md): HANDSAFE_SMS_*, HANDSAFE_SMPP_*. */
  readonly sms: SmsConfig;
  /** Where blobs (update images, backups) are kept: HANDSAFE_BLOB_DIR, default <dataDir>/blobs. */
  readonly blobDir: string;
  /** The built web console (`npm run build:console`): HANDSAFE_CONSOLE_DIR, default dist/console. */
  readonly consoleDir: string;
  /** HANDSAFE_BLOB_STORE: the filesystem (blobDir) or an S3-compatible bucket (`s3`). */
  readonly blobStore: BlobStoreKind;
  /** The bucket when blobStore is "s3", else null. */
  readonly s3: S3BlobConfig | null;
  /** Secure messaging (docs/protocols/messaging.md): HANDSAFE_MESSAGE_RETENTION, HANDSAFE_MESSAGING_*. */
  readonly messaging: MessagingConfig;
  /** Secure backup (docs/protocols/backup.md §5): HANDSAFE_BACKUP_*. */
  readonly backup: BackupConfig;
}

export interface BackupConfig {
  /** Bytes one account may store (completed blobs and listed envelopes). */
  readonly quotaBytes: number;
}

export interface MessagingConfig {
  /** How long ciphertexts (and replies) are kept after a message is delivered, seconds. */
  readonly retentionSeconds: number;
  /** The app link texted to a number without a handset; null: `<public URL>/handset`. */
  readonly appUrl: string | null;
  /** How long a registration code is valid, seconds. */
  readonly codeTtlSeconds: number;
  /** Registration requests per minute per client address; 0 = off. */
  readonly registrationRateLimitPerMinute: number;
}

export function defaultPublicUrl(port: number): string {
  return `https://localhost:${port}`;
}

type Env = Record<string, string | undefined>;

export function loadConfig(env: Env = process.env): Config {
  const get = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === "" ? undefined : v.trim();
  };

  const dataDir = resolve(get("HANDSAFE_DATA_DIR") ?? "./data");
  const host = get("HANDSAFE_HOST") ?? "127.0.0.1";
  const port = readInteger(get, "HANDSAFE_PORT", 8443, 0, 65535);

  const publicUrlRaw = get("HANDSAFE_PUBLIC_URL");
  const publicUrl =
    publicUrlRaw !== undefined ? readPublicUrl(publicUrlRaw) : port === 0 ? null : defaultPublicUrl(port);

  const databaseUrl = get("HANDSAFE_DATABASE_URL") ?? `sqlite:${resolve(dataDir, "handsafe.sqlite")}`;
  let databaseDialect: "sqlite" | "postgres";
  try {
    databaseDialect = parseDatabaseUrl(databaseUrl).dialect;
  } catch (e) {
    throw invalid(
      "HANDSAFE_DATABASE_URL",
      redactDatabaseUrl(databaseUrl),
      "sqlite:<path>, sqlite::memory:, postgres://… or postgresql://…",
      e instanceof Error ? e.message : undefined,
    );
  }

  const logLevel = readEnum(get, "HANDSAFE_LOG_LEVEL", LOG_LEVELS, "info", (v) => v.toLowerCase());
  const bodyLimit = readInteger(get, "HANDSAFE_BODY_LIMIT", 65536, 1, 64 * 1024 * 1024);
  const rateLimitPerMinute = readInteger(get, "HANDSAFE_RATE_LIMIT", 600, 0, 1_000_000);
  // Up to 2^33 - 1 (8 GiB): readInteger takes at most 10 digits, and images beyond that are not phone firmware.
  const maxPackageBytes = readInteger(get, "HANDSAFE_MAX_PACKAGE_BYTES", 1024 * 1024 * 1024, 1, 2 ** 33 - 1);
  const exchangeRateLimitPerMinute = readInteger(get, "HANDSAFE_EXCHANGE_RATE_LIMIT", 120, 0, 1_000_000);

  const certPath = get("HANDSAFE_TLS_CERT");
  const keyPath = get("HANDSAFE_TLS_KEY");
  if ((certPath === undefined) !== (keyPath === undefined)) {
    const [missing, present] =
      certPath === undefined
        ? ["HANDSAFE_TLS_CERT", "HANDSAFE_TLS_KEY"]
        : ["HANDSAFE_TLS_KEY", "HANDSAFE_TLS_CERT"];
    throw new HandsafeError(
      "config.invalid",
      `${missing} is not set but ${present} is: set both (a PEM certificate and its PEM private key) or neither (a self-signed certificate in the data folder)`,
      { status: 500 },
    );
  }
  const tls =
    certPath !== undefined && keyPath !== undefined
      ? { certPath: resolve(certPath), keyPath: resolve(keyPath), selfSigned: false }
      : {
          certPath: resolve(dataDir, "tls", "cert.pem"),
          keyPath: resolve(dataDir, "tls", "key.pem"),
          selfSigned: true,
        };

  const masterKeyRaw = get("HANDSAFE_MASTER_KEY");
  const masterKey = masterKeyRaw === undefined ? null : readKey("HANDSAFE_MASTER_KEY", masterKeyRaw);
  const previousRaw = get("HANDSAFE_MASTER_KEY_PREVIOUS");
  const previousMasterKeys =
    previousRaw === undefined
      ? []
      : previousRaw
          .split(",")
          .map((s) => s.trim())
          .filter((s) => s !== "")
          .map((s, i) => readKey(`HANDSAFE_MASTER_KEY_PREVIOUS (entry ${i + 1})`, s));

  const activationSecretTtlSeconds = readInteger(get, "HANDSAFE_ACTIVATION_SECRET_TTL", 300, 1, 86400);
  const sqliteSync = readEnum(get, "HANDSAFE_SQLITE_SYNC", SQLITE_SYNC_MODES, "NORMAL", (v) =>
    v.toUpperCase(),
  );
  const sqliteCheckpoints = readEnum(
    get,
    "HANDSAFE_SQLITE_CHECKPOINTS",
    SQLITE_CHECKPOINT_MODES,
    "worker",
    (v) => v.toLowerCase(),
  );

  const sms = loadSmsConfig(env);
  const blobDir = resolve(get("HANDSAFE_BLOB_DIR") ?? resolve(dataDir, "blobs"));
  const consoleDir = resolve(
    get("HANDSAFE_CONSOLE_DIR") ?? resolve(import.meta.dirname, "../../dist/console"),
  );
  const blobStore = readEnum(get, "HANDSAFE_BLOB_STORE", BLOB_STORES, "filesystem", (v) => v.toLowerCase());
  const s3 = blobStore === "s3" ? readS3Config(get) : null;
  const appUrlRaw = get("HANDSAFE_MESSAGING_APP_URL");
  const messaging: MessagingConfig = Object.freeze({
    retentionSeconds: readInteger(get, "HANDSAFE_MESSAGE_RETENTION", 7 * 86_400, 60, 10 * 365 * 86_400),
    appUrl: appUrlRaw === undefined ? null : readAppUrl(appUrlRaw),
    codeTtlSeconds: readInteger(get, "HANDSAFE_MESSAGING_CODE_TTL", 300, 60, 3600),
    registrationRateLimitPerMinute: readInteger(
      get,
      "HANDSAFE_MESSAGING_REGISTRATION_RATE_LIMIT",
      60,
      0,
      1_000_000,
    ),
  });
  // Up to 2^50 (1 PiB): more than readInteger's 10 digits, so the backup quota has its own reader.
  const backup: BackupConfig = Object.freeze({
    quotaBytes: readLargeInteger(get, "HANDSAFE_BACKUP_QUOTA_BYTES", 10 * 1024 ** 3, 0, 2 ** 50),
  });
  return Object.freeze({
    messaging,
    backup,
    sms,
    blobDir,
    consoleDir,
    blobStore,
    s3,
    dataDir,
    host,
    port,
    publicUrl,
    databaseUrl,
    databaseDialect,
    logLevel,
    bodyLimit,
    rateLimitPerMinute,
    exchangeRateLimitPerMinute,
    maxPackageBytes,
    tls: Object.freeze(tls),
    masterKey,
    previousMasterKeys: Object.freeze(previousMasterKeys),
    activationSecretTtlSeconds,
    sqliteSync,
    sqliteCheckpoints,
  });
}

function invalid(name: string, value: string, allowed: string, why?: string): HandsafeError {
  return new HandsafeError(
    "config.invalid",
    `${name}=${JSON.stringify(value)} is invalid${why ? ` (${why})` : ""}; allowed: ${allowed}`,
    { status: 500 },
  );
}

/** readInteger for byte counts past 10 digits (a quota of many GiB): up to 16 decimal digits. */
function readLargeInteger(
  get: (name: string) => string | undefined,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = get(name);
  if (raw === undefined) return fallback;
  const n = /^[0-9]{1,16}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw invalid(name, raw, `a whole number from ${min} to ${max}`);
  return n;
}

function readInteger(
  get: (name: string) => string | undefined,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = get(name);
  if (raw === undefined) return fallback;
  // Decimal digits only: Number() would also take "0x1F", "1e3" and " 12 ".
  const n = /^[0-9]{1,10}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw invalid(name, raw, `a whole number from ${min} to ${max}`);
  return n;
}

function readEnum<T extends string>(
  get: (name: string) => string | undefined,
  name: string,
  allowed: readonly T[],
  fallback: T,
  normalise: (v: string) => string,
): T {
  const raw = get(name);
  if (raw === undefined) return fallback;
  const v = normalise(raw);
  if (!(allowed as readonly string[]).includes(v)) throw invalid(name, raw, allowed.join(" | "));
  return v as T;
}

function readBoolean(get: (name: string) => string | undefined, name: string, fallback: boolean): boolean {
  const raw = get(name);
  if (raw === undefined) return fallback;
  const v = raw.toLowerCase();
  if (v === "true" || v === "1" || v === "yes") return true;
  if (v === "false" || v === "0" || v === "no") return false;
  throw invalid(name, raw, "true | false (or 1 | 0, yes | no)");
}

function readS3Config(get: (name: string) => string | undefined): S3BlobConfig {
  const endpointRaw = get("HANDSAFE_S3_ENDPOINT");
  let endpoint: string | null = null;
  if (endpointRaw !== undefined) {
    let url: URL;
    try {
      url = new URL(endpointRaw);
    } catch {
      throw invalid(
        "HANDSAFE_S3_ENDPOINT",
        endpointRaw,
        "an absolute https:// or http:// URL, e.g. http://127.0.0.1:9000",
      );
    }
    if (url.protocol !== "https:" && url.protocol !== "http:")
      throw invalid(
        "HANDSAFE_S3_ENDPOINT",
        endpointRaw,
        "an https:// or http:// URL",
        `scheme ${url.protocol}`,
      );
    // Credentials belong in HANDSAFE_S3_ACCESS_KEY_ID / _SECRET_ACCESS_KEY: never echo them.
    if (url.username !== "" || url.password !== "")
      throw new HandsafeError(
        "config.invalid",
        "HANDSAFE_S3_ENDPOINT is invalid (value hidden): it carries credentials; allowed: a URL without credentials (set HANDSAFE_S3_ACCESS_KEY_ID and HANDSAFE_S3_SECRET_ACCESS_KEY)",
        { status: 500 },
      );
    if (url.search !== "" || url.hash !== "")
      throw invalid("HANDSAFE_S3_ENDPOINT", endpointRaw, "a URL without query or fragment");
    endpoint = `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
  }
  const region = get("HANDSAFE_S3_REGION") ?? "us-east-1";
  if (!/^[A-Za-z0-9-]{1,64}$/.test(region))
    throw invalid("HANDSAFE_S3_REGION", region, "a region name such as us-east-1 (letters, digits, '-')");
  const bucket = get("HANDSAFE_S3_BUCKET");
  if (bucket === undefined)
    throw new HandsafeError("config.invalid", "HANDSAFE_S3_BUCKET is required when HANDSAFE_BLOB_STORE=s3", {
      status: 500,
    });
  if (!/^[A-Za-z0-9._-]{1,255}$/.test(bucket))
    throw invalid("HANDSAFE_S3_BUCKET", bucket, "a bucket name of [A-Za-z0-9._-], e.g. handsafe-blobs");
  const prefixRaw = get("HANDSAFE_S3_PREFIX") ?? "";
  if (
    prefixRaw !== "" &&
    (!/^[A-Za-z0-9._/-]{1,512}$/.test(prefixRaw) ||
      prefixRaw.startsWith("/") ||
      prefixRaw
        .split("/")
        .some((segment, i, all) => (segment === "" && i !== all.length - 1) || segment === ".."))
  )
    throw invalid(
      "HANDSAFE_S3_PREFIX",
      prefixRaw,
      "up to 512 characters of [A-Za-z0-9._-] segments joined by '/', e.g. handsafe/prod/",
    );
  const prefix = prefixRaw === "" || prefixRaw.endsWith("/") ? prefixRaw : `${prefixRaw}/`;
  const accessKeyId = get("HANDSAFE_S3_ACCESS_KEY_ID");
  const secret = get("HANDSAFE_S3_SECRET_ACCESS_KEY");
  if ((accessKeyId === undefined) !== (secret === undefined)) {
    const [missing, present] =
      accessKeyId === undefined
        ? ["HANDSAFE_S3_ACCESS_KEY_ID", "HANDSAFE_S3_SECRET_ACCESS_KEY"]
        : ["HANDSAFE_S3_SECRET_ACCESS_KEY", "HANDSAFE_S3_ACCESS_KEY_ID"];
    throw new HandsafeError(
      "config.invalid",
      `${missing} is not set but ${present} is: set both, or neither (the AWS SDK's default credential chain: environment, profile, instance role)`,
      { status: 500 },
    );
  }
  return Object.freeze({
    endpoint,
    region,
    bucket,
    prefix,
    accessKeyId: accessKeyId ?? null,
    secretAccessKey: secret === undefined ? null : new RedactedText(secret),
    // S3-compatible servers (MinIO, Ceph, s3rver) mostly want path-style; AWS S3 itself virtual-hosted.
    forcePathStyle: readBoolean(get, "HANDSAFE_S3_FORCE_PATH_STYLE", endpoint !== null),
  });
}

function readPublicUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalid(
      "HANDSAFE_PUBLIC_URL",
      raw,
      "an absolute https:// or http:// URL, e.g. https://mdm.example.com",
    );
  }
  if (url.protocol !== "https:" && url.protocol !== "http:")
    throw invalid("HANDSAFE_PUBLIC_URL", raw, "an https:// or http:// URL", `scheme ${url.protocol}`);
  if (url.search !== "" || url.hash !== "" || url.username !== "" || url.password !== "")
    throw invalid("HANDSAFE_PUBLIC_URL", raw, "a URL without query, fragment or credentials");
  return `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
}

/** An https:// (or http://) link texted to people: no credentials, at most 200 characters. */
function readAppUrl(raw: string): string {
  const name = "HANDSAFE_MESSAGING_APP_URL";
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalid(name, raw, "an absolute https:// URL, e.g. https://example.com/get-handsafe");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:")
    throw invalid(name, raw, "an https:// or http:// URL", `scheme ${url.protocol}`);
  if (url.username !== "" || url.password !== "") throw invalid(name, raw, "a URL without credentials");
  if (raw.length > 200) throw invalid(name, raw, "a URL of at most 200 characters (it goes in a text)");
  return raw;
}

function readKey(name: string, raw: string): RedactedKey {
  // The value is a secret: the message names the variable and the length, never the value.
  let bytes: Uint8Array;
  try {
    bytes = fromBase64url(raw, name);
  } catch {
    throw new HandsafeError(
      "config.invalid",
      `${name} is invalid (value hidden, ${raw.length} characters): allowed: 32 bytes as unpadded base64url (43 characters)`,
      { status: 500 },
    );
  }
  if (bytes.length !== 32)
    throw new HandsafeError(
      "config.invalid",
      `${name} is invalid (value hidden): it decodes to ${bytes.length} bytes; allowed: exactly 32 bytes as unpadded base64url (43 characters)`,
      { status: 500 },
    );
  return new RedactedKey(bytes);
}
