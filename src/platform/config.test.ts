import { resolve } from "node:path";
import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import { toBase64url } from "../core/codec/base64url.ts";
import { loadConfig } from "./config.ts";

const key32 = toBase64url(new Uint8Array(32).fill(7));

function rejects(env: Record<string, string>, ...fragments: string[]) {
  let err: unknown;
  try {
    loadConfig(env);
  } catch (e) {
    err = e;
  }
  expect(err).toMatchObject({ code: "config.invalid" });
  for (const f of fragments) expect((err as Error).message).toContain(f);
  return err as Error;
}

describe("loadConfig defaults", () => {
  it("an empty environment gives the documented defaults", () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      dataDir: resolve("./data"),
      host: "127.0.0.1",
      port: 8443,
      publicUrl: "https://localhost:8443",
      databaseUrl: `sqlite:${resolve("./data/handsafe.sqlite")}`,
      databaseDialect: "sqlite",
      logLevel: "info",
      bodyLimit: 65536,
      rateLimitPerMinute: 600,
      tls: {
        certPath: resolve("./data/tls/cert.pem"),
        keyPath: resolve("./data/tls/key.pem"),
        selfSigned: true,
      },
      masterKey: null,
      previousMasterKeys: [],
      activationSecretTtlSeconds: 300,
      sqliteSync: "NORMAL",
      sqliteCheckpoints: "worker",
      messaging: {
        retentionSeconds: 604800,
        appUrl: null,
        codeTtlSeconds: 300,
        registrationRateLimitPerMinute: 60,
      },
    });
  });

  it("is frozen, deeply", () => {
    const c = loadConfig({});
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.tls)).toBe(true);
    expect(() => {
      (c as { port: number }).port = 1;
    }).toThrow();
  });

  it("empty values count as unset", () => {
    expect(loadConfig({ HANDSAFE_PORT: "", HANDSAFE_LOG_LEVEL: " " }).port).toBe(8443);
  });

  it("port 0 leaves the public URL to be derived after listening", () => {
    expect(loadConfig({ HANDSAFE_PORT: "0" })).toMatchObject({ port: 0, publicUrl: null });
  });

  it("the data dir moves the derived paths", () => {
    const c = loadConfig({ HANDSAFE_DATA_DIR: "/srv/hs" });
    expect(c.databaseUrl).toBe("sqlite:/srv/hs/handsafe.sqlite");
    expect(c.tls.certPath).toBe("/srv/hs/tls/cert.pem");
  });
});

describe("loadConfig reads every setting", () => {
  it("takes valid values", () => {
    const c = loadConfig({
      HANDSAFE_HOST: "0.0.0.0",
      HANDSAFE_PORT: "9000",
      HANDSAFE_PUBLIC_URL: "https://mdm.example.com/base/",
      HANDSAFE_DATABASE_URL: "postgresql://u:secret@db:5432/hs",
      HANDSAFE_LOG_LEVEL: "DEBUG",
      HANDSAFE_BODY_LIMIT: "1048576",
      HANDSAFE_RATE_LIMIT: "0",
      HANDSAFE_EXCHANGE_RATE_LIMIT: "30",
      HANDSAFE_MAX_PACKAGE_BYTES: "1048576",
      HANDSAFE_TLS_CERT: "/etc/hs/cert.pem",
      HANDSAFE_TLS_KEY: "/etc/hs/key.pem",
      HANDSAFE_MASTER_KEY: key32,
      HANDSAFE_MASTER_KEY_PREVIOUS: `${toBase64url(new Uint8Array(32).fill(1))}, ${toBase64url(new Uint8Array(32).fill(2))}`,
      HANDSAFE_ACTIVATION_SECRET_TTL: "600",
      HANDSAFE_SQLITE_SYNC: "full",
      HANDSAFE_SQLITE_CHECKPOINTS: "Inline",
    });
    expect(c).toMatchObject({
      host: "0.0.0.0",
      port: 9000,
      publicUrl: "https://mdm.example.com/base",
      databaseDialect: "postgres",
      logLevel: "debug",
      bodyLimit: 1048576,
      rateLimitPerMinute: 0,
      exchangeRateLimitPerMinute: 30,
      maxPackageBytes: 1048576,
      tls: { certPath: "/etc/hs/cert.pem", keyPath: "/etc/hs/key.pem", selfSigned: false },
      activationSecretTtlSeconds: 600,
      sqliteSync: "FULL",
      sqliteCheckpoints: "inline",
    });
    expect(c.masterKey?.reveal()).toEqual(new Uint8Array(32).fill(7));
    expect(c.previousMasterKeys.map((k) => k.reveal()[0])).toEqual([1, 2]);
  });

  it("reads the messaging settings", () => {
    const c = loadConfig({
      HANDSAFE_MESSAGE_RETENTION: "3600",
      HANDSAFE_MESSAGING_APP_URL: "https://example.com/get?src=sms",
      HANDSAFE_MESSAGING_CODE_TTL: "120",
      HANDSAFE_MESSAGING_REGISTRATION_RATE_LIMIT: "0",
    });
    expect(c.messaging).toEqual({
      retentionSeconds: 3600,
      appUrl: "https://example.com/get?src=sms",
      codeTtlSeconds: 120,
      registrationRateLimitPerMinute: 0,
    });
    expect(Object.isFrozen(c.messaging)).toBe(true);
  });

  it("accepts sqlite::memory: and sqlite:<relative path>", () => {
    expect(loadConfig({ HANDSAFE_DATABASE_URL: "sqlite::memory:" }).databaseDialect).toBe("sqlite");
    expect(loadConfig({ HANDSAFE_DATABASE_URL: "sqlite:./x.db" }).databaseUrl).toBe("sqlite:./x.db");
  });
});

describe("a misconfigured server refuses to start and says which variable is wrong", () => {
  it.each([
    ["HANDSAFE_PORT", "65536"],
    ["HANDSAFE_PORT", "-1"],
    ["HANDSAFE_PORT", "0x10"],
    ["HANDSAFE_PORT", "80.5"],
    ["HANDSAFE_BODY_LIMIT", "0"],
    ["HANDSAFE_BODY_LIMIT", "1e6"],
    ["HANDSAFE_RATE_LIMIT", "lots"],
    ["HANDSAFE_EXCHANGE_RATE_LIMIT", "-1"],
    ["HANDSAFE_MAX_PACKAGE_BYTES", "0"],
    ["HANDSAFE_ACTIVATION_SECRET_TTL", "0"],
    ["HANDSAFE_LOG_LEVEL", "verbose"],
    ["HANDSAFE_SQLITE_SYNC", "OFF"],
    ["HANDSAFE_PUBLIC_URL", "ftp://x"],
    ["HANDSAFE_PUBLIC_URL", "not a url"],
    ["HANDSAFE_PUBLIC_URL", "https://x/?q=1"],
    ["HANDSAFE_DATABASE_URL", "mysql://db/x"],
    ["HANDSAFE_DATABASE_URL", "sqlite:"],
    ["HANDSAFE_MESSAGE_RETENTION", "59"],
    ["HANDSAFE_MESSAGE_RETENTION", "7d"],
    ["HANDSAFE_MESSAGING_CODE_TTL", "3601"],
    ["HANDSAFE_MESSAGING_REGISTRATION_RATE_LIMIT", "-5"],
    ["HANDSAFE_MESSAGING_APP_URL", "not a url"],
    ["HANDSAFE_MESSAGING_APP_URL", "javascript:alert(1)"],
    ["HANDSAFE_MESSAGING_APP_URL", "https://user:pw@example.com/app"],
  ])("%s=%s", (name, value) => {
    rejects({ [name]: value }, name, JSON.stringify(value), "allowed");
  });

  it("names the missing half of the TLS pair", () => {
    rejects({ HANDSAFE_TLS_CERT: "/c.pem" }, "HANDSAFE_TLS_KEY", "HANDSAFE_TLS_CERT");
    rejects({ HANDSAFE_TLS_KEY: "/k.pem" }, "HANDSAFE_TLS_CERT");
  });

  it("hides the database password in the message", () => {
    const err = rejects({ HANDSAFE_DATABASE_URL: "postgres://u:hunter2@/x" }, "HANDSAFE_DATABASE_URL");
    expect(err.message).not.toContain("hunter2");
  });

  it("a bad master key is named but never echoed", () => {
    const short = toBase64url(new Uint8Array(16).fill(9));
    const err = rejects({ HANDSAFE_MASTER_KEY: short }, "HANDSAFE_MASTER_KEY", "16 bytes", "32 bytes");
    expect(err.message).not.toContain(short);
    const err2 = rejects({ HANDSAFE_MASTER_KEY: "!!not-base64!!" }, "HANDSAFE_MASTER_KEY");
    expect(err2.message).not.toContain("!!not-base64!!");
    rejects({ HANDSAFE_MASTER_KEY_PREVIOUS: `${key32},abc` }, "HANDSAFE_MASTER_KEY_PREVIOUS (entry 2)");
  });
});

describe("the master key does not leak through logs", () => {
  it("JSON, String and util.inspect show [redacted]", () => {
    const c = loadConfig({ HANDSAFE_MASTER_KEY: key32 });
    expect(JSON.stringify(c)).not.toContain(key32);
    expect(JSON.stringify(c)).toContain('"masterKey":"[redacted]"');
    expect(String(c.masterKey)).toBe("[redacted]");
    expect(inspect(c, { depth: 5 })).not.toMatch(/7, 7|0x07/);
  });
});
